// Consumer group administration: policies, descriptions and dead-letter redrive.

#include <spdlog/spdlog.h>

#include <map>
#include <memory>

#include "broker/consumer_groups.h"
#include "broker/dead_letter.h"
#include "broker/names.h"
#include "broker/wire_views.h"
#include "common/well_known.h"

namespace txmq::broker {
namespace {

flatbuffers::Offset<wire::RetryPolicy> build_retry(flatbuffers::FlatBufferBuilder& fbb, const RetrySchedule& r) {
  return wire::CreateRetryPolicy(fbb, r.max_deliveries, fbb.CreateVector(r.delays_ms), r.exponential_initial_ms,
                                 r.exponential_factor, r.exponential_max_ms, r.jitter);
}

struct GroupListWork {
  uv_work_t req;
  const storage::Store* store;
  std::vector<GroupRow> rows;
  std::function<void(const std::vector<GroupRow>&)> done;  // loop thread
};

// Thread pool: reads each dead-letter topic once, counting its letters by origin topic.
void count_dead_letters(uv_work_t* req) {
  auto* w = static_cast<GroupListWork*>(req->data);
  struct Counts {
    std::uint64_t all = 0;
    std::map<std::string, std::uint64_t, std::less<>> by_origin;
  };
  std::map<TopicId, Counts> counted;
  for (auto& row : w->rows) {
    if (!row.dead_letter_topic) continue;
    auto [it, fresh] = counted.try_emplace(*row.dead_letter_topic);
    Counts& c = it->second;
    if (fresh) {
      auto n = w->store->read_log(*row.dead_letter_topic, PartitionId(0), Offset(0), SIZE_MAX,
                                  [&](const storage::LogEntry& e) {
                                    ++c.all;
                                    if (const auto* hs = e.message->headers())
                                      for (const auto* h : *hs)
                                        if (h->name() && h->name()->string_view() == kOriginTopicHeader &&
                                            h->value())
                                          ++c.by_origin[std::string(
                                              reinterpret_cast<const char*>(h->value()->data()), h->value()->size())];
                                    return true;
                                  });
      if (!n) spdlog::warn("counting the dead letters of '{}': {}", row.group, n.error().describe());
    }
    if (row.topic.empty()) {
      row.dead_letters = c.all;
    } else if (auto o = c.by_origin.find(row.topic); o != c.by_origin.end()) {
      row.dead_letters = o->second;
    }
  }
}

}  // namespace

GroupRow ConsumerGroups::row(const std::string& group, const std::string& topic, const GroupPolicy& policy,
                             ConsumerGroup* g) {
  GroupRow row;
  row.group = group;
  row.topic = topic;
  row.policy = policy;
  if (g) {
    row.consumers = static_cast<std::uint32_t>(g->consumers());
    row.lag = g->lag();
    row.in_flight = g->in_flight();
    row.waiting_retry = g->pending();
    row.redelivered = g->redelivered;
  }
  if (const Topic* dlq = topics_.find(dead_letter_topic(group))) row.dead_letter_topic = dlq->meta.id;
  return row;
}

void ConsumerGroups::reply_group_list(std::uint64_t conn_id, RequestId rid, std::vector<GroupRow> rows) {
  auto* w = new GroupListWork{{}, &store_, std::move(rows), [this, conn_id, rid](const std::vector<GroupRow>& rows) {
                                send_group_list(conn_id, rid, rows);
                              }};
  w->req.data = w;
  // The loop runs until the work is back, and the store and this outlive the loop.
  uv_queue_work(loop_, &w->req, count_dead_letters, [](uv_work_t* req, int) {
    std::unique_ptr<GroupListWork> w(static_cast<GroupListWork*>(req->data));
    w->done(w->rows);
  });
}

void ConsumerGroups::send_group_list(std::uint64_t conn_id, RequestId rid, const std::vector<GroupRow>& rows) {
  loop_thread_.check();
  Connection* conn = responder_.find(conn_id);
  if (!conn) return;
  auto& fbb = responder_.fbb();
  fbb.Clear();
  std::vector<flatbuffers::Offset<wire::GroupInfo>> infos;
  for (const GroupRow& r : rows) {
    auto policy = build_retry(fbb, r.policy.retry);
    infos.push_back(wire::CreateGroupInfo(fbb, fbb.CreateString(r.group), fbb.CreateString(r.topic), r.policy.mode,
                                          r.consumers, r.lag, r.in_flight, r.waiting_retry, r.redelivered,
                                          r.dead_letters, static_cast<std::uint64_t>(r.policy.ack_wait.count()),
                                          policy));
  }
  responder_.send_frame(*conn, rid, wire::Body::GroupList,
                        wire::CreateGroupList(fbb, fbb.CreateVector(infos)).Union());
}

// Stores the policy override of a group ("g:group") or a topic's default ("t:topic"), merged
// with what was there, and answers with the group's row.
class ConsumerGroups::ConfigureGroupOp final : public storage::WriteOp {
 public:
  ConfigureGroupOp(ConsumerGroups& groups, std::string key, PolicyOverride merged, std::string group,
                   std::string topic, std::uint64_t conn_id, RequestId rid)
      : groups_(groups), key_(std::move(key)), merged_(std::move(merged)), record_(merged_.to_record()),
        group_(std::move(group)), topic_(std::move(topic)), conn_id_(conn_id), rid_(rid) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kConfigureGroup; }

