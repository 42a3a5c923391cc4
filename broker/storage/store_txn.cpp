// Transactions: half messages, their check-back schedule and their outcomes, in four key
// spaces (layout.h): txn_open holds the prepared ones with their half messages, txn_parked
// those whose checks ran out (they wait for an operator), txn_ended the outcome of the
// committed and rolled back ones, and txn_checks the check-backs due, by span.
//
// A transaction lives in exactly one of the first three, so where it is says its state and
// no index by state is needed. The check schedule is kept by span, not by transaction: a
// batch of prepares writes one span, an end writes none (the span then covers an id that is
// no longer in txn_open, which whoever reads the span skips), and only a check or a park
// splits a span. So a commit is one read, one delete and one put of the transaction's own
// records besides the append, all in one LMDB transaction. Ids grow with time, so each key
// space is in creation order: the oldest prepared transaction is the first of txn_open, and
// pruning walks txn_ended from the front.

#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker/storage/store.h"
#include "broker/storage/store_internal.h"
#include "broker/storage/txn_records.h"
#include "common/well_known.h"

namespace txmq::broker::storage {
using namespace internal;
namespace {

std::array<std::uint8_t, 16> pair_key(std::uint64_t due_ms, TxnId id) { return two_u64(due_ms, id.value()); }
std::array<std::uint8_t, 8> txn_key(TxnId id) { return id_key(id.value()); }
TxnId txn_id_of(const MDB_val& k) { return TxnId(get_be64(static_cast<const std::uint8_t*>(k.mv_data))); }

constexpr auto kPrepared = TxnState::kPrepared;
constexpr auto kParked = TxnState::kParked;
constexpr auto kCommitted = TxnState::kCommitted;
constexpr auto kRolledBack = TxnState::kRolledBack;

// Pruning may step over ended records it cannot delete yet (created before the cut-off
// but ended after it: transactions that were open for a long time); a round reads at most
// this many times its delete budget, so a crowd of them slows pruning but never stalls it
// for long, and never makes a round unbounded.
constexpr std::size_t kPruneScanFactor = 8;

// A record of any of the three key spaces, copied out; nullopt when it does not decode.
std::optional<OwnedTxn> parse_any(TxnId id, MDB_dbi where, MDB_dbi ended, const MDB_val& v) {
  if (where == ended) {
    auto e = EndedRecord::decode(bytes_of(v));
    return e ? std::optional(e->owned(id)) : std::nullopt;
  }
  auto h = HalfRecord::decode(bytes_of(v));
  return h ? std::optional(h->owned(id)) : std::nullopt;
}

// Looks a transaction up in the key spaces in turn, the common case first; 0 with the key
// space that holds it, MDB_NOTFOUND when none does, or an LMDB error.
int find_txn(MDB_txn* txn, std::initializer_list<MDB_dbi> spaces, MDB_val& key, MDB_val& value, MDB_dbi& where) {
  for (MDB_dbi dbi : spaces) {
    int rc = mdb_get(txn, dbi, &key, &value);
    if (rc != MDB_NOTFOUND) {
      where = dbi;
      return rc;
    }
  }
  return MDB_NOTFOUND;
}

CheckSpan span_of(const MDB_val& k, const MDB_val& v) {
  const auto* kb = static_cast<const std::uint8_t*>(k.mv_data);
  return CheckSpan{get_be64(kb), TxnId(get_be64(kb + 8)),
                   TxnId(v.mv_size == 8 ? get_be64(static_cast<const std::uint8_t*>(v.mv_data)) : 0)};
}

// Positions cur on the span that holds id at due_ms; MDB_NOTFOUND when none does.
int find_span(MDB_cursor* cur, std::uint64_t due_ms, TxnId id, CheckSpan& span) {
  auto want = pair_key(due_ms, id);
  MDB_val k = val(want), v;
  int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  if (rc == 0 && std::memcmp(k.mv_data, want.data(), 16) == 0) {
    span = span_of(k, v);
    return 0;
  }
  // Else the span that starts before id at the same time, if it reaches id.
  if (rc && rc != MDB_NOTFOUND) return rc;
  rc = mdb_cursor_get(cur, &k, &v, rc == MDB_NOTFOUND ? MDB_LAST : MDB_PREV);
  if (rc) return rc;
  span = span_of(k, v);
  return span.due_ms == due_ms && span.first_id <= id && id <= span.last_id ? 0 : MDB_NOTFOUND;
}

}  // namespace

Result<DueChecks> Store::due_checks(std::uint64_t now_ms, std::size_t max,
                                    std::optional<std::pair<TxnId, std::uint64_t>> after) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), txn_checks_), open(txn.get(), txn_open_);
  if (cur.rc() || open.rc()) return lmdb_error(cur.rc() ? cur.rc() : open.rc(), "cursor");
  DueChecks out;
  MDB_val k, v;
  int rc;
  TxnId from_id;  // in the first span, the ids before this were read already
  if (after) {
    CheckSpan span;
    rc = find_span(cur.get(), after->second, after->first, span);
    if (rc == 0) {
      from_id = TxnId(after->first.value() + 1);
      rc = mdb_cursor_get(cur.get(), &k, &v, MDB_GET_CURRENT);
    } else if (rc == MDB_NOTFOUND) {
      auto start = pair_key(after->second, after->first);
      k = val(start);
      rc = mdb_cursor_get(cur.get(), &k, &v, MDB_SET_RANGE);
    }
  } else {
    rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST);
  }
  for (; rc == 0; rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT), from_id = TxnId()) {
    const CheckSpan span = span_of(k, v);
    if (span.due_ms > now_ms) break;
    if (out.empty.size() == max) {
      // The next page starts with this span: "after the id just before it".
      if (span.first_id > TxnId()) out.resume = std::pair(TxnId(span.first_id.value() - 1), span.due_ms);
      break;
    }
    // The span's prepared transactions are the ids of txn_open in its range.
    bool any = false;
    auto start = txn_key(std::max(span.first_id, from_id));
    MDB_val ok = val(start), ov;
    int orc = mdb_cursor_get(open.get(), &ok, &ov, MDB_SET_RANGE);
    for (; orc == 0; orc = mdb_cursor_get(open.get(), &ok, &ov, MDB_NEXT)) {
      const TxnId id = txn_id_of(ok);
      if (id > span.last_id) break;
      any = true;
      out.due.emplace_back(id, span.due_ms);
      if (out.due.size() == max) {
        out.resume = std::pair(id, span.due_ms);
        return out;
      }
    }
    if (orc && orc != MDB_NOTFOUND) return lmdb_error(orc, "read transactions");
    if (!any && from_id == TxnId()) out.empty.push_back(span);
  }
  if (rc && rc != MDB_NOTFOUND) return lmdb_error(rc, "read checks");
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

