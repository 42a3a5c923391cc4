#include "broker/storage/store.h"
#include "broker/storage/store_internal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <filesystem>

namespace txmq::broker::storage {
using namespace internal;
namespace {

// Bumped whenever a key or value layout changes; a broker refuses data it cannot read.
constexpr std::uint32_t kLayoutVersion = 2;  // 2: transactions kept by state; checks by span

// fsync on a directory makes the entries created in it durable: a file whose entry is
// lost vanishes on power loss with everything in it, whatever was synced into it.
Status sync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Error(ErrorCode::kStorageError, "cannot open directory " + dir + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  if (rc) return Error(ErrorCode::kStorageError, "cannot sync directory " + dir + ": " + std::strerror(saved));
  return {};
}

// The key spaces; a store written by this broker has every one of them.
struct NamedDb {
  const char* name;
  MDB_dbi Store::*dbi;
};

}  // namespace

Store::~Store() { mdb_env_close(env_); }

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options) {
  std::error_code ec;
  auto dir = std::filesystem::absolute(options.dir, ec).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "a/b/" names b
  // The directories create_directories is about to make, deepest first: each one's entry
  // lives in its parent, which must be synced for the entry to survive a power loss.
  std::vector<std::filesystem::path> made;
  for (auto p = dir; !p.empty() && !std::filesystem::exists(p, ec) && p != p.parent_path(); p = p.parent_path())
    made.push_back(p);
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return Error(ErrorCode::kStorageError,
                 "cannot create data directory " + options.dir + ": " + ec.message());
  for (const auto& p : made)
    if (auto st = sync_directory(p.parent_path().string()); !st) return st.error();
  MDB_env* env = nullptr;
  if (int rc = mdb_env_create(&env)) return lmdb_error(rc, "mdb_env_create");
  std::unique_ptr<Store> store(new Store(env));
  store->max_bytes_ = options.max_bytes;
  // The map is reserved address space, not disk: the file grows only as pages are used.
  // It is larger than max_bytes by the reserve, the room deletes need (see the class
  // comment); a store written when the map was max_bytes opens the same, its file grows
  // into the reserve only when a write needs it. Rounded up to whole 64 KiB so that it is
  // a multiple of any page size.
  constexpr std::uint64_t kRound = 64 << 10;
  const std::uint64_t map_bytes = (options.max_bytes + reserve_bytes(options.max_bytes) + kRound - 1) / kRound * kRound;
  if (int rc = mdb_env_set_mapsize(env, map_bytes)) return lmdb_error(rc, "set_mapsize");
  if (int rc = mdb_env_set_maxdbs(env, 16)) return lmdb_error(rc, "set_maxdbs");
  // NOTLS: read transactions belong to the loop thread, not to a thread-local slot.
  // NORDAHEAD: the log is read in key order but spread over the file; readahead only
  // pollutes the page cache once the data outgrows memory.
  // Relaxed mode is NOMETASYNC, not NOSYNC: each commit still fdatasyncs its data pages
  // before it writes the meta page that points at them; only that meta page waits for the
  // next commit or the writer's periodic sync. A power loss then loses at most the last
  // commits, never the order between pages and the meta page: under NOSYNC a disk that
  // writes some pages before others (ext4 promises no order) leaves a meta page pointing
  // at pages that never arrived, or at pages reused since, and the store is corrupt.
  unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
  if (options.sync == SyncMode::kRelaxed) flags |= MDB_NOMETASYNC;
  if (int rc = mdb_env_open(env, options.dir.c_str(), flags, 0640))
    return lmdb_error(rc, "cannot open LMDB environment in " + options.dir);
  MDB_stat st;
  mdb_env_stat(env, &st);
  store->page_size_ = st.ms_psize;
  if (auto st = store->open_databases(options.dir); !st) return st.error();
  // data.mdb and lock.mdb may have just been created: make their entries durable before
  // the first confirm can depend on them.
  if (auto st = sync_directory(options.dir); !st) return st.error();
  return store;
}

