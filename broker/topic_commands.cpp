// Topic administration and reading: create, delete, describe, list, fetch.

#include <spdlog/spdlog.h>

#include "broker/topic_log.h"
#include "broker/names.h"
#include "broker/wire_views.h"

namespace txmq::broker {

// Creates one topic; done hears the outcome once the topic table has it.
class TopicLog::CreateTopicOp final : public storage::WriteOp {
 public:
  CreateTopicOp(TopicLog& log, std::string name, std::uint32_t partitions, std::uint64_t created_ms,
                std::uint64_t retention_ms, std::uint64_t retention_bytes, std::function<void(const Status&)> done)
      : log_(log), name_(std::move(name)), partitions_(partitions), created_ms_(created_ms),
        retention_ms_(retention_ms), retention_bytes_(retention_bytes), done_(std::move(done)) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kCreateTopic; }

  Status apply(storage::WriteTxn& txn) override {
    auto created = txn.create_topic(name_, partitions_, created_ms_, retention_ms_, retention_bytes_);
    if (!created) return created.error();
    meta_ = std::move(*created);
    return {};
  }

  void complete(const Status& status) override {
    if (status) log_.topic_created(meta_);
    done_(status);
  }

 private:
  TopicLog& log_;
  std::string name_;
  std::uint32_t partitions_;
  std::uint64_t created_ms_;                 // the loop's clock when it was asked for
  std::uint64_t retention_ms_;               // 0: the broker's default
  std::uint64_t retention_bytes_;            // 0: the broker's default
  std::function<void(const Status&)> done_;  // loop thread, once the table has the topic
  storage::TopicMeta meta_;                  // by apply: as stored, with its id
};

void TopicLog::create_topic(std::string name, std::uint32_t partitions, std::uint64_t retention_ms,
                          std::uint64_t retention_bytes, std::function<void(const Status&)> done) {
  loop_thread_.check();
  // Every way a topic comes to exist passes here, auto-creation included.
  if (!valid_name(name))
    return done(Error(ErrorCode::kInvalidArgument, std::string("topic names are ") + kNameRule));
  writer_.submit(std::make_unique<CreateTopicOp>(*this, std::move(name), partitions, wall_ms(), retention_ms,
                                                 retention_bytes, std::move(done)));
}

void TopicLog::create(Connection& conn, RequestId rid, const wire::CreateTopic& req) {
  std::string name = req.name() ? req.name()->str() : "";
  if (!valid_name(name))
    return responder_.reply_error(conn, rid,
                                  Error(ErrorCode::kInvalidArgument, std::string("topic names are ") + kNameRule));
  if (auto st = check_client_create(name); !st) return responder_.reply_error(conn, rid, st.error());
  if (req.partitions() == 0 || req.partitions() > 1024)
    return responder_.reply_error(conn, rid,
                                  Error(ErrorCode::kInvalidArgument, "partitions must be between 1 and 1024"));
  if (topics_.find(name))
    return responder_.reply_error(conn, rid, Error(ErrorCode::kTopicExists, "topic '" + name + "' already exists"));
  create_topic(name, req.partitions(), req.retention_ms(), req.retention_bytes(),
               [this, id = conn.id(), rid, name](const Status& st) {
                 Connection* c = responder_.find(id);
                 if (!c) return;
                 if (!st) return responder_.reply_error(*c, rid, st.error());
                 responder_.fbb().Clear();
                 responder_.send_frame(*c, rid, wire::Body::TopicInfo, build_topic_info(*topics_.find(name)).Union());
               });
}

// Deletes a topic, its messages and its groups' records; answers the DeleteTopic.
class TopicLog::DeleteTopicOp final : public storage::WriteOp {
 public:
  DeleteTopicOp(TopicLog& log, std::string name, std::uint64_t conn_id, RequestId rid)
      : log_(log), name_(std::move(name)), conn_id_(conn_id), rid_(rid) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kDeleteTopic; }

  Status apply(storage::WriteTxn& txn) override { return txn.delete_topic(name_); }

  void complete(const Status& status) override {
    if (status) {
      if (Topic* t = log_.topics_.find(name_)) {
        log_.groups_->topic_deleted(t->meta.id);
        log_.topics_.remove(name_);
      }
      spdlog::info("topic '{}' deleted", name_);
    }
    Responder& responder = log_.responder_;
    Connection* c = responder.find(conn_id_);
    if (!c) return;
    if (!status) return responder.reply_error(*c, rid_, status.error());
    responder.reply_ok(*c, rid_);
  }

 private:
  TopicLog& log_;
  std::string name_;
  std::uint64_t conn_id_;
  RequestId rid_;
};

