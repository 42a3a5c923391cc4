// Consumer group administration: policies, descriptions and dead-letter redrive.

#include <spdlog/spdlog.h>

#include <map>
#include <memory>

#include "broker/consumer_groups.h"
#include "broker/dead_letter.h"
#include "broker/names.h"
#include "broker/storage/fn_op.h"
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
  const std::string key = group.empty() ? "t:" + topic : "g:" + group;
  PolicyOverride merged = policies_.contains(key) ? policies_[key] : PolicyOverride{};
  merged.merge(change);
  auto record = merged.to_record();
  writer_.submit(std::make_unique<storage::FnOp>(
      [key, record](storage::WriteTxn& txn) { return txn.put_policy(key, record); },
      [this, key, merged, group, topic, id = conn.id(), rid](const Status& st) {
        if (st) policy_stored(key, merged, group, topic);
        Connection* c = responder_.find(id);
        if (!c) return;
        if (!st) return responder_.reply_error(*c, rid, st.error());
        reply_group_list(id, rid, {row(group, topic, effective_policy(group, topic), find(group, topic))});
      }));
}

void ConsumerGroups::policy_stored(const std::string& key, const PolicyOverride& merged, const std::string& group,
                                   const std::string& topic) {
  policies_[key] = merged;
  for (auto& [k, g] : groups_)
    if ((group.empty() && k.second == topic) || k.first == group) g->set_policy(effective_policy(k.first, k.second));
  spdlog::info("policy {} updated", key);
}

void ConsumerGroups::describe(Connection& conn, RequestId rid, const wire::DescribeGroups& req) {
  loop_thread_.check();
  std::string only = req.group() ? req.group()->str() : "";
  if (!only.empty() && !group_ids_.contains(only))
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "unknown group '" + only + "'"));
  // Groups that have not been consumed since start-up are loaded (without consumers) so
  // their lag is real.
  for (const auto& [name, gid] : group_ids_) {
    if (!only.empty() && name != only) continue;
    auto topic_ids = store_.group_topics(gid);
    if (!topic_ids) return responder_.reply_error(conn, rid, topic_ids.error());
    for (TopicId tid : *topic_ids)
      if (Topic* t = topics_.find(tid)) load(name, gid, *t);
  }
  std::vector<GroupRow> rows;
  for (auto& [key, g] : groups_)
    if (only.empty() || key.first == only) rows.push_back(row(key.first, key.second, g->policy(), g.get()));
  reply_group_list(conn.id(), rid, std::move(rows));
}

struct ConsumerGroups::RedriveResult {
  std::vector<std::pair<Offset, Redriven>> redriven;  // dead-letter offset, where it went
  std::vector<Offset> failed;                         // dead-letter offsets that could not move
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
  auto result = std::make_shared<RedriveResult>();
  const storage::GroupId group_id = gid->second;
  const TopicId dlq_id = dlq->meta.id;
  writer_.submit(std::make_unique<storage::FnOp>(
      [result, offsets, group, group_id, dlq_id](storage::WriteTxn& txn) -> Status {
        result->redriven.clear();
        result->failed.clear();
        const std::uint64_t now = wall_ms();
        for (Offset o : offsets) {
          // Each letter moves alone: one that cannot does not hold back the others.
          auto child = txn.nested();
          if (!child) return child.error();
          auto moved = redrive_one(**child, group, group_id, dlq_id, o, now);
          if (moved && (*child)->commit()) {
            result->redriven.emplace_back(o, *moved);
          } else {
            result->failed.push_back(o);
          }
        }
        return {};
      },
      [this, result, group, group_id, id = conn.id(), rid](const Status& st) {
        if (st) redriven(group, group_id, *result);
        Connection* c = responder_.find(id);
        if (!c) return;
        if (!st) return responder_.reply_error(*c, rid, st.error());
        std::vector<std::uint64_t> ok, failed;
        for (const auto& [o, r] : result->redriven) ok.push_back(o.value());
        for (Offset o : result->failed) failed.push_back(o.value());
        auto& fbb = responder_.fbb();
        fbb.Clear();
        responder_.send_frame(*c, rid, wire::Body::RedriveOk,
                              wire::CreateRedriveOk(fbb, fbb.CreateVector(ok), fbb.CreateVector(failed)).Union());
      }));
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
}

}  // namespace txmq::broker
