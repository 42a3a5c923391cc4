// Consuming: subscribe a connection to a group, push deliveries within its window, take
// verdicts (ack, nack, in progress, terminate), expire leases, retry on schedule, make
// every verdict durable before answering it, and release delayed messages when due.
// Group administration (policies, descriptions, redrive) is in group_commands.cpp.

#include "broker/consumer_groups.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker/dead_letter.h"
#include "broker/log_reader.h"
#include "broker/names.h"

namespace txmq::broker {
namespace {

// Delayed messages released per transaction; more wait for the next round, so one burst
// of due messages cannot make one huge commit that delays every confirm behind it.
constexpr std::size_t kDelayedPerRound = 1000;

}  // namespace

ConsumerGroups::ConsumerGroups(uv_loop_t* loop, storage::Store& store, storage::StorageWriter& writer,
                               Scheduler& scheduler, Targets targets, TopicTable& topics, Responder& responder,
                               AppendSink& appends, BrokerProbe* probe)
    : loop_(loop), store_(store), writer_(writer), scheduler_(scheduler), targets_(targets), topics_(topics),
      responder_(responder), appends_(appends), probe_(probe), next_target_(targets.first_group) {}

Status ConsumerGroups::start() {
  loop_thread_.check();
  auto groups = store_.load_groups();
  if (!groups) return groups.error();
  for (auto& [name, id] : *groups) group_ids_[name] = id;
  auto policies = store_.load_policies();
  if (!policies) return policies.error();
  for (auto& [key, bytes] : *policies)
    if (auto p = PolicyOverride::from_record(bytes)) policies_.set(key, std::move(*p));
  schedule_delayed();
  return {};
}

ConsumerGroup* ConsumerGroups::find(std::string_view group, std::string_view topic) {
  auto it = groups_.find(std::make_pair(std::string(group), std::string(topic)));
  return it == groups_.end() ? nullptr : it->second.get();
}

GroupPolicy ConsumerGroups::effective_policy(std::string_view group, std::string_view topic) const {
  return policies_.effective(group, topic);
}

ConsumerGroup* ConsumerGroups::load(const std::string& group_name, storage::GroupId gid, Topic& topic) {
  if (ConsumerGroup* g = find(group_name, topic.meta.name)) return g;
  auto g = std::make_unique<ConsumerGroup>(group_name, gid, topic, effective_policy(group_name, topic.meta.name),
                                           next_target_++);
  if (auto st = g->load(StoreLogReader(store_)); !st) {
    spdlog::error("group '{}' on '{}': {}", group_name, topic.meta.name, st.error().describe());
    return nullptr;
  }
  if (probe_) g->series = probe_->group(topic.meta.name, group_name);
  ConsumerGroup* raw = g.get();
  by_target_[raw->serial()] = raw;
  groups_[{group_name, topic.meta.name}] = std::move(g);
  return raw;
}

void ConsumerGroups::dispatch(ConsumerGroup& group) {
  if (!dispatching_) return;  // nothing more goes out; what is held is delivered after restart
  if (group.has_consumers()) {
    auto marks = group.dispatch(StoreLogReader(store_), responder_.fbb(), wall_ms());
    if (!marks.empty()) persist(group, SettleBatch{}, std::move(marks), 0, RequestId(), false);
  }
  schedule(group);
}

void ConsumerGroups::schedule(ConsumerGroup& group) {
  // The scheduler keeps only the earliest wake-up asked of it, so asking after every
  // dispatch costs one lookup.
  if (const std::uint64_t t = group.next_wakeup(wall_ms()); t != UINT64_MAX) scheduler_.at(t, group.serial());
}

bool ConsumerGroups::wake(Scheduler::Target target) {
  loop_thread_.check();
  if (target == targets_.delayed) {
    release_delayed();
    return true;
  }
  auto it = by_target_.find(target);
  if (it == by_target_.end()) return target >= targets_.first_group;  // a group since dropped
  group_due(*it->second);
  return true;
}

void ConsumerGroups::group_due(ConsumerGroup& group) {
  persist_failures(group, group.expire_leases(wall_ms()));
  dispatch(group);  // due retries go out; asks for the next wake-up
}

void ConsumerGroups::topic_appended(const Topic& topic) {
  loop_thread_.check();
  for (auto& [key, group] : groups_)
    if (&group->topic() == &topic) dispatch(*group);
}

void ConsumerGroups::topic_deleted(TopicId topic) {
  loop_thread_.check();
  std::erase_if(by_target_, [&](const auto& kv) { return kv.second->topic().meta.id == topic; });
  std::erase_if(groups_, [&](const auto& kv) { return kv.second->topic().meta.id == topic; });
}

void ConsumerGroups::connection_writable(const Connection& conn) {
  loop_thread_.check();
  for (auto& [key, group] : groups_)
    if (group->find_consumer(&conn)) dispatch(*group);
}

void ConsumerGroups::connection_closed(const Connection& conn, bool shutting_down) {
  loop_thread_.check();
  for (auto& [key, group] : groups_) {
    if (!group->find_consumer(&conn)) continue;
    auto failures = group->remove_consumer(&conn, wall_ms());
    // At shutdown what consumers hold stays unacknowledged and is delivered after restart,
    // so nothing is persisted; but no group may keep pointing at the freed connection
    // (a produce the writer completes while draining still dispatches).
    if (shutting_down) continue;
    persist_failures(*group, std::move(failures));
    dispatch(*group);
  }
}

// Persists one batch of verdicts on a group: acks (with the new floors), removed pending
// records, failures (retries and dead letters) and delivered-up-to marks, in one nested
// transaction, and answers the request (if any) once it committed.
class ConsumerGroups::SettleOp final : public storage::WriteOp {
 public:
  SettleOp(ConsumerGroups& groups, FailureOrigin origin, SettleBatch batch,
           std::vector<std::pair<PartitionId, Offset>> marks, std::uint64_t conn_id, RequestId rid, bool reply)
      : groups_(groups), origin_(std::move(origin)), batch_(std::move(batch)), marks_(std::move(marks)),
        conn_id_(conn_id), rid_(rid), reply_(reply) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kSettle; }

