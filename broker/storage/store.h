#pragma once
// The broker's storage: one LMDB environment with one named database per key space.
// Protocol code never touches LMDB; it calls this interface.
//
// Lifecycle: open() creates or opens the environment; the Store lives until the broker
// exits. Concurrency: reads (the const methods) run on the loop thread, each in its own
// short read transaction that is never held across a callback. Writes happen only through
// WriteTxn, on the storage writer thread. LMDB serialises the two sides itself.
// Limits: the data file grows as needed. Writes that store new data (a producer's
// messages, half messages, delayed messages, new topics) are held to
// StoreOptions::max_bytes of live pages and get kStorageFull past it; reads go on working.
// LMDB's map is larger by reserve_bytes(max_bytes), because LMDB copies pages on write and
// so needs free pages even to delete: without room beyond the limit a store filled to it
// could not delete a topic or trim, and only a larger map would free it. Verdicts and
// transaction ends that grow the store (acks, retries, dead letters, committed half
// messages) may use the first half of the reserve, so that a full store still records what
// consumers decided; writes that free space (deleting a topic, retention, pruning) are
// never refused for room and have the whole reserve. The writer applies the limits around
// each op (WriteTxn::begin_op, WriteTxn::check_room); see StorageUsage for "live".

#include <lmdb.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "broker/storage/keys.h"
#include "broker/storage/redo.h"
#include "common/result.h"
#include "storage_generated.h"

namespace txmq::broker::storage {

enum class SyncMode {
  kDurable,  // every commit is fsynced before it completes: a confirm means on disk
  // each commit syncs its data pages but not the meta page that makes them current; the
  // writer syncs that every relaxed_sync_interval_ms. A power loss may lose the commits of
  // that window, never the store (LMDB's MDB_NOMETASYNC).
  kRelaxed,
};

struct StoreOptions {
  std::string dir;
  std::uint64_t max_bytes = 64ull << 30;  // storage.max_size: live bytes new data may take
  SyncMode sync = SyncMode::kDurable;
  // Room for the replication log beyond max_bytes and its reserve (replication.log_max_bytes
  // on a replicated broker; 0 without replication, whose log keeps only its newest record).
  // The log is not held to max_bytes: it has its own limit (set_log_retention).
  std::uint64_t log_bytes = 0;
};

struct TopicMeta {
  TopicId id;
  std::string name;
  std::uint32_t partitions = 1;
  std::uint64_t created_at_ms = 0;
  std::uint64_t retention_ms = 0;     // 0: the broker's default
  std::uint64_t retention_bytes = 0;  // 0: the broker's default
};

// A transaction's state as storage keeps it: the first byte of its HalfRecord or
// EndedRecord (txn_records.h), and which key space holds it. The values are the bytes on
// disk: never renumber them. They happen to equal wire::TxnState's; the coordinator still
// converts between the two by name, at the edge.
enum class TxnState : std::uint8_t {
  kPrepared = 0,    // in txn_open: a half message, checked back when due
  kCommitted = 1,   // in txn_ended: appended (or kept until its deliver-at time)
  kRolledBack = 2,  // in txn_ended: discarded
  kParked = 3,      // in txn_parked: checks ran out, waits for an operator
};

struct PartitionBounds {
  Offset first;  // oldest offset still stored (== next when the partition is empty)
  Offset next;   // the offset the next appended message gets
};

// A message that failed at least once in a group.
struct PendingState {
  DeliveryCount delivery_count;      // deliveries so far
  std::uint64_t due_ms = 0;          // when it may be delivered again
  std::vector<std::string> reasons;  // nack and terminate reasons so far, oldest first
};

// A group's durable position in one partition.
struct CursorState {
  Offset ack_floor;                        // every offset below is acknowledged
  Offset delivered_upto;                   // every offset below was delivered at least once
  std::set<Offset> acked_above;            // acknowledged offsets at or above the floor
  std::map<Offset, PendingState> pending;  // failed at least once, not yet resolved
};

// A PendingRecord copied out of the map.
struct OwnedPending {
  std::uint32_t delivery_count = 0;
  std::uint64_t first_delivery_ms = 0;
  std::uint64_t last_delivery_ms = 0;
  std::uint64_t due_ms = 0;
  std::vector<std::string> reasons;
};

// A message copied out of the map, to outlive the transaction that read it.
struct OwnedMessage {
  std::uint64_t timestamp_ms = 0;
  std::string key;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool dead_letter = false;  // written by append_dead_letter (StoredMessage.dead_letter)
};

// One message read from a log; the views point into LMDB's map and are valid only during
// the visitor call that received them.
struct LogEntry {
  Offset offset;
  const StoredMessage* message;
};

// A transaction copied out of the map.
struct OwnedTxn {
  TxnId id;
  TxnState state = TxnState::kPrepared;
  TopicId topic;
  PartitionId partition;
  std::string producer_group;
  std::optional<OwnedMessage> message;  // while it has not ended
  std::uint64_t deliver_at_ms = 0;
  std::uint64_t created_ms = 0;
  std::uint32_t checks = 0;
  std::uint64_t next_check_ms = 0;
  std::uint64_t ended_ms = 0;
  std::string resolution;
  Offset offset;
};

struct TxnEndResult {
  bool found = false;
  TxnState state = TxnState::kPrepared;  // after the request; kPrepared when not found
  bool changed = false;
  TopicId topic;
  PartitionId partition;
  std::optional<Offset> appended;     // a commit appended it here
  std::optional<std::uint64_t> delayed_until;  // a commit of a delayed message
};

// A span of transactions prepared together and due for a check at the same time: every
// prepared transaction with an id in [first_id, last_id] whose next check is due_ms. Ending
// a transaction leaves its span alone (an end costs no write here); a span with no prepared
// transaction left is dropped by the check-back round that comes across it.
struct CheckSpan {
  std::uint64_t due_ms = 0;  // when to check them; also the key's first half
  TxnId first_id;            // the key's second half
  TxnId last_id;
};

// One page of due check-backs.
struct DueChecks {
  std::vector<std::pair<TxnId, std::uint64_t>> due;  // (id, due time) of prepared ones, earliest first
  std::vector<CheckSpan> empty;  // due spans with no prepared transaction left
  // Where the next page starts, when this one stopped at its size; nullopt: nothing more is due.
  std::optional<std::pair<TxnId, std::uint64_t>> resume;
};

struct TxnCounts {
  std::uint64_t prepared = 0;
  std::uint64_t parked = 0;
  std::uint64_t oldest_prepared_ms = 0;  // creation time of the oldest prepared one; 0: none
};

struct StorageUsage {
  // Live pages times the page size: every database's branch, leaf and overflow pages, the
  // free list's own pages and the two meta pages. Pages on LMDB's free list are not
  // counted (LMDB reuses them), so this goes down when a delete commits.
  std::uint64_t used_bytes = 0;
  std::uint64_t max_bytes = 0;   // storage.max_size: what new data is held to
  std::uint64_t map_bytes = 0;   // LMDB's map: max_bytes plus the reserve
  std::uint64_t file_bytes = 0;  // the data file's end: the highest page used so far
};

// What a write that stores a message or a topic is, for the limit it is held to.
enum class Growth {
  kNewData,  // a producer's or an operator's: held to storage.max_size
  kVerdict,  // what a verdict or a transaction's end stores (a dead letter, a committed half
             // message, a delayed message released): may go on into the reserve's first half
};

// Where the replication log stands.
struct LogPosition {
  std::uint64_t last_index = 0;  // the newest record's; 0 while the log is empty
  std::uint64_t epoch = 0;       // the newest epoch begun; 0 before the first
};

// One record of the replication log: its index and its bytes (redo.h).
struct LogRecord {
  std::uint64_t index = 0;
  std::vector<std::uint8_t> bytes;
};

// What WriteTxn::truncate_log did: records first..last dropped and undone, or (undone
// false) nothing, because record `missing` has no undo image.
struct Truncation {
  std::uint64_t first = 0, last = 0;  // 0, 0: the log ended before `from`
  bool undone = true;
  std::uint64_t missing = 0;
  std::uint64_t count() const { return last >= first && first != 0 ? last - first + 1 : 0; }
};

// An epoch of leadership: its number, the index of its first record, its leader's id.
struct EpochStart {
  std::uint64_t epoch = 0;
  std::uint64_t first_index = 0;
  std::string leader;
};

struct KeySpaceDigest {
  std::string key_space;
  std::uint64_t entries = 0;
  std::string sha256;  // lowercase hex
};

class WriteTxn;
class Snapshot;     // store_snapshot.cpp
struct HalfRecord;  // txn_records.h

class Store {
 public:
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  // Closes the environment. Every WriteTxn must be gone (committed or dropped) first.
  ~Store();

