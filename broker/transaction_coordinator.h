#pragma once
// The transaction coordinator: half messages prepared by producers, ended by them (commit,
// rollback) or by an operator, and checked back with their producer group when nobody
// ends them in time.
//
// Owns: which connections serve each producer group, which connection prepared each live
// transaction (its check-back goes there first), which checks are awaiting an answer, one
// check-back rate budget per producer group, and where the next prune of idempotent
// producers resumes. Storage holds the transactions themselves; every state change is one
// write operation (see storage/store_txn.cpp).
//
// A check-back round is five named steps: scan what is due, spend the group's rate budget,
// choose the connection, send the check, persist the counts (or park the transactions whose
// checks ran out). At most one round is in flight; the scheduler wakes the next.
//
// Reaches the rest of the broker only through what it is given: connections through the
// Responder, topics through the TopicTable, appends of commits through the AppendSink.
// Lifecycle: made on the loop thread once storage is open and the writer started; start()
// schedules the first round; destroyed after the loop ended.
// Concurrency: loop thread only (its write operations' apply runs on the writer thread and
// touches none of its state).

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "broker/append_sink.h"
#include "broker/broker_probe.h"
#include "broker/config.h"
#include "broker/loop_thread.h"
#include "broker/responder.h"
#include "broker/scheduler.h"
#include "broker/storage/store.h"
#include "broker/storage/writer.h"
#include "broker/topic_table.h"

namespace txmq::broker {

// The transactions' and idempotent producers' share of a retention round: what to prune,
// decided on the loop, applied in the round's write on the writer thread, and reported back.
struct TxnPrune {
  std::uint64_t now_ms = 0;
  std::uint64_t ended_before_ms = 0;      // ended transactions older than this go
  std::uint64_t producers_before_ms = 0;  // idempotent producers silent since before this go
  ProducerId resume_from;  // idempotent producer this prune starts at
  ProducerId resume;       // after apply: where the next one starts
  std::size_t forgotten = 0;  // after apply: producers forgotten
  bool more = false;          // after apply: more was left for the next round

  // Writer thread, inside the retention round's transaction; at most `limit` of each.
  // Starts from scratch when applied again. kStorageError.
  Status apply(storage::WriteTxn& txn, std::size_t limit);
};

class TransactionCoordinator {
 public:
  // Everything given outlives the coordinator. probe may be null (metrics off).
  TransactionCoordinator(const BrokerConfig& config, storage::Store& store, storage::StorageWriter& writer,
                         Scheduler& scheduler, Scheduler::Target target, TopicTable& topics, Responder& responder,
                         AppendSink& appends, BrokerProbe* probe);
  TransactionCoordinator(const TransactionCoordinator&) = delete;
  TransactionCoordinator& operator=(const TransactionCoordinator&) = delete;

  // Schedules the first check-back round from storage. Loop thread; a storage error is
  // logged and no round is scheduled until the next prepare or producer.
  void start();

  // A connection said hello with a producer group / closed. Loop thread.
  void producer_joined(const Connection& conn);
  void producer_left(const Connection& conn);

  // Requests; each answers exactly once, now or when its write completes. Loop thread.
  // Prepare: kInvalidArgument (no valid producer group, no messages), kForbidden (as
  // Produce: check_client_write), kUnknownTopic, kMessageTooLarge, kUnknownPartition, storage errors (kStorageFull, kStorageError).
  void prepare(Connection& conn, RequestId rid, std::span<const std::uint8_t> frame, const wire::Prepare& req);
  // EndTransactions: each end is idempotent and says what it found. kNotAuthorized (for
  // the whole request: an item whose producer group the user may not transact, or resolve
  // when sent as an operator; see authorize_end), storage errors.
  void end(Connection& conn, RequestId rid, const wire::EndTransactions& req);
  // ListTransactions: those of producer groups conn may describe. kInvalidArgument (no
  // such transaction), kNotAuthorized (the one asked for by id), kStorageError.
  void list(Connection& conn, RequestId rid, const wire::ListTransactions& req);

  // The scheduler's wake-up: one check-back round, unless one is in flight (it schedules
  // the next when it completes). Loop thread; storage errors are logged and retried.
  void check_round();

  // The retention round's prune of ended transactions and idempotent producers: what to do
  // (loop thread), and what was done once its write committed (loop thread).
  TxnPrune prune_round(std::uint64_t now_ms) const;
  void pruned(const TxnPrune& done);

 private:
  // Its write operations (storage::WriteOpKind).
  class PrepareOp;
  class EndOp;
  class CheckRoundOp;
  struct CheckRound;
  struct CheckBudget {
    double tokens = 0;         // checks that may go now
    std::uint64_t last_ms = 0; // when tokens were last topped up
  };

  // Whether access may end each item (judged on the producer groups storage holds); per
  // item, whether it did not exist. kNotAuthorized, kStorageError.
  Result<std::vector<bool>> authorize_end(Access& access, std::span<const wire::TxnEnd> items, bool by_operator) const;

  // Write completions.
  void prepared(std::uint64_t conn_id, RequestId rid, std::span<const TxnId> ids,
                std::uint64_t first_check_ms, std::size_t frame_bytes, const Status& status);
  void ended(std::span<const wire::TxnEnd> items, std::span<const storage::TxnEndResult> results,
             const Status& status);

  // The steps of a check-back round.
  bool scan_due(CheckRound& round);
  void check_one(CheckRound& round, TxnId id);
  bool take_check_token(const std::string& producer_group, CheckRound& round);
  Connection* choose_target(TxnId id, const std::string& producer_group,
                            const std::vector<std::uint64_t>& members);
  void send_check(Connection& target, TxnId id, const storage::OwnedTxn& txn);
  void persist_round(CheckRound round);
  void round_persisted(const CheckRound& round, const Status& status);
  std::uint64_t check_backoff_ms(std::uint32_t checks);

  LoopThread loop_thread_;
  const BrokerConfig& config_;
  storage::Store& store_;
  storage::StorageWriter& writer_;
  Scheduler& scheduler_;
  const Scheduler::Target target_;  // the check-back round's wake-ups
  TopicTable& topics_;
  Responder& responder_;
  AppendSink& appends_;
  BrokerProbe* probe_;

  std::map<std::string, std::vector<std::uint64_t>, std::less<>> producer_groups_;  // group -> connection ids
  std::unordered_map<TxnId, std::uint64_t> txn_origin_;  // transaction -> connection that prepared it
  std::unordered_set<TxnId> txn_checked_;                 // checked, not yet answered
  std::map<std::string, CheckBudget, std::less<>> check_budgets_;  // per producer group
  bool checks_in_flight_ = false;          // a round's write is in flight
  std::size_t check_round_robin_ = 0;      // over a group's connections, when the origin is gone
  std::mt19937_64 rng_{std::random_device{}()};  // backoff jitter
  ProducerId producer_prune_resume_;  // idempotent producer the next prune starts at
};

}  // namespace txmq::broker
