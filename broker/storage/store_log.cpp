// The message log: each partition's messages by offset (log), and its next offset and
// the bytes its messages take (partitions). See layout.h.

#include <algorithm>

#include "broker/storage/store.h"
#include "broker/storage/message_codec.h"
#include "broker/storage/store_internal.h"

namespace txmq::broker::storage {
using namespace internal;

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
    auto message = verified<StoredMessage>(v, scratch, "log");
    if (!message) return message.error();
    ++n;
    if (!visit(LogEntry{LogKey::offset(static_cast<const std::uint8_t*>(k.mv_data)), *message})) break;
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

Result<Offset> WriteTxn::append(TopicId topic, PartitionId partition, std::uint64_t timestamp_ms,
                                std::span<const std::uint8_t> key,
                                std::span<const HeaderView> headers,
                                std::span<const std::uint8_t> body, Growth growth) {
  return append_record(topic, partition, timestamp_ms, key, headers, body, growth, false);
}

Result<Offset> WriteTxn::append_dead_letter(TopicId topic, PartitionId partition, std::uint64_t timestamp_ms,
                                            std::span<const std::uint8_t> key, std::span<const HeaderView> headers,
                                            std::span<const std::uint8_t> body) {
  return append_record(topic, partition, timestamp_ms, key, headers, body, Growth::kVerdict, true);
}

Result<Offset> WriteTxn::append_record(TopicId topic, PartitionId partition, std::uint64_t timestamp_ms,
                                       std::span<const std::uint8_t> key, std::span<const HeaderView> headers,
                                       std::span<const std::uint8_t> body, Growth growth, bool dead_letter) {
  grows(growth);
  PartitionKey pk(topic, partition);
  MDB_val k = val(pk.bytes), v;
  int rc = mdb_get(txn_, store_.partitions_, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(ErrorCode::kUnknownPartition);
  if (rc) return lmdb_error(rc, "read partition");
  Offset offset(read_u64(v));
  const std::uint64_t stored_bytes = read_second_u64(v);
  // The partition's record as it was, for the undo image (v points into a page the puts
  // below may move).
  std::array<std::uint8_t, 16> was{};
  const std::size_t was_size = std::min(v.mv_size, was.size());
  std::memcpy(was.data(), v.mv_data, was_size);
  MDB_val old = val(was.data(), was_size);

  fbb_.Clear();
  fbb_.Finish(build_message(fbb_, timestamp_ms, key, headers, body, dead_letter));

  LogKey lk(topic, partition, offset);
  MDB_val lkv = val(lk.bytes);
  MDB_val data = val(fbb_.GetBufferPointer(), fbb_.GetSize());
  // A message is never stored over another: the offset is new.
  if ((rc = put(store_.log_, &lkv, &data, MDB_NOOVERWRITE))) return lmdb_error(rc, "append");

  auto next = two_u64(offset.value() + 1, stored_bytes + data.mv_size);
  MDB_val nv = val(next);
  if ((rc = put_over(store_.partitions_, &k, &nv, old))) return lmdb_error(rc, "append");
  return offset;
}

Result<OwnedMessage> WriteTxn::read_message(TopicId topic, PartitionId partition, Offset offset) {
  LogKey lk(topic, partition, offset);
  MDB_val k = val(lk.bytes), v;
  int rc = mdb_get(txn_, store_.log_, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(ErrorCode::kInvalidArgument, "message not stored");
  if (rc) return lmdb_error(rc, "read message");
  std::vector<std::uint64_t> scratch;
  auto message = verified<StoredMessage>(v, scratch, "log");
  if (!message) return message.error();
  return owned_message(**message);
}

Status WriteTxn::delete_message(TopicId topic, PartitionId partition, Offset offset) {
  LogKey lk(topic, partition, offset);
  MDB_val k = val(lk.bytes), v;
  int rc = mdb_get(txn_, store_.log_, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(ErrorCode::kInvalidArgument, "message not stored");
  if (rc) return lmdb_error(rc, "read message");
  const auto size = static_cast<std::int64_t>(v.mv_size);
  if ((rc = del(store_.log_, &k))) return lmdb_error(rc, "delete message");
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
  if ((rc = put(store_.partitions_, &k, &nv, 0))) return lmdb_error(rc, "write partition");
  return {};
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
    // A message that does not decode has no age: only the byte limit removes it.
    auto message = verified<StoredMessage>(v, scratch, "log");
    const bool too_old = message && (*message)->timestamp_ms() < min_timestamp_ms;
    if (!too_old && bytes <= max_bytes) break;
    bytes -= std::min<std::uint64_t>(bytes, v.mv_size);
    if ((rc = cursor_del(cur.get(), store_.log_))) return lmdb_error(rc, "trim");
    ++deleted;
  }
  if (rc != 0 && rc != MDB_NOTFOUND && rc != EINVAL) return lmdb_error(rc, "trim");
  if (deleted > 0) {
    auto nv_bytes = two_u64(next_offset, bytes);
    MDB_val nv = val(nv_bytes);
    if ((rc = put(store_.partitions_, &pkv, &nv, 0))) return lmdb_error(rc, "write partition");
  }
  return deleted;
}

}  // namespace txmq::broker::storage
