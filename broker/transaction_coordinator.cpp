// Transactions (half messages): prepare, end (commit, rollback, unknown), check-back to the
// producer group on a backoff schedule, rate-limited per group, and parking when checks run
// out. Every state change is one LMDB transaction (see storage/store_txn.cpp).

#include "broker/transaction_coordinator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "broker/names.h"
#include "broker/wire_views.h"
#include "common/well_known.h"

namespace txmq::broker {
namespace {

// Checks sent (or parkings) per round, and due transactions read per round at most; the
// rest wait for the next round.
constexpr std::size_t kChecksPerRound = 1000;
constexpr std::size_t kScanPerRound = 20000;
// When due transactions belong only to groups with no producer connected, look again this
// often (a producer connecting also triggers a round at once).
constexpr std::uint64_t kIdleCheckPollMs = 1000;

flatbuffers::Offset<flatbuffers::Vector<std::uint8_t>> bytes_vector(flatbuffers::FlatBufferBuilder& fbb,
                                                                      std::string_view bytes) {
  return fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
}

flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::Header>>> header_vector(
    flatbuffers::FlatBufferBuilder& fbb, const storage::OwnedMessage& m) {
  std::vector<flatbuffers::Offset<wire::Header>> hs;
  for (const auto& [n, v] : m.headers) hs.push_back(wire::CreateHeader(fbb, fbb.CreateString(n), bytes_vector(fbb, v)));
  return hs.empty() ? 0 : fbb.CreateVector(hs);
}

// Storage keeps its own transaction states; the wire has its own enum. Converted here, at
// the edge, by name.
wire::TxnState to_wire(storage::TxnState s) {
  switch (s) {
    case storage::TxnState::kPrepared: return wire::TxnState::Prepared;
    case storage::TxnState::kCommitted: return wire::TxnState::Committed;
    case storage::TxnState::kRolledBack: return wire::TxnState::RolledBack;
    case storage::TxnState::kParked: return wire::TxnState::Parked;
  }
  return wire::TxnState::Prepared;  // not reached: storage never holds another state
}

// nullopt for a value the wire enum does not name (a client may send any byte).
std::optional<storage::TxnState> from_wire(wire::TxnState s) {
  switch (s) {
    case wire::TxnState::Prepared: return storage::TxnState::kPrepared;
    case wire::TxnState::Committed: return storage::TxnState::kCommitted;
    case wire::TxnState::RolledBack: return storage::TxnState::kRolledBack;
    case wire::TxnState::Parked: return storage::TxnState::kParked;
  }
  return std::nullopt;
}

}  // namespace

Status TxnPrune::apply(storage::WriteTxn& txn, std::size_t limit) {
  more = false;
  forgotten = 0;
  // Ended transactions are kept a while so that late and repeated ends get the real
  // answer; then they go.
  auto pruned = txn.prune_ended(ended_before_ms, limit);
  if (!pruned) return pruned.error();
  if (*pruned == limit) more = true;
  // Idempotent producers silent for producers.expiry_ms are forgotten, a slice of the
  // table per round (ids are random, so there is no oldest end to start from).
  resume = resume_from;
  auto forgot = txn.prune_producers(producers_before_ms, now_ms, &resume, limit);
  if (!forgot) return forgot.error();
  forgotten = *forgot;
  return {};
}

TransactionCoordinator::TransactionCoordinator(const BrokerConfig& config, storage::Store& store,
                                               storage::StorageWriter& writer, Scheduler& scheduler,
                                               Scheduler::Target target, TopicTable& topics, Responder& responder,
                                               AppendSink& appends, BrokerProbe* probe)
    : config_(config), store_(store), writer_(writer), scheduler_(scheduler), target_(target), topics_(topics),
      responder_(responder), appends_(appends), probe_(probe) {}

void TransactionCoordinator::start() {
  loop_thread_.check();
  auto next = store_.next_check_ms();
  if (!next) spdlog::error("reading transaction checks: {}", next.error().describe());
  if (next && *next) scheduler_.at(**next, target_);
}

std::uint64_t TransactionCoordinator::check_backoff_ms(std::uint32_t checks) {
  // Doubling from the initial interval up to the maximum, varied by +-20% so that a backlog
  // of transactions prepared together does not come due together.
  double base = static_cast<double>(config_.txn_check_initial.count()) *
                std::pow(2.0, static_cast<double>(std::min<std::uint32_t>(checks, 40)));
  base = std::min(base, static_cast<double>(config_.txn_check_max.count()));
  return static_cast<std::uint64_t>(base * std::uniform_real_distribution<double>(0.8, 1.2)(rng_));
}

void TransactionCoordinator::producer_joined(const Connection& conn) {
  loop_thread_.check();
  auto& members = producer_groups_[conn.producer_group];
  members.push_back(conn.id());
  // Transactions of this group may have been waiting for a producer to ask.
  if (members.size() == 1) scheduler_.at(wall_ms(), target_);
}

void TransactionCoordinator::producer_left(const Connection& conn) {
  loop_thread_.check();
  if (conn.producer_group.empty()) return;
  auto it = producer_groups_.find(conn.producer_group);
  if (it == producer_groups_.end()) return;
  std::erase(it->second, conn.id());
  if (it->second.empty()) producer_groups_.erase(it);
}

// Stores a batch of half messages, one transaction each. Holds a copy of the verified frame
// so the writer thread can read the messages without touching the connection's buffers.
class TransactionCoordinator::PrepareOp final : public storage::WriteOp {
 public:
  PrepareOp(TransactionCoordinator& coordinator, std::uint64_t conn_id, RequestId rid, TopicId topic,
            std::string group, std::vector<std::uint8_t> frame, std::vector<PartitionId> partitions,
            std::uint64_t check_after_ms)
      : coordinator_(coordinator), conn_id_(conn_id), rid_(rid), topic_(topic), group_(std::move(group)),
        frame_(std::move(frame)), partitions_(std::move(partitions)), check_after_ms_(check_after_ms) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kPrepare; }
  std::size_t bytes() const override { return frame_.size(); }