  // How each function's errors are listed below. "LMDB's" stands for LMDB's own failures,
  // mapped once (store_internal.h, lmdb_error): kStorageFull when the map or the disk is
  // full, kInvalidArgument for a key LMDB refuses (empty or over 511 bytes), kStorageError
  // for anything else (I/O, a damaged page, a full reader table). "A damaged record" is
  // kStorageError naming the key space of a record that does not decode (layout.h).

  // Opens the environment in options.dir, creating a new store only where none was ever
  // committed, and makes the directory entries of the new files durable (fsync of the
  // directory, and of the parent of each directory it created). The caller owns the Store.
  // Thread: the broker's main thread, before the loop and the writer start.
  // Errors: kStorageError when the directory cannot be created or synced, the files cannot
  // be opened or mapped, the data was written with another layout version, or the store
  // is damaged: a key space or the layout marker of a store that has committed is missing
  // (never replaced by an empty one); LMDB's.
  static Result<std::unique_ptr<Store>> open(const StoreOptions& options);
  // True when open() created a new, empty store rather than opening one. Thread: any.
  bool created() const { return created_; }

  // -- reads: loop thread; each in a short read transaction of its own ------------------

  // Every topic, in name order. Errors: a damaged record; LMDB's.
  Result<std::vector<TopicMeta>> load_topics() const;
  // Every interned group name with its id, in name order. Errors: a damaged record (an id
  // that is not 4 bytes); LMDB's.
  Result<std::vector<std::pair<std::string, GroupId>>> load_groups() const;
  // The partition's oldest stored and next offsets; {0, 0} for a partition that does not
  // exist. Errors: LMDB's.
  Result<PartitionBounds> partition_bounds(TopicId topic, PartitionId partition) const;
  // The group's cursor in the partition with its acks above the floor and its pending
  // messages; a cursor never written reads as all zero and empty. Errors: a damaged record
  // (pending); LMDB's.
  Result<CursorState> load_cursor(GroupId group, TopicId topic, PartitionId partition) const;

  // Calls visit for each stored message of the partition with offset >= from, in offset
  // order, until it returns false or `max` messages were visited. Returns how many were
  // visited. The entry's message lives only during its visit call.
  // Errors: a damaged record (reading stops at it; the messages before were visited); LMDB's.
  Result<std::size_t> read_log(TopicId topic, PartitionId partition, Offset from, std::size_t max,
                               const std::function<bool(const LogEntry&)>& visit) const;