Status Store::open_databases(const std::string& dir) {
  static constexpr NamedDb kDatabases[] = {
      {"meta", &Store::meta_},         {"topics", &Store::topics_},         {"partitions", &Store::partitions_},
      {"log", &Store::log_},           {"groups", &Store::groups_},         {"cursors", &Store::cursors_},
      {"acked", &Store::acked_},       {"pending", &Store::pending_},       {"delayed", &Store::delayed_},
      {"policies", &Store::policies_}, {"txn_open", &Store::txn_open_},     {"txn_parked", &Store::txn_parked_},
      {"txn_ended", &Store::txn_ended_}, {"txn_checks", &Store::txn_checks_}, {"producers", &Store::producers_}};
  // LMDB numbers its transactions from 1; an environment whose last one is 0 has never
  // committed, so nothing was ever confirmed from it: a new store (or one whose creation a
  // crash interrupted). Any other store must already hold every key space and the layout
  // marker. Creating them there would turn a damaged store into an empty one that serves
  // without a word, with every confirmed message gone.
  MDB_envinfo info;
  mdb_env_info(env_, &info);
  const bool fresh = info.me_last_txnid == 0;
  created_ = fresh;
  auto damaged = [&](const std::string& what) {
    return Error(ErrorCode::kStorageError,
                 "the store in " + dir + " is damaged: " + what + " (last transaction " +
                     std::to_string(info.me_last_txnid) +
                     "). It was not opened. Inspect it with `txmq-broker --check-store --data " + dir +
                     "` and `mdb_stat -a " + dir + "`; see the README's \"A damaged store\"");
  };
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(env_, nullptr, 0, &txn)) return lmdb_error(rc, "begin");
  for (const auto& d : kDatabases) {
    int rc = mdb_dbi_open(txn, d.name, fresh ? MDB_CREATE : 0, &(this->*d.dbi));
    if (rc) {
      mdb_txn_abort(txn);
      if (rc == MDB_NOTFOUND) return damaged(std::string("its key space '") + d.name + "' is missing");
      return lmdb_error(rc, std::string("open database ") + d.name);
    }
  }
  if (int rc = mdb_dbi_open(txn, nullptr, 0, &main_)) {
    mdb_txn_abort(txn);
    return lmdb_error(rc, "open the main database");
  }
  MDB_val k = val(std::string_view("format")), v;
  int rc = mdb_get(txn, meta_, &k, &v);
  if (rc == MDB_NOTFOUND && fresh) {
    std::array<std::uint8_t, 4> version;
    put_be32(version.data(), kLayoutVersion);
    MDB_val nv = val(version);
    rc = mdb_put(txn, meta_, &k, &nv, 0);
  } else if (rc == MDB_NOTFOUND) {
    mdb_txn_abort(txn);
    return damaged("its layout marker is missing");
  } else if (rc == 0) {
    if (v.mv_size != 4) {
      mdb_txn_abort(txn);
      return damaged("its layout marker has " + std::to_string(v.mv_size) + " bytes, not 4");
    }
    std::uint32_t found = get_be32(static_cast<const std::uint8_t*>(v.mv_data));
    if (found != kLayoutVersion) {
      mdb_txn_abort(txn);
      return Error(ErrorCode::kStorageError,
                   "data directory has layout version " + std::to_string(found) +
                       ", this broker reads version " + std::to_string(kLayoutVersion));
    }
  }
  if (rc) {
    mdb_txn_abort(txn);
    return lmdb_error(rc, "read layout version");
  }
  if ((rc = mdb_txn_commit(txn))) return lmdb_error(rc, "commit");
  // In relaxed mode that commit's meta page is not synced yet; a power loss now would
  // leave a store with data but no catalog, which the next start refuses as damaged.
  if (fresh) {
    if (int rc = mdb_env_sync(env_, 1)) return lmdb_error(rc, "sync the new store");
  }
  return {};
}

Result<std::vector<TopicMeta>> Store::load_topics() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), topics_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  std::vector<TopicMeta> topics;
  std::vector<std::uint64_t> scratch;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    const std::uint8_t* data = aligned(v, scratch);
    flatbuffers::Verifier verifier(data, v.mv_size);
    if (!verifier.VerifyBuffer<TopicRecord>(nullptr))
      return Error(ErrorCode::kStorageError, "corrupt topic record");
    auto* rec = flatbuffers::GetRoot<TopicRecord>(data);
    topics.push_back(TopicMeta{TopicId(rec->id()), rec->name() ? rec->name()->str() : "", rec->partitions(),
                               rec->created_at_ms(), rec->retention_ms(), rec->retention_bytes()});
  }
  return topics;
}

Result<std::vector<std::pair<std::string, GroupId>>> Store::load_groups() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), groups_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  std::vector<std::pair<std::string, GroupId>> groups;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    if (v.mv_size != 4) return Error(ErrorCode::kStorageError, "corrupt group record");
    groups.emplace_back(std::string(static_cast<const char*>(k.mv_data), k.mv_size),
                        GroupId(get_be32(static_cast<const std::uint8_t*>(v.mv_data))));
  }
  return groups;
}

Result<PartitionBounds> Store::partition_bounds(TopicId topic, PartitionId partition) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  PartitionKey pk(topic, partition);
  MDB_val k = val(pk.bytes), v;
  Offset next(0);
  if (int rc = mdb_get(txn.get(), partitions_, &k, &v); rc == 0)
    next = Offset(read_u64(v));
  else if (rc != MDB_NOTFOUND)
    return lmdb_error(rc, "read partition");
  Cursor cur(txn.get(), log_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  LogKey first_key(topic, partition, Offset(0));
  k = val(first_key.bytes);
  Offset first = next;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
  if (rc == 0 && has_prefix(k, pk.bytes.data(), pk.bytes.size()))
    first = LogKey::offset(static_cast<const std::uint8_t*>(k.mv_data));
  else if (rc != 0 && rc != MDB_NOTFOUND)
    return lmdb_error(rc, "read log");
  return PartitionBounds{first, next};
}

