// Snapshots: a leader streams its whole store to a follower from one read transaction, and
// the follower installs it in steps (begin, chunks, finish) before it applies the log from
// the snapshot's index on. See layout.h for the meta keys an install keeps.

#include <algorithm>

#include "broker/storage/layout.h"
#include "broker/storage/store.h"
#include "broker/storage/store_internal.h"

namespace txmq::broker::storage {
using namespace internal;
namespace {

// What one entry costs against a chunk's max_bytes, beyond its key and value: room for the
// wire's table and vectors, so that a chunk of small entries stays near its size too.
constexpr std::size_t kEntryOverhead = 32;

bool is_own_meta(std::uint8_t space, std::span<const std::uint8_t> key) {
  return space == 0 && own_meta_key(std::string_view(reinterpret_cast<const char*>(key.data()), key.size()));
}

}  // namespace

// -- the leader's side --------------------------------------------------------------------

Result<std::uint64_t> Store::log_base(MDB_txn* txn) const {
  MDB_val k = val(kLogBaseKey), v;
  int rc = mdb_get(txn, meta_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::uint64_t{0};
  if (rc) return lmdb_error(rc, "read meta log_base");
  if (v.mv_size != 8) return corrupt("meta");
  return read_u64(v);
}

Result<bool> Store::snapshot_pending() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  MDB_val k = val(kSnapshotPendingKey), v;
  int rc = mdb_get(txn.get(), meta_, &k, &v);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "read meta snapshot_pending");
  return rc == 0;
}

Result<std::unique_ptr<Snapshot>> Store::open_snapshot() const {
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn)) return lmdb_error(rc, "begin the snapshot's read");
  std::unique_ptr<Snapshot> snap(new Snapshot(*this, txn));
  // The position as this transaction sees it: the atomics may be a commit ahead already.
  auto pos = read_log_position(txn);
  if (!pos) return pos.error();
  snap->position_ = *pos;
  return snap;
}

Snapshot::~Snapshot() { mdb_txn_abort(txn_); }

Result<SnapshotPart> Snapshot::read(std::uint8_t after_space, std::span<const std::uint8_t> after_key,
                                    std::size_t max_bytes) const {
  const auto spaces = Store::key_spaces();
  if (after_space >= spaces.size())
    return Error(ErrorCode::kInvalidArgument, "a snapshot has no key space " + std::to_string(after_space));
  SnapshotPart part;
  for (std::size_t space = after_space; space < spaces.size(); ++space) {
    if (!replicated_space(space)) continue;
    Cursor cur(txn_, store_.*spaces[space].dbi);
    if (cur.rc()) return lmdb_error(cur.rc(), "snapshot cursor");
    MDB_val k, v;
    int rc;
    if (space == after_space && !after_key.empty()) {
      // After the resume point: at it, or the first key past it when it is gone (it cannot
      // be in this transaction's view, but a follower's request may name anything).
      k = val(after_key.data(), after_key.size());
      rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
      if (rc == 0 && std::ranges::equal(bytes_of(k), after_key)) rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT);
    } else {
      rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
      const auto key = bytes_of(k), value = bytes_of(v);
      if (is_own_meta(static_cast<std::uint8_t>(space), key)) continue;
      const std::size_t cost = key.size() + value.size() + kEntryOverhead;
      if (!part.entries.empty() && part.bytes + cost > max_bytes) return part;
      part.entries.push_back({static_cast<std::uint8_t>(space), {key.begin(), key.end()}, {value.begin(), value.end()}});
      part.bytes += cost;
    }
    if (rc != MDB_NOTFOUND) return lmdb_error(rc, std::string("read ") + spaces[space].name + " for a snapshot");
  }
  part.done = true;
  return part;
}

// -- the follower's install ---------------------------------------------------------------

Status WriteTxn::begin_snapshot_install() {
  // Nothing of this is recorded: the install replaces the log it would be recorded in.
  applying_ = true;
  for (const auto& space : Store::key_spaces())
    if (int rc = mdb_drop(txn_, store_.*space.dbi, 0)) return lmdb_error(rc, std::string("empty ") + space.name);
  // The layout marker first: a store without one is taken for a damaged one when it opens.
  std::array<std::uint8_t, 4> version;
  put_be32(version.data(), kLayoutVersion);
  MDB_val k = val(kLayoutMarkerKey), v = val(version);
  if (int rc = mdb_put(txn_, store_.meta_, &k, &v, 0)) return lmdb_error(rc, "write the layout marker");
  k = val(kSnapshotPendingKey), v = val(nullptr, 0);
  if (int rc = mdb_put(txn_, store_.meta_, &k, &v, 0)) return lmdb_error(rc, "mark the snapshot pending");
  last_index_ = 0;
  epoch_ = 0;
  return {};
}

Status WriteTxn::put_snapshot_entries(std::span<const SnapshotEntry> entries) {
  applying_ = true;
  const auto spaces = Store::key_spaces();
  for (const SnapshotEntry& e : entries) {
    if (e.space >= spaces.size() || !replicated_space(e.space) || is_own_meta(e.space, e.key))
      return Error(ErrorCode::kInvalidArgument, "a snapshot entry of key space " + std::to_string(e.space) +
                                                    " that a snapshot does not carry");
    MDB_val k = val(e.key.data(), e.key.size()), v = val(e.value.data(), e.value.size());
    if (int rc = mdb_put(txn_, store_.*spaces[e.space].dbi, &k, &v, 0))
      return lmdb_error(rc, std::string("install a snapshot entry in ") + spaces[e.space].name);
  }
  return {};
}

Status WriteTxn::finish_snapshot_install(std::uint64_t index, std::uint64_t epoch) {
  applying_ = true;
  MDB_val k = val(kSnapshotPendingKey), v;
  int rc = mdb_get(txn_, store_.meta_, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(ErrorCode::kInvalidArgument, "no snapshot install is pending");
  if (rc) return lmdb_error(rc, "read meta snapshot_pending");
  auto installed = store_.read_log_position(txn_);
  if (!installed) return installed.error();
  if (installed->epoch != epoch)
    return Error(ErrorCode::kInvalidArgument, "the snapshot's entries hold epoch " + std::to_string(installed->epoch) +
                                                  ", its chunks said " + std::to_string(epoch));
  if ((rc = mdb_del(txn_, store_.meta_, &k, nullptr))) return lmdb_error(rc, "clear meta snapshot_pending");
  auto base = id_key(index);
  k = val(kLogBaseKey), v = val(base);
  if ((rc = mdb_put(txn_, store_.meta_, &k, &v, 0))) return lmdb_error(rc, "write meta log_base");
  last_index_ = index;
  epoch_ = epoch;
  return {};
}

}  // namespace txmq::broker::storage
