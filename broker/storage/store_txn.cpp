// Transactions and the idempotent producer's window in LMDB.
//
//   txns:         id -> TxnRecord
//   txn_checks:   (next check, id) -> empty   prepared transactions, by when to check
//   txn_prepared: id -> empty                 prepared transactions, oldest first
//   txn_parked:   id -> empty
//   txn_ended:    (ended, id) -> empty        for pruning ended records
//   producers:    producer id -> ProducerRecord

#include "broker/storage/store.h"
#include "broker/storage/store_internal.h"
#include "txmq_generated.h"

namespace txmq::broker::storage {
using namespace internal;
namespace {

std::array<std::uint8_t, 8> id_key(std::uint64_t id) {
  std::array<std::uint8_t, 8> k;
  put_be64(k.data(), id);
  return k;
}

std::array<std::uint8_t, 16> pair_key(std::uint64_t a, std::uint64_t b) { return two_u64(a, b); }

std::optional<OwnedTxn> parse_txn(std::uint64_t id, const MDB_val& v) {
  std::vector<std::uint64_t> scratch;
  const std::uint8_t* data = aligned(v, scratch);
  flatbuffers::Verifier verifier(data, v.mv_size);
  if (!verifier.VerifyBuffer<TxnRecord>(nullptr)) return std::nullopt;
  const auto* r = flatbuffers::GetRoot<TxnRecord>(data);
  OwnedTxn t;
  t.id = id;
  t.state = r->state();
  t.topic = TopicId(r->topic_id());
  t.partition = PartitionId(r->partition());
  t.producer_group = r->producer_group() ? r->producer_group()->str() : "";
  if (const auto* m = r->message()) {
    auto bytes = [](const flatbuffers::Vector<std::uint8_t>* b) {
      return b ? std::string(reinterpret_cast<const char*>(b->data()), b->size()) : std::string();
    };
    OwnedMessage om;
    om.timestamp_ms = m->timestamp_ms();
    om.key = bytes(m->key());
    om.body = bytes(m->body());
    if (m->headers())
      for (const auto* h : *m->headers()) om.headers.emplace_back(h->name() ? h->name()->str() : "", bytes(h->value()));
    t.message = std::move(om);
  }
  t.deliver_at_ms = r->deliver_at_ms();
  t.created_ms = r->created_ms();
  t.checks = r->checks();
  t.next_check_ms = r->next_check_ms();
  t.ended_ms = r->ended_ms();
  t.resolution = r->resolution() ? r->resolution()->str() : "";
  t.offset = Offset(r->offset());
  return t;
}

void build_txn(flatbuffers::FlatBufferBuilder& fbb, const OwnedTxn& t) {
  fbb.Clear();
  flatbuffers::Offset<StoredMessage> msg = 0;
  if (t.message) {
    const OwnedMessage& m = *t.message;
    std::vector<flatbuffers::Offset<StoredHeader>> hs;
    for (const auto& [n, v] : m.headers)
      hs.push_back(CreateStoredHeader(fbb, fbb.CreateString(n),
                                      fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(v.data()), v.size())));
    msg = CreateStoredMessage(
        fbb, m.timestamp_ms,
        m.key.empty() ? 0 : fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(m.key.data()), m.key.size()),
        hs.empty() ? 0 : fbb.CreateVector(hs),
        fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(m.body.data()), m.body.size()));
  }
  fbb.Finish(CreateTxnRecord(fbb, t.state, t.topic.value(), t.partition.value(), fbb.CreateString(t.producer_group),
                             msg, t.deliver_at_ms, t.created_ms, t.checks, t.next_check_ms, t.ended_ms,
                             fbb.CreateString(t.resolution), t.offset.value()));
}

constexpr auto kPrepared = static_cast<std::uint8_t>(wire::TxnState::Prepared);
constexpr auto kCommitted = static_cast<std::uint8_t>(wire::TxnState::Committed);
constexpr auto kRolledBack = static_cast<std::uint8_t>(wire::TxnState::RolledBack);
constexpr auto kParked = static_cast<std::uint8_t>(wire::TxnState::Parked);

}  // namespace

