// Transactions (half messages): prepare, end (commit, rollback, unknown), check-back to the
// producer group on a backoff schedule, rate-limited per group, and parking when checks run
// out. Every state change is one LMDB transaction (see storage/store_txn.cpp).

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "broker/broker.h"
#include "broker/storage/fn_op.h"
#include "broker/wire_views.h"

namespace txmq::broker {
namespace {

// Checks sent (or parkings) per round, and due transactions read per round at most; the
// rest wait for the next round.
constexpr std::size_t kChecksPerRound = 1000;
constexpr std::size_t kScanPerRound = 20000;
// When due transactions belong only to groups with no producer connected, look again this
// often (a producer connecting also triggers a round at once).
constexpr std::uint64_t kIdleCheckPollMs = 1000;

}  // namespace

std::uint64_t Broker::check_backoff_ms(std::uint32_t checks) {
  // Doubling from the initial interval up to the maximum, varied by +-20% so that a backlog
  // of transactions prepared together does not come due together.
  double base = static_cast<double>(config_.txn_check_initial.count()) *
                std::pow(2.0, static_cast<double>(std::min<std::uint32_t>(checks, 40)));
  base = std::min(base, static_cast<double>(config_.txn_check_max.count()));
  return static_cast<std::uint64_t>(base * std::uniform_real_distribution<double>(0.8, 1.2)(rng_));
}

void Broker::register_producer(Connection& conn) {
  auto& members = producer_groups_[conn.producer_group];
  members.push_back(conn.id());
  // Transactions of this group may have been waiting for a producer to ask.
  if (members.size() == 1) schedule_checks(wall_ms());
}

void Broker::unregister_producer(Connection& conn) {
  if (conn.producer_group.empty()) return;
  auto it = producer_groups_.find(conn.producer_group);
  if (it == producer_groups_.end()) return;
  std::erase(it->second, conn.id());
  if (it->second.empty()) producer_groups_.erase(it);
}

void Broker::schedule_checks(std::uint64_t due_ms) {
  if (due_ms < checks_wakeup_) {
    checks_wakeup_ = due_ms;
    scheduler_->at(due_ms, kTxnCheckTarget);
  }
}

// Stores a batch of half messages, one transaction each.
class PrepareOp final : public storage::WriteOp {
 public:
  PrepareOp(Broker& broker, std::uint64_t conn_id, std::uint64_t rid, TopicId topic, std::string group,
            std::vector<std::uint8_t> frame, std::vector<PartitionId> partitions, std::uint64_t check_after_ms)
      : broker_(broker), conn_id_(conn_id), rid_(rid), topic_(topic), group_(std::move(group)),
        frame_(std::move(frame)), partitions_(std::move(partitions)), check_after_ms_(check_after_ms) {}

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
      const std::uint64_t fresh = (*ids)[i];
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
    Connection* conn = broker_.find_connection(conn_id_);
    if (conn) broker_.release_produce_bytes(*conn, frame_.size());
    if (status) {
      for (auto id : ids_) broker_.txn_origin_[id] = conn_id_;
      if (broker_.probe_) broker_.probe_->txn_prepared(ids_.size());
      broker_.schedule_checks(first_check_);
    }
    if (!conn) return;
    if (!status) return broker_.reply_error(*conn, rid_, status.error());
    auto& fbb = broker_.fbb_;
    fbb.Clear();
    broker_.send_frame(*conn, rid_, wire::Body::PrepareOk, wire::CreatePrepareOk(fbb, fbb.CreateVector(ids_)).Union());
  }

 private:
  Broker& broker_;
  std::uint64_t conn_id_;
  std::uint64_t rid_;
  TopicId topic_;
  std::string group_;
  std::vector<std::uint8_t> frame_;
  std::vector<PartitionId> partitions_;
  std::uint64_t check_after_ms_;
  std::uint64_t first_check_ = 0;
  std::vector<std::uint64_t> ids_;
};

