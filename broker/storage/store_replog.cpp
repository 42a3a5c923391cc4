// The replication log: every change a write transaction makes is recorded (redo.h) and
// appended as one record in the same transaction; a follower applies the records it is
// sent. The epochs key space says which leader wrote which records. See layout.h.

#include <openssl/evp.h>

#include <cstdio>
#include <cstring>
#include <map>

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

// A deletion of a whole prefix (a topic's log) keeps an undo image of at most this many
// bytes; a bigger one makes its record one that cannot be truncated.
constexpr std::size_t kUndoPrefixMaxBytes = 64u << 20;

std::uint64_t index_of(const MDB_val& k) {
  return k.mv_size == 8 ? get_be64(static_cast<const std::uint8_t*>(k.mv_data)) : 0;
}

}  // namespace

// -- recording ---------------------------------------------------------------------------
//
// A change is recorded twice: as itself in redo_ (the log's record) and as its inverse in
// undo_ (what truncation applies, last change first). The inverse is read before the
// change: the key's old value, or its absence. A put that cannot have overwritten
// anything (MDB_NOOVERWRITE, MDB_APPEND) costs no read.

bool WriteTxn::recording(MDB_dbi dbi) const {
  return !applying_ && store_.logging_ && dbi != store_.replog_ && dbi != store_.undo_;
}

void WriteTxn::keep_old(MDB_dbi dbi, const MDB_val& key, RedoBuilder& undo) {
  MDB_val k = key, old;
  const std::uint8_t space = store_.space_of_[dbi];
  if (mdb_get(txn_, dbi, &k, &old) == 0)
    undo.add(RedoKind::kPut, space, bytes_of(key), bytes_of(old));
  else
    undo.add(RedoKind::kDelete, space, bytes_of(key));
}

void WriteTxn::keep_old_prefix(MDB_dbi dbi, std::span<const std::uint8_t> prefix, RedoBuilder& undo) {
  Cursor cur(txn_, dbi);
  if (cur.rc()) {
    undoable_ = false;
    return;
  }
  const std::uint8_t space = store_.space_of_[dbi];
  const std::size_t start = undo.size();
  MDB_val k = val(prefix.data(), prefix.size()), v;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
  for (; rc == 0 && has_prefix(k, prefix.data(), prefix.size()); rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    if (undo.size() - start > kUndoPrefixMaxBytes) {
      // A topic this big is not copied to undo it: a record that removes it cannot be
      // truncated, and a follower that would have to takes a snapshot instead.
      undoable_ = false;
      return;
    }
    undo.add(RedoKind::kPut, space, bytes_of(k), bytes_of(v));
  }
  if (rc != 0 && rc != MDB_NOTFOUND) undoable_ = false;
}

int WriteTxn::put(MDB_dbi dbi, MDB_val* key, MDB_val* value, unsigned flags) {
  changed(dbi);
  const bool rec = recording(dbi);
  const bool new_key = flags & (MDB_NOOVERWRITE | MDB_APPEND);
  if (rec && !new_key) keep_old(dbi, *key, undo_);
  int rc = mdb_put(txn_, dbi, key, value, flags);
  if (rc == 0 && rec) {
    const std::uint8_t space = store_.space_of_[dbi];
    if (new_key) undo_.add(RedoKind::kDelete, space, bytes_of(*key));
    // A new message is never changed: the record refers to it (redo.h, kPutRef).
    if (new_key && dbi == store_.log_)
      redo_.add(RedoKind::kPutRef, space, bytes_of(*key));
    else
      redo_.add(RedoKind::kPut, space, bytes_of(*key), bytes_of(*value));
  }
  return rc;
}