Result<std::vector<std::pair<std::uint64_t, std::uint64_t>>> Store::due_checks(
    std::uint64_t now_ms, std::size_t max, std::optional<std::pair<std::uint64_t, std::uint64_t>> after) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), txn_checks_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  MDB_val k, v;
  int first;
  std::array<std::uint8_t, 16> start{};
  if (after) {
    start = pair_key(after->second, after->first);
    k = val(start);
    first = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
    if (first == 0 && k.mv_size == 16 && std::memcmp(k.mv_data, start.data(), 16) == 0)
      first = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT);
  } else {
    first = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST);
  }
  for (int rc = first; rc == 0 && out.size() < max; rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    const auto* b = static_cast<const std::uint8_t*>(k.mv_data);
    if (get_be64(b) > now_ms) break;
    out.emplace_back(get_be64(b + 8), get_be64(b));
  }
  return out;
}

Result<std::optional<std::uint64_t>> Store::next_check_ms() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), txn_checks_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  MDB_val k, v;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST);
  if (rc == MDB_NOTFOUND) return std::optional<std::uint64_t>{};
  if (rc) return lmdb_error(rc, "read checks");
  return std::optional<std::uint64_t>(get_be64(static_cast<const std::uint8_t*>(k.mv_data)));
}

Result<std::optional<OwnedTxn>> Store::read_txn(std::uint64_t id) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  auto key = id_key(id);
  MDB_val k = val(key), v;
  int rc = mdb_get(txn.get(), txns_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<OwnedTxn>{};
  if (rc) return lmdb_error(rc, "read transaction");
  auto t = parse_txn(id, v);
  if (!t) return Error(ErrorCode::kStorageError, "corrupt transaction record");
  return t;
}

Result<std::vector<OwnedTxn>> Store::list_txns(std::optional<std::uint8_t> state, std::size_t max) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  std::vector<OwnedTxn> out;
  // Prepared and parked ones have indexes of their own; others are found by walking all.
  MDB_dbi walk = txns_;
  if (state && *state == kPrepared) walk = txn_prepared_;
  if (state && *state == kParked) walk = txn_parked_;
  Cursor cur(txn.get(), walk);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_LAST); rc == 0 && out.size() < max;
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_PREV)) {
    std::uint64_t id = get_be64(static_cast<const std::uint8_t*>(k.mv_data));
    MDB_val rec = v;
    if (walk != txns_) {
      MDB_val rk = k;
      if (mdb_get(txn.get(), txns_, &rk, &rec) != 0) continue;
    }
    auto t = parse_txn(id, rec);
    if (!t || (state && t->state != *state)) continue;
    t->message.reset();  // listings carry no bodies
    out.push_back(std::move(*t));
  }
  return out;
}

TxnCounts Store::txn_counts() const {
  TxnCounts out;
  ReadTxn txn(env_);
  if (txn.rc()) return out;
  MDB_stat st;
  if (mdb_stat(txn.get(), txn_prepared_, &st) == 0) out.prepared = st.ms_entries;
  if (mdb_stat(txn.get(), txn_parked_, &st) == 0) out.parked = st.ms_entries;
  Cursor cur(txn.get(), txn_prepared_);
  MDB_val k, v;
  if (cur.rc() == 0 && mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST) == 0) {
    MDB_val rec;
    if (mdb_get(txn.get(), txns_, &k, &rec) == 0)
      if (auto t = parse_txn(get_be64(static_cast<const std::uint8_t*>(k.mv_data)), rec)) out.oldest_prepared_ms = t->created_ms;
  }
  return out;
}

Result<std::vector<std::uint64_t>> WriteTxn::new_txn_ids(std::size_t n, std::uint64_t now_ms) {
  auto first = next_counter("next_txn_id", static_cast<std::uint32_t>(n));
  if (!first) return first.error();
  std::vector<std::uint64_t> ids;
  for (std::size_t i = 0; i < n; ++i)
    ids.push_back((static_cast<std::uint64_t>(*first + i) << 20) | (now_ms & 0xFFFFF));
  return ids;
}

