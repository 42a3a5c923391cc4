// Consumer groups' positions: each group's cursor in each partition (cursors), the acks
// above its ack floor (acked) and the messages that failed at least once (pending). See
// layout.h.

#include <algorithm>

#include "broker/storage/store.h"
#include "broker/storage/store_internal.h"

namespace txmq::broker::storage {
using namespace internal;
namespace {

// A pending value, verified and copied out.
Result<OwnedPending> read_pending_record(const MDB_val& v) {
  std::vector<std::uint64_t> scratch;
  auto r = verified<PendingRecord>(v, scratch, "pending");
  if (!r) return r.error();
  OwnedPending p;
  p.delivery_count = (*r)->delivery_count();
  p.first_delivery_ms = (*r)->first_delivery_ms();
  p.last_delivery_ms = (*r)->last_delivery_ms();
  p.due_ms = (*r)->due_ms();
  if ((*r)->reasons())
    for (const auto* reason : *(*r)->reasons()) p.reasons.push_back(reason->str());
  return p;
}

}  // namespace

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
    auto rec = read_pending_record(v);
    if (!rec) return rec.error();
    state.pending[PendingKey::offset(static_cast<const std::uint8_t*>(k.mv_data))] =
        PendingState{DeliveryCount(rec->delivery_count), rec->due_ms, std::move(rec->reasons)};
  }
  return state;
}

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
  if ((rc = put(store_.cursors_, &k, &nv, 0))) return lmdb_error(rc, "write cursor");
  return {};
}

// Retention may have deleted messages at and above the floor: nobody can ack those, so
// the floor moves to the oldest stored message (dropping acks recorded in between).
Result<Offset> WriteTxn::floor_past_trimmed(GroupId group, TopicId topic, PartitionId partition, Offset floor) {
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
        if ((r = cursor_del(acks.get(), store_.acked_))) return lmdb_error(r, "drop acks");
      return first;
    }
    AckedKey ak(group, topic, partition, floor);
    MDB_val akv = val(ak.bytes);
    r = del(store_.acked_, &akv);
    if (r && r != MDB_NOTFOUND) return lmdb_error(r, "drop acks");
  }
  return floor;
}

// Are there acks at or above the floor from earlier calls? Usually not (consumers ack
// roughly in order), and then in-order acks only move the floor: no key is read or written.
Result<bool> WriteTxn::acks_recorded_from(GroupId group, TopicId topic, PartitionId partition, Offset floor) {
  Cursor cur(txn_, store_.acked_);
  AckedKey start(group, topic, partition, floor);
  MDB_val sk = val(start.bytes), sv;
  int r = mdb_cursor_get(cur.get(), &sk, &sv, MDB_SET_RANGE);
  if (r == 0) return has_prefix(sk, start.bytes.data(), CursorKey::kSize);
  if (r != MDB_NOTFOUND) return lmdb_error(r, "read acks");
  return false;
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

  auto past_trimmed = floor_past_trimmed(group, topic, partition, floor);
  if (!past_trimmed) return past_trimmed.error();
  floor = *past_trimmed;

  // Close a gap: absorb acked keys that sit at the floor.
  auto absorb = [&]() -> int {
    for (;;) {
      AckedKey ak(group, topic, partition, floor);
      MDB_val akv = val(ak.bytes);
      int r = del(store_.acked_, &akv);
      if (r == MDB_NOTFOUND) return 0;
      if (r) return r;
      floor = next(floor);
    }
  };
  auto earlier = acks_recorded_from(group, topic, partition, floor);
  if (!earlier) return earlier.error();
  const bool earlier_keys = *earlier;
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
    if ((rc = put(store_.acked_, &akv, &empty, 0))) return lmdb_error(rc, "write ack");
  }
  if (floor != old_floor) {
    auto fv = two_u64(floor.value(), std::max(delivered_upto, floor.value()));
    MDB_val nv = val(fv);
    if ((rc = put(store_.cursors_, &k, &nv, 0))) return lmdb_error(rc, "write cursor");
  }
  return floor;
}

Result<std::optional<OwnedPending>> WriteTxn::get_pending(GroupId group, TopicId topic, PartitionId partition,
                                                          Offset offset) {
  PendingKey pk(group, topic, partition, offset);
  MDB_val k = val(pk.bytes), v;
  int rc = mdb_get(txn_, store_.pending_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<OwnedPending>{};
  if (rc) return lmdb_error(rc, "read pending");
  auto rec = read_pending_record(v);
  if (!rec) return rec.error();
  return std::optional<OwnedPending>(std::move(*rec));
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
  if (int rc = put(store_.pending_, &k, &v, 0)) return lmdb_error(rc, "write pending");
  return {};
}

Status WriteTxn::clear_pending(GroupId group, TopicId topic, PartitionId partition, Offset offset) {
  PendingKey pk(group, topic, partition, offset);
  MDB_val k = val(pk.bytes);
  int rc = del(store_.pending_, &k);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "delete pending");
  return {};
}

}  // namespace txmq::broker::storage
