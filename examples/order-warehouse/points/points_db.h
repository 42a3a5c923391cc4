#pragma once
// The points service's own database: one credit per notification, whichever way it came.
//
// A credit is keyed by the notification's webhook-id ("orders:<partition>:<offset>", the
// same on every attempt of the notifier and in its give-up record), so an HTTP retry after
// a lost answer, or a give-up record for a notification that in fact got through, credits
// nothing twice. As in the warehouse, the order id is not a unique key: a double credit
// would be visible to the runner's check, not hidden.
//
// Threads: any; one mutex.

#include <cstdint>
#include <mutex>
#include <string>

#include "order.h"
#include "sqlite_db.h"

namespace orders_example {

enum class CreditSource { kWebhook, kReconciled };

class PointsDb {
 public:
  explicit PointsDb(const std::string& path);

  // Credits amount_cents / 100 points to the order's customer once per webhook id.
  // Returns false (and changes nothing) for a webhook id credited before.
  bool credit(const std::string& webhook_id, const Order& order, CreditSource source);

  // A notification the notifier gave up on: listed (once per webhook id), then credited
  // from the record, in one transaction. Returns whether a credit was added.
  bool reconcile(const std::string& webhook_id, const std::string& reason, std::int64_t attempts,
                 const Order& order);

 private:
  bool credit_locked(const std::string& webhook_id, const Order& order, CreditSource source);

  std::mutex mu_;
  Db db_;  // guarded by mu_
};

}  // namespace orders_example