  Status apply(storage::WriteTxn& txn) override {
    const auto* req = wire::GetSizePrefixedFrame(frame_.data())->body_as_Prepare();
    const std::uint64_t now = wall_ms();
    first_check_ = now + check_after_ms_;
    ids_.clear();
    std::vector<storage::HeaderView> headers;
    auto ids = txn.new_txn_ids(req->messages()->size(), now);
    if (!ids) return ids.error();
    std::size_t i = 0;
    for (const auto* m : *req->messages()) {
      header_views(*m, headers);
      const std::uint64_t deliver_at = m->deliver_at_ms() ? m->deliver_at_ms() : (m->delay_ms() ? now + m->delay_ms() : 0);
      const TxnId fresh = (*ids)[i];
      auto id = txn.prepare(fresh, topic_, partitions_[i++], group_, now, bytes_of(m->key()), headers, bytes_of(m->body()),
                            deliver_at, first_check_);
      if (!id) return id.error();
      ids_.push_back(*id);
    }
    // One check-back span for the batch: its ids are consecutive among fresh ones.
    if (!ids_.empty()) return txn.schedule_check(ids_.front(), ids_.back(), first_check_);
    return {};
  }

  void complete(const Status& status) override {
    coordinator_.prepared(conn_id_, rid_, ids_, first_check_, frame_.size(), status);
  }

 private:
  TransactionCoordinator& coordinator_;
  std::uint64_t conn_id_;
  RequestId rid_;
  TopicId topic_;
  std::string group_;                    // the producer group its checks go to
  std::vector<std::uint8_t> frame_;      // the verified Prepare frame
  std::vector<PartitionId> partitions_;  // chosen on the loop, one per message
  std::uint64_t check_after_ms_;
  std::uint64_t first_check_ = 0;        // set by apply
  std::vector<TxnId> ids_;               // assigned by apply, one per message
};