Result<std::optional<OwnedTxn>> Store::read_txn(TxnId id) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  auto key = txn_key(id);
  MDB_val k = val(key), v;
  MDB_dbi where = 0;
  int rc = find_txn(txn.get(), {txn_open_, txn_parked_, txn_ended_}, k, v, where);
  if (rc == MDB_NOTFOUND) return std::optional<OwnedTxn>{};
  if (rc) return lmdb_error(rc, "read transaction");
  auto t = parse_any(id, where, txn_ended_, v);
  if (!t) return corrupt(where == txn_open_ ? "txn_open" : where == txn_parked_ ? "txn_parked" : "txn_ended");
  return t;
}

Result<std::vector<OwnedTxn>> Store::list_txns(std::optional<TxnState> state, std::size_t max) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  std::vector<MDB_dbi> spaces;
  if (!state || *state == kPrepared) spaces.push_back(txn_open_);
  if (!state || *state == kParked) spaces.push_back(txn_parked_);
  if (!state || *state == kCommitted || *state == kRolledBack) spaces.push_back(txn_ended_);
  // The newest of each key space, then the newest of them all.
  std::vector<OwnedTxn> out;
  for (MDB_dbi dbi : spaces) {
    Cursor cur(txn.get(), dbi);
    if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
    MDB_val k, v;
    std::size_t taken = 0;
    for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_LAST); rc == 0 && taken < max;
         rc = mdb_cursor_get(cur.get(), &k, &v, MDB_PREV)) {
      auto t = parse_any(txn_id_of(k), dbi, txn_ended_, v);
      if (!t || (state && t->state != *state)) continue;
      t->message.reset();  // listings carry no bodies
      out.push_back(std::move(*t));
      ++taken;
    }
  }
  std::sort(out.begin(), out.end(), [](const OwnedTxn& a, const OwnedTxn& b) { return a.id > b.id; });
  if (out.size() > max) out.resize(max);
  return out;
}

