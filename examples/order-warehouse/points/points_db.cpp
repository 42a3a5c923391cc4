#include "points_db.h"

namespace orders_example {

PointsDb::PointsDb(const std::string& path) : db_(path) {
  db_.exec(R"(
    CREATE TABLE IF NOT EXISTS credits (
      webhook_id  TEXT PRIMARY KEY,   -- the idempotency key: one credit per notification
      order_id    TEXT NOT NULL,
      customer    TEXT NOT NULL,
      points      INTEGER NOT NULL,
      source      TEXT NOT NULL,      -- webhook | reconciled
      credited_ms INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS gave_up (
      webhook_id  TEXT PRIMARY KEY,   -- from the notifier's failure topic
      order_id    TEXT NOT NULL,
      reason      TEXT NOT NULL,      -- max_attempts | gone
      attempts    INTEGER NOT NULL,
      recorded_ms INTEGER NOT NULL
    );
  )");
}

bool PointsDb::credit_locked(const std::string& webhook_id, const Order& order, CreditSource source) {
  db_.prepare("INSERT OR IGNORE INTO credits (webhook_id, order_id, customer, points, source, credited_ms) "
              "VALUES (?, ?, ?, ?, ?, ?)")
      .bind(1, webhook_id)
      .bind(2, order.order_id)
      .bind(3, order.customer)
      .bind(4, order.amount_cents / 100)
      .bind(5, source == CreditSource::kWebhook ? "webhook" : "reconciled")
      .bind(6, now_ms())
      .run();
  return sqlite3_changes(db_.handle()) > 0;
}

bool PointsDb::credit(const std::string& webhook_id, const Order& order, CreditSource source) {
  std::lock_guard lock(mu_);
  Transaction txn(db_);
  const bool added = credit_locked(webhook_id, order, source);
  txn.commit();
  return added;
}

bool PointsDb::reconcile(const std::string& webhook_id, const std::string& reason, std::int64_t attempts,
                         const Order& order) {
  std::lock_guard lock(mu_);
  Transaction txn(db_);
  db_.prepare("INSERT OR IGNORE INTO gave_up (webhook_id, order_id, reason, attempts, recorded_ms) VALUES (?, ?, ?, ?, ?)")
      .bind(1, webhook_id)
      .bind(2, order.order_id)
      .bind(3, reason)
      .bind(4, attempts)
      .bind(5, now_ms())
      .run();
  const bool added = credit_locked(webhook_id, order, CreditSource::kReconciled);
  txn.commit();
  return added;
}

}  // namespace orders_example