int WriteTxn::put_over(MDB_dbi dbi, MDB_val* key, MDB_val* value, const MDB_val& old) {
  const bool rec = recording(dbi);
  int rc = mdb_put(txn_, dbi, key, value, 0);
  if (rc != 0 || !rec) return rc;
  const auto k = bytes_of(*key);
  if (last_over_ && last_over_->dbi == dbi && last_over_->value_size == value->mv_size &&
      std::equal(k.begin(), k.end(), last_over_->key.begin(), last_over_->key.begin() + last_over_->key_size)) {
    redo_.overwrite(last_over_->value_at, bytes_of(*value));
    return rc;
  }
  undo_.add(RedoKind::kPut, store_.space_of_[dbi], k, bytes_of(old));
  const std::size_t at = redo_.add(RedoKind::kPut, store_.space_of_[dbi], k, bytes_of(*value));
  last_over_.reset();
  if (k.size() <= LastOver{}.key.size()) {
    last_over_.emplace(LastOver{dbi, {}, k.size(), at, value->mv_size});
    std::copy(k.begin(), k.end(), last_over_->key.begin());
  }
  return rc;
}

int WriteTxn::cursor_put(MDB_cursor* cur, MDB_dbi dbi, MDB_val* key, MDB_val* value, unsigned flags) {
  changed(dbi);
  const bool rec = recording(dbi);
  const bool new_key = flags & (MDB_NOOVERWRITE | MDB_APPEND);
  if (rec && (flags & MDB_CURRENT)) {
    MDB_val k, old;
    if (mdb_cursor_get(cur, &k, &old, MDB_GET_CURRENT) == 0)
      undo_.add(RedoKind::kPut, store_.space_of_[dbi], bytes_of(k), bytes_of(old));
  } else if (rec && !new_key) {
    keep_old(dbi, *key, undo_);
  }
  int rc = mdb_cursor_put(cur, key, value, flags);
  if (rc == 0 && rec) {
    if (new_key) undo_.add(RedoKind::kDelete, store_.space_of_[dbi], bytes_of(*key));
    redo_.add(RedoKind::kPut, store_.space_of_[dbi], bytes_of(*key), bytes_of(*value));
  }
  return rc;
}

int WriteTxn::del(MDB_dbi dbi, MDB_val* key) {
  changed(dbi);
  const bool rec = recording(dbi);
  MDB_val old;
  if (rec && mdb_get(txn_, dbi, key, &old) == 0)
    undo_.add(RedoKind::kPut, store_.space_of_[dbi], bytes_of(*key), bytes_of(old));
  int rc = mdb_del(txn_, dbi, key, nullptr);
  if (rc == 0 && rec) redo_.add(RedoKind::kDelete, store_.space_of_[dbi], bytes_of(*key));
  return rc;
}

int WriteTxn::cursor_del(MDB_cursor* cur, MDB_dbi dbi) {
  changed(dbi);
  MDB_val k, v;
  int rc = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
  if (rc) return rc;
  // The key and value point into the page the delete changes: recorded first.
  if (recording(dbi)) {
    undo_.add(RedoKind::kPut, store_.space_of_[dbi], bytes_of(k), bytes_of(v));
    redo_.add(RedoKind::kDelete, store_.space_of_[dbi], bytes_of(k));
  }
  return mdb_cursor_del(cur, 0);
}

int WriteTxn::del_prefix(MDB_dbi dbi, std::span<const std::uint8_t> prefix) {
  changed(dbi);
  const bool rec = recording(dbi);
  if (rec) keep_old_prefix(dbi, prefix, undo_);
  int rc = delete_prefix(txn_, dbi, prefix.data(), prefix.size());
  if (rc == 0 && rec) redo_.add(RedoKind::kDeletePrefix, store_.space_of_[dbi], prefix);
  return rc;
}

// -- the log -----------------------------------------------------------------------------

