#include "order_db.h"

namespace orders_example {

OrderDb::OrderDb(const std::string& path) : db_(path) {
  db_.exec(R"(
    CREATE TABLE IF NOT EXISTS orders (
      order_id      TEXT PRIMARY KEY,              -- a second order with the same id fails
      customer      TEXT NOT NULL,
      sku           TEXT NOT NULL,
      quantity      INTEGER NOT NULL CHECK (quantity > 0),  -- the local failure the scenario provokes
      amount_cents  INTEGER NOT NULL,
      txn_id        INTEGER NOT NULL,              -- the half message that announced it
      status        TEXT NOT NULL DEFAULT 'placed',  -- placed | cancelled
      cancel_reason TEXT,
      created_ms    INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rolled_back_transactions (
      txn_id     INTEGER PRIMARY KEY,              -- the check-back answered rollback for it
      order_id   TEXT NOT NULL,
      decided_ms INTEGER NOT NULL
    );
  )");
}

std::string OrderDb::insert(const Order& order, std::uint64_t transaction_id) {
  std::lock_guard lock(mu_);
  try {
    Transaction txn(db_);
    auto tomb = db_.prepare("SELECT 1 FROM rolled_back_transactions WHERE txn_id = ?");
    tomb.bind(1, static_cast<std::int64_t>(transaction_id));
    if (tomb.step()) return "the check-back already answered rollback";
    db_.prepare(
           "INSERT INTO orders (order_id, customer, sku, quantity, amount_cents, txn_id, created_ms) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
        .bind(1, order.order_id)
        .bind(2, order.customer)
        .bind(3, order.sku)
        .bind(4, order.quantity)
        .bind(5, order.amount_cents)
        .bind(6, static_cast<std::int64_t>(transaction_id))
        .bind(7, now_ms())
        .run();
    txn.commit();
    return {};
  } catch (const SqliteError& e) {
    return e.what();
  }
}

txmq::client::LocalTransactionState OrderDb::check(const std::string& order_id, std::uint64_t transaction_id) {
  using txmq::client::LocalTransactionState;
  std::lock_guard lock(mu_);
  Transaction txn(db_);
  auto row = db_.prepare("SELECT txn_id FROM orders WHERE order_id = ?");
  row.bind(1, order_id);
  // A row with another transaction id is the same order placed twice: only the half
  // message whose local transaction inserted it may commit.
  if (row.step() && static_cast<std::uint64_t>(row.int64(0)) == transaction_id) return LocalTransactionState::kCommit;
  db_.prepare("INSERT OR IGNORE INTO rolled_back_transactions (txn_id, order_id, decided_ms) VALUES (?, ?, ?)")
      .bind(1, static_cast<std::int64_t>(transaction_id))
      .bind(2, order_id)
      .bind(3, now_ms())
      .run();
  txn.commit();
  return LocalTransactionState::kRollback;
}

bool OrderDb::cancel(const std::string& order_id, const std::string& reason) {
  std::lock_guard lock(mu_);
  auto st = db_.prepare("UPDATE orders SET status = 'cancelled', cancel_reason = ? WHERE order_id = ? AND status = 'placed'");
  st.bind(1, reason).bind(2, order_id).run();
  return sqlite3_changes(db_.handle()) > 0;
}

}  // namespace orders_example