void TopicLog::remove(Connection& conn, RequestId rid, const wire::DeleteTopic& req) {
  std::string name = req.name() ? req.name()->str() : "";
  Topic* topic = topics_.find(name);
  if (!topic)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + name + "'"));
  writer_.submit(std::make_unique<DeleteTopicOp>(*this, std::move(name), conn.id(), rid));
}

flatbuffers::Offset<wire::TopicInfo> TopicLog::build_topic_info(const Topic& topic) {
  auto& fbb = responder_.fbb();
  std::vector<flatbuffers::Offset<wire::PartitionInfo>> parts;
  for (std::uint32_t p = 0; p < topic.partitions.size(); ++p)
    parts.push_back(
        wire::CreatePartitionInfo(fbb, p, topic.partitions[p].first.value(), topic.partitions[p].next.value()));
  return wire::CreateTopicInfo(fbb, fbb.CreateString(topic.meta.name), fbb.CreateVector(parts),
                               topic.meta.created_at_ms, topic.meta.retention_ms, topic.meta.retention_bytes);
}

void TopicLog::describe(Connection& conn, RequestId rid, const wire::DescribeTopic& req) {
  std::string name = req.name() ? req.name()->str() : "";
  Topic* topic = topics_.find(name);
  if (!topic)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + name + "'"));
  // first offsets move with retention; read them fresh from storage.
  for (std::uint32_t p = 0; p < topic->partitions.size(); ++p)
    if (auto b = store_.partition_bounds(topic->meta.id, PartitionId(p)); b) topic->partitions[p].first = b->first;
  responder_.fbb().Clear();
  responder_.send_frame(conn, rid, wire::Body::TopicInfo, build_topic_info(*topic).Union());
}

void TopicLog::list(Connection& conn, RequestId rid) {
  auto& fbb = responder_.fbb();
  fbb.Clear();
  std::vector<flatbuffers::Offset<wire::TopicInfo>> infos;
  // A user sees only the topics it may describe.
  for (const auto& [name, t] : topics_.all())
    if (conn.access.allows(Operation::kDescribe, ResourceType::kTopic, name)) infos.push_back(build_topic_info(*t));
  responder_.send_frame(conn, rid, wire::Body::TopicList, wire::CreateTopicList(fbb, fbb.CreateVector(infos)).Union());
}

void TopicLog::fetch(Connection& conn, RequestId rid, const wire::Fetch& req) {
  std::string name = req.topic() ? req.topic()->str() : "";
  Topic* topic = topics_.find(name);
  if (!topic)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kUnknownTopic, "unknown topic '" + name + "'"));
  if (req.partition() >= topic->meta.partitions)
    return responder_.reply_error(
        conn, rid, Error(ErrorCode::kUnknownPartition, "no partition " + std::to_string(req.partition())));
  const std::size_t max = std::min<std::uint32_t>(req.max_messages() ? req.max_messages() : 100, 1000);
  // The answer stays within half a frame, counting everything a delivery is encoded with,
  // so that it fits any client's frame limit; the first message always goes (a message is
  // at most limits.max_message_bytes, well below a frame).
  const std::size_t budget = config_.max_frame_bytes / 2;
  auto& fbb = responder_.fbb();
  fbb.Clear();
  std::vector<flatbuffers::Offset<wire::Delivery>> out;
  std::size_t bytes = 0;
  auto r = store_.read_log(topic->meta.id, PartitionId(req.partition()), Offset(req.offset()), max,
                            [&](const storage::LogEntry& e) {
                              const auto* m = e.message;
                              const std::size_t size = message_size(*m) + kDeliveryOverheadBytes + name.size();
                              if (!out.empty() && bytes + size > budget) return false;
                              bytes += size;
                              std::vector<flatbuffers::Offset<wire::Header>> hs;
                              if (m->headers())
                                for (const auto* h : *m->headers())
                                  hs.push_back(wire::CreateHeader(
                                      fbb, h->name() ? fbb.CreateString(h->name()) : 0,
                                      h->value() ? fbb.CreateVector(h->value()->data(), h->value()->size()) : 0));
                              out.push_back(wire::CreateDelivery(
                                  fbb, fbb.CreateString(name), 0, req.partition(), e.offset.value(),
                                  m->timestamp_ms(),
                                  m->key() ? fbb.CreateVector(m->key()->data(), m->key()->size()) : 0,
                                  hs.empty() ? 0 : fbb.CreateVector(hs),
                                  m->body() ? fbb.CreateVector(m->body()->data(), m->body()->size()) : 0, 0));
                              return bytes < budget;
                            });
  if (!r) return responder_.reply_error(conn, rid, r.error());
  responder_.send_frame(conn, rid, wire::Body::FetchOk, wire::CreateFetchOk(fbb, fbb.CreateVector(out)).Union());
}

}  // namespace txmq::broker