Status WriteTxn::append_record() {
  if (auto st = trim_log(); !st) return st;
  if (auto st = trim_undo(); !st) return st;
  if (applying_ || redo_.empty()) return {};
  const RedoHeader header{epoch_, wall_ms()};
  std::vector<std::uint8_t> bytes = redo_.compacted_record(header, Store::key_spaces().size());
  auto key = id_key(last_index_ + 1);
  MDB_val k = val(key), v = val(bytes.data(), bytes.size());
  if (int rc = mdb_put(txn_, store_.replog_, &k, &v, MDB_APPEND)) return lmdb_error(rc, "append to the replication log");
  if (auto st = put_undo(last_index_ + 1, header, UndoForm::kCompacted); !st) return st;
  ++last_index_;
  return {};
}

Status WriteTxn::put_undo(std::uint64_t index, const RedoHeader& header, UndoForm form) {
  if (!undoable_) return {};  // no image: truncating this record takes a snapshot
  // An image with more than one change of a key undoes it all the same, applied backwards.
  std::vector<std::uint8_t> bytes = form == UndoForm::kCompacted
                                        ? undo_.compacted_record(header, Store::key_spaces().size(), RedoBuilder::Keep::kFirst)
                                        : undo_.record(header);
  auto key = id_key(index);
  MDB_val k = val(key), v = val(bytes.data(), bytes.size());
  if (int rc = mdb_put(txn_, store_.undo_, &k, &v, 0)) return lmdb_error(rc, "keep the undo image");
  return {};
}

Status WriteTxn::trim_undo() {
  // An image is needed while its record may still be truncated: above the commit index
  // (set_undo_keep_from) and while the log still holds the record.
  std::uint64_t keep_from = store_.undo_keep_from_.load(std::memory_order_acquire);
  Cursor log(txn_, store_.replog_);
  if (log.rc()) return lmdb_error(log.rc(), "replication log cursor");
  MDB_val k, v;
  if (mdb_cursor_get(log.get(), &k, &v, MDB_FIRST) == 0) keep_from = std::max(keep_from, index_of(k));
  Cursor cur(txn_, store_.undo_);
  if (cur.rc()) return lmdb_error(cur.rc(), "undo cursor");
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST);
  for (std::size_t n = 0; rc == 0 && n < kTrimPerCommit && index_of(k) < keep_from; ++n) {
    if ((rc = mdb_cursor_del(cur.get(), 0))) return lmdb_error(rc, "trim the undo images");
    rc = mdb_cursor_get(cur.get(), &k, &v, MDB_GET_CURRENT);
  }
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
  if (epoch_ == 0) {
    // The first epoch of a store that ran without replication: it holds state no record
    // carries. Its log starts past a base (meta "log_base", as after a snapshot's
    // install), so that a follower starting empty is sent a snapshot, not a log that
    // lacks that state.
    auto holds = holds_unlogged_state();
    if (!holds) return holds.error();
    if (*holds) {
      std::array<std::uint8_t, 8> base;
      put_be64(base.data(), last_index_ + 1);
      MDB_val bk = val(kLogBaseKey), bv = val(base);
      if (int rc = mdb_put(txn_, store_.meta_, &bk, &bv, 0)) return lmdb_error(rc, "write meta log_base");
      ++last_index_;
    }
  }
  std::vector<std::uint8_t> value(8);
  put_be64(value.data(), last_index_ + 1);
  value.insert(value.end(), leader.begin(), leader.end());
  auto key = id_key(epoch);
  MDB_val k = val(key), v = val(value.data(), value.size());
  if (int rc = put(store_.epochs_, &k, &v)) return lmdb_error(rc, "begin epoch");
  epoch_ = epoch;
  return {};
}

Result<bool> WriteTxn::holds_unlogged_state() {
  for (const auto& space : Store::key_spaces()) {
    const MDB_dbi dbi = store_.*space.dbi;
    if (dbi == store_.replog_ || dbi == store_.undo_ || dbi == store_.epochs_) continue;
    Cursor cur(txn_, dbi);
    if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
    MDB_val k, v;
    int rc;
    for (rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT))
      if (dbi != store_.meta_ || !own_meta_key({static_cast<const char*>(k.mv_data), k.mv_size})) return true;
    if (rc != MDB_NOTFOUND) return lmdb_error(rc, std::string("read ") + space.name);
  }
  return false;
}