TxnCounts Store::txn_counts() const {
  TxnCounts out;
  ReadTxn txn(env_);
  if (txn.rc()) return out;
  MDB_stat st;
  if (mdb_stat(txn.get(), txn_open_, &st) == 0) out.prepared = st.ms_entries;
  if (mdb_stat(txn.get(), txn_parked_, &st) == 0) out.parked = st.ms_entries;
  Cursor cur(txn.get(), txn_open_);
  MDB_val k, v;
  if (cur.rc() == 0 && mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST) == 0) {
    if (auto h = HalfRecord::decode(bytes_of(v))) out.oldest_prepared_ms = h->created_ms;
  }
  return out;
}

MDB_cursor* WriteTxn::kept_cursor(MDB_dbi dbi, int* rc) {
  MDB_cursor*& cur = dbi == store_.txn_open_ ? open_cursor_ : ended_cursor_;
  *rc = cur ? 0 : mdb_cursor_open(txn_, dbi, &cur);
  return *rc ? nullptr : cur;
}

void WriteTxn::close_kept_cursors() {
  for (MDB_cursor** cur : {&open_cursor_, &ended_cursor_}) {
    if (*cur) mdb_cursor_close(*cur);
    *cur = nullptr;
  }
}

Result<std::vector<TxnId>> WriteTxn::new_txn_ids(std::size_t n, std::uint64_t now_ms) {
  auto first = next_counter("next_txn_id", static_cast<std::uint32_t>(n));
  if (!first) return first.error();
  std::vector<TxnId> ids;
  for (std::size_t i = 0; i < n; ++i)
    ids.push_back(TxnId((static_cast<std::uint64_t>(*first + i) << 20) | (now_ms & 0xFFFFF)));
  return ids;
}

Result<TxnId> WriteTxn::prepare(TxnId id, TopicId topic, PartitionId partition, std::string_view producer_group,
                                        std::uint64_t now_ms, std::span<const std::uint8_t> key,
                                        std::span<const HeaderView> headers, std::span<const std::uint8_t> body,
                                        std::uint64_t deliver_at_ms, std::uint64_t first_check_ms) {
  grows(Growth::kNewData);
  HalfRecord half;
  half.state = kPrepared;
  half.topic = topic.value();
  half.partition = partition.value();
  half.created_ms = now_ms;
  half.next_check_ms = first_check_ms;
  half.deliver_at_ms = deliver_at_ms;
  half.producer_group = producer_group;
  half.key = key;
  half.headers.assign(headers.begin(), headers.end());
  half.body = body;
  half.encode(record_);
  auto k8 = txn_key(id);
  MDB_val k = val(k8), rec = val(record_.data(), record_.size());
  int rc;
  MDB_cursor* open = kept_cursor(store_.txn_open_, &rc);
  if (!open) return lmdb_error(rc, "cursor");
  // Fresh ids are larger than any stored one, so the record goes at the end without a search.
  rc = cursor_put(open, store_.txn_open_, &k, &rec, MDB_APPEND);
  if (rc == MDB_KEYEXIST) return Error(ErrorCode::kStorageError, "transaction id " + std::to_string(id.value()) + " is not fresh");
  if (rc) return lmdb_error(rc, "write transaction");
  return id;
}