Result<CursorState> Store::load_cursor(GroupId group, TopicId topic, PartitionId partition) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  CursorState state;
  CursorKey ck(group, topic, partition);
  MDB_val k = val(ck.bytes), v;
  if (int rc = mdb_get(txn.get(), cursors_, &k, &v); rc == 0) {
    state.ack_floor = Offset(read_u64(v));
    state.delivered_upto = Offset(read_second_u64(v));
  } else if (rc != MDB_NOTFOUND) {
    return lmdb_error(rc, "read cursor");
  }
  Cursor cur(txn.get(), acked_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  k = val(ck.bytes);
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
       rc == 0 && has_prefix(k, ck.bytes.data(), ck.bytes.size());
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    state.acked_above.insert(AckedKey::offset(static_cast<const std::uint8_t*>(k.mv_data)));
  }
  Cursor pend(txn.get(), pending_);
  if (pend.rc()) return lmdb_error(pend.rc(), "cursor");
  k = val(ck.bytes);
  for (int rc = mdb_cursor_get(pend.get(), &k, &v, MDB_SET_RANGE);
       rc == 0 && has_prefix(k, ck.bytes.data(), ck.bytes.size());
       rc = mdb_cursor_get(pend.get(), &k, &v, MDB_NEXT)) {
    auto rec = parse_pending(v);
    if (!rec) return Error(ErrorCode::kStorageError, "corrupt pending record");
    state.pending[PendingKey::offset(static_cast<const std::uint8_t*>(k.mv_data))] =
        PendingState{DeliveryCount(rec->delivery_count), rec->due_ms, std::move(rec->reasons)};
  }
  return state;
}

Result<std::size_t> Store::read_log(TopicId topic, PartitionId partition, Offset from,
                                    std::size_t max,
                                    const std::function<bool(const LogEntry&)>& visit) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), log_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  PartitionKey pk(topic, partition);
  LogKey start(topic, partition, from);
  MDB_val k = val(start.bytes), v;
  std::size_t n = 0;
  std::vector<std::uint64_t> scratch;
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
       rc == 0 && n < max && has_prefix(k, pk.bytes.data(), pk.bytes.size());
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    const std::uint8_t* data = aligned(v, scratch);
    flatbuffers::Verifier verifier(data, v.mv_size);
    if (!verifier.VerifyBuffer<StoredMessage>(nullptr))
      return Error(ErrorCode::kStorageError, "corrupt message record");
    ++n;
    if (!visit(LogEntry{LogKey::offset(static_cast<const std::uint8_t*>(k.mv_data)),
                        flatbuffers::GetRoot<StoredMessage>(data)}))
      break;
  }
  return n;
}

Result<std::size_t> Store::read_one(TopicId topic, PartitionId partition, Offset offset,
                                    const std::function<void(const LogEntry&)>& visit) const {
  auto n = read_log(topic, partition, offset, 1, [&](const LogEntry& e) {
    if (e.offset != offset) return false;
    visit(e);
    return true;
  });
  if (!n) return n.error();
  if (*n == 0) return Error(ErrorCode::kInvalidArgument, "message not stored");
  return n;
}

std::uint64_t Store::reserve_bytes(std::uint64_t max_bytes) { return std::max<std::uint64_t>(1ull << 20, max_bytes / 32); }

std::uint64_t Store::used_pages(MDB_txn* txn) const {
  // Database 0 is LMDB's free list: its own pages are in use, the pages it lists are not.
  constexpr MDB_dbi kFreeList = 0;
  const MDB_dbi all[] = {kFreeList, main_,     meta_,    topics_,     partitions_, log_,
                         groups_,   cursors_,  acked_,   pending_,    delayed_,    policies_,
                         txn_open_, txn_parked_, txn_ended_, txn_checks_, producers_};
  std::uint64_t pages = 2;  // the two meta pages
  for (MDB_dbi dbi : all) {
    MDB_stat st;
    if (mdb_stat(txn, dbi, &st) == 0) pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
  }
  return pages;
}

StorageUsage Store::usage() const {
  MDB_envinfo info;
  mdb_env_info(env_, &info);
  StorageUsage u;
  u.max_bytes = max_bytes_;
  u.map_bytes = static_cast<std::uint64_t>(info.me_mapsize);
  u.file_bytes = (static_cast<std::uint64_t>(info.me_last_pgno) + 1) * page_size_;
  ReadTxn txn(env_);
  // Without a read transaction (the reader table is full) the file's end is the best bound.
  u.used_bytes = txn.rc() ? u.file_bytes : used_pages(txn.get()) * page_size_;
  return u;
}

Result<std::unique_ptr<WriteTxn>> Store::begin_write(WriteTxn* parent) {
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(env_, parent ? parent->txn_ : nullptr, 0, &txn))
    return lmdb_error(rc, "begin write");
  return std::unique_ptr<WriteTxn>(new WriteTxn(*this, txn, parent));
}

Status Store::sync() {
  if (int rc = mdb_env_sync(env_, 1)) return lmdb_error(rc, "sync");
  return {};
}

WriteTxn::~WriteTxn() {
  if (!txn_) return;
  close_kept_cursors();
  mdb_txn_abort(txn_);
}

Status WriteTxn::commit() {
  close_kept_cursors();
  int rc = mdb_txn_commit(txn_);
  txn_ = nullptr;  // commit frees the transaction even when it fails
  if (rc) return lmdb_error(rc, "commit");
  // An op's own nested transactions (a redrive's, one per letter) count as the op.
  if (parent_ && new_data_) parent_->new_data_ = true;
  return {};
}

void WriteTxn::begin_op() {
  new_data_ = false;
  op_start_pages_ = store_.used_pages(txn_);
}