  // Reads one message, as read_log does. Errors: kInvalidArgument when it is not stored
  // (never was, or deleted); a damaged record; LMDB's.
  Result<std::size_t> read_one(TopicId topic, PartitionId partition, Offset offset,
                               const std::function<void(const LogEntry&)>& visit) const;

  // Live bytes in the latest commit, and the limits. Never fails: without a read
  // transaction (the reader table is full) used_bytes is the data file's end.
  StorageUsage usage() const;

  // The room LMDB's map has beyond max_bytes: max(1 MiB, max_bytes / 32), at least what
  // deleting everything needs to record the pages it frees (8 bytes a page, 1/512 of it)
  // with room to spare. Thread: any.
  static std::uint64_t reserve_bytes(std::uint64_t max_bytes);

  // The due time of the earliest delayed message; nullopt when there is none.
  // Errors: LMDB's.
  Result<std::optional<std::uint64_t>> next_delayed_ms() const;
  // Prepared transactions whose next check is due at or before now_ms, earliest first, and
  // the due spans found empty; at most max of each. Starts after `after` (a previous page's
  // resume) when given. Errors: LMDB's.
  Result<DueChecks> due_checks(std::uint64_t now_ms, std::size_t max,
                               std::optional<std::pair<TxnId, std::uint64_t>> after = std::nullopt) const;
  // The earliest next check of a span, if any (its transactions may all have ended since).
  // Errors: LMDB's.
  Result<std::optional<std::uint64_t>> next_check_ms() const;
  // A transaction in any state, with its message while it has not ended; nullopt when
  // there is no such one (never was, or pruned). Errors: a damaged record; LMDB's.
  Result<std::optional<OwnedTxn>> read_txn(TxnId id) const;
  // Up to max transactions, newest first, optionally only those in one state, without
  // their messages. Records that do not decode are left out.
  // Errors: LMDB's.
  Result<std::vector<OwnedTxn>> list_txns(std::optional<TxnState> state, std::size_t max) const;
  // Prepared and parked counts and the oldest prepared one's age. Never fails: zeros when
  // the read does.
  TxnCounts txn_counts() const;
  // Idempotent producers remembered (see WriteTxn::prune_producers). Never fails: 0 when
  // the read does.
  std::uint64_t producer_count() const;

  // The topics a group has a cursor on, in id order. Errors: LMDB's.
  Result<std::vector<TopicId>> group_topics(GroupId group) const;
  // A meta key's value as text (replication's "in_sync"); nullopt when absent.
  // Errors: LMDB's.
  Result<std::optional<std::string>> get_meta(std::string_view key) const;
  // Every stored policy: key ("g:" + group or "t:" + topic) and PolicyRecord bytes, which
  // the caller verifies (broker/group_policy.cpp). Errors: LMDB's.
  Result<std::vector<std::pair<std::string, std::vector<std::uint8_t>>>> load_policies() const;

  // -- the replication log (store_replog.cpp; redo.h has a record's bytes) ---------------

  // The newest record's index (0: none yet) and the current epoch (0: none begun), as of
  // the last commit. Thread: any (atomics the writer sets after each commit).
  LogPosition log_position() const {
    return {last_index_.load(std::memory_order_acquire), epoch_.load(std::memory_order_acquire)};
  }
  // The oldest record still kept (0: the log is empty). Errors: LMDB's.
  Result<std::uint64_t> first_log_index() const;
  // Records from index `from` on, in order, until max_bytes (at least one record when
  // there is one). kStored: as the log keeps them (a message put refers to the message,
  // redo.h's kPutRef); kExpanded: as a follower is sent them, each message's bytes in the
  // record, read in the same read transaction. Errors: a damaged record; LMDB's.
  enum class RecordForm { kStored, kExpanded };
  Result<std::vector<LogRecord>> read_log_records(std::uint64_t from, std::size_t max_bytes,
                                                  RecordForm form = RecordForm::kStored) const;
  // The same records, each written once, straight from LMDB's pages to where the caller
  // wants it (a fetch answer's FlatBuffer): place(index, size, fill) is called per record
  // in order and calls fill with `size` bytes of its own, which fill writes. Returns how
  // many records were placed. Errors: as read_log_records (records placed before a
  // damaged one stay placed).
  using RecordFill = std::function<void(std::span<std::uint8_t>)>;
  using RecordPlace = std::function<void(std::uint64_t index, std::size_t size, const RecordFill& fill)>;
  Result<std::size_t> place_log_records(std::uint64_t from, std::size_t max_bytes, RecordForm form,
                                        const RecordPlace& place) const;
  // Every epoch begun, oldest first. Errors: a damaged record; LMDB's.
  Result<std::vector<EpochStart>> epochs() const;
  // Per replicated key space (every one but replog): how many entries and a SHA-256 over
  // each key and value with their lengths, in key order. Two stores that hold the same
  // state have the same digests. Errors: LMDB's.
  Result<std::vector<KeySpaceDigest>> digest() const;
  // What the log keeps (WriteTxn trims the oldest records at each commit past these), and
  // the index below which records may go at all: the lowest one a follower still needs.
  // Thread: retention any time; keep_from any thread (an atomic).
  void set_log_retention(std::uint64_t max_bytes, std::uint64_t max_age_ms) {
    log_max_bytes_ = max_bytes;
    log_max_age_ms_ = max_age_ms;
  }
  void set_log_keep_from(std::uint64_t index) { log_keep_from_.store(index, std::memory_order_release); }
  // Records from `index` on keep their undo images (WriteTxn::truncate_log): those above
  // the commit index, which a new leader may not hold. Older images are trimmed as commits
  // go by, and so are those of records trimmed from the log. Any thread.
  void set_undo_keep_from(std::uint64_t index) { undo_keep_from_.store(index, std::memory_order_release); }
  // Whether commits record their changes (and keep their undo images) at all: off by
  // default, turned on by replication. Without it the log would double what each commit
  // writes for no reader, and a delete would copy what it deletes into an undo image.
  // Its store then holds state no record carries, and a follower can start from it only
  // through a snapshot. Thread: before the writer starts.
  void set_logging(bool on) { logging_ = on; }