void TransactionCoordinator::prepare(Connection& conn, RequestId rid, std::span<const std::uint8_t> frame,
                                     const wire::Prepare& req) {
  loop_thread_.check();
  std::string group = req.producer_group() ? req.producer_group()->str() : conn.producer_group;
  if (!valid_name(group))
    return responder_.reply_error(conn, rid,
                                  Error(ErrorCode::kInvalidArgument, "a transaction needs a valid producer group"));
  std::string topic_name = req.topic() ? req.topic()->str() : "";
  if (auto st = check_client_write(topic_name, req.messages()); !st) return responder_.reply_error(conn, rid, st.error());
  Topic* topic = topics_.find(topic_name);
  if (!topic)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + topic_name + "'"));
  if (!req.messages() || req.messages()->size() == 0)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "prepare without messages"));
  std::vector<PartitionId> partitions;
  for (const auto* m : *req.messages()) {
    const std::size_t size = message_size(*m);
    if (size > config_.max_message_bytes)
      return responder_.reply_error(
          conn, rid,
          Error(ErrorCode::kMessageTooLarge,
                "message of " + std::to_string(size) + " bytes exceeds limits.max_message_bytes"));
    auto p = TopicTable::pick_partition(*topic, m->partition(), bytes_of(m->key()));
    if (!p) return responder_.reply_error(conn, rid, p.error());
    partitions.push_back(*p);
  }
  const std::uint64_t check_after =
      req.check_after_ms() ? req.check_after_ms() : static_cast<std::uint64_t>(config_.txn_timeout.count());
  responder_.hold_produce_bytes(conn, frame.size());
  writer_.submit(std::make_unique<PrepareOp>(*this, conn.id(), rid, topic->meta.id, std::move(group),
                                             std::vector<std::uint8_t>(frame.begin(), frame.end()),
                                             std::move(partitions), check_after));
}

void TransactionCoordinator::prepared(std::uint64_t conn_id, RequestId rid, std::span<const TxnId> ids,
                                      std::uint64_t first_check_ms, std::size_t frame_bytes, const Status& status) {
  loop_thread_.check();
  Connection* conn = responder_.find(conn_id);
  if (conn) responder_.release_produce_bytes(*conn, frame_bytes);
  if (status) {
    for (auto id : ids) txn_origin_[id] = conn_id;
    if (probe_) probe_->txn_prepared(ids.size());
    scheduler_.at(first_check_ms, target_);
  }
  if (!conn) return;
  if (!status) return responder_.reply_error(*conn, rid, status.error());
  auto& fbb = responder_.fbb();
  fbb.Clear();
  std::vector<std::uint64_t> wire_ids;
  wire_ids.reserve(ids.size());
  for (TxnId id : ids) wire_ids.push_back(id.value());
  responder_.send_frame(*conn, rid, wire::Body::PrepareOk, wire::CreatePrepareOk(fbb, fbb.CreateVector(wire_ids)).Union());
}