Result<std::uint64_t> WriteTxn::prepare(std::uint64_t id, TopicId topic, PartitionId partition, std::string_view producer_group,
                                        std::uint64_t now_ms, std::span<const std::uint8_t> key,
                                        std::span<const HeaderView> headers, std::span<const std::uint8_t> body,
                                        std::uint64_t deliver_at_ms, std::uint64_t first_check_ms) {
  OwnedTxn t;
  t.id = id;
  t.state = kPrepared;
  t.topic = topic;
  t.partition = partition;
  t.producer_group = std::string(producer_group);
  OwnedMessage m;
  m.timestamp_ms = now_ms;
  m.key.assign(key.begin(), key.end());
  for (const auto& [n, val_] : headers) m.headers.emplace_back(std::string(n), std::string(val_.begin(), val_.end()));
  m.body.assign(body.begin(), body.end());
  t.message = std::move(m);
  t.deliver_at_ms = deliver_at_ms;
  t.created_ms = now_ms;
  t.next_check_ms = first_check_ms;
  build_txn(fbb_, t);
  auto k8 = id_key(id);
  auto ck = pair_key(first_check_ms, id);
  MDB_val k = val(k8), rec = val(fbb_.GetBufferPointer(), fbb_.GetSize()), empty = val(nullptr, 0), ckv = val(ck);
  int rc;
  if ((rc = mdb_put(txn_, store_.txns_, &k, &rec, MDB_NOOVERWRITE))) return lmdb_error(rc, "write transaction");
  if ((rc = mdb_put(txn_, store_.txn_checks_, &ckv, &empty, 0))) return lmdb_error(rc, "write transaction");
  if ((rc = mdb_put(txn_, store_.txn_prepared_, &k, &empty, 0))) return lmdb_error(rc, "write transaction");
  return id;
}

Result<TxnEndResult> WriteTxn::end_txn(std::uint64_t id, bool commit, std::string_view resolution,
                                       std::uint64_t now_ms) {
  TxnEndResult out;
  auto k8 = id_key(id);
  MDB_val k = val(k8), v;
  int rc = mdb_get(txn_, store_.txns_, &k, &v);
  if (rc == MDB_NOTFOUND) return out;
  if (rc) return lmdb_error(rc, "read transaction");
  auto t = parse_txn(id, v);
  if (!t) return Error(ErrorCode::kStorageError, "corrupt transaction record");
  out.found = true;
  out.topic = t->topic;
  out.partition = t->partition;
  out.state = t->state;
  // Only a transaction still open can end, and only once: a late or contradicting end is
  // answered with the real state and changes nothing.
  if (t->state != kPrepared && t->state != kParked) return out;

  if (commit && t->message) {
    OwnedMessage& m = *t->message;
    if (resolution == "operator") m.headers.emplace_back("txmq-resolved-by", "operator");
    std::vector<HeaderView> hs;
    for (const auto& [n, hv] : m.headers)
      hs.emplace_back(n, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(hv.data()), hv.size()));
    auto bytes = [](const std::string& s) {
      return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
    };
    if (t->deliver_at_ms > now_ms) {
      if (auto st = put_delayed(t->deliver_at_ms, t->topic, t->partition, now_ms, bytes(m.key), hs, bytes(m.body)); !st)
        return st.error();
      out.delayed_until = t->deliver_at_ms;
    } else {
      auto offset = append(t->topic, t->partition, now_ms, bytes(m.key), hs, bytes(m.body));
      if (!offset) {
        if (offset.error().code != ErrorCode::kUnknownPartition) return offset.error();
        // Its topic was deleted: the commit has nowhere to go; it ends rolled back.
        commit = false;
      } else {
        out.appended = *offset;
        t->offset = *offset;
      }
    }
  }
  // Leave the indexes of an open transaction.
  auto ck = pair_key(t->next_check_ms, id);
  MDB_val ckv = val(ck);
  rc = mdb_del(txn_, store_.txn_checks_, &ckv, nullptr);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "end transaction");
  rc = mdb_del(txn_, t->state == kParked ? store_.txn_parked_ : store_.txn_prepared_, &k, nullptr);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "end transaction");
  t->state = commit ? kCommitted : kRolledBack;
  t->ended_ms = now_ms;
  t->resolution = std::string(resolution);
  t->message.reset();  // an ended transaction keeps its outcome, not its body
  build_txn(fbb_, *t);
  MDB_val rec = val(fbb_.GetBufferPointer(), fbb_.GetSize()), empty = val(nullptr, 0);
  if ((rc = mdb_put(txn_, store_.txns_, &k, &rec, 0))) return lmdb_error(rc, "end transaction");
  auto ek = pair_key(now_ms, id);
  MDB_val ekv = val(ek);
  if ((rc = mdb_put(txn_, store_.txn_ended_, &ekv, &empty, 0))) return lmdb_error(rc, "end transaction");
  out.state = t->state;
  out.changed = true;
  return out;
}