Status WriteTxn::apply_record(std::uint64_t index, std::span<const std::uint8_t> record) {
  if (!redo_.empty())
    return Error(ErrorCode::kInvalidArgument, "a transaction that applies records must write nothing else");
  if (index != last_index_ + 1)
    return Error(ErrorCode::kInvalidArgument, "record " + std::to_string(index) + " is not the next one (the log ends at " +
                                                  std::to_string(last_index_) + ")");
  auto header = redo_header(record);
  if (!header) return header.error();
  applying_ = true;
  undo_.clear();
  undoable_ = true;
  RedoBuilder stored;  // the record as this log keeps it: messages by reference
  const auto spaces = Store::key_spaces();
  Status st = for_each_change(record, spaces.size(), [&](const RedoChange& c) -> Status {
    if (!replicated_space(c.space)) return Error(ErrorCode::kStorageError, "a replication record writes the log itself");
    if (c.kind == RedoKind::kPutRef)
      return Error(ErrorCode::kStorageError, "a replication record refers to a message it does not carry");
    const MDB_dbi dbi = store_.*spaces[c.space].dbi;
    MDB_val k = val(c.key.data(), c.key.size());
    int rc = 0;
    switch (c.kind) {
      case RedoKind::kPut: {
        const bool message = dbi == store_.log_;
        if (message)
          undo_.add(RedoKind::kDelete, c.space, c.key);
        else
          keep_old(dbi, k, undo_);
        MDB_val v = val(c.value.data(), c.value.size());
        rc = mdb_put(txn_, dbi, &k, &v, 0);
        if (rc == 0 && c.space == kEpochsSpace && c.key.size() == 8) epoch_ = std::max(epoch_, get_be64(c.key.data()));
        if (message)
          stored.add(RedoKind::kPutRef, c.space, c.key);
        else
          stored.add(c.kind, c.space, c.key, c.value);
        break;
      }
      case RedoKind::kDelete: {
        // A delete makes sure the key is absent: it may find nothing. A record keeps only
        // a key's last change (compacted_record), so a key put and deleted by one record
        // is only deleted; and a message the leader had deleted again by the time it sent
        // its put is left out (expand_record).
        MDB_val old;
        if (mdb_get(txn_, dbi, &k, &old) == 0) {
          undo_.add(RedoKind::kPut, c.space, c.key, bytes_of(old));
          rc = mdb_del(txn_, dbi, &k, nullptr);
        }
        stored.add(c.kind, c.space, c.key);
        break;
      }
      case RedoKind::kDeletePrefix:
        keep_old_prefix(dbi, c.key, undo_);
        rc = delete_prefix(txn_, dbi, c.key.data(), c.key.size());
        stored.add(c.kind, c.space, c.key);
        break;
      case RedoKind::kPutRef:
        break;
    }
    return rc ? Status(lmdb_error(rc, "apply a replication record")) : Status();
  });
  if (!st) return st;
  std::vector<std::uint8_t> bytes = stored.record(*header);
  auto key = id_key(index);
  MDB_val k = val(key), v = val(bytes.data(), bytes.size());
  if (int rc = mdb_put(txn_, store_.replog_, &k, &v, MDB_APPEND)) return lmdb_error(rc, "append to the replication log");
  if (auto st2 = put_undo(index, *header, UndoForm::kAsBuilt); !st2) return st2;
  undo_.clear();
  last_index_ = index;
  return {};
}

