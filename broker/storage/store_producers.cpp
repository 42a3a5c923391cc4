// The idempotent producer's window: the last batches each producer stored, and where
// they went, so that a resent batch is answered with its offsets, not appended again.
// See layout.h.

#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker/storage/store.h"
#include "broker/storage/store_internal.h"

namespace txmq::broker::storage {
using namespace internal;
namespace {

// An idempotent producer's remembered batches, oldest first.
struct ProducerWindow {
  std::vector<Sequence> sequences;
  std::vector<std::vector<std::pair<PartitionId, Offset>>> batches;
};

ProducerWindow window_of(const ProducerRecord& r) {
  ProducerWindow w;
  if (!r.sequences() || !r.offsets()) return w;
  for (flatbuffers::uoffset_t i = 0; i < r.sequences()->size() && i < r.offsets()->size(); ++i) {
    w.sequences.push_back(Sequence(r.sequences()->Get(i)));
    std::vector<std::pair<PartitionId, Offset>> b;
    const auto* pb = r.offsets()->Get(i);
    if (pb->partitions() && pb->offsets())
      for (flatbuffers::uoffset_t j = 0; j < pb->partitions()->size() && j < pb->offsets()->size(); ++j)
        b.emplace_back(PartitionId(pb->partitions()->Get(j)), Offset(pb->offsets()->Get(j)));
    w.batches.push_back(std::move(b));
  }
  return w;
}

void build_record(flatbuffers::FlatBufferBuilder& fbb, const ProducerWindow& w, std::uint64_t last_ms) {
  fbb.Clear();
  std::vector<flatbuffers::Offset<ProducerBatch>> pbs;
  for (const auto& b : w.batches) {
    std::vector<std::uint32_t> ps;
    std::vector<std::uint64_t> os;
    for (auto [p, o] : b) {
      ps.push_back(p.value());
      os.push_back(o.value());
    }
    pbs.push_back(CreateProducerBatch(fbb, fbb.CreateVector(ps), fbb.CreateVector(os)));
  }
  std::vector<std::uint64_t> sequences;
  for (Sequence s : w.sequences) sequences.push_back(s.value());
  fbb.Finish(CreateProducerRecord(fbb, fbb.CreateVector(sequences), fbb.CreateVector(pbs), last_ms));
}


}  // namespace

Result<std::optional<std::vector<std::pair<PartitionId, Offset>>>> WriteTxn::producer_batch(ProducerId producer,
                                                                                              Sequence sequence) {
  auto k8 = id_key(producer.value());
  MDB_val k = val(k8), v;
  int rc = mdb_get(txn_, store_.producers_, &k, &v);
  using Out = std::optional<std::vector<std::pair<PartitionId, Offset>>>;
  if (rc == MDB_NOTFOUND) return Out{};
  if (rc) return lmdb_error(rc, "read producer");
  std::vector<std::uint64_t> scratch;
  auto record = verified<ProducerRecord>(v, scratch, "producers");
  if (!record) return record.error();
  const ProducerRecord* r = *record;
  if (!r->sequences() || !r->offsets()) return Out{};
  Sequence newest;
  for (auto s : *r->sequences()) newest = std::max(newest, Sequence(s));
  for (flatbuffers::uoffset_t i = 0; i < r->sequences()->size() && i < r->offsets()->size(); ++i) {
    if (Sequence(r->sequences()->Get(i)) != sequence) continue;
    const auto* b = r->offsets()->Get(i);
    std::vector<std::pair<PartitionId, Offset>> out;
    if (b->partitions() && b->offsets())
      for (flatbuffers::uoffset_t j = 0; j < b->partitions()->size() && j < b->offsets()->size(); ++j)
        out.emplace_back(PartitionId(b->partitions()->Get(j)), Offset(b->offsets()->Get(j)));
    return Out(std::move(out));
  }
  if (sequence <= newest)
    return Error(ErrorCode::kInvalidArgument,
                 "batch " + std::to_string(sequence.value()) + " of this producer is older than the broker remembers (window " +
                     std::to_string(r->sequences()->size()) + "): it may be stored already, so it is not appended again");
  return Out{};
}

Status WriteTxn::record_producer_batch(ProducerId producer, Sequence sequence,
                                       const std::vector<std::pair<PartitionId, Offset>>& offsets, std::size_t window,
                                       std::uint64_t now_ms) {
  auto k8 = id_key(producer.value());
  MDB_val k = val(k8), v;
  ProducerWindow w;
  int rc = mdb_get(txn_, store_.producers_, &k, &v);
  if (rc == 0) {
    std::vector<std::uint64_t> scratch;
    // One that does not decode can dedupe nothing: the window starts again.
    if (auto r = verified<ProducerRecord>(v, scratch, "producers")) w = window_of(**r);
  } else if (rc != MDB_NOTFOUND) {
    return lmdb_error(rc, "read producer");
  }
  w.sequences.push_back(sequence);
  w.batches.push_back(offsets);
  while (w.sequences.size() > window) {
    w.sequences.erase(w.sequences.begin());
    w.batches.erase(w.batches.begin());
  }
  build_record(fbb_, w, now_ms);
  MDB_val rec = val(fbb_.GetBufferPointer(), fbb_.GetSize());
  if ((rc = put(store_.producers_, &k, &rec, 0))) return lmdb_error(rc, "write producer");
  return {};
}

Result<std::size_t> WriteTxn::prune_producers(std::uint64_t before_ms, std::uint64_t now_ms, ProducerId* resume,
                                               std::size_t max_scan) {
  Cursor cur(txn_, store_.producers_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  auto k8 = id_key(resume->value());
  MDB_val k = val(k8), v;
  std::size_t n = 0, scanned = 0;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
  std::vector<std::uint64_t> scratch;
  for (; rc == 0 && scanned < max_scan; ++scanned) {
    auto record = verified<ProducerRecord>(v, scratch, "producers");
    const ProducerRecord* r = record ? *record : nullptr;
    if (r && r->last_ms() == 0) {
      // Written before records had a time: its producer may be resending right now (after
      // the upgrade's restart), so its clock starts now rather than at the epoch.
      build_record(fbb_, window_of(*r), now_ms);
      MDB_val rec = val(fbb_.GetBufferPointer(), fbb_.GetSize());
      if ((rc = cursor_put(cur.get(), store_.producers_, &k, &rec, MDB_CURRENT))) return lmdb_error(rc, "stamp producer");
      rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT);
      continue;
    }
    if (r && r->last_ms() >= before_ms) {
      rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT);
      continue;
    }
    // Silent too long; or a record that does not verify, which could not dedupe anything.
    if (!r) spdlog::warn("dropping a producer record that does not verify");
    if ((rc = cursor_del(cur.get(), store_.producers_))) return lmdb_error(rc, "prune producers");
    ++n;
    // After a delete the cursor sits on the next item; GET_CURRENT fails past the end.
    rc = mdb_cursor_get(cur.get(), &k, &v, MDB_GET_CURRENT);
  }
  if (rc == 0) {
    *resume = ProducerId(get_be64(static_cast<const std::uint8_t*>(k.mv_data)));
  } else if (rc == MDB_NOTFOUND || rc == EINVAL) {
    *resume = ProducerId();
  } else {
    return lmdb_error(rc, "prune producers");
  }
  return n;
}

std::uint64_t Store::producer_count() const {
  ReadTxn txn(env_);
  MDB_stat st;
  if (txn.rc() || mdb_stat(txn.get(), producers_, &st) != 0) return 0;
  return st.ms_entries;
}

}  // namespace txmq::broker::storage
