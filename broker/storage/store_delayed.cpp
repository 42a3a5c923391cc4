// Delayed messages: kept by due time until they are appended to their partitions. See
// layout.h.

#include <cstring>

#include "broker/storage/store.h"
#include "broker/storage/message_codec.h"
#include "broker/storage/store_internal.h"

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

Status WriteTxn::put_delayed(std::uint64_t due_ms, TopicId topic, PartitionId partition, std::uint64_t timestamp_ms,
                             std::span<const std::uint8_t> key, std::span<const HeaderView> headers,
                             std::span<const std::uint8_t> body, Growth growth) {
  grows(growth);
  auto seq = next_counter("next_delayed_seq");
  if (!seq) return seq.error();
  fbb_.Clear();
  auto msg = build_message(fbb_, timestamp_ms, key, headers, body);
  fbb_.Finish(CreateDelayedRecord(fbb_, topic.value(), partition.value(), msg));
  DelayedKey dk(due_ms, *seq);
  MDB_val k = val(dk.bytes), v = val(fbb_.GetBufferPointer(), fbb_.GetSize());
  if (int rc = put(store_.delayed_, &k, &v, 0)) return lmdb_error(rc, "write delayed");
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
    // Copied (8-byte aligned, as FlatBuffers wants) before the delete frees its page.
    std::vector<std::uint64_t> copy((v.mv_size + 7) / 8), unused;
    if (v.mv_size) std::memcpy(copy.data(), v.mv_data, v.mv_size);
    if ((rc = cursor_del(cur.get(), store_.delayed_))) return lmdb_error(rc, "delete delayed");
    auto rec = verified<DelayedRecord>(val(copy.data(), v.mv_size), unused, "delayed");
    if (!rec || !(*rec)->message()) continue;  // unreadable: dropped
    const MessageParts m = parts_of(*(*rec)->message());
    const TopicId topic((*rec)->topic_id());
    const PartitionId partition((*rec)->partition());
    // Moved from the delayed table, already counted: not new data.
    auto offset = append(topic, partition, now_ms, m.key, m.headers, m.body, Growth::kVerdict);
    if (!offset) {
      if (offset.error().code == ErrorCode::kUnknownPartition) continue;  // its topic was deleted
      return offset.error();
    }
    out.push_back({topic, {partition, *offset}});
  }
  return out;
}

}  // namespace txmq::broker::storage