  Status apply(storage::WriteTxn& txn) override {
    const std::uint64_t now = wall_ms();
    floors_.clear();
    dead_letters_.clear();
    dlq_.reset();
    auto acks = batch_.acks;
    for (const Failure& f : batch_.failures) {
      std::optional<Offset> dlq_offset;
      if (auto st = write_failure(txn, origin_, f, now, dlq_, dlq_offset); !st) return st;
      if (f.dead_letter) acks[f.partition].push_back(f.offset);
      if (dlq_offset) dead_letters_.push_back(Appended{PartitionId(0), *dlq_offset});
    }
    for (const auto& [p, o] : batch_.clear)
      if (auto st = txn.clear_pending(origin_.group_id, origin_.topic_id, p, o); !st) return st;
    for (auto& [p, offsets] : acks) {
      auto floor = txn.ack(origin_.group_id, origin_.topic_id, p, offsets);
      if (!floor) return floor.error();
      floors_.emplace_back(p, *floor);
    }
    for (const auto& [p, upto] : marks_)
      if (auto st = txn.mark_delivered(origin_.group_id, origin_.topic_id, p, upto); !st) return st;
    return {};
  }

  void complete(const Status& status) override {
    groups_.settled(origin_, floors_, dlq_, dead_letters_, status);
    if (!reply_) return;
    Responder& responder = groups_.responder_;
    Connection* conn = responder.find(conn_id_);
    if (!conn) return;
    if (!status) return responder.reply_error(*conn, rid_, status.error());
    auto& fbb = responder.fbb();
    fbb.Clear();
    responder.send_frame(*conn, rid_, wire::Body::SettleOk, wire::CreateSettleOk(fbb, batch_.ignored).Union());
  }

 private:
  ConsumerGroups& groups_;
  FailureOrigin origin_;
  SettleBatch batch_;
  std::vector<std::pair<PartitionId, Offset>> marks_;   // delivered-up-to, to persist
  std::uint64_t conn_id_;
  RequestId rid_;
  bool reply_;                                          // a Settle to answer
  std::vector<std::pair<PartitionId, Offset>> floors_;  // by apply: ack floors after the acks
  std::optional<storage::TopicMeta> dlq_;               // by apply: the dead-letter topic written
  std::vector<Appended> dead_letters_;                  // by apply: where in it
};

void ConsumerGroups::persist(ConsumerGroup& group, SettleBatch batch, std::vector<std::pair<PartitionId, Offset>> marks,
                             std::uint64_t conn_id, RequestId rid, bool reply) {
  if (group.series.nacked)
    for (const Failure& f : batch.failures) (f.dead_letter ? group.series.dead_lettered : group.series.nacked)->inc();
  FailureOrigin origin{group.name(), group.id(), group.topic().meta.name, group.topic().meta.id};
  writer_.submit(std::make_unique<SettleOp>(*this, std::move(origin), std::move(batch), std::move(marks), conn_id, rid,
                                            reply));
}