Result<Truncation> WriteTxn::truncate_log(std::uint64_t from) {
  if (!redo_.empty())
    return Error(ErrorCode::kInvalidArgument, "a transaction that truncates the log must write nothing else");
  Truncation out;
  if (from == 0 || from > last_index_) return out;
  out.first = from;
  out.last = last_index_;
  // Every image first: a truncation is done whole or not at all.
  std::vector<std::vector<std::uint8_t>> images;
  for (std::uint64_t index = last_index_; index >= from; --index) {
    auto key = id_key(index);
    MDB_val k = val(key), v;
    int rc = mdb_get(txn_, store_.undo_, &k, &v);
    if (rc == MDB_NOTFOUND) {
      out.undone = false;
      out.missing = index;
      return out;
    }
    if (rc) return lmdb_error(rc, "read an undo image");
    auto data = bytes_of(v);
    images.emplace_back(data.begin(), data.end());
  }
  applying_ = true;
  const auto spaces = Store::key_spaces();
  std::uint64_t index = last_index_;
  for (const auto& image : images) {
    std::vector<RedoChange> changes;
    Status st = for_each_change(image, spaces.size(), [&](const RedoChange& c) -> Status {
      if (!replicated_space(c.space)) return corrupt("undo");
      changes.push_back(c);
      return {};
    });
    if (!st) return st.error();
    for (auto c = changes.rbegin(); c != changes.rend(); ++c) {
      const MDB_dbi dbi = store_.*spaces[c->space].dbi;
      MDB_val k = val(c->key.data(), c->key.size());
      int rc = 0;
      if (c->kind == RedoKind::kPut) {
        MDB_val v = val(c->value.data(), c->value.size());
        rc = mdb_put(txn_, dbi, &k, &v, 0);
      } else if (c->kind == RedoKind::kDelete) {
        rc = mdb_del(txn_, dbi, &k, nullptr);
        if (rc == MDB_NOTFOUND) rc = 0;
      } else {
        return corrupt("undo");
      }
      if (rc) return lmdb_error(rc, "undo record " + std::to_string(index));
    }
    auto key = id_key(index);
    MDB_val k = val(key);
    for (MDB_dbi dbi : {store_.replog_, store_.undo_})
      if (int rc = mdb_del(txn_, dbi, &k, nullptr); rc && rc != MDB_NOTFOUND)
        return lmdb_error(rc, "drop record " + std::to_string(index));
    --index;
  }
  // The log ends before `from` even when it kept no record before it (trimmed). The
  // epochs the truncated records began are gone with them (their puts were undone).
  auto pos = store_.read_log_position(txn_);
  if (!pos) return pos.error();
  last_index_ = from - 1;
  epoch_ = pos->epoch;
  out.undone = true;
  return out;
}

// -- reads -------------------------------------------------------------------------------

Result<LogPosition> Store::read_log_position(MDB_txn* txn) const {
  Cursor log(txn, replog_);
  if (log.rc()) return lmdb_error(log.rc(), "replication log cursor");
  MDB_val k, v;
  int rc = mdb_cursor_get(log.get(), &k, &v, MDB_LAST);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "read the replication log");
  // A snapshot's install leaves the log empty at its index (store_snapshot.cpp).
  auto base = log_base(txn);
  if (!base) return base.error();
  LogPosition pos{std::max(rc ? 0 : index_of(k), *base), 0};
  Cursor epochs(txn, epochs_);
  if (epochs.rc()) return lmdb_error(epochs.rc(), "epochs cursor");
  rc = mdb_cursor_get(epochs.get(), &k, &v, MDB_LAST);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "read the epochs");
  pos.epoch = rc ? 0 : index_of(k);
  return pos;
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

Result<std::vector<LogRecord>> Store::read_log_records(std::uint64_t from, std::size_t max_bytes,
                                                       RecordForm form) const {
  std::vector<LogRecord> out;
  auto placed = place_log_records(from, max_bytes, form, [&](std::uint64_t index, std::size_t size, const RecordFill& fill) {
    out.push_back({index, std::vector<std::uint8_t>(size)});
    fill(out.back().bytes);
  });
  if (!placed) return placed.error();
  return out;
}

