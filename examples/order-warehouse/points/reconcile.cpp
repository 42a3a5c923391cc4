#include "reconcile.h"

#include "flat_json.h"
#include "service_runtime.h"

namespace orders_example {

void reconcile_gave_up(PointsDb& db, txmq::client::Consumer& consumer, const txmq::client::Delivery& record) {
  // {"webhook_id":..., "reason":..., "attempts":[{...}, ...],
  //  "message":{"key":..., "headers":{...}, "body":"<the order JSON>", "body_base64":...}, ...}
  auto fields = parse_flat_json(record.body);
  auto message = fields && fields->count("message") ? parse_flat_json(fields->at("message")) : std::nullopt;
  auto order = message && message->count("body") ? order_from_json(message->at("body")) : std::nullopt;
  if (!fields || !fields->count("webhook_id") || !order) {
    log_line("give-up record " + std::to_string(record.offset) + " is not about an order; skipped");
    consumer.ack(record);
    return;
  }
  const std::string& webhook_id = fields->at("webhook_id");
  const std::string reason = fields->count("reason") ? fields->at("reason") : "unknown";
  // The attempts array is kept raw by the flat reader; its entries each have "attempt".
  std::int64_t attempts = 0;
  if (fields->count("attempts"))
    for (std::size_t p = 0; (p = fields->at("attempts").find("\"attempt\"", p)) != std::string::npos; ++p) ++attempts;
  try {
    const bool added = db.reconcile(webhook_id, reason, attempts, *order);
    log_line("reconciled " + webhook_id + " (" + order->order_id + ", gave up: " + reason + " after " +
             std::to_string(attempts) + " attempts): " + (added ? "credited" : "already credited"));
    consumer.ack(record);
  } catch (const SqliteError& e) {
    consumer.nack(record, std::chrono::milliseconds(0), e.what());
  }
}

}  // namespace orders_example