Status WriteTxn::check_room() {
  const std::uint64_t pages = store_.used_pages(txn_);
  // Measured in live pages, not bytes of records: an op that fits in pages already in use
  // takes no room, and one that freed pages (a delete, a trim) is never refused for room.
  if (pages <= op_start_pages_) return {};
  const std::uint64_t used = pages * store_.page_size_;
  const std::uint64_t limit =
      new_data_ ? store_.max_bytes_ : store_.max_bytes_ + Store::reserve_bytes(store_.max_bytes_) / 2;
  if (used <= limit) return {};
  return Error(ErrorCode::kStorageFull,
               "storage holds " + std::to_string(used) + " bytes, the limit is " + std::to_string(limit) +
                   (new_data_ ? " (storage.max_size)" : " (storage.max_size and half the reserve, for verdicts)"));
}

Result<std::uint32_t> WriteTxn::next_counter(std::string_view name, std::uint32_t n) {
  MDB_val k = val(name), v;
  std::uint32_t id = 1;
  int rc = mdb_get(txn_, store_.meta_, &k, &v);
  if (rc == 0 && v.mv_size == 4) id = get_be32(static_cast<const std::uint8_t*>(v.mv_data));
  else if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error(rc, "read counter");
  std::array<std::uint8_t, 4> next;
  put_be32(next.data(), id + n);
  MDB_val nv = val(next);
  if ((rc = mdb_put(txn_, store_.meta_, &k, &nv, 0))) return lmdb_error(rc, "write counter");
  return id;
}

Status WriteTxn::touch() {
  if (auto n = next_counter("commit_ticks"); !n) return n.error();
  return {};
}