// Ends a batch of transactions; each end is idempotent.
class TransactionCoordinator::EndOp final : public storage::WriteOp {
 public:
  // resolution: "producer", or the operator's (kResolvedByOperator, then ":" and the user
  // when the connection authenticated one).
  EndOp(TransactionCoordinator& coordinator, std::uint64_t conn_id, RequestId rid, std::vector<wire::TxnEnd> items,
        std::string resolution, std::vector<bool> unseen)
      : coordinator_(coordinator), conn_id_(conn_id), rid_(rid), items_(std::move(items)),
        resolution_(std::move(resolution)), unseen_(std::move(unseen)) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kEnd; }

  Status apply(storage::WriteTxn& txn) override {
    results_.clear();
    const std::uint64_t now = wall_ms();
    for (std::size_t i = 0; i < items_.size(); ++i) {
      const auto& item = items_[i];
      storage::TxnEndResult r;  // not found
      if (!unseen_.empty() && unseen_[i]) {
        // Judged absent when authorized; a prepare queued before this end may have made it
        // since, for a producer group this user was never checked against.
      } else if (item.action() == wire::TxnAction::Unknown) {
        auto state = txn.txn_state(TxnId(item.transaction_id()));
        if (!state) return state.error();
        r.found = state->has_value();
        r.state = state->value_or(storage::TxnState::kPrepared);  // with found = false
      } else {
        auto ended = txn.end_txn(TxnId(item.transaction_id()), item.action() == wire::TxnAction::Commit,
                                 resolution_, now);
        if (!ended) return ended.error();
        r = *ended;
      }
      results_.push_back(r);
    }
    return {};
  }

  void complete(const Status& status) override {
    coordinator_.ended(items_, results_, status);
    Connection* conn = coordinator_.responder_.find(conn_id_);
    if (!conn) return;
    if (!status) return coordinator_.responder_.reply_error(*conn, rid_, status.error());
    auto& fbb = coordinator_.responder_.fbb();
    fbb.Clear();
    std::vector<wire::TxnResult> out;
    for (std::size_t i = 0; i < items_.size(); ++i)
      out.emplace_back(items_[i].transaction_id(), to_wire(results_[i].state), results_[i].changed,
                       results_[i].found);
    coordinator_.responder_.send_frame(*conn, rid_, wire::Body::EndTransactionsOk,
                                       wire::CreateEndTransactionsOk(fbb, fbb.CreateVectorOfStructs(out)).Union());
  }

 private:
  TransactionCoordinator& coordinator_;
  std::uint64_t conn_id_;
  RequestId rid_;
  std::vector<wire::TxnEnd> items_;
  std::string resolution_;                        // who decided
  std::vector<bool> unseen_;                      // per item: absent when authorized (empty: unrestricted)
  std::vector<storage::TxnEndResult> results_;    // by apply, one per item
};

void TransactionCoordinator::end(Connection& conn, RequestId rid, const wire::EndTransactions& req) {
  loop_thread_.check();
  std::vector<wire::TxnEnd> items;
  if (req.items())
    for (const auto* item : *req.items()) items.push_back(*item);
  std::vector<bool> unseen;
  if (conn.access.restricted()) {
    auto judged = authorize_end(conn.access, items, req.operator_());
    if (!judged) return responder_.reply_error(conn, rid, judged.error());
    unseen = std::move(*judged);
  }
  std::string resolution = "producer";
  if (req.operator_()) {
    resolution = kResolvedByOperator;
    if (!conn.access.user().empty()) resolution += ":" + conn.access.user();
  }
  writer_.submit(std::make_unique<EndOp>(*this, conn.id(), rid, std::move(items), std::move(resolution),
                                         std::move(unseen)));
}

// Every item is judged before anything changes, and one the user may not end refuses the
// whole request: a batch applied in part would leave the producer to work out which of its
// ends counted. A transaction that does not exist needs no permission (it is answered "not
// found", as ending it would be).
Result<std::vector<bool>> TransactionCoordinator::authorize_end(Access& access, std::span<const wire::TxnEnd> items,
                                                                bool by_operator) const {
  const Operation op = by_operator ? Operation::kResolve : Operation::kTransact;
  std::vector<bool> unseen(items.size(), false);
  for (std::size_t i = 0; i < items.size(); ++i) {
    auto txn = store_.read_txn(TxnId(items[i].transaction_id()));
    if (!txn) return txn.error();
    if (!*txn) {
      unseen[i] = true;
      continue;
    }
    if (auto st = access.check(op, ResourceType::kProducerGroup, (*txn)->producer_group); !st) return st.error();
  }
  return unseen;
}

void TransactionCoordinator::ended(std::span<const wire::TxnEnd> items,
                                   std::span<const storage::TxnEndResult> results, const Status& status) {
  loop_thread_.check();
  if (!status) return;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& r = results[i];
    const TxnId id(items[i].transaction_id());
    if (txn_checked_.erase(id) && probe_) probe_->txn_check_answered();
    if (!r.changed) continue;
    txn_origin_.erase(id);
    if (probe_) probe_->txn_ended(to_wire(r.state));
    if (r.appended) {
      const Appended where{r.partition, *r.appended};
      appends_.appended(r.topic, {&where, 1}, 0);
    }
    if (r.delayed_until) appends_.delayed_stored(*r.delayed_until);
  }
}

