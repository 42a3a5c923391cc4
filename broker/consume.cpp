// Consuming: subscribe a connection to a group, push deliveries within its window, take
// verdicts (ack, nack, in progress, terminate), expire leases, retry on schedule, and make
// every verdict durable before answering it.

#include <spdlog/spdlog.h>

#include "broker/broker.h"
#include "broker/dead_letter.h"
#include "broker/storage/fn_op.h"

namespace txmq::broker {

ConsumerGroup* Broker::find_group(std::string_view group, std::string_view topic) {
  auto it = groups_.find(std::make_pair(std::string(group), std::string(topic)));
  return it == groups_.end() ? nullptr : it->second.get();
}

GroupPolicy Broker::effective_policy(std::string_view group, std::string_view topic) const {
  GroupPolicy policy;
  if (auto it = policies_.find("t:" + std::string(topic)); it != policies_.end()) it->second.apply_to(policy);
  if (auto it = policies_.find("g:" + std::string(group)); it != policies_.end()) it->second.apply_to(policy);
  return policy;
}

void Broker::dispatch_group(ConsumerGroup& group) {
  if (shutting_down_) return;  // nothing more goes out; what is held is delivered after restart
  if (group.has_consumers()) {
    auto marks = group.dispatch(*store_, fbb(), wall_ms());
    if (!marks.empty()) persist(group, SettleBatch{}, std::move(marks), 0, 0, false);
  }
  schedule_group(group);
}

void Broker::dispatch_topic(const Topic& topic) {
  for (auto& [key, group] : groups_)
    if (&group->topic() == &topic) dispatch_group(*group);
}

void Broker::schedule_group(ConsumerGroup& group) {
  // The scheduler keeps only the earliest wake-up asked of it, so asking after every
  // dispatch costs one lookup.
  if (const std::uint64_t t = group.next_wakeup(wall_ms()); t != UINT64_MAX) scheduler_->at(t, group.serial());
}

void Broker::on_group_due(ConsumerGroup& group) {
  auto failures = group.expire_leases(wall_ms());
  if (!failures.empty()) {
    SettleBatch batch;
    batch.failures = std::move(failures);
    persist(group, std::move(batch), {}, 0, 0, false);
  }
  dispatch_group(group);  // due retries go out; re-registers the next wake-up
}

// Persists one batch of verdicts on a group: acks (with the new floors), removed pending
// records, failures (retries and dead letters) and delivered-up-to marks, in one nested
// transaction, and answers the request (if any) once it committed.
class SettleOp final : public storage::WriteOp {
 public:
  SettleOp(Broker& broker, FailureOrigin origin, SettleBatch batch,
           std::vector<std::pair<PartitionId, Offset>> marks, std::uint64_t conn_id, std::uint64_t rid, bool reply)
      : broker_(broker), origin_(std::move(origin)), batch_(std::move(batch)), marks_(std::move(marks)),
        conn_id_(conn_id), rid_(rid), reply_(reply) {}