void ConsumerGroups::persist_failures(ConsumerGroup& group, std::vector<Failure> failures) {
  if (failures.empty()) return;
  SettleBatch batch;
  batch.failures = std::move(failures);
  persist(group, std::move(batch), {}, 0, RequestId(), false);
}

void ConsumerGroups::settled(const FailureOrigin& origin, std::span<const std::pair<PartitionId, Offset>> floors,
                             const std::optional<storage::TopicMeta>& dlq, std::span<const Appended> dead_letters,
                             const Status& status) {
  loop_thread_.check();
  if (!status) {
    // Memory already holds the verdicts; disk holds the state before them. After a
    // restart the messages are delivered again: at least once still holds.
    spdlog::warn("group '{}' on '{}': verdicts not persisted: {}", origin.group, origin.topic,
                 status.error().describe());
    return;
  }
  if (ConsumerGroup* g = find(origin.group, origin.topic))
    for (auto [p, floor] : floors) g->set_ack_floor(p, floor);
  if (dlq && !dead_letters.empty()) {
    appends_.topic_created(*dlq);  // the first dead letter creates the topic
    appends_.appended(dlq->id, dead_letters, 0);
  }
}

// Gives a group's name its id, the first time the group is joined; then joins it.
class ConsumerGroups::InternGroupOp final : public storage::WriteOp {
 public:
  InternGroupOp(ConsumerGroups& groups, std::string group, std::string topic, std::uint32_t window,
                std::uint64_t conn_id, RequestId rid)
      : groups_(groups), group_(std::move(group)), topic_(std::move(topic)), window_(window), conn_id_(conn_id),
        rid_(rid) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kInternGroup; }

  Status apply(storage::WriteTxn& txn) override {
    auto id = txn.intern_group(group_);
    if (!id) return id.error();
    group_id_ = *id;
    return {};
  }

  void complete(const Status& status) override {
    if (!status) {
      if (Connection* c = groups_.responder_.find(conn_id_)) groups_.responder_.reply_error(*c, rid_, status.error());
      return;
    }
    groups_.group_ids_[group_] = group_id_;
    groups_.join(conn_id_, rid_, topic_, group_, window_, group_id_);
  }

 private:
  ConsumerGroups& groups_;
  std::string group_;
  std::string topic_;         // the subscription that asked, joined once the id is there
  std::uint32_t window_;
  std::uint64_t conn_id_;
  RequestId rid_;
  storage::GroupId group_id_{};  // by apply
};

void ConsumerGroups::subscribe(Connection& conn, RequestId rid, const wire::Subscribe& req) {
  loop_thread_.check();
  std::string topic_name = req.topic() ? req.topic()->str() : "";
  std::string group_name = req.group() ? req.group()->str() : "";
  if (!valid_name(group_name))
    return responder_.reply_error(conn, rid,
                                  Error(ErrorCode::kInvalidArgument, std::string("group names are ") + kNameRule));
  if (req.window() == 0) {
    // Window 0 pauses an existing subscription: nothing more is pushed to it.
    if (ConsumerGroup* g = find(group_name, topic_name); g && g->find_consumer(&conn)) {
      g->add_consumer(conn, 0);
      return responder_.reply_ok(conn, rid);
    }
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "window must be at least 1"));
  }
  if (!topics_.find(topic_name))
    return responder_.reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + topic_name + "'"));
  if (auto it = group_ids_.find(group_name); it != group_ids_.end())
    return join(conn.id(), rid, topic_name, group_name, req.window(), it->second);
  // Joins once the group's name has an id; interning it is a write the first time only.
  writer_.submit(std::make_unique<InternGroupOp>(*this, std::move(group_name), std::move(topic_name), req.window(),
                                                 conn.id(), rid));
}

void ConsumerGroups::join(std::uint64_t conn_id, RequestId rid, const std::string& topic_name,
                          const std::string& group_name, std::uint32_t window, storage::GroupId gid) {
  Connection* c = responder_.find(conn_id);
  Topic* topic = topics_.find(topic_name);
  if (!c) return;
  if (!topic)
    return responder_.reply_error(*c, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + topic_name + "'"));
  ConsumerGroup* group = load(group_name, gid, *topic);
  if (!group) return responder_.reply_error(*c, rid, Error(ErrorCode::kStorageError, "cannot load group state"));
  group->add_consumer(*c, window);
  spdlog::debug("connection {} consumes '{}' as group '{}'", c->id(), topic_name, group_name);
  responder_.reply_ok(*c, rid);
  dispatch(*group);
}