  // -- snapshots (store_snapshot.cpp) ---------------------------------------------------

  // A read transaction over the whole store as of the last commit, for a leader to stream
  // to a follower (Snapshot). The caller owns it; it may be held across loop callbacks
  // (the environment is MDB_NOTLS) but stops LMDB from reusing the pages freed since it
  // began, so the data file grows while it is held. Thread: the loop.
  // Errors: LMDB's (kStorageError when the reader table is full).
  Result<std::unique_ptr<Snapshot>> open_snapshot() const;
  // Whether a snapshot's install began and did not finish: the store is then neither the
  // leader's nor this broker's own, and must not serve. Errors: LMDB's.
  Result<bool> snapshot_pending() const;

  // -- writes: writer thread ------------------------------------------------------------

  // Begins a transaction: the top-level batch transaction when parent is null, else a
  // nested one inside it (so one failing operation leaves the rest of a batch intact). The
  // caller owns it; a nested one must be committed or dropped before its parent is.
  // Errors: LMDB's (a second top-level transaction waits for the first: LMDB allows one).
  Result<std::unique_ptr<WriteTxn>> begin_write(WriteTxn* parent);

  // Flushes commits made under SyncMode::kRelaxed to disk. Errors: LMDB's.
  Status sync();

 private:
  friend class WriteTxn;
  explicit Store(MDB_env* env) : env_(env) {}
  // Opens every key space; creates them only in a store that never committed (see .cpp).
  // A key space and the member that holds its handle.
  struct NamedDb {
    const char* name;
    MDB_dbi Store::*dbi;
  };
  // Every key space, in layout.h's order (checked when it compiles).
  static std::span<const NamedDb> key_spaces();
  // dir: for error messages.
  Status open_databases(const std::string& dir);
  // Writes the layout marker into a new (fresh) store or one being upgraded, checks it in
  // any other; damaged builds the error for a store that has committed without one
  // (store_meta.cpp).
  Status check_layout_marker(MDB_txn* txn, bool fresh, bool upgrade,
                             const std::function<Error(const std::string&)>& damaged);
  // Live pages (see StorageUsage) as `txn` sees them, its own changes included, but for
  // the replication log's, which has its own limit. Costs one mdb_stat per database: no
  // page is read.
  std::uint64_t used_pages(MDB_txn* txn) const;

  MDB_env* env_;
  // The key spaces; layout.h has each one's key and value bytes.
  MDB_dbi meta_ = 0;        // layout marker and counters (store.cpp, store_meta.cpp)
  MDB_dbi topics_ = 0;      // topics by name (store_meta.cpp)
  MDB_dbi partitions_ = 0;  // each partition's next offset and bytes stored (store_log.cpp)
  MDB_dbi log_ = 0;         // messages by (topic, partition, offset) (store_log.cpp)
  MDB_dbi groups_ = 0;      // group ids by name (store_meta.cpp)
  MDB_dbi cursors_ = 0;     // ack floor and delivered-up-to per group and partition (store_cursors.cpp)
  MDB_dbi acked_ = 0;       // acks above the ack floor (store_cursors.cpp)
  MDB_dbi pending_ = 0;     // messages that failed at least once in a group (store_cursors.cpp)
  MDB_dbi delayed_ = 0;     // delayed messages by due time (store_delayed.cpp)
  MDB_dbi policies_ = 0;    // retry policies of groups and topics (store_meta.cpp)
  MDB_dbi txn_open_ = 0;    // prepared transactions (store_txn.cpp)
  MDB_dbi txn_parked_ = 0;  // parked transactions (store_txn.cpp)
  MDB_dbi txn_ended_ = 0;   // committed and rolled back transactions (store_txn.cpp)
  MDB_dbi txn_checks_ = 0;  // check-backs due, by span (store_txn.cpp)
  MDB_dbi producers_ = 0;   // idempotent producers' windows (store_producers.cpp)
  MDB_dbi replog_ = 0;      // the replication log, by index (store_replog.cpp)
  MDB_dbi epochs_ = 0;      // each epoch's first index and leader (store_replog.cpp)
  MDB_dbi undo_ = 0;        // undo images of the log's newest records (store_replog.cpp)
  MDB_dbi main_ = 0;        // LMDB's main database, which names the ones above
  // A database handle's kKeySpaces index, for the records (LMDB's handles are small).
  std::array<std::uint8_t, 32> space_of_{};
  std::atomic<std::uint64_t> last_index_{0};
  std::atomic<std::uint64_t> epoch_{0};
  std::atomic<std::uint64_t> log_keep_from_{UINT64_MAX};  // no follower holds the log back
  std::atomic<std::uint64_t> undo_keep_from_{0};          // no commit index known: keep them
  // Retention of the log; a store keeps only its newest record until told more.
  std::uint64_t log_max_bytes_ = 0;
  std::uint64_t log_max_age_ms_ = 0;
  bool logging_ = false;
  // The log's position as txn sees it: its newest record's index (or the log base, past an
  // installed snapshot's empty log) and the newest epoch begun. open() loads it into
  // last_index_ and epoch_; a snapshot keeps its own.
  Result<LogPosition> read_log_position(MDB_txn* txn) const;
  // The index a snapshot's install left the log at (meta "log_base"); 0 when none was
  // installed (store_snapshot.cpp).
  Result<std::uint64_t> log_base(MDB_txn* txn) const;
  friend class Snapshot;  // reads every key space in its own transaction
  std::uint64_t max_bytes_ = 0;
  std::uint64_t page_size_ = 4096;
  bool created_ = false;  // open() made a new store: no store had committed here
};

using HeaderView = std::pair<std::string_view, std::span<const std::uint8_t>>;

// -- snapshots (store_snapshot.cpp) -----------------------------------------------------

// One entry of a snapshot: a key and its value in one replicated key space.
struct SnapshotEntry {
  std::uint8_t space = 0;  // layout.h's kKeySpaces index
  std::vector<std::uint8_t> key;
  std::vector<std::uint8_t> value;
};

// A snapshot's entries from a resume point on, up to a size.
struct SnapshotPart {
  std::vector<SnapshotEntry> entries;
  std::size_t bytes = 0;  // keys and values
  bool done = false;      // no entry follows the last one
};

// A consistent view of a leader's store, read in chunks: every entry of every replicated
// key space (layout.h's replicated_space) but this broker's own meta keys ("format",
// "log_base", "snapshot_pending"), in key space order, then key order.
// Lifecycle: from Store::open_snapshot; holds one LMDB read transaction until destroyed,
// which must happen before the Store is. Thread: one at a time (the loop's).
class Snapshot {
 public:
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;
  ~Snapshot();

