#pragma once
// The write operations: what the storage writer applies, one kind per state change.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "broker/storage/store.h"

namespace txmq::broker::storage {

// The complete list of the state changes the writer applies. Nothing else writes to the
// store once it is open: every change is a WriteOp of one of these kinds, committed by the
// writer and counted per kind (txmq_storage_write_ops_total{op=name}). What they change
// reaches followers as the replication log's records (storage/redo.h), key by key, so a
// new state change is a new row here, a new WriteOp class, and a new row in
// docs/ARCHITECTURE.md ("Write operations"); never a new use of an existing kind.
//
//  kind               name (logs, metrics)  class
#define TXMQ_WRITE_OP_KINDS(X)                                                            \
  X(kTick,             "tick")             /* StorageWriter's TickOp (writer.cpp) */       \
  X(kCreateTopic,      "create_topic")     /* TopicLog::CreateTopicOp */                   \
  X(kDeleteTopic,      "delete_topic")     /* TopicLog::DeleteTopicOp */                   \
  X(kProduce,          "produce")          /* TopicLog::ProduceOp */                       \
  X(kRetention,        "retention")        /* TopicLog::RetentionOp */                     \
  X(kInternGroup,      "intern_group")     /* ConsumerGroups::InternGroupOp */             \
  X(kConfigureGroup,   "configure_group")  /* ConsumerGroups::ConfigureGroupOp */          \
  X(kSettle,           "settle")           /* ConsumerGroups::SettleOp */                  \
  X(kReleaseDelayed,   "release_delayed")  /* ConsumerGroups::ReleaseDelayedOp */          \
  X(kRedrive,          "redrive")          /* ConsumerGroups::RedriveOp */                 \
  X(kPrepare,          "prepare")          /* TransactionCoordinator::PrepareOp */         \
  X(kEnd,              "end")              /* TransactionCoordinator::EndOp */             \
  X(kCheckRound,       "check_round")      /* TransactionCoordinator::CheckRoundOp */      \
  X(kBeginEpoch,       "begin_epoch")      /* Replication's BeginEpochOp */                \
  X(kInSync,           "in_sync")          /* Replication's InSyncOp */                    \
  X(kApplyRecords,     "apply_records")    /* Replication's ApplyRecordsOp (a follower) */ \
  X(kTruncate,         "truncate")         /* Replication's TruncateOp (a follower) */ \
  X(kSnapshotBegin,    "snapshot_begin")   /* Replication's SnapshotInstallOp (a follower) */ \
  X(kSnapshotChunk,    "snapshot_chunk")   /* Replication's SnapshotInstallOp (a follower) */ \
  X(kSnapshotFinish,   "snapshot_finish")  /* Replication's SnapshotInstallOp (a follower) */

enum class WriteOpKind : std::uint8_t {
#define TXMQ_WRITE_OP_ENUM(kind, name) kind,
  TXMQ_WRITE_OP_KINDS(TXMQ_WRITE_OP_ENUM)
#undef TXMQ_WRITE_OP_ENUM
};

// How many kinds there are, for tables indexed by kind.
inline constexpr std::size_t kWriteOpKinds = 0
#define TXMQ_WRITE_OP_COUNT(kind, name) +1
    TXMQ_WRITE_OP_KINDS(TXMQ_WRITE_OP_COUNT)
#undef TXMQ_WRITE_OP_COUNT
    ;

// Every kind, in the list's order.
inline constexpr std::array<WriteOpKind, kWriteOpKinds> kAllWriteOpKinds = {
#define TXMQ_WRITE_OP_ALL(kind, name) WriteOpKind::kind,
    TXMQ_WRITE_OP_KINDS(TXMQ_WRITE_OP_ALL)
#undef TXMQ_WRITE_OP_ALL
};

// The kind's stable name ("create_topic"), for logs and the metric's op label.
constexpr std::string_view name(WriteOpKind kind) {
  switch (kind) {
#define TXMQ_WRITE_OP_NAME(kind, name) \
  case WriteOpKind::kind:              \
    return name;
    TXMQ_WRITE_OP_KINDS(TXMQ_WRITE_OP_NAME)
#undef TXMQ_WRITE_OP_NAME
  }
  return "unknown";
}

// One state change, applied by the writer. An op holds the data it applies as plain
// members (what a replication record will carry), plus what its completion needs on the
// loop; it is made on the loop thread and handed to StorageWriter::submit.
class WriteOp {
 public:
  virtual ~WriteOp() = default;
  // Which state change this is. Any thread; constant for the op's life.
  virtual WriteOpKind kind() const = 0;
  // Writer thread, inside the batch's transaction. An error drops the batch's transaction
  // and the batch is applied again, each op in a nested transaction of its own, so the
  // error aborts this op's changes only: apply must start from scratch each time (reset
  // what it computes) and must not touch loop-owned state.
  virtual Status apply(WriteTxn& txn) = 0;
  // Loop thread, once the batch holding the op committed (ok) or failed (the error).
  virtual void complete(const Status& status) = 0;
  // Payload size, to cap how much one transaction carries.
  virtual std::size_t bytes() const { return 0; }
  // Whether complete() waits for the commit gate (StorageWriter::set_commit_gate): true
  // for every op whose completion confirms something to a client. Replication's own
  // bookkeeping (the in-sync set) must not wait for the replicas it is about.
  virtual bool gated() const { return true; }
};

}  // namespace txmq::broker::storage
