#pragma once
// Helpers for the LMDB code of the store's files (store*.cpp); not part of the Store
// interface. Writer-side and reader-side code alike.

#include <lmdb.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "broker/storage/keys.h"
#include "broker/storage/store.h"

namespace txmq::broker::storage::internal {

inline MDB_val val(const void* data, std::size_t size) {
  return MDB_val{size, const_cast<void*>(data)};
}
template <std::size_t N>
inline MDB_val val(const std::array<std::uint8_t, N>& a) {
  return val(a.data(), N);
}
inline MDB_val val(std::string_view s) { return val(s.data(), s.size()); }

inline std::span<const std::uint8_t> bytes_of(const MDB_val& v) {
  return {static_cast<const std::uint8_t*>(v.mv_data), v.mv_size};
}

// The key of txn_open, txn_parked, txn_ended and producers: one big-endian u64.
inline std::array<std::uint8_t, 8> id_key(std::uint64_t id) {
  std::array<std::uint8_t, 8> k;
  put_be64(k.data(), id);
  return k;
}

inline Error lmdb_error(int rc, std::string_view what) {
  std::string msg = std::string(what) + ": " + mdb_strerror(rc);
  if (rc == MDB_MAP_FULL)
    return Error(ErrorCode::kStorageFull, msg + " (the data file reached storage.max_size and its reserve)");
  if (rc == ENOSPC) return Error(ErrorCode::kStorageFull, msg + " (the disk is full)");
  // A key over LMDB's 511 bytes (or an empty one) is refused the same way on every try:
  // the request is wrong, not the storage, so retrying must not be suggested.
  if (rc == MDB_BAD_VALSIZE)
    return Error(ErrorCode::kInvalidArgument, msg + " (a key is empty or longer than 511 bytes)");
  return Error(ErrorCode::kStorageError, msg);
}

// A short read transaction; aborted (read transactions have nothing to commit) when it
// goes out of scope so it is never held across a callback.
class ReadTxn {
 public:
  explicit ReadTxn(MDB_env* env) { rc_ = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn_); }
  ~ReadTxn() {
    if (txn_) mdb_txn_abort(txn_);
  }
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;
  int rc() const { return rc_; }
  MDB_txn* get() const { return txn_; }

 private:
  MDB_txn* txn_ = nullptr;
  int rc_;
};

class Cursor {
 public:
  Cursor(MDB_txn* txn, MDB_dbi dbi) { rc_ = mdb_cursor_open(txn, dbi, &cur_); }
  ~Cursor() {
    if (cur_) mdb_cursor_close(cur_);
  }
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  int rc() const { return rc_; }
  MDB_cursor* get() const { return cur_; }

 private:
  MDB_cursor* cur_ = nullptr;
  int rc_;
};

inline bool has_prefix(const MDB_val& key, const std::uint8_t* prefix, std::size_t n) {
  return key.mv_size >= n && std::memcmp(key.mv_data, prefix, n) == 0;
}

// Deletes every key that starts with prefix.
inline int delete_prefix(MDB_txn* txn, MDB_dbi dbi, const std::uint8_t* prefix, std::size_t n) {
  Cursor cur(txn, dbi);
  if (cur.rc()) return cur.rc();
  MDB_val k = val(prefix, n), v;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
  while (rc == 0 && has_prefix(k, prefix, n)) {
    if ((rc = mdb_cursor_del(cur.get(), 0))) return rc;
    rc = mdb_cursor_get(cur.get(), &k, &v, MDB_GET_CURRENT);
    // After a delete the cursor sits on the next item; GET_CURRENT fails past the end.
  }
  return rc == MDB_NOTFOUND || rc == EINVAL ? 0 : rc;
}

// LMDB values are only 2-byte aligned; FlatBuffers reads scalars in place and needs its
// root 8-byte aligned, so a misaligned record is read through a copy in scratch.
inline const std::uint8_t* aligned(const MDB_val& v, std::vector<std::uint64_t>& scratch) {
  const auto* data = static_cast<const std::uint8_t*>(v.mv_data);
  if (reinterpret_cast<std::uintptr_t>(data) % 8 == 0) return data;
  scratch.resize((v.mv_size + 7) / 8);
  std::memcpy(scratch.data(), data, v.mv_size);
  return reinterpret_cast<const std::uint8_t*>(scratch.data());
}

// What a record that does not decode is answered with: the store is damaged there.
inline Error corrupt(std::string_view space) {
  return Error(ErrorCode::kStorageError, "a record in key space '" + std::string(space) +
                                             "' does not decode: the store is damaged (see `txmq-broker --check-store`)");
}

// Every FlatBuffers record is read through this: verified first, on an aligned copy in
// scratch when LMDB placed it misaligned. corrupt(space) when the bytes are not a Table.
// The table points into the map or into scratch: valid while both are.
template <typename Table>
Result<const Table*> verified(const MDB_val& v, std::vector<std::uint64_t>& scratch, std::string_view space) {
  const std::uint8_t* data = aligned(v, scratch);
  flatbuffers::Verifier verifier(data, v.mv_size);
  if (!verifier.VerifyBuffer<Table>(nullptr)) return corrupt(space);
  return flatbuffers::GetRoot<Table>(data);
}

inline std::uint64_t read_u64(const MDB_val& v) {
  std::uint64_t x = 0;
  if (v.mv_size >= 8) x = get_be64(static_cast<const std::uint8_t*>(v.mv_data));
  return x;
}

// The second u64 of a two-field value (cursor: delivered-up-to; partition: bytes stored).
inline std::uint64_t read_second_u64(const MDB_val& v) {
  return v.mv_size >= 16 ? get_be64(static_cast<const std::uint8_t*>(v.mv_data) + 8) : 0;
}

inline std::array<std::uint8_t, 16> two_u64(std::uint64_t a, std::uint64_t b) {
  std::array<std::uint8_t, 16> out;
  put_be64(out.data(), a);
  put_be64(out.data() + 8, b);
  return out;
}

}  // namespace txmq::broker::storage::internal
