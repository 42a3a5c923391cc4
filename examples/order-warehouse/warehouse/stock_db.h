#pragma once
// The warehouse's own database: stock on hand, reservations, and the orders it gave up on.
//
// Idempotency: a reservation row is keyed by the id of the message that caused it
// ("orders/<partition>/<offset>") and is written in the same SQLite transaction that takes
// the stock. A redelivered message (the ack was lost to a crash) finds its row and changes
// nothing. The order id is deliberately *not* a unique key here, so that a double
// reservation would show up in the runner's check instead of being hidden by a constraint.
//
// Threads: any; one mutex serialises the consumers of `orders` and of `warehouse.dlq`,
// which is what makes reserve() and give_up() agree on every order (see give_up).

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "order.h"
#include "sqlite_db.h"

namespace orders_example {

enum class ReserveOutcome {
  kReserved,         // stock taken now
  kDuplicate,        // this message was handled before: nothing changed
  kAlreadyRejected,  // the order was given up on (dead-lettered) before: nothing changed
  kOutOfStock,       // not enough on hand: nothing changed, retry later
};

enum class GiveUpOutcome {
  kRejected,   // no reservation: the order is rejected (now or before) and must be cancelled
  kFulfilled,  // a reservation exists (processed, but the ack was lost): a false alarm
};

class StockDb {
 public:
  // Seeds `initial_stock` (sku -> units) only on the first start (an empty stock table).
  StockDb(const std::string& path, const std::map<std::string, std::int64_t>& initial_stock);

  ReserveOutcome reserve(const std::string& message_id, const Order& order);

  // The order's message was dead-lettered. If no reservation exists, records the order as
  // rejected — after which reserve() refuses it, so a later redelivery or redrive cannot
  // take stock for an order that is being cancelled.
  GiveUpOutcome give_up(const std::string& order_id, const std::string& reason);

 private:
  std::mutex mu_;
  Db db_;  // guarded by mu_
};

}  // namespace orders_example