  // The log position the snapshot is at: its newest record (or the log base an install
  // left) and newest epoch, read in the snapshot's own transaction.
  LogPosition position() const { return position_; }
  // The entries after (after_space, after_key), an empty key meaning "from the start of
  // after_space", until max_bytes of keys and values (at least one entry when any is
  // left). Errors: kInvalidArgument for a key space past the last; LMDB's.
  Result<SnapshotPart> read(std::uint8_t after_space, std::span<const std::uint8_t> after_key,
                            std::size_t max_bytes) const;

 private:
  friend class Store;
  Snapshot(const Store& store, MDB_txn* txn) : store_(store), txn_(txn) {}
  const Store& store_;
  MDB_txn* txn_;  // read-only; aborted by the destructor
  LogPosition position_;
};

// One LMDB write transaction (top-level or nested), from Store::begin_write or nested().
// Thread: the writer's only, every function. Dropping it without commit() aborts it. The
// views a function takes need live only for the call. Errors are listed as in Store.
class WriteTxn {
 public:
  WriteTxn(const WriteTxn&) = delete;
  WriteTxn& operator=(const WriteTxn&) = delete;
  ~WriteTxn();

  // Commits; the transaction is finished either way, and only the destructor may follow.
  // A nested transaction passes on to its parent that it stored new data.
  // Errors: kStorageFull when the map or the disk is full; LMDB's.
  Status commit();

  // storage.max_size, applied by the writer around each op (see Store's comment). begin_op
  // notes the live pages before the op; check_room, after it, answers kStorageFull when the
  // op grew the store past its limit: max_bytes if it stored new data (Growth::kNewData),
  // else max_bytes plus half the reserve. An op that did not grow the store is never
  // refused. Each costs one mdb_stat per database. Errors (check_room): kStorageFull.
  void begin_op();
  Status check_room();

  // -- the replication log (store_replog.cpp) -------------------------------------------
  // Every change a top-level transaction makes through the functions below is recorded;
  // commit() appends them as one record to the log, in the same LMDB transaction, and
  // trims the log's oldest records past its retention.

  // Begins a new epoch led by `leader`: its first record is the next one, and this change
  // is in it. Errors: kInvalidArgument when epoch is not above the current one; LMDB's.
  Status begin_epoch(std::uint64_t epoch, std::string_view leader);
  // A follower's: applies a leader's record at its index, change by change, and keeps it
  // in this store's log as it is. Only records, nothing else, may be written in the same
  // transaction. Errors: kInvalidArgument when index is not the one after the log's last;
  // kStorageError when the record does not decode (nothing of it is applied); LMDB's.
  Status apply_record(std::uint64_t index, std::span<const std::uint8_t> record);
  // Drops the log's records from `from` on, newest first, undoing each one's changes with
  // its undo image, in this transaction: the store is then as it was when record from - 1
  // was the newest. Only this may be written in the same transaction. When a record in the
  // range has no image left (its record was at or below the commit index, or it deleted a
  // topic too big to copy), nothing is changed and the result says which (undone false):
  // the follower needs a snapshot. Errors: a damaged image (kStorageError); LMDB's.
  Result<Truncation> truncate_log(std::uint64_t from);

  // -- installing a snapshot (store_snapshot.cpp) -----------------------------------------
  // A follower's, each step one op of its own, none recorded in the log: begin, then the
  // chunks in order, then finish. Until finish commits, meta "snapshot_pending" marks the
  // store as half installed (Store::snapshot_pending); a new install begins from scratch.