void Broker::handle_prepare(Connection& conn, std::uint64_t rid, std::span<const std::uint8_t> frame,
                            const wire::Prepare& req) {
  std::string group = req.producer_group() ? req.producer_group()->str() : conn.producer_group;
  if (!valid_name(group))
    return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "a transaction needs a valid producer group"));
  std::string topic_name = req.topic() ? req.topic()->str() : "";
  Topic* topic = topics_.find(topic_name);
  if (!topic) return reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + topic_name + "'"));
  if (!req.messages() || req.messages()->size() == 0)
    return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "prepare without messages"));
  std::vector<PartitionId> partitions;
  for (const auto* m : *req.messages()) {
    const std::size_t size = message_size(*m);
    if (size > config_.max_message_bytes)
      return reply_error(conn, rid, Error(ErrorCode::kMessageTooLarge, "message of " + std::to_string(size) +
                                                                           " bytes exceeds limits.max_message_bytes"));
    auto p = TopicTable::pick_partition(*topic, m->partition(), bytes_of(m->key()));
    if (!p) return reply_error(conn, rid, p.error());
    partitions.push_back(*p);
  }
  const std::uint64_t check_after =
      req.check_after_ms() ? req.check_after_ms() : static_cast<std::uint64_t>(config_.txn_timeout.count());
  hold_produce_bytes(conn, frame.size());
  writer_->submit(std::make_unique<PrepareOp>(*this, conn.id(), rid, topic->meta.id, group,
                                              std::vector<std::uint8_t>(frame.begin(), frame.end()),
                                              std::move(partitions), check_after));
}

// Ends a batch of transactions; each end is idempotent.
class EndOp final : public storage::WriteOp {
 public:
  EndOp(Broker& broker, std::uint64_t conn_id, std::uint64_t rid, std::vector<wire::TxnEnd> items, bool by_operator)
      : broker_(broker), conn_id_(conn_id), rid_(rid), items_(std::move(items)), by_operator_(by_operator) {}

  Status apply(storage::WriteTxn& txn) override {
    results_.clear();
    const std::uint64_t now = wall_ms();
    for (const auto& item : items_) {
      storage::TxnEndResult r;
      if (item.action() == wire::TxnAction::Unknown) {
        auto state = txn.txn_state(item.transaction_id());
        if (!state) return state.error();
        r.found = state->has_value();
        r.state = state->value_or(0);
      } else {
        auto ended = txn.end_txn(item.transaction_id(), item.action() == wire::TxnAction::Commit,
                                 by_operator_ ? "operator" : "producer", now);
        if (!ended) return ended.error();
        r = *ended;
      }
      results_.push_back(r);
    }
    return {};
  }

  void complete(const Status& status) override {
    if (status) {
      for (std::size_t i = 0; i < items_.size(); ++i) {
        const auto& r = results_[i];
        const std::uint64_t id = items_[i].transaction_id();
        if (broker_.txn_checked_.erase(id) && broker_.probe_) broker_.probe_->txn_check_answered();
        if (!r.changed) continue;
        broker_.txn_origin_.erase(id);
        if (broker_.probe_) broker_.probe_->txn_ended(static_cast<wire::TxnState>(r.state));
        if (r.appended) broker_.appended(r.topic, r.partition, *r.appended);
        if (r.delayed_until) broker_.delayed_scheduled(*r.delayed_until);
      }
    }
    Connection* conn = broker_.find_connection(conn_id_);
    if (!conn) return;
    if (!status) return broker_.reply_error(*conn, rid_, status.error());
    auto& fbb = broker_.fbb_;
    fbb.Clear();
    std::vector<wire::TxnResult> out;
    for (std::size_t i = 0; i < items_.size(); ++i)
      out.emplace_back(items_[i].transaction_id(), static_cast<wire::TxnState>(results_[i].state), results_[i].changed,
                       results_[i].found);
    broker_.send_frame(*conn, rid_, wire::Body::EndTransactionsOk,
                       wire::CreateEndTransactionsOk(fbb, fbb.CreateVectorOfStructs(out)).Union());
  }

 private:
  Broker& broker_;
  std::uint64_t conn_id_;
  std::uint64_t rid_;
  std::vector<wire::TxnEnd> items_;
  bool by_operator_;
  std::vector<storage::TxnEndResult> results_;
};

void Broker::handle_end_transactions(Connection& conn, std::uint64_t rid, const wire::EndTransactions& req) {
  std::vector<wire::TxnEnd> items;
  if (req.items())
    for (const auto* item : *req.items()) items.push_back(*item);
  writer_->submit(std::make_unique<EndOp>(*this, conn.id(), rid, std::move(items), req.operator_()));
}

void Broker::appended(TopicId topic_id, PartitionId partition, Offset offset) {
  Topic* topic = topics_.find(topic_id);
  if (!topic) return;
  auto& part = topic->partitions[partition.value()];
  if (offset >= part.next) part.next = next(offset);
  ++topic->messages_produced;
  if (topic->series.produced) topic->series.produced->inc();
  dispatch_topic(*topic);
}