Result<std::optional<std::uint8_t>> WriteTxn::txn_state(std::uint64_t id) {
  auto k8 = id_key(id);
  MDB_val k = val(k8), v;
  int rc = mdb_get(txn_, store_.txns_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<std::uint8_t>{};
  if (rc) return lmdb_error(rc, "read transaction");
  auto t = parse_txn(id, v);
  if (!t) return Error(ErrorCode::kStorageError, "corrupt transaction record");
  return std::optional<std::uint8_t>(t->state);
}

Status WriteTxn::checked(std::uint64_t id, std::uint32_t checks, std::uint64_t next_check_ms, bool park) {
  auto k8 = id_key(id);
  MDB_val k = val(k8), v;
  int rc = mdb_get(txn_, store_.txns_, &k, &v);
  if (rc == MDB_NOTFOUND) return {};
  if (rc) return lmdb_error(rc, "read transaction");
  auto t = parse_txn(id, v);
  if (!t) return Error(ErrorCode::kStorageError, "corrupt transaction record");
  if (t->state != kPrepared) return {};  // ended meanwhile
  auto old = pair_key(t->next_check_ms, id);
  MDB_val oldv = val(old), empty = val(nullptr, 0);
  rc = mdb_del(txn_, store_.txn_checks_, &oldv, nullptr);
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "reschedule check");
  t->checks = checks;
  if (park) {
    t->state = kParked;
    t->next_check_ms = 0;
    if ((rc = mdb_del(txn_, store_.txn_prepared_, &k, nullptr)) && rc != MDB_NOTFOUND) return lmdb_error(rc, "park");
    if ((rc = mdb_put(txn_, store_.txn_parked_, &k, &empty, 0))) return lmdb_error(rc, "park");
  } else {
    t->next_check_ms = next_check_ms;
    auto nk = pair_key(next_check_ms, id);
    MDB_val nkv = val(nk);
    if ((rc = mdb_put(txn_, store_.txn_checks_, &nkv, &empty, 0))) return lmdb_error(rc, "reschedule check");
  }
  build_txn(fbb_, *t);
  MDB_val rec = val(fbb_.GetBufferPointer(), fbb_.GetSize());
  if ((rc = mdb_put(txn_, store_.txns_, &k, &rec, 0))) return lmdb_error(rc, "write transaction");
  return {};
}

Result<std::size_t> WriteTxn::prune_ended(std::uint64_t before_ms, std::size_t max) {
  Cursor cur(txn_, store_.txn_ended_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  std::size_t n = 0;
  MDB_val k, v;
  int rc;
  for (rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0 && n < max;
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_GET_CURRENT)) {
    const auto* b = static_cast<const std::uint8_t*>(k.mv_data);
    if (get_be64(b) >= before_ms) break;
    auto id = id_key(get_be64(b + 8));
    MDB_val ik = val(id);
    if ((rc = mdb_del(txn_, store_.txns_, &ik, nullptr)) && rc != MDB_NOTFOUND) return lmdb_error(rc, "prune");
    if ((rc = mdb_cursor_del(cur.get(), 0))) return lmdb_error(rc, "prune");
    ++n;
  }
  if (rc && rc != MDB_NOTFOUND && rc != EINVAL) return lmdb_error(rc, "prune");
  return n;
}