  Status apply(storage::WriteTxn& txn) override {
    const std::uint64_t now = wall_ms();
    floors_.clear();
    dlq_offsets_.clear();
    dlq_.reset();
    auto acks = batch_.acks;
    for (const Failure& f : batch_.failures) {
      std::optional<Offset> dlq_offset;
      if (auto st = write_failure(txn, origin_, f, now, dlq_, dlq_offset); !st) return st;
      if (f.dead_letter) acks[f.partition].push_back(f.offset);
      if (dlq_offset) dlq_offsets_.push_back(*dlq_offset);
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
    if (status) {
      if (ConsumerGroup* g = broker_.find_group(origin_.group, origin_.topic))
        for (auto [p, floor] : floors_) g->set_ack_floor(p, floor);
      if (dlq_ && !dlq_offsets_.empty()) broker_.dead_letters_appended(*dlq_, dlq_offsets_);
    } else {
      // Memory already holds the verdicts; disk holds the state before them. After a
      // restart the messages are delivered again: at least once still holds.
      spdlog::warn("group '{}' on '{}': verdicts not persisted: {}", origin_.group, origin_.topic,
                   status.error().describe());
    }
    if (!reply_) return;
    Connection* conn = broker_.find_connection(conn_id_);
    if (!conn) return;
    if (!status) return broker_.reply_error(*conn, rid_, status.error());
    auto& fbb = broker_.fbb();
    fbb.Clear();
    broker_.send_frame(*conn, rid_, wire::Body::SettleOk, wire::CreateSettleOk(fbb, batch_.ignored).Union());
  }

 private:
  Broker& broker_;
  FailureOrigin origin_;
  SettleBatch batch_;
  std::vector<std::pair<PartitionId, Offset>> marks_;
  std::uint64_t conn_id_;
  std::uint64_t rid_;
  bool reply_;
  std::vector<std::pair<PartitionId, Offset>> floors_;
  std::optional<storage::TopicMeta> dlq_;
  std::vector<Offset> dlq_offsets_;
};

void Broker::persist(ConsumerGroup& group, SettleBatch batch, std::vector<std::pair<PartitionId, Offset>> marks,
                     std::uint64_t conn_id, std::uint64_t rid, bool reply) {
  if (group.series.nacked)
    for (const Failure& f : batch.failures) (f.dead_letter ? group.series.dead_lettered : group.series.nacked)->inc();
  FailureOrigin origin{group.name(), group.id(), group.topic().meta.name, group.topic().meta.id};
  writer_->submit(std::make_unique<SettleOp>(*this, std::move(origin), std::move(batch), std::move(marks), conn_id,
                                             rid, reply));
}

void Broker::dead_letters_appended(const storage::TopicMeta& dlq, const std::vector<Offset>& offsets) {
  Topic* topic = topics_.find(dlq.name);
  if (!topic) {
    topic = &topics_.add(dlq);
    for (auto& p : topic->partitions) p = PartitionState{Offset(0), Offset(0)};
    if (probe_) topic->series = probe_->topic(dlq.name);
    spdlog::info("dead-letter topic '{}' created", dlq.name);
  }
  for (Offset o : offsets) {
    auto& part = topic->partitions[0];
    if (o >= part.next) part.next = next(o);
  }
  topic->messages_produced += offsets.size();
  if (topic->series.produced) topic->series.produced->inc(offsets.size());
  dispatch_topic(*topic);
}

void Broker::handle_subscribe(Connection& conn, std::uint64_t rid, const wire::Subscribe& req) {
  std::string topic_name = req.topic() ? req.topic()->str() : "";
  std::string group_name = req.group() ? req.group()->str() : "";
  if (!valid_name(group_name))
    return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument,
                                        std::string("group names are ") + kNameRule));
  if (req.window() == 0) {
    // Window 0 pauses an existing subscription: nothing more is pushed to it.
    if (ConsumerGroup* g = find_group(group_name, topic_name); g && g->find_consumer(&conn)) {
      g->add_consumer(conn, 0);
      return reply_ok(conn, rid);
    }
    return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "window must be at least 1"));
  }
  if (!topics_.find(topic_name))
    return reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + topic_name + "'"));

  // Joins once the group's name has an id; interning it is a write the first time only.
  auto join = [this, id = conn.id(), rid, topic_name, group_name, window = req.window()](storage::GroupId gid) {
    Connection* c = find_connection(id);
    Topic* topic = topics_.find(topic_name);
    if (!c) return;
    if (!topic) return reply_error(*c, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + topic_name + "'"));
    ConsumerGroup* group = load_group(group_name, gid, *topic);
    if (!group) return reply_error(*c, rid, Error(ErrorCode::kStorageError, "cannot load group state"));
    group->add_consumer(*c, window);
    spdlog::debug("connection {} consumes '{}' as group '{}'", c->id(), topic_name, group_name);
    reply_ok(*c, rid);
    dispatch_group(*group);
  };

  if (auto it = group_ids_.find(group_name); it != group_ids_.end()) return join(it->second);
  auto gid = std::make_shared<storage::GroupId>();
  writer_->submit(std::make_unique<storage::FnOp>(
      [gid, group_name](storage::WriteTxn& txn) -> Status {
        auto id = txn.intern_group(group_name);
        if (!id) return id.error();
        *gid = *id;
        return {};
      },
      [this, gid, group_name, join, id = conn.id(), rid](const Status& st) {
        if (!st) {
          if (Connection* c = find_connection(id)) reply_error(*c, rid, st.error());
          return;
        }
        group_ids_[group_name] = *gid;
        join(*gid);
      }));
}

ConsumerGroup* Broker::load_group(const std::string& group_name, storage::GroupId gid, Topic& topic) {
  if (ConsumerGroup* g = find_group(group_name, topic.meta.name)) return g;
  auto g = std::make_unique<ConsumerGroup>(group_name, gid, topic, effective_policy(group_name, topic.meta.name),
                                           next_group_serial_++);
  if (auto st = g->load(*store_); !st) {
    spdlog::error("group '{}' on '{}': {}", group_name, topic.meta.name, st.error().describe());
    return nullptr;
  }
  if (probe_) g->series = probe_->group(topic.meta.name, group_name);
  ConsumerGroup* raw = g.get();
  groups_by_serial_[raw->serial()] = raw;
  groups_[{group_name, topic.meta.name}] = std::move(g);
  return raw;
}

ConsumerGroup* Broker::settling_group(Connection& conn, std::uint64_t rid, const flatbuffers::String* topic,
                                      const flatbuffers::String* group) {
  const std::string topic_name = topic ? topic->str() : "";
  const std::string group_name = group ? group->str() : "";
  ConsumerGroup* g = find_group(group_name, topic_name);
  if (!g)
    reply_error(conn, rid, Error(ErrorCode::kNotSubscribed,
                                 "no consumer of group '" + group_name + "' on topic '" + topic_name + "'"));
  return g;
}

void Broker::handle_settle(Connection& conn, std::uint64_t rid, const wire::Settle& req) {
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
        return reply_error(conn, rid, st.error());
  persist(*group, std::move(batch), {}, conn.id(), rid, true);
  dispatch_group(*group);
}

void Broker::consumer_gone(Connection& conn) {
  for (auto& [key, group] : groups_) {
    if (!group->find_consumer(&conn)) continue;
    auto failures = group->remove_consumer(&conn, wall_ms());
    if (!failures.empty()) {
      SettleBatch batch;
      batch.failures = std::move(failures);
      persist(*group, std::move(batch), {}, 0, 0, false);
    }
    dispatch_group(*group);
  }
}

}  // namespace txmq::broker