// One check-back round: what was read, and what it decided to write.
struct TransactionCoordinator::CheckRound {
  struct Checked {
    TxnId id;
    std::uint32_t checks;          // after this round
    std::uint64_t next_check_ms;   // 0 when parked
    bool park;                     // checks ran out: parked for an operator
  };
  std::uint64_t now_ms = 0;
  std::vector<std::pair<TxnId, std::uint64_t>> due;  // (id, due time), due order
  std::vector<storage::CheckSpan> empty;  // spans whose transactions all ended: dropped
  std::vector<Checked> checked;
  // A due check could not be sent: no producer, the group's budget spent, or not read.
  bool starved = false;
  std::uint64_t budget_wait_ms = UINT64_MAX;  // until a spent budget has a token again
  std::size_t acted = 0;                     // checks sent and parkings
};

void TransactionCoordinator::check_round() {
  loop_thread_.check();
  if (checks_in_flight_) return;  // the round in flight reschedules when it completes
  CheckRound round;
  round.now_ms = wall_ms();
  if (!scan_due(round)) return scheduler_.at(round.now_ms + kIdleCheckPollMs, target_);
  for (auto [id, due_ms] : round.due) {
    if (round.acted == kChecksPerRound) break;
    check_one(round, id);
  }
  persist_round(std::move(round));
}

// Step 1, scan: due transactions in due order, at most kScanPerRound. Those that cannot be
// checked now (no producer of their group, or its rate budget spent) are stepped over later,
// so that they never hold back another group's. False on a storage error (logged).
bool TransactionCoordinator::scan_due(CheckRound& round) {
  std::optional<std::pair<TxnId, std::uint64_t>> after;
  for (std::size_t scanned = 0;;) {
    if (scanned >= kScanPerRound) {
      round.starved = true;  // the round stopped reading before the last due transaction
      return true;
    }
    auto page = store_.due_checks(round.now_ms, kChecksPerRound, after);
    if (!page) {
      spdlog::error("reading due transaction checks: {}", page.error().describe());
      return false;
    }
    scanned += page->due.size() + page->empty.size();
    round.due.insert(round.due.end(), page->due.begin(), page->due.end());
    round.empty.insert(round.empty.end(), page->empty.begin(), page->empty.end());
    if (!page->resume) return true;
    after = page->resume;
  }
}

void TransactionCoordinator::check_one(CheckRound& round, TxnId id) {
  auto t = store_.read_txn(id);
  if (!t || !*t || (*t)->state != storage::TxnState::kPrepared) return;
  const storage::OwnedTxn& txn = **t;
  if (txn.checks >= config_.txn_max_checks) {
    round.checked.push_back({id, txn.checks, 0, true});
    ++round.acted;
    return;
  }
  auto members = producer_groups_.find(txn.producer_group);
  if (members == producer_groups_.end()) {
    round.starved = true;  // nobody to ask: no check is sent and none is counted
    return;
  }
  if (!take_check_token(txn.producer_group, round)) return;
  Connection* target = choose_target(id, txn.producer_group, members->second);
  if (!target) {
    round.starved = true;
    return;
  }
  send_check(*target, id, txn);
  round.checked.push_back({id, txn.checks + 1, round.now_ms + check_backoff_ms(txn.checks), false});
  ++round.acted;
}

// Step 2, rate budget: a token bucket per producer group, at most checks_per_second, bursts
// of as many. False (and the round starved) when the group's bucket is empty.
bool TransactionCoordinator::take_check_token(const std::string& producer_group, CheckRound& round) {
  auto& bucket = check_budgets_[producer_group];
  const double rate = config_.txn_checks_per_second;
  // A bucket holds at least one token, so a rate below one per second still lets checks
  // through, one every 1/rate seconds.
  bucket.tokens = std::min(std::max(rate, 1.0),
                           bucket.tokens + static_cast<double>(round.now_ms - bucket.last_ms) * rate / 1000.0);
  bucket.last_ms = round.now_ms;
  if (bucket.tokens < 1.0) {
    round.starved = true;
    round.budget_wait_ms = std::min(round.budget_wait_ms, static_cast<std::uint64_t>(std::ceil(1000.0 / rate)));
    return false;
  }
  bucket.tokens -= 1.0;
  return true;
}