  Status apply(storage::WriteTxn& txn) override { return txn.put_policy(key_, record_); }

  void complete(const Status& status) override {
    if (status) groups_.policy_stored(key_, merged_, group_, topic_);
    Connection* c = groups_.responder_.find(conn_id_);
    if (!c) return;
    if (!status) return groups_.responder_.reply_error(*c, rid_, status.error());
    groups_.reply_group_list(conn_id_, rid_,
                             {groups_.row(group_, topic_, groups_.effective_policy(group_, topic_),
                                          groups_.find(group_, topic_))});
  }

 private:
  ConsumerGroups& groups_;
  std::string key_;                   // "g:group" or "t:topic"
  PolicyOverride merged_;             // the stored override with the change merged in
  std::vector<std::uint8_t> record_;  // merged_ as stored
  std::string group_;                 // empty for a topic's default
  std::string topic_;
  std::uint64_t conn_id_;
  RequestId rid_;
};

void ConsumerGroups::configure(Connection& conn, RequestId rid, const wire::ConfigureGroup& req) {
  loop_thread_.check();
  std::string group = req.group() ? req.group()->str() : "";
  std::string topic = req.topic() ? req.topic()->str() : "";
  if (group.empty() && topic.empty())
    return responder_.reply_error(conn, rid,
                                  Error(ErrorCode::kInvalidArgument, "name a group, or a topic for its default"));
  if (!group.empty() && !valid_name(group))
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "invalid group name"));
  if (group.empty() && !topics_.find(topic))
    return responder_.reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + topic + "'"));
  PolicyOverride change = PolicyOverride::from_wire(req);
  if (change.retry)
    if (auto why = validate(*change.retry); !why.empty())
      return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, why));
  std::string key = PolicyTable::key(group, topic);
  PolicyOverride merged = policies_.at(key);
  merged.merge(change);
  writer_.submit(std::make_unique<ConfigureGroupOp>(*this, std::move(key), std::move(merged), std::move(group), std::move(topic),
                                                    conn.id(), rid));
}

void ConsumerGroups::policy_stored(const std::string& key, const PolicyOverride& merged, const std::string& group,
                                   const std::string& topic) {
  policies_.set(key, merged);
  for (auto& [k, g] : groups_)
    if ((group.empty() && k.second == topic) || k.first == group) g->set_policy(effective_policy(k.first, k.second));
  spdlog::info("policy {} updated", key);
}

void ConsumerGroups::describe(Connection& conn, RequestId rid, const wire::DescribeGroups& req) {
  loop_thread_.check();
  std::string only = req.group() ? req.group()->str() : "";
  if (!only.empty() && !group_ids_.contains(only))
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "unknown group '" + only + "'"));
  // A user sees only the groups it may describe (a group it named was checked before).
  auto shown = [&](std::string_view name) {
    return (only.empty() || name == only) && conn.access.allows(Operation::kDescribe, ResourceType::kGroup, name);
  };
  // Groups that have not been consumed since start-up are loaded (without consumers) so
  // their lag is real.
  for (const auto& [name, gid] : group_ids_) {
    if (!shown(name)) continue;
    auto topic_ids = store_.group_topics(gid);
    if (!topic_ids) return responder_.reply_error(conn, rid, topic_ids.error());
    for (TopicId tid : *topic_ids)
      if (Topic* t = topics_.find(tid)) load(name, gid, *t);
  }
  std::vector<GroupRow> rows;
  for (auto& [key, g] : groups_)
    if (shown(key.first)) rows.push_back(row(key.first, key.second, g->policy(), g.get()));
  reply_group_list(conn.id(), rid, std::move(rows));
}

struct ConsumerGroups::RedriveResult {
  std::vector<std::pair<Offset, Redriven>> redriven;  // dead-letter offset, where it went
  std::vector<Offset> failed;                         // dead-letter offsets that could not move
  std::vector<Offset> unmarked;                       // of failed: without the broker's mark
};

