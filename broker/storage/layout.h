#pragma once
// The layout of a store: its key spaces (LMDB named databases), the bytes of each key and
// each value, and the version that names this layout. The one place it is written down;
// keys.h encodes the keys, schema/storage.fbs declares the FlatBuffers tables and
// txn_records.h the two fixed records of transactions. store_layout_test writes a store
// from this table alone, byte by byte, and opens it with Store.
//
// Every integer in a key or a fixed value is big-endian, so that LMDB's byte order is the
// integers' order. "u32", "u64": unsigned, big-endian. A FlatBuffers value is verified
// before it is read (see store_internal.h's verified()).
//
//   key space   key                                  value
//   ----------  -----------------------------------  -----------------------------------------
//   meta        "format"                             u32 layout version (kLayoutVersion)
//               "next_topic_id", "next_group_id",    u32 the next value to hand out (1 when the
//               "next_delayed_seq", "next_txn_id"    key is absent)
//               "commit_ticks"                       u32, rewritten by WriteTxn::touch() only
//               "log_base"                           u64 the log index a snapshot's install
//                                                    left the store at (store_snapshot.cpp)
//               "snapshot_pending"                   empty: a snapshot's install began and
//                                                    has not finished
//   topics      topic name (bytes, no terminator)    TopicRecord
//   partitions  u32 topic, u32 partition (8 bytes)   u64 next offset, u64 bytes of the
//                                                    partition's stored messages (16 bytes)
//   log         u32 topic, u32 partition,            StoredMessage
//               u64 offset (16 bytes)
//   groups      group name (bytes)                   u32 group id
//   cursors     u32 group, u32 topic,                u64 ack floor, u64 delivered-up-to
//               u32 partition (12 bytes)             (16 bytes)
//   acked       u32 group, u32 topic, u32 partition, empty: an ack at or above the floor
//               u64 offset (20 bytes)
//   pending     as acked (20 bytes)                  PendingRecord
//   delayed     u64 due ms, u64 sequence (16 bytes)  DelayedRecord (the sequence comes from
//                                                    meta "next_delayed_seq")
//   policies    "g:" + group name, "t:" + topic      PolicyRecord (built and verified by
//               name                                 broker/group_policy.cpp)
//   txn_open    u64 transaction id (8 bytes)         HalfRecord (txn_records.h): prepared
//   txn_parked  u64 transaction id                   HalfRecord: parked
//   txn_ended   u64 transaction id                   EndedRecord (txn_records.h): committed
//                                                    or rolled back
//   txn_checks  u64 next check ms, u64 first id      u64 last id: a CheckSpan (store.h)
//               (16 bytes)
//   producers   u64 producer id (8 bytes)            ProducerRecord
//   replog      u64 index (8 bytes), from 1          a replication record (redo.h): the
//                                                    changes of one committed transaction;
//                                                    each broker's own, never a record's change
//   epochs      u64 epoch (8 bytes)                  u64 index of the epoch's first record,
//                                                    then the leader's id (bytes)
//   undo        u64 index (8 bytes)                  the changes that undo record `index` of
//                                                    replog (redo.h's bytes, each change the
//                                                    inverse of one of the record's, applied
//                                                    last first); kept while the record may
//                                                    still be truncated; each broker's own
//
// Readers of the 16-byte values (partitions, cursors) take a missing second u64 as 0.
// A transaction id is the meta counter "next_txn_id" shifted left 20 bits, or'ed with the
// low 20 bits of the prepare time in ms, so ids grow with time.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace txmq::broker::storage {

// Bumped whenever a key or value layout above changes; a broker refuses a store of
// another version. 2: transactions kept by state (txn_open, txn_parked, txn_ended); checks
// by span (txn_checks). 3: the replication log (replog, epochs). 4: undo images (undo).
// A store of version 2 or 3 is upgraded in place when it opens: the key spaces it lacks
// are added, empty (kKeySpaceSince).
inline constexpr std::uint32_t kLayoutVersion = 4;
inline constexpr std::uint32_t kOldestUpgradable = 2;

// The key spaces of the table above, in its order: the one list of their names. Store opens
// them (store.cpp) and `--check-store` walks them (store_check.cpp) from tables that are
// checked against this one when they compile, so a new key space is added here first.
inline constexpr std::array<std::string_view, 18> kKeySpaces = {
    "meta",    "topics",   "partitions", "log",       "groups",     "cursors",    "acked",     "pending",
    "delayed", "policies", "txn_open",   "txn_parked", "txn_ended", "txn_checks", "producers", "replog",
    "epochs",  "undo"};
// The layout version that added each key space of kKeySpaces.
inline constexpr std::array<std::uint32_t, 18> kKeySpaceSince = {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 4};

// The key spaces a replication record never names: the log itself and its undo images,
// which each broker writes (and trims) on its own. Every other key space is replicated.
inline constexpr std::size_t kLogSpace = 3;
inline constexpr std::size_t kReplogSpace = 15;
inline constexpr std::size_t kEpochsSpace = 16;
inline constexpr std::size_t kUndoSpace = 17;
static_assert(kKeySpaces[kLogSpace] == "log" && kKeySpaces[kReplogSpace] == "replog" && kKeySpaces[kEpochsSpace] == "epochs" &&
              kKeySpaces[kUndoSpace] == "undo");
// True for a key space that replication copies: every one but the log and its undo images.
constexpr bool replicated_space(std::size_t space) { return space != kReplogSpace && space != kUndoSpace; }

// True when `table`'s entries are named as kKeySpaces, one for one and in order.
template <typename Table>
constexpr bool names_every_key_space(const Table& table) {
  if (std::size(table) != kKeySpaces.size()) return false;
  for (std::size_t i = 0; i < kKeySpaces.size(); ++i)
    if (std::string_view(table[i].name) != kKeySpaces[i]) return false;
  return true;
}

// The meta key of the layout version.
inline constexpr std::string_view kLayoutMarkerKey = "format";
// The meta key WriteTxn::touch() rewrites (the writer's tick).
inline constexpr std::string_view kCommitTicksKey = "commit_ticks";
// The meta keys of a snapshot's install (store_snapshot.cpp).
inline constexpr std::string_view kLogBaseKey = "log_base";
inline constexpr std::string_view kSnapshotPendingKey = "snapshot_pending";
// Meta keys that are each broker's own, like the log: never recorded, never sent in a
// snapshot, left out of digests (a follower that installed a snapshot has a log base its
// leader has not).
constexpr bool own_meta_key(std::string_view key) {
  return key == kLayoutMarkerKey || key == kLogBaseKey || key == kSnapshotPendingKey || key == kCommitTicksKey;
}

}  // namespace txmq::broker::storage