Result<std::size_t> Store::place_log_records(std::uint64_t from, std::size_t max_bytes, RecordForm form,
                                             const RecordPlace& place) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), replog_);
  if (cur.rc()) return lmdb_error(cur.rc(), "replication log cursor");
  const auto spaces = key_spaces();
  // A kPutRef's message, as this read transaction sees the log key space. A message a
  // later record deleted again is found in that record's undo image while the record is
  // above the commit index: a follower must get the message, or its store would lack it
  // at this index, where a truncation may yet take it back to. Once the deleting record
  // is committed every in-sync replica holds it, and the message may be left out.
  std::map<std::vector<std::uint8_t>, std::vector<std::uint8_t>> deleted;
  bool deleted_read = false;
  auto read_deleted = [&]() -> Status {
    deleted_read = true;
    Cursor undo(txn.get(), undo_);
    if (undo.rc()) return lmdb_error(undo.rc(), "undo cursor");
    MDB_val k, v;
    int rc;
    for (rc = mdb_cursor_get(undo.get(), &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(undo.get(), &k, &v, MDB_NEXT)) {
      if (index_of(k) < from) continue;
      Status st = for_each_change(bytes_of(v), spaces.size(), [&](const RedoChange& c) -> Status {
        if (c.kind == RedoKind::kPut && c.space == kLogSpace)
          deleted.emplace(std::vector<std::uint8_t>(c.key.begin(), c.key.end()),
                          std::vector<std::uint8_t>(c.value.begin(), c.value.end()));
        return {};
      });
      if (!st) return st;
    }
    if (rc != MDB_NOTFOUND) return lmdb_error(rc, "read the undo images");
    return {};
  };
  Status lookup_error;
  // A record's messages are mostly the log's next keys, one after another: the cursor
  // steps to the next key before it searches the tree.
  Cursor messages(txn.get(), log_);
  if (messages.rc()) return lmdb_error(messages.rc(), "log cursor");
  bool positioned = false;
  const RecordExpander::Lookup message =
      [&](std::uint8_t space, std::span<const std::uint8_t> key) -> std::optional<std::span<const std::uint8_t>> {
    if (space != kLogSpace) return std::nullopt;
    MDB_val k, v;
    if (positioned && mdb_cursor_get(messages.get(), &k, &v, MDB_NEXT) == 0 && bytes_of(k).size() == key.size() &&
        std::equal(key.begin(), key.end(), bytes_of(k).begin()))
      return bytes_of(v);
    k = val(key.data(), key.size());
    positioned = mdb_cursor_get(messages.get(), &k, &v, MDB_SET_KEY) == 0;
    if (positioned) return bytes_of(v);
    if (!deleted_read)
      if (auto st = read_deleted(); !st) lookup_error = st;
    auto it = deleted.find(std::vector<std::uint8_t>(key.begin(), key.end()));
    if (it == deleted.end()) return std::nullopt;
    return std::span<const std::uint8_t>(it->second);
  };
  RecordExpander expander;
  auto key = id_key(from);
  MDB_val k = val(key), v;
  std::size_t placed = 0, bytes = 0;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
  for (; rc == 0 && (placed == 0 || bytes < max_bytes); rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    const auto data = bytes_of(v);
    const bool expand = form == RecordForm::kExpanded && has_refs(data, spaces.size());
    if (expand) {
      if (auto st = expander.plan(data, spaces.size(), message); !st) return st.error();
      if (!lookup_error) return lookup_error.error();
    }
    const std::size_t size = expand ? expander.size() : data.size();
    if (placed > 0 && bytes + size > max_bytes) break;
    place(index_of(k), size, [&](std::span<std::uint8_t> out) {
      if (expand)
        expander.write(out);
      else
        std::memcpy(out.data(), data.data(), data.size());
    });
    bytes += size;
    ++placed;
  }
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "read the replication log");
  return placed;
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