  // Empties every key space, the log, its epochs and undo images included, but for the
  // layout marker, and marks the store pending. The log position becomes (0, 0).
  // Errors: LMDB's.
  Status begin_snapshot_install();
  // Stores a chunk's entries as they are. Errors: kInvalidArgument for an entry of a key
  // space a snapshot does not carry (the log, undo images, this broker's own meta keys)
  // or one LMDB refuses; LMDB's.
  Status put_snapshot_entries(std::span<const SnapshotEntry> entries);
  // Ends the install at the snapshot's log index: records meta "log_base" (the next record
  // applied is index + 1), clears "snapshot_pending", and the log position becomes
  // (index, the newest epoch the entries hold). Errors: kInvalidArgument when no install
  // is pending or that epoch is not `epoch`; LMDB's.
  Status finish_snapshot_install(std::uint64_t index, std::uint64_t epoch);

  // After a successful commit of a top-level transaction: the index of the newest record
  // in the log (the one it appended or applied, or the one before when it changed nothing).
  std::uint64_t committed_index() const { return last_index_; }

  // -- the message log (store_log.cpp) --------------------------------------------------

  // Appends one message at the partition's next offset and returns that offset.
  // Errors: kUnknownPartition when the topic or partition does not exist; LMDB's.
  Result<Offset> append(TopicId topic, PartitionId partition, std::uint64_t timestamp_ms,
                        std::span<const std::uint8_t> key,
                        std::span<const HeaderView> headers,
                        std::span<const std::uint8_t> body, Growth growth = Growth::kNewData);
  // As append, for a dead letter the broker moves to a dead-letter topic: the record is
  // marked (StoredMessage.dead_letter), as no client's message can be, and counts as part
  // of a verdict (Growth::kVerdict). Errors: as append.
  Result<Offset> append_dead_letter(TopicId topic, PartitionId partition, std::uint64_t timestamp_ms,
                                    std::span<const std::uint8_t> key, std::span<const HeaderView> headers,
                                    std::span<const std::uint8_t> body);
  // A copy of a stored message. Errors: kInvalidArgument when it is not stored; a damaged
  // record; LMDB's.
  Result<OwnedMessage> read_message(TopicId topic, PartitionId partition, Offset offset);
  // Deletes one stored message (a redrive's, from a dead-letter topic) and takes its
  // bytes off the partition's count. Errors: kInvalidArgument when it is not stored; LMDB's.
  Status delete_message(TopicId topic, PartitionId partition, Offset offset);
  // Deletes up to max of the partition's oldest messages that are older than
  // min_timestamp_ms, or while the partition holds more than max_bytes of records (a
  // message that does not decode goes only for the bytes). Returns how many were deleted;
  // 0 for a partition that does not exist. Errors: LMDB's.
  Result<std::size_t> trim(TopicId topic, PartitionId partition, std::uint64_t min_timestamp_ms,
                           std::uint64_t max_bytes, std::size_t max);

  // -- metadata (store_meta.cpp) --------------------------------------------------------

  // Creates a topic with a fresh id and its empty partitions. Errors: kTopicExists when the
  // name is taken; a damaged record (the id counter); LMDB's (kInvalidArgument: a name LMDB
  // refuses as a key).
  Result<TopicMeta> create_topic(std::string_view name, std::uint32_t partitions, std::uint64_t now_ms,
                                 std::uint64_t retention_ms = 0, std::uint64_t retention_bytes = 0,
                                 Growth growth = Growth::kNewData);
  // Removes the topic, its log and every group's cursor, acks and pending messages on it.
  // Its delayed messages are dropped when they come due. Errors: kUnknownTopic; a damaged
  // record; LMDB's.
  Status delete_topic(std::string_view name);
  // The topic of that name, if it exists. Errors: a damaged record; LMDB's.
  Result<std::optional<TopicMeta>> find_topic(std::string_view name);
  // Returns the group's id, interning the name on first use. Errors: a damaged record (an
  // id or the id counter); LMDB's (kInvalidArgument: a name LMDB refuses as a key).
  Result<GroupId> intern_group(std::string_view name);
  // Stores a group's or a topic's policy (key "g:" + group or "t:" + topic) as given.
  // Errors: LMDB's.
  Status put_policy(std::string_view key, std::span<const std::uint8_t> record);
  // Stores a meta key's text value (replication's "in_sync"). Errors: LMDB's.
  Status put_meta(std::string_view key, std::string_view value);
  // Rewrites one small record and nothing else: a commit for its new transaction id alone
  // (LMDB reuses freed pages two commits after the one that freed them). Errors: a
  // damaged record (the counter); LMDB's.
  Status touch();
  // A nested transaction inside this one, for an op that wants each of its items to
  // succeed or fail alone. Errors: as Store::begin_write.
  Result<std::unique_ptr<WriteTxn>> nested() { return store_.begin_write(this); }

  // -- group cursors and pending messages (store_cursors.cpp) ---------------------------

  // Records acks and returns the partition's new ack floor. Offsets below the floor, and
  // below the oldest stored message (retention took them), count as acknowledged.
  // Errors: LMDB's.
  Result<Offset> ack(GroupId group, TopicId topic, PartitionId partition,
                     std::span<const Offset> offsets);
  // Raises the group's delivered-up-to mark (never lowers it). Errors: LMDB's.
  Status mark_delivered(GroupId group, TopicId topic, PartitionId partition, Offset upto);
  // The pending record of a message, if it has one. Errors: a damaged record; LMDB's.
  Result<std::optional<OwnedPending>> get_pending(GroupId group, TopicId topic, PartitionId partition, Offset offset);
  // Stores (replaces) the pending record of a message. Errors: LMDB's.
  Status put_pending(GroupId group, TopicId topic, PartitionId partition, Offset offset,
                     const OwnedPending& record);
  // Removes the record, if any. Errors: LMDB's.
  Status clear_pending(GroupId group, TopicId topic, PartitionId partition, Offset offset);