Result<Offset> WriteTxn::append(TopicId topic, PartitionId partition, std::uint64_t timestamp_ms,
                                std::span<const std::uint8_t> key,
                                std::span<const HeaderView> headers,
                                std::span<const std::uint8_t> body, Growth growth) {
  grows(growth);
  PartitionKey pk(topic, partition);
  MDB_val k = val(pk.bytes), v;
  int rc = mdb_get(txn_, store_.partitions_, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(ErrorCode::kUnknownPartition);
  if (rc) return lmdb_error(rc, "read partition");
  Offset offset(read_u64(v));
  const std::uint64_t stored_bytes = read_second_u64(v);

  fbb_.Clear();
  std::vector<flatbuffers::Offset<StoredHeader>> hs;
  hs.reserve(headers.size());
  for (const auto& [name, value] : headers)
    hs.push_back(CreateStoredHeader(fbb_, fbb_.CreateString(name.data(), name.size()),
                                    fbb_.CreateVector(value.data(), value.size())));
  auto rec = CreateStoredMessage(
      fbb_, timestamp_ms, key.empty() ? 0 : fbb_.CreateVector(key.data(), key.size()),
      hs.empty() ? 0 : fbb_.CreateVector(hs), fbb_.CreateVector(body.data(), body.size()));
  fbb_.Finish(rec);

  LogKey lk(topic, partition, offset);
  MDB_val lkv = val(lk.bytes);
  MDB_val data = val(fbb_.GetBufferPointer(), fbb_.GetSize());
  if ((rc = mdb_put(txn_, store_.log_, &lkv, &data, 0))) return lmdb_error(rc, "append");

  auto next = two_u64(offset.value() + 1, stored_bytes + data.mv_size);
  MDB_val nv = val(next);
  if ((rc = mdb_put(txn_, store_.partitions_, &k, &nv, 0))) return lmdb_error(rc, "append");
  return offset;
}

Result<TopicMeta> WriteTxn::create_topic(std::string_view name, std::uint32_t partitions, std::uint64_t now_ms,
                                         std::uint64_t retention_ms, std::uint64_t retention_bytes, Growth growth) {
  grows(growth);
  MDB_val k = val(name), v;
  int rc = mdb_get(txn_, store_.topics_, &k, &v);
  if (rc == 0) return Error(ErrorCode::kTopicExists, "topic '" + std::string(name) + "' already exists");
  if (rc != MDB_NOTFOUND) return lmdb_error(rc, "read topic");
  auto id = next_counter("next_topic_id");
  if (!id) return id.error();
  TopicMeta meta{TopicId(*id), std::string(name), partitions, now_ms, retention_ms, retention_bytes};

  fbb_.Clear();
  fbb_.Finish(CreateTopicRecord(fbb_, meta.id.value(), fbb_.CreateString(meta.name), partitions, now_ms,
                                retention_ms, retention_bytes));
  MDB_val rec = val(fbb_.GetBufferPointer(), fbb_.GetSize());
  if ((rc = mdb_put(txn_, store_.topics_, &k, &rec, 0))) return lmdb_error(rc, "write topic");
  std::array<std::uint8_t, 16> zero{};
  for (std::uint32_t p = 0; p < partitions; ++p) {
    PartitionKey pk(meta.id, PartitionId(p));
    MDB_val pkv = val(pk.bytes), zv = val(zero);
    if ((rc = mdb_put(txn_, store_.partitions_, &pkv, &zv, 0)))
      return lmdb_error(rc, "write partition");
  }
  return meta;
}

Status WriteTxn::delete_topic(std::string_view name) {
  MDB_val k = val(name), v;
  int rc = mdb_get(txn_, store_.topics_, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(ErrorCode::kUnknownTopic, "unknown topic '" + std::string(name) + "'");
  if (rc) return lmdb_error(rc, "read topic");
  std::vector<std::uint64_t> scratch;
  TopicId id(flatbuffers::GetRoot<TopicRecord>(aligned(v, scratch))->id());
  if ((rc = mdb_del(txn_, store_.topics_, &k, nullptr))) return lmdb_error(rc, "delete topic");
  std::array<std::uint8_t, 4> prefix;
  put_be32(prefix.data(), id.value());
  if ((rc = delete_prefix(txn_, store_.log_, prefix.data(), 4))) return lmdb_error(rc, "delete log");
  if ((rc = delete_prefix(txn_, store_.partitions_, prefix.data(), 4)))
    return lmdb_error(rc, "delete partitions");
  // Cursors and acks are keyed by group first; topic ids are never reused, so walking
  // them all once here is simpler than a second index, and deletes are rare.
  for (MDB_dbi dbi : {store_.cursors_, store_.acked_, store_.pending_}) {
    Cursor cur(txn_, dbi);
    MDB_val ck, cv;
    for (rc = mdb_cursor_get(cur.get(), &ck, &cv, MDB_FIRST); rc == 0;) {
      if (get_be32(static_cast<const std::uint8_t*>(ck.mv_data) + 4) == id.value()) {
        if ((rc = mdb_cursor_del(cur.get(), 0))) return lmdb_error(rc, "delete cursor");
        rc = mdb_cursor_get(cur.get(), &ck, &cv, MDB_GET_CURRENT);
      } else {
        rc = mdb_cursor_get(cur.get(), &ck, &cv, MDB_NEXT);
      }
    }
    if (rc != MDB_NOTFOUND && rc != EINVAL) return lmdb_error(rc, "delete cursors");
  }
  // Delayed messages of the topic are dropped when they come due (release_delayed).
  return {};
}

Result<GroupId> WriteTxn::intern_group(std::string_view name) {
  MDB_val k = val(name), v;
  int rc = mdb_get(txn_, store_.groups_, &k, &v);
  if (rc == 0 && v.mv_size == 4) return GroupId(get_be32(static_cast<const std::uint8_t*>(v.mv_data)));
  if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error(rc, "read group");
  auto id = next_counter("next_group_id");
  if (!id) return id.error();
  std::array<std::uint8_t, 4> idv;
  put_be32(idv.data(), *id);
  MDB_val nv = val(idv);
  if ((rc = mdb_put(txn_, store_.groups_, &k, &nv, 0))) return lmdb_error(rc, "write group");
  return GroupId(*id);
}

Result<Offset> WriteTxn::ack(GroupId group, TopicId topic, PartitionId partition,
                             std::span<const Offset> offsets) {
  CursorKey ck(group, topic, partition);
  MDB_val k = val(ck.bytes), v;
  Offset floor(0);
  std::uint64_t delivered_upto = 0;
  int rc = mdb_get(txn_, store_.cursors_, &k, &v);
  if (rc == 0) {
    floor = Offset(read_u64(v));
    delivered_upto = read_second_u64(v);
  } else if (rc != MDB_NOTFOUND) {
    return lmdb_error(rc, "read cursor");
  }
  const Offset old_floor = floor;

  // Retention may have deleted messages at and above the floor: nobody can ack those, so
  // the floor moves to the oldest stored message (dropping acks recorded in between).
  {
    Cursor log(txn_, store_.log_);
    PartitionKey pk(topic, partition);
    LogKey at(topic, partition, floor);
    MDB_val lk = val(at.bytes), lv;
    Offset first = floor;
    int r = mdb_cursor_get(log.get(), &lk, &lv, MDB_SET_RANGE);
    if (r == 0 && has_prefix(lk, pk.bytes.data(), pk.bytes.size())) {
      first = LogKey::offset(static_cast<const std::uint8_t*>(lk.mv_data));
    } else if (r == 0 || r == MDB_NOTFOUND) {
      MDB_val pkv = val(pk.bytes), pv;  // nothing stored from the floor on: the log's end
      if (mdb_get(txn_, store_.partitions_, &pkv, &pv) == 0) first = std::max(floor, Offset(read_u64(pv)));
    } else {
      return lmdb_error(r, "read log");
    }
    for (; floor < first; floor = next(floor)) {
      if (floor.value() + 4096 < first.value()) {
        // Far behind: drop the recorded acks in the range without visiting every offset.
        Cursor acks(txn_, store_.acked_);
        AckedKey from(group, topic, partition, floor);
        MDB_val ak = val(from.bytes), av;
        for (r = mdb_cursor_get(acks.get(), &ak, &av, MDB_SET_RANGE);
             r == 0 && has_prefix(ak, from.bytes.data(), CursorKey::kSize) &&
             AckedKey::offset(static_cast<const std::uint8_t*>(ak.mv_data)) < first;
             r = mdb_cursor_get(acks.get(), &ak, &av, MDB_GET_CURRENT))
          if ((r = mdb_cursor_del(acks.get(), 0))) return lmdb_error(r, "drop acks");
        floor = first;
        break;
      }
      AckedKey ak(group, topic, partition, floor);
      MDB_val akv = val(ak.bytes);
      r = mdb_del(txn_, store_.acked_, &akv, nullptr);
      if (r && r != MDB_NOTFOUND) return lmdb_error(r, "drop acks");
    }
  }

  // Close a gap: absorb acked keys that sit at the floor.
  auto absorb = [&]() -> int {
    for (;;) {
      AckedKey ak(group, topic, partition, floor);
      MDB_val akv = val(ak.bytes);
      int r = mdb_del(txn_, store_.acked_, &akv, nullptr);
      if (r == MDB_NOTFOUND) return 0;
      if (r) return r;
      floor = next(floor);
    }
  };
  // Are there acks above the floor from earlier calls? Usually not (consumers ack roughly
  // in order), and then in-order acks only move the floor: no key is read or written.
  bool earlier_keys = false;
  {
    Cursor cur(txn_, store_.acked_);
    AckedKey start(group, topic, partition, floor);
    MDB_val sk = val(start.bytes), sv;
    int r = mdb_cursor_get(cur.get(), &sk, &sv, MDB_SET_RANGE);
    if (r == 0) earlier_keys = has_prefix(sk, start.bytes.data(), CursorKey::kSize);
    else if (r != MDB_NOTFOUND) return lmdb_error(r, "read acks");
  }
  std::vector<Offset> sorted(offsets.begin(), offsets.end());
  std::sort(sorted.begin(), sorted.end());
  // In order, an offset this call records above the floor is never reached by the floor
  // within the same call; only keys from earlier calls can sit in the floor's way.
  for (Offset o : sorted) {
    if (o < floor) continue;  // already acknowledged
    if (o == floor) {
      floor = next(floor);
      if (earlier_keys)
        if ((rc = absorb())) return lmdb_error(rc, "advance floor");
      continue;
    }
    AckedKey ak(group, topic, partition, o);
    MDB_val akv = val(ak.bytes), empty = val(nullptr, 0);
    if ((rc = mdb_put(txn_, store_.acked_, &akv, &empty, 0))) return lmdb_error(rc, "write ack");
  }
  if (floor != old_floor) {
    auto fv = two_u64(floor.value(), std::max(delivered_upto, floor.value()));
    MDB_val nv = val(fv);
    if ((rc = mdb_put(txn_, store_.cursors_, &k, &nv, 0))) return lmdb_error(rc, "write cursor");
  }
  return floor;
}

}  // namespace txmq::broker::storage

namespace txmq::broker::storage {
using namespace internal;

Result<std::optional<std::uint64_t>> Store::next_delayed_ms() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), delayed_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  MDB_val k, v;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST);
  if (rc == MDB_NOTFOUND) return std::optional<std::uint64_t>{};
  if (rc) return lmdb_error(rc, "read delayed");
  return std::optional<std::uint64_t>(DelayedKey::due(static_cast<const std::uint8_t*>(k.mv_data)));
}

