// Topic administration: create, delete, describe, list.

#include <spdlog/spdlog.h>

#include <chrono>

#include "broker/broker.h"
#include "broker/storage/fn_op.h"

namespace txmq::broker {

void Broker::create_topic(std::string name, std::uint32_t partitions, std::uint64_t retention_ms,
                          std::uint64_t retention_bytes, std::function<void(const Status&)> done) {
  // Every way a topic comes to exist passes here, auto-creation included.
  if (!valid_name(name))
    return done(Error(ErrorCode::kInvalidArgument, std::string("topic names are ") + kNameRule));
  auto meta = std::make_shared<storage::TopicMeta>();
  const std::uint64_t now = wall_ms();
  writer_->submit(std::make_unique<storage::FnOp>(
      [meta, name, partitions, now, retention_ms, retention_bytes](storage::WriteTxn& txn) -> Status {
        auto created = txn.create_topic(name, partitions, now, retention_ms, retention_bytes);
        if (!created) return created.error();
        *meta = std::move(*created);
        return {};
      },
      [this, meta, done = std::move(done)](const Status& st) {
        if (st) {
          Topic& t = topics_.add(*meta);
          for (auto& p : t.partitions) p = PartitionState{Offset(0), Offset(0)};
          if (probe_) t.series = probe_->topic(t.meta.name);
          spdlog::info("topic '{}' created with {} partition(s)", meta->name, meta->partitions);
        }
        done(st);
      }));
}

void Broker::handle_create_topic(Connection& conn, std::uint64_t rid, const wire::CreateTopic& req) {
  std::string name = req.name() ? req.name()->str() : "";
  if (!valid_name(name))
    return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument,
                                        std::string("topic names are ") + kNameRule));
  if (req.partitions() == 0 || req.partitions() > 1024)
    return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "partitions must be between 1 and 1024"));
  if (topics_.find(name))
    return reply_error(conn, rid, Error(ErrorCode::kTopicExists, "topic '" + name + "' already exists"));
  create_topic(name, req.partitions(), req.retention_ms(), req.retention_bytes(), [this, id = conn.id(), rid, name](const Status& st) {
    Connection* c = find_connection(id);
    if (!c) return;
    if (!st) return reply_error(*c, rid, st.error());
    fbb().Clear();
    send_frame(*c, rid, wire::Body::TopicInfo, build_topic_info(*topics_.find(name)).Union());
  });
}

void Broker::handle_delete_topic(Connection& conn, std::uint64_t rid, const wire::DeleteTopic& req) {
  std::string name = req.name() ? req.name()->str() : "";
  Topic* topic = topics_.find(name);
  if (!topic) return reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + name + "'"));
  writer_->submit(std::make_unique<storage::FnOp>(
      [name](storage::WriteTxn& txn) { return txn.delete_topic(name); },
      [this, id = conn.id(), rid, name](const Status& st) {
        if (st) {
          if (Topic* t = topics_.find(name)) {
            drop_topic_groups(t->meta.id);
            topics_.remove(name);
          }
          spdlog::info("topic '{}' deleted", name);
        }
        Connection* c = find_connection(id);
        if (!c) return;
        if (!st) return reply_error(*c, rid, st.error());
        reply_ok(*c, rid);
      }));
}

void Broker::drop_topic_groups(TopicId topic) {
  std::erase_if(groups_by_serial_, [&](const auto& kv) { return kv.second->topic().meta.id == topic; });
  std::erase_if(groups_, [&](const auto& kv) { return kv.second->topic().meta.id == topic; });
}

flatbuffers::Offset<wire::TopicInfo> Broker::build_topic_info(const Topic& topic) {
  std::vector<flatbuffers::Offset<wire::PartitionInfo>> parts;
  for (std::uint32_t p = 0; p < topic.partitions.size(); ++p)
    parts.push_back(wire::CreatePartitionInfo(fbb(), p, topic.partitions[p].first.value(),
                                              topic.partitions[p].next.value()));
  return wire::CreateTopicInfo(fbb(), fbb().CreateString(topic.meta.name), fbb().CreateVector(parts),
                               topic.meta.created_at_ms, topic.meta.retention_ms, topic.meta.retention_bytes);
}

void Broker::handle_describe_topic(Connection& conn, std::uint64_t rid, const wire::DescribeTopic& req) {
  std::string name = req.name() ? req.name()->str() : "";
  Topic* topic = topics_.find(name);
  if (!topic) return reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + name + "'"));
  // first offsets move with retention; read them fresh from storage.
  for (std::uint32_t p = 0; p < topic->partitions.size(); ++p)
    if (auto b = store_->partition_bounds(topic->meta.id, PartitionId(p)); b)
      topic->partitions[p].first = b->first;
  fbb().Clear();
  send_frame(conn, rid, wire::Body::TopicInfo, build_topic_info(*topic).Union());
}

void Broker::handle_list_topics(Connection& conn, std::uint64_t rid) {
  fbb().Clear();
  std::vector<flatbuffers::Offset<wire::TopicInfo>> infos;
  for (const auto& [name, t] : topics_.all()) infos.push_back(build_topic_info(*t));
  send_frame(conn, rid, wire::Body::TopicList, wire::CreateTopicList(fbb(), fbb().CreateVector(infos)).Union());
}

}  // namespace txmq::broker