Status WriteTxn::schedule_check(TxnId first_id, TxnId last_id, std::uint64_t due_ms) {
  auto key = pair_key(due_ms, first_id);
  auto last = txn_key(last_id);
  MDB_val k = val(key), v = val(last);
  // Check times grow: the span most likely goes at the end, without a search.
  int rc = put(store_.txn_checks_, &k, &v, MDB_APPEND);
  if (rc == MDB_KEYEXIST) rc = put(store_.txn_checks_, &k, &v, 0);
  if (rc) return lmdb_error(rc, "schedule check");
  return {};
}

Result<bool> WriteTxn::any_prepared(TxnId first_id, TxnId last_id) {
  Cursor open(txn_, store_.txn_open_);
  if (open.rc()) return lmdb_error(open.rc(), "cursor");
  auto k8 = txn_key(first_id);
  MDB_val k = val(k8), v;
  int rc = mdb_cursor_get(open.get(), &k, &v, MDB_SET_RANGE);
  if (rc == MDB_NOTFOUND) return false;
  if (rc) return lmdb_error(rc, "read transactions");
  return txn_id_of(k) <= last_id;
}

Status WriteTxn::unschedule_check(TxnId id, std::uint64_t due_ms) {
  Cursor cur(txn_, store_.txn_checks_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  CheckSpan span;
  int rc = find_span(cur.get(), due_ms, id, span);
  if (rc == MDB_NOTFOUND) return {};
  if (rc) return lmdb_error(rc, "read checks");
  if ((rc = cursor_del(cur.get(), store_.txn_checks_))) return lmdb_error(rc, "reschedule check");
  // The parts on either side keep their time, if they still hold anyone.
  const TxnId before(id.value() - 1), after(id.value() + 1);
  if (span.first_id < id) {
    auto any = any_prepared(span.first_id, before);
    if (!any) return any.error();
    if (*any)
      if (auto st = schedule_check(span.first_id, before, due_ms); !st) return st;
  }
  if (id < span.last_id) {
    auto any = any_prepared(after, span.last_id);
    if (!any) return any.error();
    if (*any)
      if (auto st = schedule_check(after, span.last_id, due_ms); !st) return st;
  }
  return {};
}

Status WriteTxn::drop_check_span(const CheckSpan& span) {
  // Checked again here, though nothing can enter a span (its ids were fresh when it was
  // written): a stale read must never drop a live one.
  auto any = any_prepared(span.first_id, span.last_id);
  if (!any) return any.error();
  if (*any) return {};
  auto key = pair_key(span.due_ms, span.first_id);
  MDB_val k = val(key), v;
  int rc = mdb_get(txn_, store_.txn_checks_, &k, &v);
  if (rc == MDB_NOTFOUND || (rc == 0 && span_of(k, v).last_id != span.last_id)) return {};
  if (rc || (rc = del(store_.txn_checks_, &k))) return lmdb_error(rc, "drop check span");
  return {};
}

// Appends a committed half message to its partition, or keeps it aside until its
// deliver-at time, from the record's bytes: no message is copied out of them first. Sets
// out.appended or out.delayed_until; neither when the topic was deleted.
Status WriteTxn::deliver_commit(HalfRecord& half, std::string_view resolution, std::uint64_t now_ms,
                                TxnEndResult& out) {
  // An operator's decision says so on the message: "operator", or "operator:<user>".
  static constexpr std::string_view kOperator = kResolvedByOperator;
  if (resolution == kOperator || (resolution.starts_with(kOperator) && resolution.size() > kOperator.size() &&
                                  resolution[kOperator.size()] == ':'))
    half.headers.emplace_back(kResolvedByHeader, std::span<const std::uint8_t>(
                                                      reinterpret_cast<const std::uint8_t*>(resolution.data()),
                                                      resolution.size()));
  if (half.deliver_at_ms > now_ms) {
    // A commit moves the half message, already counted: a verdict, not new data.
    if (auto st = put_delayed(half.deliver_at_ms, out.topic, out.partition, now_ms, half.key, half.headers, half.body,
                              Growth::kVerdict);
        !st)
      return st;
    out.delayed_until = half.deliver_at_ms;
    return {};
  }
  auto appended = append(out.topic, out.partition, now_ms, half.key, half.headers, half.body, Growth::kVerdict);
  if (appended) out.appended = *appended;
  else if (appended.error().code != ErrorCode::kUnknownPartition) return appended.error();
  return {};
}

// An ended transaction keeps its outcome, not its body.
Status WriteTxn::put_ended(MDB_val& key, const HalfRecord& half, TxnState state, Offset offset,
                           std::string_view resolution, std::uint64_t now_ms) {
  EndedRecord ended;
  ended.state = state;
  ended.topic = half.topic;
  ended.partition = half.partition;
  ended.checks = half.checks;
  ended.offset = offset.value();
  ended.created_ms = half.created_ms;
  ended.ended_ms = now_ms;
  ended.deliver_at_ms = half.deliver_at_ms;
  ended.resolution = resolution;
  ended.producer_group = half.producer_group;
  ended.encode(record_);
  MDB_val rec = val(record_.data(), record_.size());
  // Ends come in about the order of prepares, so this is mostly the last id too.
  int rc;
  MDB_cursor* ended_at = kept_cursor(store_.txn_ended_, &rc);
  if (!ended_at) return lmdb_error(rc, "cursor");
  rc = cursor_put(ended_at, store_.txn_ended_, &key, &rec, MDB_APPEND);
  if (rc == MDB_KEYEXIST) rc = cursor_put(ended_at, store_.txn_ended_, &key, &rec, 0);
  if (rc) return lmdb_error(rc, "end transaction");
  return {};
}

Result<TxnEndResult> WriteTxn::end_txn(TxnId id, bool commit, std::string_view resolution,
                                       std::uint64_t now_ms) {
  TxnEndResult out;
  auto k8 = txn_key(id);
  MDB_val k = val(k8), v;
  MDB_dbi where = store_.txn_open_;
  // The common case, a prepared one, is found with a cursor that then deletes it in place.
  int rc;
  MDB_cursor* open = kept_cursor(store_.txn_open_, &rc);
  if (!open) return lmdb_error(rc, "cursor");
  rc = mdb_cursor_get(open, &k, &v, MDB_SET);
  if (rc == MDB_NOTFOUND) rc = find_txn(txn_, {store_.txn_parked_, store_.txn_ended_}, k, v, where);
  if (rc == MDB_NOTFOUND) return out;
  if (rc) return lmdb_error(rc, "read transaction");
  if (where == store_.txn_ended_) {
    // Only a transaction still open can end, and only once: a late or contradicting end is
    // answered with the real state and changes nothing.
    auto e = EndedRecord::decode(bytes_of(v));
    if (!e) return corrupt("txn_ended");
    out.found = true;
    out.topic = TopicId(e->topic);
    out.partition = PartitionId(e->partition);
    out.state = e->state;
    return out;
  }
  // Read from a copy: the record is deleted below, and the map's bytes may move with any
  // write of this transaction.
  scratch_.assign(static_cast<const std::uint8_t*>(v.mv_data), static_cast<const std::uint8_t*>(v.mv_data) + v.mv_size);
  auto half = HalfRecord::decode(scratch_);
  if (!half) return corrupt(where == store_.txn_open_ ? "txn_open" : "txn_parked");
  out.found = true;
  out.topic = TopicId(half->topic);
  out.partition = PartitionId(half->partition);
  out.state = half->state;

  rc = where == store_.txn_open_ ? cursor_del(open, store_.txn_open_) : del(where, &k);
  if (rc) return lmdb_error(rc, "end transaction");
  if (commit)
    if (auto st = deliver_commit(*half, resolution, now_ms, out); !st) return st.error();
  // A commit whose topic was deleted has nowhere to go: it ends rolled back.
  out.state = out.appended || out.delayed_until ? kCommitted : kRolledBack;
  if (auto st = put_ended(k, *half, out.state, out.appended.value_or(Offset()), resolution, now_ms); !st)
    return st.error();
  out.changed = true;
  return out;
}

Result<std::optional<TxnState>> WriteTxn::txn_state(TxnId id) {
  auto k8 = txn_key(id);
  MDB_val k = val(k8), v;
  MDB_dbi where = 0;
  int rc = find_txn(txn_, {store_.txn_open_, store_.txn_parked_, store_.txn_ended_}, k, v, where);
  if (rc == MDB_NOTFOUND) return std::optional<TxnState>{};
  if (rc) return lmdb_error(rc, "read transaction");
  if (where == store_.txn_open_) return std::optional<TxnState>(kPrepared);
  if (where == store_.txn_parked_) return std::optional<TxnState>(kParked);
  auto e = EndedRecord::decode(bytes_of(v));
  if (!e) return corrupt("txn_ended");
  return std::optional<TxnState>(e->state);
}

Status WriteTxn::checked(TxnId id, std::uint32_t checks, std::uint64_t next_check_ms, bool park) {
  auto k8 = txn_key(id);
  MDB_val k = val(k8), v;
  int rc = mdb_get(txn_, store_.txn_open_, &k, &v);
  if (rc == MDB_NOTFOUND) return {};  // ended meanwhile
  if (rc) return lmdb_error(rc, "read transaction");
  // Only fixed fields change: a copy is patched in place.
  record_.assign(static_cast<const std::uint8_t*>(v.mv_data), static_cast<const std::uint8_t*>(v.mv_data) + v.mv_size);
  auto half = HalfRecord::decode(record_);
  if (!half) return corrupt("txn_open");
  if (auto st = unschedule_check(id, half->next_check_ms); !st) return st;
  put_be32(record_.data() + HalfRecord::kChecksAt, checks);
  MDB_dbi into = store_.txn_open_;
  if (park) {
    record_[HalfRecord::kStateAt] = static_cast<std::uint8_t>(kParked);
    put_be64(record_.data() + HalfRecord::kNextCheckAt, 0);
    if ((rc = del(store_.txn_open_, &k))) return lmdb_error(rc, "park");
    into = store_.txn_parked_;
  } else {
    put_be64(record_.data() + HalfRecord::kNextCheckAt, next_check_ms);
    if (auto st = schedule_check(id, id, next_check_ms); !st) return st;
  }
  MDB_val rec = val(record_.data(), record_.size());
  if ((rc = put(into, &k, &rec, 0))) return lmdb_error(rc, "write transaction");
  return {};
}

Result<std::size_t> WriteTxn::prune_ended(std::uint64_t before_ms, std::size_t max) {
  Cursor cur(txn_, store_.txn_ended_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  std::size_t n = 0, scanned = 0;
  MDB_val k, v;
  int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST);
  for (; rc == 0 && n < max && scanned < max * kPruneScanFactor; ++scanned) {
    const auto e = EndedRecord::decode(bytes_of(v));
    if (e && e->created_ms >= before_ms) break;  // every later one was created later still
    if (e && e->ended_ms >= before_ms) {
      rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT);  // open long, ended recently: kept
      continue;
    }
    if ((rc = cursor_del(cur.get(), store_.txn_ended_))) return lmdb_error(rc, "prune");
    ++n;
    // After a delete the cursor sits on the next item; GET_CURRENT fails past the end.
    rc = mdb_cursor_get(cur.get(), &k, &v, MDB_GET_CURRENT);
  }
  if (rc && rc != MDB_NOTFOUND && rc != EINVAL) return lmdb_error(rc, "prune");
  return n;
}

}  // namespace txmq::broker::storage
