// warehouse-service: reserves stock for every committed order, exactly once, and starts
// the compensation for the orders it gives up on.
//
//   warehouse-service --broker HOST:PORT --db stock.db --stock sku-1=1000,sku-2=10
//                     [--tls-ca FILE] [--user NAME --password-file FILE]
//                     [--window 64] [--pause-after-reserve N]
//
// The broker flags are in shared/service_runtime.h. With authentication on, user NAME
// needs: consume on topic orders and group warehouse, produce on topic
// order-cancellations, and dead-letters on group warehouse (for warehouse.dlq).
//
// --stock seeds the stock on the first start only. --pause-after-reserve stops after the
// Nth reservation of this process, committed but not yet acked, for the runner to SIGKILL
// (the redelivery must then change nothing).
// Stdout: "ready" once both consumers are subscribed. SIGTERM or SIGINT: exit 0.

#include <atomic>
#include <sstream>

#include "compensation.h"
#include "service_runtime.h"
#include "stock_db.h"

using namespace orders_example;
using namespace txmq::client;

namespace {

std::map<std::string, std::int64_t> parse_stock(const std::string& spec) {
  std::map<std::string, std::int64_t> stock;
  std::stringstream ss(spec);
  for (std::string item; std::getline(ss, item, ',');) {
    auto eq = item.find('=');
    if (eq != std::string::npos) stock[item.substr(0, eq)] = std::stoll(item.substr(eq + 1));
  }
  return stock;
}

// One committed order. Runs on the `orders` consumer's I/O thread. The SQLite transaction
// is short (one fsync), so it is done right here rather than on a worker pool.
void on_order(StockDb& stock, Consumer& consumer, const Delivery& d, std::atomic<long long>& reserved,
              long long pause_after) {
  auto order = order_from_json(d.body);
  if (!order) {
    consumer.terminate(d, "not an order");  // will never succeed: straight to the dead letters
    return;
  }
  const std::string message_id = d.topic + "/" + std::to_string(d.partition) + "/" + std::to_string(d.offset);
  ReserveOutcome outcome;
  try {
    outcome = stock.reserve(message_id, *order);
  } catch (const SqliteError& e) {
    consumer.nack(d, std::chrono::milliseconds(0), e.what());
    return;
  }
  switch (outcome) {
    case ReserveOutcome::kReserved:
      if (++reserved == pause_after) pause_for_kill("after-reserve " + order->order_id);
      consumer.ack(d);
      return;
    case ReserveOutcome::kDuplicate:
      log_line("redelivery of " + message_id + " (" + order->order_id + ", delivery " +
               std::to_string(d.delivery_count) + "): already reserved, nothing changed");
      consumer.ack(d);
      return;
    case ReserveOutcome::kAlreadyRejected:
      consumer.ack(d);
      return;
    case ReserveOutcome::kOutOfStock:
      // Retried on the group's schedule (stock may arrive); past the group's maximum the
      // broker dead-letters it and Compensation takes over.
      consumer.nack(d, std::chrono::milliseconds(0),
                    "out of stock: " + order->sku + " x" + std::to_string(order->quantity));
      return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  block_stop_signals();
  set_service_name("warehouse");
  Flags flags(argc, argv);
  const BrokerSettings broker = broker_settings(flags);
  StockDb stock(flags.require("db"), parse_stock(flags.get("stock", "")));
  const long long pause_after = flags.number("pause-after-reserve", 0);
  std::atomic<long long> reserved{0};

  auto po = client_options<Producer::Options>(broker, "warehouse-cancellations");
  po.idempotent = true;  // a resend after a reconnect is stored once
  Producer cancellations(po);
  Compensation compensation(stock, cancellations);

  auto oo = client_options<Consumer::Options>(broker, "warehouse");
  oo.topic = std::string(kOrdersTopic);
  oo.group = std::string(kWarehouseGroup);
  // A small window: a crash returns at most this many deliveries, each with one more
  // failed delivery counted against the group's maximum.
  oo.window = static_cast<std::uint32_t>(flags.number("window", 64));
  Consumer orders(oo, [&](Consumer& self, const Delivery& d) { on_order(stock, self, d, reserved, pause_after); });

  auto dlo = client_options<Consumer::Options>(broker, "warehouse-compensation");
  dlo.topic = dead_letter_topic(kWarehouseGroup);
  dlo.group = "warehouse-compensation";
  Consumer dead_letters(dlo, [&](Consumer& self, const Delivery& d) { compensation.on_dead_letter(self, d); });

  for (Consumer* c : {&orders, &dead_letters}) {
    auto st = c->wait_subscribed(std::chrono::seconds(30));
    // The broker creates warehouse.dlq on the group's first dead letter (no client may):
    // until then its consumer keeps asking, and receives from the first letter on.
    if (!st && c == &dead_letters && st.error().code == txmq::ErrorCode::kUnknownTopic) continue;
    if (!st) {
      log_line("cannot subscribe: " + st.error().describe());
      return 1;
    }
  }
  say("ready");
  wait_for_stop_signal();
  // The dead-letter handler sends through the producer, and the producer's callbacks ack
  // on the dead-letter consumer: stop new deliveries, then let the sends finish, so that
  // no callback is left to run while the objects are destroyed.
  orders.pause();
  dead_letters.pause();
  (void)cancellations.flush(std::chrono::seconds(5));
  (void)orders.flush_acks(std::chrono::seconds(5));
  (void)dead_letters.flush_acks(std::chrono::seconds(5));
  log_line("stopped");
  return 0;
}