void Broker::run_checks() {
  checks_wakeup_ = UINT64_MAX;
  if (checks_in_flight_) return;  // the round in flight reschedules when it completes
  const std::uint64_t now = wall_ms();
  // Due transactions come in due order; those that cannot be checked now (no producer of
  // their group, or its rate budget spent) are stepped over, so that they never hold back
  // another group's. A round reads at most kScanPerRound of them.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> due_list;
  // Spans whose transactions all ended: dropped by this round's write.
  auto empty_spans = std::make_shared<std::vector<storage::CheckSpan>>();
  std::optional<std::pair<std::uint64_t, std::uint64_t>> after;
  bool scan_cut = false;  // the round stopped reading before the last due transaction
  for (std::size_t scanned = 0;;) {
    if (scanned >= kScanPerRound) {
      scan_cut = true;
      break;
    }
    auto page = store_->due_checks(now, kChecksPerRound, after);
    if (!page) {
      spdlog::error("reading due transaction checks: {}", page.error().describe());
      return schedule_checks(now + kIdleCheckPollMs);
    }
    scanned += page->due.size() + page->empty.size();
    for (auto& e : page->due) due_list.push_back(e);
    for (auto& e : page->empty) empty_spans->push_back(e);
    if (!page->resume) break;
    after = page->resume;
  }
  auto* due = &due_list;
  struct Checked {
    std::uint64_t id;
    std::uint32_t checks;
    std::uint64_t next_check_ms;
    bool park;
  };
  auto updates = std::make_shared<std::vector<Checked>>();
  bool starved = scan_cut;  // a due check could not be sent: no producer, the group's budget, or not read
  std::uint64_t budget_wait = UINT64_MAX;
  std::size_t acted = 0;
  for (auto [id, due_ms] : *due) {
    if (acted == kChecksPerRound) break;
    auto t = store_->read_txn(id);
    if (!t || !*t || (*t)->state != static_cast<std::uint8_t>(wire::TxnState::Prepared)) continue;
    const storage::OwnedTxn& txn = **t;
    if (txn.checks >= config_.txn_max_checks) {
      updates->push_back({id, txn.checks, 0, true});
      ++acted;
      continue;
    }
    auto members = producer_groups_.find(txn.producer_group);
    if (members == producer_groups_.end()) {
      starved = true;  // nobody to ask: no check is sent and none is counted
      continue;
    }
    // A token bucket per producer group: at most checks_per_second, bursts of as many.
    auto& bucket = check_budgets_[txn.producer_group];
    const double rate = config_.txn_checks_per_second;
    // A bucket holds at least one token, so a rate below one per second still lets checks
    // through, one every 1/rate seconds.
    bucket.tokens = std::min(std::max(rate, 1.0), bucket.tokens + static_cast<double>(now - bucket.last_ms) * rate / 1000.0);
    bucket.last_ms = now;
    if (bucket.tokens < 1.0) {
      starved = true;
      budget_wait = std::min(budget_wait, static_cast<std::uint64_t>(std::ceil(1000.0 / rate)));
      continue;
    }
    bucket.tokens -= 1.0;
    // The connection that prepared it first, if it is still here; else any of the group.
    Connection* target = nullptr;
    if (auto o = txn_origin_.find(id); o != txn_origin_.end()) {
      Connection* c = find_connection(o->second);
      if (c && c->producer_group == txn.producer_group) target = c;
    }
    if (!target) {
      auto& ids = members->second;
      target = find_connection(ids[check_round_robin_++ % ids.size()]);
    }
    if (!target) {
      starved = true;
      continue;
    }
    fbb_.Clear();
    const auto& m = *txn.message;
    std::vector<flatbuffers::Offset<wire::Header>> hs;
    for (const auto& [n, v] : m.headers)
      hs.push_back(wire::CreateHeader(fbb_, fbb_.CreateString(n),
                                      fbb_.CreateVector(reinterpret_cast<const std::uint8_t*>(v.data()), v.size())));
    const Topic* topic = topics_.find(txn.topic);
    auto body = wire::CreateCheckTransaction(
        fbb_, id, fbb_.CreateString(topic ? topic->meta.name : ""), fbb_.CreateString(txn.producer_group),
        fbb_.CreateVector(reinterpret_cast<const std::uint8_t*>(m.key.data()), m.key.size()),
        hs.empty() ? 0 : fbb_.CreateVector(hs),
        fbb_.CreateVector(reinterpret_cast<const std::uint8_t*>(m.body.data()), m.body.size()), txn.checks + 1);
    send_frame(*target, 0, wire::Body::CheckTransaction, body.Union());
    txn_checked_.insert(id);
    if (probe_) probe_->txn_check_sent();
    updates->push_back({id, txn.checks + 1, now + check_backoff_ms(txn.checks), false});
    ++acted;
  }
  const std::uint64_t retry_in = starved ? std::min(budget_wait, kIdleCheckPollMs) : UINT64_MAX;
  if (updates->empty() && empty_spans->empty()) {
    if (starved) return schedule_checks(now + retry_in);
    auto next = store_->next_check_ms();
    if (next && *next) schedule_checks(**next);
    return;
  }
  checks_in_flight_ = true;
  writer_->submit(std::make_unique<storage::FnOp>(
      [updates, empty_spans](storage::WriteTxn& txn) -> Status {
        for (const auto& span : *empty_spans)
          if (auto st = txn.drop_check_span(span); !st) return st;
        for (const auto& u : *updates)
          if (auto st = txn.checked(u.id, u.checks, u.next_check_ms, u.park); !st) return st;
        return {};
      },
      [this, updates, retry_in, full = acted == kChecksPerRound](const Status& st) {
        checks_in_flight_ = false;
        if (!st) spdlog::error("recording transaction checks: {}", st.error().describe());
        for (const auto& u : *updates) {
          if (!u.park) continue;
          txn_origin_.erase(u.id);
          if (probe_) probe_->txn_ended(wire::TxnState::Parked);
          spdlog::warn("transaction {} parked after {} checks: resolve with `txmq txn commit|rollback {}`", u.id,
                       u.checks, u.id);
        }
        const std::uint64_t now = wall_ms();
        if (full) return schedule_checks(now);
        if (retry_in != UINT64_MAX) schedule_checks(now + retry_in);
        if (auto next = store_->next_check_ms(); next && *next) schedule_checks(std::max(**next, now));
      }));
}

