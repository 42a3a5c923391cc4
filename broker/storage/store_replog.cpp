// The replication log: every change a write transaction makes is recorded (redo.h) and
// appended as one record in the same transaction; a follower applies the records it is
// sent. The epochs key space says which leader wrote which records. See layout.h.

#include <openssl/evp.h>

#include <cstdio>

#include "broker/storage/layout.h"
#include "broker/storage/store.h"
#include "broker/storage/store_internal.h"
#include "broker/wall_clock.h"

namespace txmq::broker::storage {
using namespace internal;
namespace {

// A commit trims at most this many old records, so that one commit never carries a long
// delete; the log's excess goes over the next commits.
constexpr std::size_t kTrimPerCommit = 64;

std::uint64_t index_of(const MDB_val& k) {
  return k.mv_size == 8 ? get_be64(static_cast<const std::uint8_t*>(k.mv_data)) : 0;
}

}  // namespace

// -- recording ---------------------------------------------------------------------------

void WriteTxn::record(RedoKind kind, MDB_dbi dbi, const MDB_val& key, const MDB_val* value) {
  if (applying_ || dbi == store_.replog_ || !store_.logging_) return;
  redo_.add(kind, store_.space_of_[dbi], bytes_of(key), value ? bytes_of(*value) : std::span<const std::uint8_t>());
}

int WriteTxn::put(MDB_dbi dbi, MDB_val* key, MDB_val* value, unsigned flags) {
  int rc = mdb_put(txn_, dbi, key, value, flags);
  if (rc == 0) record(RedoKind::kPut, dbi, *key, value);
  return rc;
}

int WriteTxn::cursor_put(MDB_cursor* cur, MDB_dbi dbi, MDB_val* key, MDB_val* value, unsigned flags) {
  int rc = mdb_cursor_put(cur, key, value, flags);
  if (rc == 0) record(RedoKind::kPut, dbi, *key, value);
  return rc;
}

int WriteTxn::del(MDB_dbi dbi, MDB_val* key) {
  int rc = mdb_del(txn_, dbi, key, nullptr);
  if (rc == 0) record(RedoKind::kDelete, dbi, *key, nullptr);
  return rc;
}

int WriteTxn::cursor_del(MDB_cursor* cur, MDB_dbi dbi) {
  MDB_val k, v;
  int rc = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
  if (rc) return rc;
  // The key points into the page the delete changes: recorded first.
  record(RedoKind::kDelete, dbi, k, nullptr);
  return mdb_cursor_del(cur, 0);
}

int WriteTxn::del_prefix(MDB_dbi dbi, std::span<const std::uint8_t> prefix) {
  int rc = delete_prefix(txn_, dbi, prefix.data(), prefix.size());
  if (rc == 0) record(RedoKind::kDeletePrefix, dbi, val(prefix.data(), prefix.size()), nullptr);
  return rc;
}

// -- the log -----------------------------------------------------------------------------

Status WriteTxn::append_record() {
  if (auto st = trim_log(); !st) return st;
  if (applying_ || redo_.empty()) return {};
  std::vector<std::uint8_t> bytes = redo_.record({epoch_, wall_ms()});
  auto key = id_key(last_index_ + 1);
  MDB_val k = val(key), v = val(bytes.data(), bytes.size());
  if (int rc = mdb_put(txn_, store_.replog_, &k, &v, MDB_APPEND)) return lmdb_error(rc, "append to the replication log");
  ++last_index_;
  return {};
}

Status WriteTxn::trim_log() {
  MDB_stat st;
  if (int rc = mdb_stat(txn_, store_.replog_, &st)) return lmdb_error(rc, "replication log size");
  std::uint64_t bytes = (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * store_.page_size_;
  const std::uint64_t keep_from = store_.log_keep_from_.load(std::memory_order_acquire);
  const std::uint64_t now = wall_ms();
  Cursor cur(txn_, store_.replog_);
  if (cur.rc()) return lmdb_error(cur.rc(), "replication log cursor");
  MDB_val k, v;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST);
  for (std::size_t n = 0; rc == 0 && n < kTrimPerCommit; ++n) {
    // The newest record stays: a follower asks for the one after it.
    const std::uint64_t index = index_of(k);
    if (index >= last_index_ || index >= keep_from) break;
    auto header = redo_header(bytes_of(v));
    const bool old = header && header->time_ms + store_.log_max_age_ms_ < now;
    if (bytes <= store_.log_max_bytes_ && !old) break;
    bytes -= std::min<std::uint64_t>(bytes, v.mv_size + k.mv_size);
    if ((rc = mdb_cursor_del(cur.get(), 0))) return lmdb_error(rc, "trim the replication log");
    rc = mdb_cursor_get(cur.get(), &k, &v, MDB_GET_CURRENT);
  }
  return {};
}

Status WriteTxn::begin_epoch(std::uint64_t epoch, std::string_view leader) {
  if (epoch <= epoch_)
    return Error(ErrorCode::kInvalidArgument,
                 "epoch " + std::to_string(epoch) + " is not above the current " + std::to_string(epoch_));
  std::vector<std::uint8_t> value(8);
  put_be64(value.data(), last_index_ + 1);
  value.insert(value.end(), leader.begin(), leader.end());
  auto key = id_key(epoch);
  MDB_val k = val(key), v = val(value.data(), value.size());
  if (int rc = put(store_.epochs_, &k, &v)) return lmdb_error(rc, "begin epoch");
  epoch_ = epoch;
  return {};
}

Status WriteTxn::apply_record(std::uint64_t index, std::span<const std::uint8_t> record) {
  if (!redo_.empty())
    return Error(ErrorCode::kInvalidArgument, "a transaction that applies records must write nothing else");
  if (index != last_index_ + 1)
    return Error(ErrorCode::kInvalidArgument, "record " + std::to_string(index) + " is not the next one (the log ends at " +
                                                  std::to_string(last_index_) + ")");
  applying_ = true;
  const auto spaces = Store::key_spaces();
  Status st = for_each_change(record, spaces.size(), [&](const RedoChange& c) -> Status {
    if (c.space == kReplogSpace) return Error(ErrorCode::kStorageError, "a replication record writes the log itself");
    const MDB_dbi dbi = store_.*spaces[c.space].dbi;
    MDB_val k = val(c.key.data(), c.key.size());
    int rc = 0;
    switch (c.kind) {
      case RedoKind::kPut: {
        MDB_val v = val(c.value.data(), c.value.size());
        rc = mdb_put(txn_, dbi, &k, &v, 0);
        if (rc == 0 && c.space == kEpochsSpace && c.key.size() == 8) epoch_ = std::max(epoch_, get_be64(c.key.data()));
        break;
      }
      case RedoKind::kDelete:
        rc = mdb_del(txn_, dbi, &k, nullptr);
        break;
      case RedoKind::kDeletePrefix:
        rc = delete_prefix(txn_, dbi, c.key.data(), c.key.size());
        break;
    }
    return rc ? Status(lmdb_error(rc, "apply a replication record")) : Status();
  });
  if (!st) return st;
  auto key = id_key(index);
  MDB_val k = val(key), v = val(record.data(), record.size());
  if (int rc = mdb_put(txn_, store_.replog_, &k, &v, MDB_APPEND)) return lmdb_error(rc, "append to the replication log");
  last_index_ = index;
  return {};
}

// -- reads -------------------------------------------------------------------------------

Status Store::load_log_position(MDB_txn* txn) {
  Cursor log(txn, replog_);
  if (log.rc()) return lmdb_error(log.rc(), "replication log cursor");
  MDB_val k, v;
  int rc = mdb_cursor_get(log.get(), &k, &v, MDB_LAST);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "read the replication log");
  // A snapshot's install leaves the log empty at its index (store_snapshot.cpp).
  auto base = log_base(txn);
  if (!base) return base.error();
  last_index_ = std::max(rc ? 0 : index_of(k), *base);
  Cursor epochs(txn, epochs_);
  if (epochs.rc()) return lmdb_error(epochs.rc(), "epochs cursor");
  rc = mdb_cursor_get(epochs.get(), &k, &v, MDB_LAST);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "read the epochs");
  epoch_ = rc ? 0 : index_of(k);
  return {};
}

