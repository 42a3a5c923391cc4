#include "stock_db.h"

namespace orders_example {

StockDb::StockDb(const std::string& path, const std::map<std::string, std::int64_t>& initial_stock) : db_(path) {
  db_.exec(R"(
    CREATE TABLE IF NOT EXISTS stock (
      sku      TEXT PRIMARY KEY,
      on_hand  INTEGER NOT NULL CHECK (on_hand >= 0),  -- never negative, whatever the code does
      initial  INTEGER NOT NULL                        -- for the runner's balance check
    );
    CREATE TABLE IF NOT EXISTS reservations (
      message_id  TEXT PRIMARY KEY,   -- orders/<partition>/<offset>: the idempotency key
      order_id    TEXT NOT NULL,
      sku         TEXT NOT NULL,
      quantity    INTEGER NOT NULL,
      reserved_ms INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rejected_orders (
      order_id    TEXT PRIMARY KEY,   -- dead-lettered and not reserved: to be cancelled
      reason      TEXT NOT NULL,
      rejected_ms INTEGER NOT NULL
    );
  )");
  std::lock_guard lock(mu_);
  Transaction txn(db_);
  if (db_.query_int("SELECT COUNT(*) FROM stock").value_or(0) == 0) {
    for (const auto& [sku, units] : initial_stock)
      db_.prepare("INSERT INTO stock (sku, on_hand, initial) VALUES (?, ?, ?)").bind(1, sku).bind(2, units).bind(3, units).run();
  }
  txn.commit();
}

ReserveOutcome StockDb::reserve(const std::string& message_id, const Order& order) {
  std::lock_guard lock(mu_);
  Transaction txn(db_);
  if (db_.query_int("SELECT 1 FROM reservations WHERE message_id = ?", message_id)) return ReserveOutcome::kDuplicate;
  if (db_.query_int("SELECT 1 FROM rejected_orders WHERE order_id = ?", order.order_id))
    return ReserveOutcome::kAlreadyRejected;
  const auto on_hand = db_.query_int("SELECT on_hand FROM stock WHERE sku = ?", order.sku).value_or(0);
  if (on_hand < order.quantity) return ReserveOutcome::kOutOfStock;
  db_.prepare("UPDATE stock SET on_hand = on_hand - ? WHERE sku = ?").bind(1, order.quantity).bind(2, order.sku).run();
  db_.prepare("INSERT INTO reservations (message_id, order_id, sku, quantity, reserved_ms) VALUES (?, ?, ?, ?, ?)")
      .bind(1, message_id)
      .bind(2, order.order_id)
      .bind(3, order.sku)
      .bind(4, order.quantity)
      .bind(5, now_ms())
      .run();
  txn.commit();
  return ReserveOutcome::kReserved;
}

GiveUpOutcome StockDb::give_up(const std::string& order_id, const std::string& reason) {
  std::lock_guard lock(mu_);
  Transaction txn(db_);
  if (db_.query_int("SELECT 1 FROM reservations WHERE order_id = ?", order_id)) return GiveUpOutcome::kFulfilled;
  db_.prepare("INSERT OR IGNORE INTO rejected_orders (order_id, reason, rejected_ms) VALUES (?, ?, ?)")
      .bind(1, order_id)
      .bind(2, reason)
      .bind(3, now_ms())
      .run();
  txn.commit();
  return GiveUpOutcome::kRejected;
}

}  // namespace orders_example