// Moves a group's dead letters back to their origin partitions, each alone (one that cannot
// move does not hold back the others), and answers which moved.
class ConsumerGroups::RedriveOp final : public storage::WriteOp {
 public:
  RedriveOp(ConsumerGroups& groups, std::string group, storage::GroupId group_id, TopicId dlq,
            std::vector<Offset> offsets, bool trust_unmarked, std::uint64_t conn_id, RequestId rid)
      : groups_(groups), group_(std::move(group)), group_id_(group_id), dlq_(dlq), offsets_(std::move(offsets)),
        trust_unmarked_(trust_unmarked), conn_id_(conn_id), rid_(rid) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kRedrive; }

  Status apply(storage::WriteTxn& txn) override {
    result_.redriven.clear();
    result_.failed.clear();
    result_.unmarked.clear();
    const std::uint64_t now = wall_ms();
    for (Offset o : offsets_) {
      auto child = txn.nested();
      if (!child) return child.error();
      auto moved = redrive_one(**child, group_, group_id_, dlq_, o, now, trust_unmarked_);
      if (moved && (*child)->commit()) {
        result_.redriven.emplace_back(o, *moved);
      } else {
        result_.failed.push_back(o);
        if (!moved && moved.error().code == ErrorCode::kForbidden) result_.unmarked.push_back(o);
      }
    }
    return {};
  }

  void complete(const Status& status) override {
    if (status) groups_.redriven(group_, group_id_, result_);
    Responder& responder = groups_.responder_;
    Connection* c = responder.find(conn_id_);
    if (!c) return;
    if (!status) return responder.reply_error(*c, rid_, status.error());
    std::vector<std::uint64_t> ok, failed, unmarked;
    for (const auto& [o, r] : result_.redriven) ok.push_back(o.value());
    for (Offset o : result_.failed) failed.push_back(o.value());
    for (Offset o : result_.unmarked) unmarked.push_back(o.value());
    auto& fbb = responder.fbb();
    fbb.Clear();
    responder.send_frame(
        *c, rid_, wire::Body::RedriveOk,
        wire::CreateRedriveOk(fbb, fbb.CreateVector(ok), fbb.CreateVector(failed), fbb.CreateVector(unmarked))
            .Union());
  }

 private:
  ConsumerGroups& groups_;
  std::string group_;
  storage::GroupId group_id_;
  TopicId dlq_;                  // the group's dead-letter topic
  std::vector<Offset> offsets_;  // its letters to move
  bool trust_unmarked_;          // also move letters without the broker's mark
  std::uint64_t conn_id_;
  RequestId rid_;
  RedriveResult result_;         // by apply
};

void ConsumerGroups::redrive(Connection& conn, RequestId rid, const wire::Redrive& req) {
  loop_thread_.check();
  std::string group = req.group() ? req.group()->str() : "";
  auto gid = group_ids_.find(group);
  if (gid == group_ids_.end())
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "unknown group '" + group + "'"));
  Topic* dlq = topics_.find(dead_letter_topic(group));
  if (!dlq)
    return responder_.reply_error(conn, rid,
                                  Error(ErrorCode::kUnknownTopic, "group '" + group + "' has no dead letters"));
  std::vector<Offset> offsets;
  if (req.offsets())
    for (auto o : *req.offsets()) offsets.emplace_back(o);
  writer_.submit(std::make_unique<RedriveOp>(*this, std::move(group), gid->second, dlq->meta.id, std::move(offsets),
                                             req.trust_unmarked(), conn.id(), rid));
}

// A redriven letter makes no new offset: it re-enters its origin partition for this one
// group, which hears of it here and delivers it again.
void ConsumerGroups::redriven(const std::string& group, storage::GroupId group_id, const RedriveResult& result) {
  loop_thread_.check();
  for (const auto& [dlq_offset, r] : result.redriven)
    if (Topic* t = topics_.find(r.topic))
      if (ConsumerGroup* g = load(group, group_id, *t)) g->reopen(r.partition, r.offset, wall_ms());
  for (auto& [key, g] : groups_)
    if (key.first == group) dispatch(*g);
  if (!result.redriven.empty()) spdlog::info("group '{}': {} dead letter(s) redriven", group, result.redriven.size());
  // A letter the broker did not mark is forged, or older than the mark: the operator
  // decides (trust_unmarked), and this line says why it stayed.
  if (!result.unmarked.empty())
    spdlog::warn("group '{}': {} dead letter(s) not redriven: they lack the broker's mark (forged, or stored by "
                 "a broker from before the mark); redrive them with trust_unmarked only if you trust them",
                 group, result.unmarked.size());
}

}  // namespace txmq::broker