Result<std::optional<OwnedPending>> Store::read_pending(GroupId group, TopicId topic, PartitionId partition,
                                                        Offset offset) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  PendingKey pk(group, topic, partition, offset);
  MDB_val k = val(pk.bytes), v;
  int rc = mdb_get(txn.get(), pending_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<OwnedPending>{};
  if (rc) return lmdb_error(rc, "read pending");
  auto rec = parse_pending(v);
  if (!rec) return Error(ErrorCode::kStorageError, "corrupt pending record");
  return rec;
}

Result<std::vector<std::pair<std::string, std::vector<std::uint8_t>>>> Store::load_policies() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), policies_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  std::vector<std::pair<std::string, std::vector<std::uint8_t>>> out;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    const auto* b = static_cast<const std::uint8_t*>(v.mv_data);
    out.emplace_back(std::string(static_cast<const char*>(k.mv_data), k.mv_size),
                     std::vector<std::uint8_t>(b, b + v.mv_size));
  }
  return out;
}

Status WriteTxn::mark_delivered(GroupId group, TopicId topic, PartitionId partition, Offset upto) {
  CursorKey ck(group, topic, partition);
  MDB_val k = val(ck.bytes), v;
  std::uint64_t floor = 0, delivered = 0;
  int rc = mdb_get(txn_, store_.cursors_, &k, &v);
  if (rc == 0) {
    floor = read_u64(v);
    delivered = read_second_u64(v);
  } else if (rc != MDB_NOTFOUND) {
    return lmdb_error(rc, "read cursor");
  }
  if (upto.value() <= delivered) return {};
  auto nv_bytes = two_u64(floor, upto.value());
  MDB_val nv = val(nv_bytes);
  if ((rc = mdb_put(txn_, store_.cursors_, &k, &nv, 0))) return lmdb_error(rc, "write cursor");
  return {};
}