ConsumerGroup* ConsumerGroups::settling_group(Connection& conn, RequestId rid, const flatbuffers::String* topic,
                                              const flatbuffers::String* group) {
  const std::string topic_name = topic ? topic->str() : "";
  const std::string group_name = group ? group->str() : "";
  ConsumerGroup* g = find(group_name, topic_name);
  if (!g)
    responder_.reply_error(conn, rid, Error(ErrorCode::kNotSubscribed, "no consumer of group '" + group_name +
                                                                           "' on topic '" + topic_name + "'"));
  return g;
}

void ConsumerGroups::settle(Connection& conn, RequestId rid, const wire::Settle& req) {
  loop_thread_.check();
  ConsumerGroup* group = settling_group(conn, rid, req.topic(), req.group());
  if (!group) return;
  SettleBatch batch;
  const std::uint64_t now = wall_ms();
  if (req.items())
    for (const auto* item : *req.items())
      if (auto st = group->settle(conn, PartitionId(item->partition()), Offset(item->offset()), item->verb(),
                                  item->delay_ms(), item->reason() ? item->reason()->string_view() : std::string_view{},
                                  now, batch);
          !st)
        return responder_.reply_error(conn, rid, st.error());
  persist(*group, std::move(batch), {}, conn.id(), rid, true);
  dispatch(*group);  // freed window: more can go while the verdicts are written
}

void ConsumerGroups::delayed_stored(std::uint64_t due_ms) {
  loop_thread_.check();
  scheduler_.at(due_ms, targets_.delayed);
}

void ConsumerGroups::schedule_delayed() {
  auto next = store_.next_delayed_ms();
  if (!next) {
    spdlog::error("reading delayed messages: {}", next.error().describe());
    return;
  }
  if (*next) scheduler_.at(**next, targets_.delayed);
}

// Moves the delayed messages that are due into their partitions' logs, at most
// kDelayedPerRound, and announces them as appended.
class ConsumerGroups::ReleaseDelayedOp final : public storage::WriteOp {
 public:
  explicit ReleaseDelayedOp(ConsumerGroups& groups) : groups_(groups) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kReleaseDelayed; }

  Status apply(storage::WriteTxn& txn) override {
    auto r = txn.release_delayed(wall_ms(), kDelayedPerRound);
    if (!r) return r.error();
    released_ = std::move(*r);
    return {};
  }

  void complete(const Status& status) override {
    if (!status) spdlog::error("releasing delayed messages: {}", status.error().describe());
    // One append per topic, so that each topic's groups hear once.
    std::stable_sort(released_.begin(), released_.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<Appended> run;
    for (std::size_t i = 0; i < released_.size();) {
      const TopicId topic = released_[i].first;
      run.clear();
      for (; i < released_.size() && released_[i].first == topic; ++i)
        run.push_back(Appended{released_[i].second.first, released_[i].second.second});
      groups_.appends_.appended(topic, run, 0);
    }
    if (status && released_.size() == kDelayedPerRound)
      groups_.delayed_stored(wall_ms());  // more are due now
    else
      groups_.schedule_delayed();
  }

 private:
  ConsumerGroups& groups_;
  // By apply: each message released, with the offset it got.
  std::vector<std::pair<TopicId, std::pair<PartitionId, Offset>>> released_;
};

void ConsumerGroups::release_delayed() { writer_.submit(std::make_unique<ReleaseDelayedOp>(*this)); }

ConsumerGroups::Totals ConsumerGroups::totals() const {
  loop_thread_.check();
  Totals t;
  for (const auto& [key, g] : groups_) {
    t.delivered += g->delivered;
    t.acked += g->acked_total;
  }
  return t;
}

// Runs on the loop thread at every scrape (the endpoint renders on the loop), so it may
// read loop-owned state.
void ConsumerGroups::refresh_metrics() {
  loop_thread_.check();
  for (const auto& [key, g] : groups_) {
    if (!g->series.lag) continue;
    g->series.lag->set(static_cast<double>(g->lag()));
    g->series.in_flight->set(static_cast<double>(g->in_flight()));
    g->series.consumers->set(static_cast<double>(g->consumers()));
  }
}

}  // namespace txmq::broker