// Step 3, target: the connection that prepared it, if it is still here in the same group;
// else the group's connections in turn. Null when none is open.
Connection* TransactionCoordinator::choose_target(TxnId id, const std::string& producer_group,
                                                  const std::vector<std::uint64_t>& members) {
  if (auto o = txn_origin_.find(id); o != txn_origin_.end()) {
    Connection* c = responder_.find(o->second);
    if (c && c->producer_group == producer_group) return c;
  }
  return responder_.find(members[check_round_robin_++ % members.size()]);
}

// Step 4, send: a CheckTransaction push with the half message.
void TransactionCoordinator::send_check(Connection& target, TxnId id, const storage::OwnedTxn& txn) {
  auto& fbb = responder_.fbb();
  fbb.Clear();
  const auto& m = *txn.message;
  const auto headers = header_vector(fbb, m);
  const Topic* topic = topics_.find(txn.topic);
  auto body = wire::CreateCheckTransaction(fbb, id.value(), fbb.CreateString(topic ? topic->meta.name : ""),
                                           fbb.CreateString(txn.producer_group), bytes_vector(fbb, m.key), headers,
                                           bytes_vector(fbb, m.body), txn.checks + 1);
  responder_.send_frame(target, RequestId(), wire::Body::CheckTransaction, body.Union());
  txn_checked_.insert(id);
  if (probe_) probe_->txn_check_sent();
}

// Records a check-back round: the counts and next times of the checks sent, the parkings,
// and the spans left empty; the coordinator schedules the next round once it completed.
class TransactionCoordinator::CheckRoundOp final : public storage::WriteOp {
 public:
  CheckRoundOp(TransactionCoordinator& coordinator, CheckRound round)
      : coordinator_(coordinator), round_(std::move(round)) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kCheckRound; }

  Status apply(storage::WriteTxn& txn) override {
    for (const auto& span : round_.empty)
      if (auto st = txn.drop_check_span(span); !st) return st;
    for (const auto& c : round_.checked)
      if (auto st = txn.checked(c.id, c.checks, c.next_check_ms, c.park); !st) return st;
    return {};
  }

  void complete(const Status& status) override { coordinator_.round_persisted(round_, status); }

 private:
  TransactionCoordinator& coordinator_;
  CheckRound round_;  // what it writes: round_.empty and round_.checked
};

// Step 5, persist: the counts and next times of the checks sent, the parkings, and the
// spans left empty, in one write; the next round is scheduled when it completes (or now,
// when there is nothing to write).
void TransactionCoordinator::persist_round(CheckRound round) {
  const std::uint64_t retry_in = round.starved ? std::min(round.budget_wait_ms, kIdleCheckPollMs) : UINT64_MAX;
  if (round.checked.empty() && round.empty.empty()) {
    if (round.starved) return scheduler_.at(round.now_ms + retry_in, target_);
    auto next = store_.next_check_ms();
    if (next && *next) scheduler_.at(**next, target_);
    return;
  }
  checks_in_flight_ = true;
  writer_.submit(std::make_unique<CheckRoundOp>(*this, std::move(round)));
}

void TransactionCoordinator::round_persisted(const CheckRound& round, const Status& status) {
  loop_thread_.check();
  checks_in_flight_ = false;
  if (!status) spdlog::error("recording transaction checks: {}", status.error().describe());
  for (const auto& c : round.checked) {
    if (!c.park) continue;
    txn_origin_.erase(c.id);
    if (probe_) probe_->txn_ended(wire::TxnState::Parked);
    spdlog::warn("transaction {} parked after {} checks: resolve with `txmq txn commit|rollback {}`", c.id.value(),
                 c.checks, c.id.value());
  }
  const std::uint64_t now = wall_ms();
  if (round.acted == kChecksPerRound) return scheduler_.at(now, target_);  // more are due now
  if (round.starved) scheduler_.at(now + std::min(round.budget_wait_ms, kIdleCheckPollMs), target_);
  if (auto next = store_.next_check_ms(); next && *next) scheduler_.at(std::max(**next, now), target_);
}