Result<OwnedMessage> WriteTxn::read_message(TopicId topic, PartitionId partition, Offset offset) {
  LogKey lk(topic, partition, offset);
  MDB_val k = val(lk.bytes), v;
  int rc = mdb_get(txn_, store_.log_, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(ErrorCode::kInvalidArgument, "message not stored");
  if (rc) return lmdb_error(rc, "read message");
  std::vector<std::uint64_t> scratch;
  const std::uint8_t* data = aligned(v, scratch);
  flatbuffers::Verifier verifier(data, v.mv_size);
  if (!verifier.VerifyBuffer<StoredMessage>(nullptr)) return Error(ErrorCode::kStorageError, "corrupt message record");
  const auto* m = flatbuffers::GetRoot<StoredMessage>(data);
  auto bytes = [](const flatbuffers::Vector<std::uint8_t>* b) {
    return b ? std::string(reinterpret_cast<const char*>(b->data()), b->size()) : std::string();
  };
  OwnedMessage out;
  out.timestamp_ms = m->timestamp_ms();
  out.key = bytes(m->key());
  out.body = bytes(m->body());
  if (m->headers())
    for (const auto* h : *m->headers()) out.headers.emplace_back(h->name() ? h->name()->str() : "", bytes(h->value()));
  return out;
}

Status WriteTxn::delete_message(TopicId topic, PartitionId partition, Offset offset) {
  LogKey lk(topic, partition, offset);
  MDB_val k = val(lk.bytes), v;
  int rc = mdb_get(txn_, store_.log_, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(ErrorCode::kInvalidArgument, "message not stored");
  if (rc) return lmdb_error(rc, "read message");
  const auto size = static_cast<std::int64_t>(v.mv_size);
  if ((rc = mdb_del(txn_, store_.log_, &k, nullptr))) return lmdb_error(rc, "delete message");
  return add_partition_bytes(topic, partition, -size);
}

Status WriteTxn::add_partition_bytes(TopicId topic, PartitionId partition, std::int64_t delta) {
  PartitionKey pk(topic, partition);
  MDB_val k = val(pk.bytes), v;
  int rc = mdb_get(txn_, store_.partitions_, &k, &v);
  if (rc == MDB_NOTFOUND) return {};
  if (rc) return lmdb_error(rc, "read partition");
  const std::uint64_t next = read_u64(v);
  const auto bytes = static_cast<std::int64_t>(read_second_u64(v)) + delta;
  auto nv_bytes = two_u64(next, static_cast<std::uint64_t>(std::max<std::int64_t>(bytes, 0)));
  MDB_val nv = val(nv_bytes);
  if ((rc = mdb_put(txn_, store_.partitions_, &k, &nv, 0))) return lmdb_error(rc, "write partition");
  return {};
}

Result<std::optional<OwnedPending>> WriteTxn::get_pending(GroupId group, TopicId topic, PartitionId partition,
                                                          Offset offset) {
  PendingKey pk(group, topic, partition, offset);
  MDB_val k = val(pk.bytes), v;
  int rc = mdb_get(txn_, store_.pending_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<OwnedPending>{};
  if (rc) return lmdb_error(rc, "read pending");
  auto rec = parse_pending(v);
  if (!rec) return Error(ErrorCode::kStorageError, "corrupt pending record");
  return rec;
}

Status WriteTxn::put_pending(GroupId group, TopicId topic, PartitionId partition, Offset offset,
                             const OwnedPending& record) {
  fbb_.Clear();
  std::vector<flatbuffers::Offset<flatbuffers::String>> reasons;
  for (const auto& r : record.reasons) reasons.push_back(fbb_.CreateString(r));
  fbb_.Finish(CreatePendingRecord(fbb_, record.delivery_count, record.first_delivery_ms, record.last_delivery_ms,
                                  record.due_ms, reasons.empty() ? 0 : fbb_.CreateVector(reasons)));
  PendingKey pk(group, topic, partition, offset);
  MDB_val k = val(pk.bytes), v = val(fbb_.GetBufferPointer(), fbb_.GetSize());
  if (int rc = mdb_put(txn_, store_.pending_, &k, &v, 0)) return lmdb_error(rc, "write pending");
  return {};
}

Status WriteTxn::clear_pending(GroupId group, TopicId topic, PartitionId partition, Offset offset) {
  PendingKey pk(group, topic, partition, offset);
  MDB_val k = val(pk.bytes);
  int rc = mdb_del(txn_, store_.pending_, &k, nullptr);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "delete pending");
  return {};
}

Status WriteTxn::put_delayed(std::uint64_t due_ms, TopicId topic, PartitionId partition, std::uint64_t timestamp_ms,
                             std::span<const std::uint8_t> key, std::span<const HeaderView> headers,
                             std::span<const std::uint8_t> body, Growth growth) {
  grows(growth);
  auto seq = next_counter("next_delayed_seq");
  if (!seq) return seq.error();
  fbb_.Clear();
  std::vector<flatbuffers::Offset<StoredHeader>> hs;
  for (const auto& [name, value] : headers)
    hs.push_back(CreateStoredHeader(fbb_, fbb_.CreateString(name.data(), name.size()),
                                    fbb_.CreateVector(value.data(), value.size())));
  auto msg = CreateStoredMessage(fbb_, timestamp_ms, key.empty() ? 0 : fbb_.CreateVector(key.data(), key.size()),
                                 hs.empty() ? 0 : fbb_.CreateVector(hs), fbb_.CreateVector(body.data(), body.size()));
  fbb_.Finish(CreateDelayedRecord(fbb_, topic.value(), partition.value(), msg));
  DelayedKey dk(due_ms, *seq);
  MDB_val k = val(dk.bytes), v = val(fbb_.GetBufferPointer(), fbb_.GetSize());
  if (int rc = mdb_put(txn_, store_.delayed_, &k, &v, 0)) return lmdb_error(rc, "write delayed");
  return {};
}

Result<std::vector<std::pair<TopicId, std::pair<PartitionId, Offset>>>> WriteTxn::release_delayed(
    std::uint64_t now_ms, std::size_t max) {
  std::vector<std::pair<TopicId, std::pair<PartitionId, Offset>>> out;
  for (std::size_t n = 0; n < max; ++n) {
    Cursor cur(txn_, store_.delayed_);
    if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
    MDB_val k, v;
    int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST);
    if (rc == MDB_NOTFOUND) break;
    if (rc) return lmdb_error(rc, "read delayed");
    if (DelayedKey::due(static_cast<const std::uint8_t*>(k.mv_data)) > now_ms) break;
    std::vector<std::uint64_t> scratch;
    const std::uint8_t* data = aligned(v, scratch);
    std::vector<std::uint8_t> copy(data, data + v.mv_size);  // the delete below frees the page
    if ((rc = mdb_cursor_del(cur.get(), 0))) return lmdb_error(rc, "delete delayed");
    flatbuffers::Verifier verifier(copy.data(), copy.size());
    if (!verifier.VerifyBuffer<DelayedRecord>(nullptr)) continue;  // unreadable: dropped
    const auto* rec = flatbuffers::GetRoot<DelayedRecord>(copy.data());
    const auto* m = rec->message();
    if (!m) continue;
    std::vector<HeaderView> headers;
    if (m->headers())
      for (const auto* h : *m->headers())
        headers.emplace_back(h->name() ? h->name()->string_view() : std::string_view{},
                             h->value() ? std::span<const std::uint8_t>(h->value()->data(), h->value()->size())
                                        : std::span<const std::uint8_t>{});
    auto span_of = [](const flatbuffers::Vector<std::uint8_t>* b) {
      return b ? std::span<const std::uint8_t>(b->data(), b->size()) : std::span<const std::uint8_t>{};
    };
    // Moved from the delayed table, already counted: not new data.
    auto offset = append(TopicId(rec->topic_id()), PartitionId(rec->partition()), now_ms, span_of(m->key()), headers,
                         span_of(m->body()), Growth::kVerdict);
    if (!offset) {
      if (offset.error().code == ErrorCode::kUnknownPartition) continue;  // its topic was deleted
      return offset.error();
    }
    out.push_back({TopicId(rec->topic_id()), {PartitionId(rec->partition()), *offset}});
  }
  return out;
}

Result<std::size_t> WriteTxn::trim(TopicId topic, PartitionId partition, std::uint64_t min_timestamp_ms,
                                   std::uint64_t max_bytes, std::size_t max) {
  PartitionKey pk(topic, partition);
  MDB_val pkv = val(pk.bytes), pv;
  int rc = mdb_get(txn_, store_.partitions_, &pkv, &pv);
  if (rc == MDB_NOTFOUND) return std::size_t{0};
  if (rc) return lmdb_error(rc, "read partition");
  std::uint64_t bytes = read_second_u64(pv);
  const std::uint64_t next_offset = read_u64(pv);
  Cursor cur(txn_, store_.log_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  LogKey start(topic, partition, Offset(0));
  MDB_val k = val(start.bytes), v;
  std::size_t deleted = 0;
  std::vector<std::uint64_t> scratch;
  for (rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
       rc == 0 && deleted < max && has_prefix(k, pk.bytes.data(), pk.bytes.size());
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_GET_CURRENT)) {
    const std::uint8_t* data = aligned(v, scratch);
    flatbuffers::Verifier verifier(data, v.mv_size);
    const bool readable = verifier.VerifyBuffer<StoredMessage>(nullptr);
    const bool too_old = readable && flatbuffers::GetRoot<StoredMessage>(data)->timestamp_ms() < min_timestamp_ms;
    if (!too_old && bytes <= max_bytes) break;
    bytes -= std::min<std::uint64_t>(bytes, v.mv_size);
    if ((rc = mdb_cursor_del(cur.get(), 0))) return lmdb_error(rc, "trim");
    ++deleted;
  }
  if (rc != 0 && rc != MDB_NOTFOUND && rc != EINVAL) return lmdb_error(rc, "trim");
  if (deleted > 0) {
    auto nv_bytes = two_u64(next_offset, bytes);
    MDB_val nv = val(nv_bytes);
    if ((rc = mdb_put(txn_, store_.partitions_, &pkv, &nv, 0))) return lmdb_error(rc, "write partition");
  }
  return deleted;
}

Status WriteTxn::put_policy(std::string_view key, std::span<const std::uint8_t> record) {
  MDB_val k = val(key), v = val(record.data(), record.size());
  if (int rc = mdb_put(txn_, store_.policies_, &k, &v, 0)) return lmdb_error(rc, "write policy");
  return {};
}

}  // namespace txmq::broker::storage