Result<std::optional<std::vector<std::pair<PartitionId, Offset>>>> WriteTxn::producer_batch(std::uint64_t producer,
                                                                                              std::uint64_t sequence) {
  auto k8 = id_key(producer);
  MDB_val k = val(k8), v;
  int rc = mdb_get(txn_, store_.producers_, &k, &v);
  using Out = std::optional<std::vector<std::pair<PartitionId, Offset>>>;
  if (rc == MDB_NOTFOUND) return Out{};
  if (rc) return lmdb_error(rc, "read producer");
  std::vector<std::uint64_t> scratch;
  const std::uint8_t* data = aligned(v, scratch);
  flatbuffers::Verifier verifier(data, v.mv_size);
  if (!verifier.VerifyBuffer<ProducerRecord>(nullptr)) return Error(ErrorCode::kStorageError, "corrupt producer record");
  const auto* r = flatbuffers::GetRoot<ProducerRecord>(data);
  if (!r->sequences() || !r->offsets()) return Out{};
  std::uint64_t newest = 0;
  for (auto s : *r->sequences()) newest = std::max(newest, s);
  for (flatbuffers::uoffset_t i = 0; i < r->sequences()->size() && i < r->offsets()->size(); ++i) {
    if (r->sequences()->Get(i) != sequence) continue;
    const auto* b = r->offsets()->Get(i);
    std::vector<std::pair<PartitionId, Offset>> out;
    if (b->partitions() && b->offsets())
      for (flatbuffers::uoffset_t j = 0; j < b->partitions()->size() && j < b->offsets()->size(); ++j)
        out.emplace_back(PartitionId(b->partitions()->Get(j)), Offset(b->offsets()->Get(j)));
    return Out(std::move(out));
  }
  if (sequence <= newest)
    return Error(ErrorCode::kInvalidArgument,
                 "batch " + std::to_string(sequence) + " of this producer is older than the broker remembers (window " +
                     std::to_string(r->sequences()->size()) + "): it may be stored already, so it is not appended again");
  return Out{};
}

Status WriteTxn::record_producer_batch(std::uint64_t producer, std::uint64_t sequence,
                                       const std::vector<std::pair<PartitionId, Offset>>& offsets, std::size_t window) {
  auto k8 = id_key(producer);
  MDB_val k = val(k8), v;
  std::vector<std::uint64_t> sequences;
  std::vector<std::vector<std::pair<PartitionId, Offset>>> batches;
  int rc = mdb_get(txn_, store_.producers_, &k, &v);
  if (rc == 0) {
    std::vector<std::uint64_t> scratch;
    const std::uint8_t* data = aligned(v, scratch);
    flatbuffers::Verifier verifier(data, v.mv_size);
    if (verifier.VerifyBuffer<ProducerRecord>(nullptr)) {
      const auto* r = flatbuffers::GetRoot<ProducerRecord>(data);
      if (r->sequences() && r->offsets())
        for (flatbuffers::uoffset_t i = 0; i < r->sequences()->size() && i < r->offsets()->size(); ++i) {
          sequences.push_back(r->sequences()->Get(i));
          std::vector<std::pair<PartitionId, Offset>> b;
          const auto* pb = r->offsets()->Get(i);
          if (pb->partitions() && pb->offsets())
            for (flatbuffers::uoffset_t j = 0; j < pb->partitions()->size() && j < pb->offsets()->size(); ++j)
              b.emplace_back(PartitionId(pb->partitions()->Get(j)), Offset(pb->offsets()->Get(j)));
          batches.push_back(std::move(b));
        }
    }
  } else if (rc != MDB_NOTFOUND) {
    return lmdb_error(rc, "read producer");
  }
  sequences.push_back(sequence);
  batches.push_back(offsets);
  while (sequences.size() > window) {
    sequences.erase(sequences.begin());
    batches.erase(batches.begin());
  }
  fbb_.Clear();
  std::vector<flatbuffers::Offset<ProducerBatch>> pbs;
  for (const auto& b : batches) {
    std::vector<std::uint32_t> ps;
    std::vector<std::uint64_t> os;
    for (auto [p, o] : b) {
      ps.push_back(p.value());
      os.push_back(o.value());
    }
    pbs.push_back(CreateProducerBatch(fbb_, fbb_.CreateVector(ps), fbb_.CreateVector(os)));
  }
  fbb_.Finish(CreateProducerRecord(fbb_, fbb_.CreateVector(sequences), fbb_.CreateVector(pbs)));
  MDB_val rec = val(fbb_.GetBufferPointer(), fbb_.GetSize());
  if ((rc = mdb_put(txn_, store_.producers_, &k, &rec, 0))) return lmdb_error(rc, "write producer");
  return {};
}

}  // namespace txmq::broker::storage