  // -- delayed messages (store_delayed.cpp) ---------------------------------------------

  // Stores a delayed message until due_ms. Its partition is not checked until it is due.
  // Errors: a damaged record (the sequence counter); LMDB's.
  Status put_delayed(std::uint64_t due_ms, TopicId topic, PartitionId partition, std::uint64_t timestamp_ms,
                     std::span<const std::uint8_t> key, std::span<const HeaderView> headers,
                     std::span<const std::uint8_t> body, Growth growth = Growth::kNewData);
  // Appends up to max delayed messages due at or before now_ms to their partitions and
  // returns where they went. Those whose topic was deleted, and records that do not
  // decode, are dropped. Errors: LMDB's.
  Result<std::vector<std::pair<TopicId, std::pair<PartitionId, Offset>>>> release_delayed(std::uint64_t now_ms,
                                                                                          std::size_t max);

  // -- transactions (store_txn.cpp) -----------------------------------------------------

  // n fresh transaction ids, in increasing order: unique and growing, and unlikely to be
  // confused with a small number an operator typed by hand. Errors: a damaged record (the
  // id counter); LMDB's.
  Result<std::vector<TxnId>> new_txn_ids(std::size_t n, std::uint64_t now_ms);
  // Stores a half message under a fresh id from new_txn_ids and returns the id. Its first
  // check is scheduled with schedule_check, once for all the ids of a batch.
  // Errors: kStorageError when the id is not fresh (larger than every stored one); LMDB's.
  Result<TxnId> prepare(TxnId id, TopicId topic, PartitionId partition, std::string_view producer_group,
                                std::uint64_t now_ms, std::span<const std::uint8_t> key,
                                std::span<const HeaderView> headers, std::span<const std::uint8_t> body,
                                std::uint64_t deliver_at_ms, std::uint64_t first_check_ms);
  // The prepared transactions with ids in [first_id, last_id] are checked at due_ms.
  // Errors: LMDB's.
  Status schedule_check(TxnId first_id, TxnId last_id, std::uint64_t due_ms);
  // Drops a span that has no prepared transaction left (one found so by due_checks); a
  // span that has one, or is gone, is left as it is. Errors: LMDB's.
  Status drop_check_span(const CheckSpan& span);
  // Commits (appends the message, or keeps it aside until its deliver-at time) or rolls
  // back a prepared or parked transaction; anything else changes nothing and is answered
  // with its state (found = false for an unknown id). A commit whose topic was deleted
  // ends rolled back. `resolution` is who decided: "producer", "check" or "operator" (then
  // also in a header). Errors: a damaged record; LMDB's.
  Result<TxnEndResult> end_txn(TxnId id, bool commit, std::string_view resolution, std::uint64_t now_ms);
  // The state of a transaction, nullopt when there is no such one.
  // Errors: a damaged record (an ended one); LMDB's.
  Result<std::optional<TxnState>> txn_state(TxnId id);
  // A check was sent: counts it and sets the next one, or parks the transaction. Nothing
  // for one no longer prepared. Errors: a damaged record; LMDB's.
  Status checked(TxnId id, std::uint32_t checks, std::uint64_t next_check_ms, bool park);
  // Deletes up to max ended transactions that ended before before_ms, reading at most 8
  // times max records. Returns how many it deleted. Errors: LMDB's.
  Result<std::size_t> prune_ended(std::uint64_t before_ms, std::size_t max);

  // -- idempotent producers (store_producers.cpp) ---------------------------------------

  // The offsets recorded for (producer, sequence), if that batch is in the window.
  // Errors: kInvalidArgument for a sequence at or below the newest recorded one that has
  // left the window: it may have been stored already, and appending it again could
  // duplicate it; a damaged record; LMDB's.
  Result<std::optional<std::vector<std::pair<PartitionId, Offset>>>> producer_batch(ProducerId producer,
                                                                                      Sequence sequence);
  // Remembers where a batch went, keeping the producer's last `window` batches. A record
  // that does not decode is replaced by one holding this batch alone. Errors: LMDB's.
  Status record_producer_batch(ProducerId producer, Sequence sequence,
                               const std::vector<std::pair<PartitionId, Offset>>& offsets, std::size_t window,
                               std::uint64_t now_ms);
  // Forgets the producers whose newest batch is older than before_ms, and records that do
  // not decode. Producer ids are random, so the table has no time order: each call looks
  // at up to max_scan producers from *resume (ProducerId(0) for the first) and leaves
  // *resume where the next call goes on (ProducerId(0) once it passed the last). Returns how many it
  // forgot. A record from before records had a time is kept and given now_ms.
  // Errors: LMDB's.
  Result<std::size_t> prune_producers(std::uint64_t before_ms, std::uint64_t now_ms, ProducerId* resume,
                                      std::size_t max_scan);

