#include "place_order.h"

#include "service_runtime.h"

namespace orders_example {

using txmq::client::LocalTransactionState;
using txmq::client::TxnState;

PlaceResult OrderPlacer::place(const Order& order) {
  txmq::client::Message message;
  message.key = order.order_id;  // the warehouse and the check-back find the order by it
  message.headers.push_back({"content-type", "application/json"});  // the notifier forwards it
  message.body = to_json(order);

  std::string local_error;
  auto result = producer_.send_in_transaction(
      kOrdersTopic, std::move(message),
      [&](std::uint64_t txn_id) {
        if (++prepared_ == crash_.pause_after_prepare) pause_for_kill("after-prepare " + order.order_id);
        local_error = db_.insert(order, txn_id);
        if (!local_error.empty()) return LocalTransactionState::kRollback;
        if (++committed_locally_ == crash_.pause_after_local_commit)
          pause_for_kill("after-local-commit " + order.order_id);
        return LocalTransactionState::kCommit;
      },
      std::chrono::milliseconds(5000));

  if (!result) return {PlaceOutcome::kUnavailable, result.error().describe()};
  switch (result->state) {
    case TxnState::kCommitted: return {PlaceOutcome::kCommitted, {}};
    case TxnState::kRolledBack: return {PlaceOutcome::kRolledBack, local_error};
    default:
      // The end did not reach the broker. The database already decided; the check-back
      // will carry that decision to the broker.
      if (!local_error.empty()) return {PlaceOutcome::kRolledBack, local_error};
      return {PlaceOutcome::kPending, "commit not confirmed; the check-back will settle it"};
  }
}

}  // namespace orders_example
