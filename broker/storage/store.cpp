#include "broker/storage/store.h"
#include "broker/storage/layout.h"
#include "broker/storage/store_internal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <filesystem>

#include <spdlog/spdlog.h>

namespace txmq::broker::storage {
using namespace internal;
namespace {

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
  const std::uint64_t map_bytes =
      (options.max_bytes + reserve_bytes(options.max_bytes) + options.log_bytes + kRound - 1) / kRound * kRound;
  if (int rc = mdb_env_set_mapsize(env, map_bytes)) return lmdb_error(rc, "set_mapsize");
  if (int rc = mdb_env_set_maxdbs(env, 24)) return lmdb_error(rc, "set_maxdbs");
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

std::span<const Store::NamedDb> Store::key_spaces() {
  static constexpr NamedDb kTable[] = {
      {"meta", &Store::meta_},         {"topics", &Store::topics_},         {"partitions", &Store::partitions_},
      {"log", &Store::log_},           {"groups", &Store::groups_},         {"cursors", &Store::cursors_},
      {"acked", &Store::acked_},       {"pending", &Store::pending_},       {"delayed", &Store::delayed_},
      {"policies", &Store::policies_}, {"txn_open", &Store::txn_open_},     {"txn_parked", &Store::txn_parked_},
      {"txn_ended", &Store::txn_ended_}, {"txn_checks", &Store::txn_checks_}, {"producers", &Store::producers_},
      {"replog", &Store::replog_},     {"epochs", &Store::epochs_},         {"undo", &Store::undo_}};
  static_assert(names_every_key_space(kTable), "the table must follow layout.h's kKeySpaces");
  return kTable;
}

Status Store::open_databases(const std::string& dir) {
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
  // A store of an older layout lacks only the key spaces added since: they are added.
  std::uint32_t version = kLayoutVersion;
  if (!fresh && mdb_dbi_open(txn, "meta", 0, &meta_) == 0) {
    MDB_val k = val(kLayoutMarkerKey), v;
    if (mdb_get(txn, meta_, &k, &v) == 0 && v.mv_size == 4) version = get_be32(static_cast<const std::uint8_t*>(v.mv_data));
  }
  const bool upgrade = version >= kOldestUpgradable && version < kLayoutVersion;
  std::uint8_t index = 0;
  for (const auto& d : key_spaces()) {
    const bool added = upgrade && kKeySpaceSince[index] > version;
    int rc = mdb_dbi_open(txn, d.name, fresh || added ? MDB_CREATE : 0, &(this->*d.dbi));
    if (rc == 0 && this->*d.dbi < space_of_.size()) space_of_[this->*d.dbi] = index;
    if (rc == 0 && this->*d.dbi >= space_of_.size()) rc = MDB_DBS_FULL;
    ++index;
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
  if (auto st = check_layout_marker(txn, fresh, upgrade, damaged); !st) {
    mdb_txn_abort(txn);
    return st;
  }
  auto pos = read_log_position(txn);
  if (!pos) {
    mdb_txn_abort(txn);
    return pos.error();
  }
  last_index_ = pos->last_index;
  epoch_ = pos->epoch;
  if (int rc = mdb_txn_commit(txn)) return lmdb_error(rc, "commit");
  if (upgrade) spdlog::info("the store in {} was upgraded from layout {} to {}", dir, version, kLayoutVersion);
  // In relaxed mode that commit's meta page is not synced yet; a power loss now would
  // leave a store with data but no catalog, which the next start refuses as damaged.
  if (fresh) {
    if (int rc = mdb_env_sync(env_, 1)) return lmdb_error(rc, "sync the new store");
  }
  return {};
}

std::uint64_t Store::reserve_bytes(std::uint64_t max_bytes) { return std::max<std::uint64_t>(1ull << 20, max_bytes / 32); }

std::uint64_t Store::used_pages(MDB_txn* txn) const {
  // Database 0 is LMDB's free list: its own pages are in use, the pages it lists are not.
  constexpr MDB_dbi kFreeList = 0;
  std::uint64_t pages = 2;  // the two meta pages
  auto add = [&](MDB_dbi dbi) {
    MDB_stat st;
    if (mdb_stat(txn, dbi, &st) == 0) pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
  };
  add(kFreeList);
  add(main_);
  for (const auto& d : key_spaces())
    if (this->*d.dbi != replog_ && this->*d.dbi != undo_) add(this->*d.dbi);
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
  if (!parent_) {
    if (auto st = append_record(); !st) return st;
  }
  int rc = mdb_txn_commit(txn_);
  txn_ = nullptr;  // commit frees the transaction even when it fails
  if (rc) return lmdb_error(rc, "commit");
  if (parent_) {
    // An op's own nested transactions (a redrive's, one per letter) count as the op, and
    // their changes join the parent's record.
    if (new_data_) parent_->new_data_ = true;
    parent_->redo_.append(redo_);
    parent_->undo_.append(undo_);
    parent_->last_over_.reset();  // this transaction's changes came after it
    parent_->undoable_ = parent_->undoable_ && undoable_;
    parent_->applying_ = parent_->applying_ || applying_;
    parent_->last_index_ = last_index_;
    parent_->epoch_ = epoch_;
    return {};
  }
  store_.epoch_.store(epoch_, std::memory_order_release);
  store_.last_index_.store(last_index_, std::memory_order_release);
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

}  // namespace txmq::broker::storage