namespace txmq::broker::storage {
using namespace internal;

Result<std::optional<TopicMeta>> WriteTxn::find_topic(std::string_view name) {
  MDB_val k = val(name), v;
  int rc = mdb_get(txn_, store_.topics_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<TopicMeta>{};
  if (rc) return lmdb_error(rc, "read topic");
  std::vector<std::uint64_t> scratch;
  const auto* rec = flatbuffers::GetRoot<TopicRecord>(aligned(v, scratch));
  return std::optional<TopicMeta>(TopicMeta{TopicId(rec->id()), std::string(name), rec->partitions(),
                                            rec->created_at_ms(), rec->retention_ms(), rec->retention_bytes()});
}

}  // namespace txmq::broker::storage

namespace txmq::broker::storage {
using namespace internal;

Result<std::vector<TopicId>> Store::group_topics(GroupId group) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), cursors_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  std::array<std::uint8_t, 4> prefix;
  put_be32(prefix.data(), group.value());
  std::vector<TopicId> out;
  MDB_val k = val(prefix), v;
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE); rc == 0 && has_prefix(k, prefix.data(), 4);
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    TopicId t(get_be32(static_cast<const std::uint8_t*>(k.mv_data) + 4));
    if (out.empty() || out.back() != t) out.push_back(t);
  }
  return out;
}

}  // namespace txmq::broker::storage
