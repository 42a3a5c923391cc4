#pragma once
// The order service's own database: the orders, and the decisions of the check-back.
//
// The local transaction and the broker's check-back race: the check can arrive while the
// local transaction is still running (a slow disk, a paused process). Both go through
// this class, each as one SQLite transaction, so they are ordered: if the order row is
// there first, the check answers commit; if the check comes first, it answers rollback
// and leaves a tombstone for the transaction id, and the late local transaction sees the
// tombstone and fails. Whichever comes first wins, and both sides agree.
//
// Threads: every method may be called from any thread (HTTP workers, the producer's I/O
// thread for checks, the cancellation consumer's I/O thread); one mutex serialises them.

#include <cstdint>
#include <mutex>
#include <string>

#include "order.h"
#include "sqlite_db.h"
#include "txmq/client.h"

namespace orders_example {

class OrderDb {
 public:
  explicit OrderDb(const std::string& path);

  // The local transaction of placing an order: inserts it with the broker's transaction
  // id. Returns an empty string on commit, else why it rolled back (a constraint such as
  // quantity > 0, a duplicate order id, or a check-back that already decided).
  std::string insert(const Order& order, std::uint64_t transaction_id);

  // The answer to a check-back: commit when the order row carries this transaction id,
  // otherwise rollback (and the tombstone described above).
  txmq::client::LocalTransactionState check(const std::string& order_id, std::uint64_t transaction_id);

  // Compensation: a placed order becomes cancelled. Idempotent: returns false (and
  // changes nothing) when the order is unknown or already cancelled.
  bool cancel(const std::string& order_id, const std::string& reason);

 private:
  std::mutex mu_;
  Db db_;  // guarded by mu_
};

}  // namespace orders_example
