#include "compensation.h"

#include "service_runtime.h"

namespace orders_example {
namespace {

// The last value of a header (txmq-reason repeats, oldest first), or "".
std::string last_header(const txmq::client::Delivery& d, const std::string& name) {
  std::string value;
  for (const auto& h : d.headers)
    if (h.name == name) value = h.value;
  return value;
}

}  // namespace

void Compensation::on_dead_letter(txmq::client::Consumer& consumer, const txmq::client::Delivery& letter) {
  const std::string order_id = letter.key;
  const std::string reason = last_header(letter, txmq::kReasonHeader);
  log_line("ALARM order " + order_id + " dead-lettered by group " + last_header(letter, txmq::kGroupHeader) + " after " +
           last_header(letter, txmq::kDeliveryCountHeader) + " deliveries (" + last_header(letter, txmq::kOriginMessageIdHeader) +
           "): " + (reason.empty() ? "no reason given" : reason));

  GiveUpOutcome outcome;
  try {
    outcome = stock_.give_up(order_id, reason.empty() ? "dead-lettered" : reason);
  } catch (const SqliteError& e) {
    consumer.nack(letter, std::chrono::milliseconds(0), e.what());
    return;
  }
  if (outcome == GiveUpOutcome::kFulfilled) {
    log_line("order " + order_id + " was reserved before its ack was lost: nothing to compensate");
    consumer.ack(letter);
    return;
  }

  txmq::client::Message m;
  m.key = order_id;
  m.body = to_json(Cancellation{order_id, reason.empty() ? "dead-lettered" : reason});
  // The dead letter is acked only once the cancellation is durable: a crash in between
  // repeats the cancellation rather than losing it.
  cancellations_.send_async(kCancellationsTopic, std::move(m),
                            [&consumer, letter](const txmq::Result<txmq::client::SendReceipt>& r) {
                              if (r) consumer.ack(letter);
                              else consumer.nack(letter, std::chrono::milliseconds(500), r.error().describe());
                            });
}

}  // namespace orders_example