Result<std::uint64_t> Store::first_log_index() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), replog_);
  if (cur.rc()) return lmdb_error(cur.rc(), "replication log cursor");
  MDB_val k, v;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST);
  if (rc == MDB_NOTFOUND) return std::uint64_t{0};
  if (rc) return lmdb_error(rc, "read the replication log");
  return index_of(k);
}

Result<std::vector<LogRecord>> Store::read_log_records(std::uint64_t from, std::size_t max_bytes) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), replog_);
  if (cur.rc()) return lmdb_error(cur.rc(), "replication log cursor");
  auto key = id_key(from);
  MDB_val k = val(key), v;
  std::vector<LogRecord> out;
  std::size_t bytes = 0;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
  for (; rc == 0 && (out.empty() || bytes + v.mv_size <= max_bytes); rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    auto data = bytes_of(v);
    out.push_back(LogRecord{index_of(k), {data.begin(), data.end()}});
    bytes += v.mv_size;
  }
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "read the replication log");
  return out;
}

Result<std::vector<EpochStart>> Store::epochs() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), epochs_);
  if (cur.rc()) return lmdb_error(cur.rc(), "epochs cursor");
  std::vector<EpochStart> out;
  MDB_val k, v;
  int rc;
  for (rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    if (v.mv_size < 8) return corrupt("epochs");
    const auto* p = static_cast<const char*>(v.mv_data);
    out.push_back({index_of(k), get_be64(reinterpret_cast<const std::uint8_t*>(p)), std::string(p + 8, v.mv_size - 8)});
  }
  if (rc != MDB_NOTFOUND) return lmdb_error(rc, "read the epochs");
  return out;
}

Result<std::vector<KeySpaceDigest>> Store::digest() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  std::vector<KeySpaceDigest> out;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  for (const auto& space : key_spaces()) {
    if (this->*space.dbi == replog_ || this->*space.dbi == undo_) continue;
    Cursor cur(txn.get(), this->*space.dbi);
    if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
    EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
    KeySpaceDigest d{space.name, 0, {}};
    MDB_val k, v;
    int rc;
    for (rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
      if (this->*space.dbi == meta_ && own_meta_key({static_cast<const char*>(k.mv_data), k.mv_size})) continue;
      std::array<std::uint8_t, 16> lengths = two_u64(k.mv_size, v.mv_size);
      EVP_DigestUpdate(ctx.get(), lengths.data(), lengths.size());
      EVP_DigestUpdate(ctx.get(), k.mv_data, k.mv_size);
      EVP_DigestUpdate(ctx.get(), v.mv_data, v.mv_size);
      ++d.entries;
    }
    if (rc != MDB_NOTFOUND) return lmdb_error(rc, std::string("read ") + space.name);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    d.sha256.reserve(2 * len);
    for (unsigned i = 0; i < len; ++i) {
      char hex[3];
      std::snprintf(hex, sizeof hex, "%02x", md[i]);
      d.sha256 += hex;
    }
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace txmq::broker::storage