void TransactionCoordinator::list(Connection& conn, RequestId rid, const wire::ListTransactions& req) {
  loop_thread_.check();
  std::vector<storage::OwnedTxn> txns;
  if (req.transaction_id()) {
    auto t = store_.read_txn(TxnId(req.transaction_id()));
    if (!t) return responder_.reply_error(conn, rid, t.error());
    if (!*t)
      return responder_.reply_error(
          conn, rid, Error(ErrorCode::kInvalidArgument, "no transaction " + std::to_string(req.transaction_id())));
    if (auto st = conn.access.check(Operation::kDescribe, ResourceType::kProducerGroup, (*t)->producer_group); !st)
      return responder_.reply_error(conn, rid, st.error());
    txns.push_back(std::move(**t));
  } else {
    const auto state = req.all_states() ? std::nullopt : from_wire(req.state());
    // A state the wire does not name matches no transaction.
    if (req.all_states() || state) {
      auto list = store_.list_txns(state, std::min<std::uint32_t>(req.max() ? req.max() : 1000, 10000));
      if (!list) return responder_.reply_error(conn, rid, list.error());
      txns = std::move(*list);
      // A user sees only the transactions of producer groups it may describe (of the newest
      // `max`: one that may describe few groups can see fewer than there are).
      std::erase_if(txns, [&](const storage::OwnedTxn& t) {
        return !conn.access.allows(Operation::kDescribe, ResourceType::kProducerGroup, t.producer_group);
      });
    }
  }
  auto& fbb = responder_.fbb();
  fbb.Clear();
  std::vector<flatbuffers::Offset<wire::TransactionInfo>> out;
  for (const auto& t : txns) {
    const Topic* topic = topics_.find(t.topic);
    flatbuffers::Offset<flatbuffers::Vector<std::uint8_t>> key = 0, body = 0;
    flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::Header>>> headers = 0;
    if (t.message) {
      key = bytes_vector(fbb, t.message->key);
      body = bytes_vector(fbb, t.message->body);
      std::vector<flatbuffers::Offset<wire::Header>> hs;
      for (const auto& [n, v] : t.message->headers)
        hs.push_back(wire::CreateHeader(fbb, fbb.CreateString(n), bytes_vector(fbb, v)));
      headers = fbb.CreateVector(hs);
    }
    out.push_back(wire::CreateTransactionInfo(
        fbb, t.id.value(), to_wire(t.state), fbb.CreateString(topic ? topic->meta.name : "?"),
        fbb.CreateString(t.producer_group), t.created_ms, t.checks, t.next_check_ms, t.ended_ms,
        fbb.CreateString(t.resolution), t.partition.value(), t.offset.value(), key, headers, body));
  }
  responder_.send_frame(conn, rid, wire::Body::TransactionList,
                        wire::CreateTransactionList(fbb, fbb.CreateVector(out)).Union());
}

TxnPrune TransactionCoordinator::prune_round(std::uint64_t now_ms) const {
  loop_thread_.check();
  TxnPrune prune;
  prune.now_ms = now_ms;
  prune.ended_before_ms =
      now_ms - std::min<std::uint64_t>(now_ms, static_cast<std::uint64_t>(config_.txn_ended_retention.count()));
  prune.producers_before_ms =
      now_ms - std::min<std::uint64_t>(now_ms, static_cast<std::uint64_t>(config_.producer_expiry.count()));
  prune.resume_from = producer_prune_resume_;
  return prune;
}

void TransactionCoordinator::pruned(const TxnPrune& done) {
  loop_thread_.check();
  producer_prune_resume_ = done.resume;
  if (done.forgotten > 0)
    spdlog::debug("forgot {} idempotent producer(s) silent for longer than producers.expiry_ms", done.forgotten);
}

}  // namespace txmq::broker
