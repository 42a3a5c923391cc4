// Delayed messages: kept by due time until they are appended to their partitions. See
// layout.h.

#include "broker/storage/store.h"
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

}  // namespace txmq::broker::storage
