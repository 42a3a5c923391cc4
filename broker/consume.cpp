// Consuming: subscribe a connection to a group, push deliveries within its window, and
// make acks durable before answering them.

#include <spdlog/spdlog.h>

#include "broker/broker.h"
#include "broker/storage/fn_op.h"

namespace txmq::broker {

ConsumerGroup* Broker::find_group(std::string_view group, std::string_view topic) {
  auto it = groups_.find(std::make_pair(std::string(group), std::string(topic)));
  return it == groups_.end() ? nullptr : it->second.get();
}

void Broker::dispatch_topic(const Topic& topic) {
  for (auto& [key, group] : groups_)
    if (&group->topic() == &topic && group->has_consumers()) group->dispatch(*store_, fbb_);
}

void Broker::handle_subscribe(Connection& conn, std::uint64_t rid, const wire::Subscribe& req) {
  std::string topic_name = req.topic() ? req.topic()->str() : "";
  std::string group_name = req.group() ? req.group()->str() : "";
  if (group_name.empty() || group_name.size() > 249)
    return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "a group name of 1-249 bytes is required"));
  if (req.window() == 0)
    return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "window must be at least 1"));
  if (!topics_.find(topic_name))
    return reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + topic_name + "'"));

  // Joins once the group's name has an id; interning it is a write the first time only.
  auto join = [this, id = conn.id(), rid, topic_name, group_name, window = req.window()](storage::GroupId gid) {
    Connection* c = find_connection(id);
    Topic* topic = topics_.find(topic_name);
    if (!c) return;
    if (!topic) return reply_error(*c, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + topic_name + "'"));
    ConsumerGroup* group = find_group(group_name, topic_name);
    if (!group) {
      auto g = std::make_unique<ConsumerGroup>(group_name, gid, *topic);
      if (auto st = g->load(*store_); !st) return reply_error(*c, rid, st.error());
      if (probe_) g->series = probe_->group(topic_name, group_name);
      group = g.get();
      groups_[{group_name, topic_name}] = std::move(g);
    }
    group->add_consumer(*c, window);
    spdlog::debug("connection {} consumes '{}' as group '{}'", c->id(), topic_name, group_name);
    reply_ok(*c, rid);
    group->dispatch(*store_, fbb_);
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

// Makes one ack request durable: the acked offsets of each partition and the new floors.
class AckOp final : public storage::WriteOp {
 public:
  AckOp(Broker& broker, std::uint64_t conn_id, std::uint64_t rid, std::string group, std::string topic,
        storage::GroupId gid, TopicId tid, std::map<PartitionId, std::vector<Offset>> offsets)
      : broker_(broker), conn_id_(conn_id), rid_(rid), group_(std::move(group)), topic_(std::move(topic)),
        gid_(gid), tid_(tid), offsets_(std::move(offsets)) {}

  Status apply(storage::WriteTxn& txn) override {
    floors_.clear();
    for (const auto& [p, offs] : offsets_) {
      auto floor = txn.ack(gid_, tid_, p, offs);
      if (!floor) return floor.error();
      floors_.emplace_back(p, *floor);
    }
    return {};
  }

  void complete(const Status& status) override {
    if (status)
      if (ConsumerGroup* g = broker_.find_group(group_, topic_))
        for (auto [p, floor] : floors_) g->set_ack_floor(p, floor);
    Connection* conn = broker_.find_connection(conn_id_);
    if (!conn) return;
    if (!status) return broker_.reply_error(*conn, rid_, status.error());
    broker_.reply_ok(*conn, rid_);
  }

 private:
  Broker& broker_;
  std::uint64_t conn_id_;
  std::uint64_t rid_;
  std::string group_;
  std::string topic_;
  storage::GroupId gid_;
  TopicId tid_;
  std::map<PartitionId, std::vector<Offset>> offsets_;
  std::vector<std::pair<PartitionId, Offset>> floors_;
};

void Broker::handle_ack(Connection& conn, std::uint64_t rid, const wire::Ack& req) {
  std::string topic_name = req.topic() ? req.topic()->str() : "";
  std::string group_name = req.group() ? req.group()->str() : "";
  ConsumerGroup* group = find_group(group_name, topic_name);
  if (!group)
    return reply_error(conn, rid, Error(ErrorCode::kNotSubscribed, "no consumer of group '" + group_name +
                                                                       "' on topic '" + topic_name + "'"));
  std::vector<const wire::MessageRef*> refs;
  if (req.messages())
    for (const auto* r : *req.messages()) refs.push_back(r);
  auto to_store = group->ack(refs);
  if (!to_store) return reply_error(conn, rid, to_store.error());
  if (to_store->empty()) return reply_ok(conn, rid);  // all already acknowledged
  writer_->submit(std::make_unique<AckOp>(*this, conn.id(), rid, group_name, topic_name, group->id(),
                                          group->topic().meta.id, std::move(*to_store)));
  // Freed window: the consumer can take more while the ack is being written.
  group->dispatch(*store_, fbb_);
}

}  // namespace txmq::broker