void Broker::handle_list_transactions(Connection& conn, std::uint64_t rid, const wire::ListTransactions& req) {
  std::vector<storage::OwnedTxn> txns;
  if (req.transaction_id()) {
    auto t = store_->read_txn(req.transaction_id());
    if (!t) return reply_error(conn, rid, t.error());
    if (!*t)
      return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument,
                                          "no transaction " + std::to_string(req.transaction_id())));
    txns.push_back(std::move(**t));
  } else {
    auto list = store_->list_txns(req.all_states() ? std::nullopt : std::optional<std::uint8_t>(
                                                                        static_cast<std::uint8_t>(req.state())),
                                  std::min<std::uint32_t>(req.max() ? req.max() : 1000, 10000));
    if (!list) return reply_error(conn, rid, list.error());
    txns = std::move(*list);
  }
  fbb_.Clear();
  std::vector<flatbuffers::Offset<wire::TransactionInfo>> out;
  for (const auto& t : txns) {
    const Topic* topic = topics_.find(t.topic);
    flatbuffers::Offset<flatbuffers::Vector<std::uint8_t>> key = 0, body = 0;
    flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::Header>>> headers = 0;
    if (t.message) {
      key = fbb_.CreateVector(reinterpret_cast<const std::uint8_t*>(t.message->key.data()), t.message->key.size());
      body = fbb_.CreateVector(reinterpret_cast<const std::uint8_t*>(t.message->body.data()), t.message->body.size());
      std::vector<flatbuffers::Offset<wire::Header>> hs;
      for (const auto& [n, v] : t.message->headers)
        hs.push_back(wire::CreateHeader(fbb_, fbb_.CreateString(n),
                                        fbb_.CreateVector(reinterpret_cast<const std::uint8_t*>(v.data()), v.size())));
      headers = fbb_.CreateVector(hs);
    }
    out.push_back(wire::CreateTransactionInfo(
        fbb_, t.id, static_cast<wire::TxnState>(t.state), fbb_.CreateString(topic ? topic->meta.name : "?"),
        fbb_.CreateString(t.producer_group), t.created_ms, t.checks, t.next_check_ms, t.ended_ms,
        fbb_.CreateString(t.resolution), t.partition.value(), t.offset.value(), key, headers, body));
  }
  send_frame(conn, rid, wire::Body::TransactionList, wire::CreateTransactionList(fbb_, fbb_.CreateVector(out)).Union());
}

}  // namespace txmq::broker