 private:
  friend class Store;
  WriteTxn(Store& store, MDB_txn* txn, WriteTxn* parent)
      : store_(store),
        txn_(txn),
        parent_(parent),
        last_index_(parent ? parent->last_index_ : store.last_index_.load(std::memory_order_acquire)),
        epoch_(parent ? parent->epoch_ : store.epoch_.load(std::memory_order_acquire)) {}
  void grows(Growth growth) {
    if (growth == Growth::kNewData) new_data_ = true;
  }
  // Takes n consecutive values of a counter and returns the first.
  Result<std::uint32_t> next_counter(std::string_view name, std::uint32_t n = 1);
  Status add_partition_bytes(TopicId topic, PartitionId partition, std::int64_t delta);
  // append's and append_dead_letter's one body.
  Result<Offset> append_record(TopicId topic, PartitionId partition, std::uint64_t timestamp_ms,
                               std::span<const std::uint8_t> key, std::span<const HeaderView> headers,
                               std::span<const std::uint8_t> body, Growth growth, bool dead_letter);
  // ack's steps (store_cursors.cpp).
  Result<Offset> floor_past_trimmed(GroupId group, TopicId topic, PartitionId partition, Offset floor);
  Result<bool> acks_recorded_from(GroupId group, TopicId topic, PartitionId partition, Offset floor);
  // end_txn's steps (store_txn.cpp).
  Status deliver_commit(HalfRecord& half, std::string_view resolution, std::uint64_t now_ms, TxnEndResult& out);
  Status put_ended(MDB_val& key, const HalfRecord& half, TxnState state, Offset offset,
                   std::string_view resolution, std::uint64_t now_ms);
  // Whether a prepared transaction has an id in [first_id, last_id].
  Result<bool> any_prepared(TxnId first_id, TxnId last_id);
  // Takes id out of its span (due at due_ms), keeping the parts on either side that still
  // hold prepared transactions.
  Status unschedule_check(TxnId id, std::uint64_t due_ms);

  // Every change goes through these, which record it for the replication log: the same as
  // mdb_put, mdb_cursor_put, mdb_del (key only) and mdb_cursor_del (the item under the
  // cursor, which is on dbi), returning LMDB's code.
  int put(MDB_dbi dbi, MDB_val* key, MDB_val* value, unsigned flags = 0);
  int cursor_put(MDB_cursor* cur, MDB_dbi dbi, MDB_val* key, MDB_val* value, unsigned flags);
  // As put, over a value the caller read in this transaction and copied (old): its undo
  // image costs no second read.
  int put_over(MDB_dbi dbi, MDB_val* key, MDB_val* value, const MDB_val& old);
  int del(MDB_dbi dbi, MDB_val* key);
  int cursor_del(MDB_cursor* cur, MDB_dbi dbi);
  // Deletes every key of dbi that starts with prefix, recorded as one change.
  int del_prefix(MDB_dbi dbi, std::span<const std::uint8_t> prefix);
  // Whether a change to dbi is recorded (redo_ and undo_): not while applying a leader's
  // records, not without logging, never the log or its undo images themselves.
  bool recording(MDB_dbi dbi) const;
  // Adds to undo what restores key (or every key under prefix) as it is now.
  void keep_old(MDB_dbi dbi, const MDB_val& key, RedoBuilder& undo);
  void keep_old_prefix(MDB_dbi dbi, std::span<const std::uint8_t> prefix, RedoBuilder& undo);
  // commit()'s part for the log: the record and its undo image, and the trim of old ones.
  Status append_record();
  // An image applied backwards undoes its record whether or not a key repeats in it;
  // compacting (RedoBuilder::compacted_record) makes it smaller. A follower's is kept as
  // built: the leader's record it inverts was compacted already.
  enum class UndoForm { kCompacted, kAsBuilt };
  Status put_undo(std::uint64_t index, const RedoHeader& header, UndoForm form);
  Status trim_log();
  Status trim_undo();
  // Whether any replicated key space holds an entry (meta: besides each broker's own
  // keys): state a store without a log holds.
  Result<bool> holds_unlogged_state();

  // A cursor on dbi kept open for the rest of this LMDB transaction (dbi is txn_open_ or
  // txn_ended_); null with *rc set when it cannot be opened.
  MDB_cursor* kept_cursor(MDB_dbi dbi, int* rc);
  // Closes the kept cursors; before the transaction ends, which would free them.
  void close_kept_cursors();

  Store& store_;
  MDB_txn* txn_;  // null once committed or aborted
  WriteTxn* parent_;  // the transaction this one is nested in; null for a top-level one
  std::uint64_t op_start_pages_ = 0;  // live pages when the current op began (begin_op)
  bool new_data_ = false;  // the current op stored new data (Growth::kNewData)
  // Prepares and ends come in about id order, so a cursor left where the last one stopped
  // finds the next id on the same leaf page, and appends at the end it already holds,
  // without a search from the root (each level of which also searches the dirty pages).
  MDB_cursor* open_cursor_ = nullptr;   // txn_open
  MDB_cursor* ended_cursor_ = nullptr;  // txn_ended
  flatbuffers::FlatBufferBuilder fbb_{256};
  std::vector<std::uint8_t> scratch_;  // a record copied out of the map
  std::vector<std::uint8_t> record_;   // a record being written
  RedoBuilder redo_;                   // the changes made so far (see put())
  RedoBuilder undo_;                   // their inverses, in the same order (see recording())
  bool undoable_ = true;               // undo_ holds every inverse (not: a big prefix deleted)
  bool applying_ = false;              // apply_record was called: the changes are a leader's
  // put_over's last change, while nothing else changed its dbi since: a put_over of the
  // same key rewrites that change's value in place (a batch of messages updates its
  // partition's record once a message; the record carries it once), and the undo image
  // already holds the key's value from before.
  struct LastOver {
    MDB_dbi dbi = 0;
    std::array<std::uint8_t, 16> key{};
    std::size_t key_size = 0, value_at = 0, value_size = 0;
  };
  std::optional<LastOver> last_over_;
  void changed(MDB_dbi dbi) {
    if (last_over_ && last_over_->dbi == dbi) last_over_.reset();
  }
  std::uint64_t last_index_ = 0;       // the log's newest index as this transaction sees it
  std::uint64_t epoch_ = 0;            // the current epoch as this transaction sees it
};

}  // namespace txmq::broker::storage
