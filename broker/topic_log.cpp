// The topic log: produce (validate a batch on the loop, append it in the writer's next
// transaction, confirm it only after that transaction committed), and the one path every
// append takes once committed (appended), whatever made it.

#include <spdlog/spdlog.h>

#include <algorithm>

#include "broker/topic_log.h"
#include "broker/names.h"
#include "broker/wire_views.h"

namespace txmq::broker {
namespace {

// What ProduceOk says for a delayed message: its offset is assigned when it comes due.
constexpr Offset kDelayedOffset(UINT64_MAX);

}  // namespace

TopicLog::TopicLog(const BrokerConfig& config, storage::Store& store, storage::StorageWriter& writer,
                   Scheduler& scheduler, Scheduler::Target retention_target, Responder& responder, BrokerProbe* probe)
    : config_(config), store_(store), writer_(writer), scheduler_(scheduler), retention_target_(retention_target),
      responder_(responder), probe_(probe) {}

Status TopicLog::load() {
  loop_thread_.check();
  if (auto st = topics_.load(store_); !st) return st;
  if (probe_)
    for (const auto& [name, t] : topics_.all()) t->series = probe_->topic(name);
  return {};
}

void TopicLog::start(TopicListener& groups, TransactionCoordinator& txns) {
  loop_thread_.check();
  groups_ = &groups;
  txns_ = &txns;
  scheduler_.at(wall_ms() + static_cast<std::uint64_t>(config_.retention_check_interval.count()), retention_target_);
}

TopicLog::Totals TopicLog::totals() const {
  loop_thread_.check();
  Totals totals;
  for (const auto& [name, t] : topics_.all()) {
    totals.messages += t->messages_produced;
    totals.bytes += t->bytes_produced;
  }
  return totals;
}

// Appends one produce request's batch. Holds a copy of the verified frame so the writer
// thread can read the messages without touching the connection's buffers.
class TopicLog::ProduceOp final : public storage::WriteOp {
 public:
  ProduceOp(TopicLog& log, std::uint64_t conn_id, RequestId rid, TopicId topic, std::vector<std::uint8_t> frame,
            std::vector<Appended> where, std::size_t payload_bytes)
      : log_(log), conn_id_(conn_id), rid_(rid), topic_(topic), frame_(std::move(frame)),
        where_(std::move(where)), payload_bytes_(payload_bytes),
        idempotence_window_(log.config_.idempotence_window) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kProduce; }
  std::size_t bytes() const override { return frame_.size(); }

  Status apply(storage::WriteTxn& txn) override {
    const auto* req = wire::GetSizePrefixedFrame(frame_.data())->body_as_Produce();
    const std::uint64_t ts = wall_ms();
    earliest_due_ = UINT64_MAX;
    duplicate_ = false;
    const std::uint64_t producer = req->producer_id();
    if (producer) {
      // A batch this producer sent before (resent after a reconnect) is answered from the
      // window, with the offsets it got the first time, and not appended again.
      auto seen = txn.producer_batch(ProducerId(producer), Sequence(req->sequence()));
      if (!seen) return seen.error();
      if (*seen) {
        duplicate_ = true;
        where_.clear();
        for (auto [p, o] : **seen) where_.push_back(Appended{p, o});
        return {};
      }
    }
    std::vector<storage::HeaderView> headers;
    std::size_t i = 0;
    for (const auto* m : *req->messages()) {
      Appended& w = where_[i++];
      header_views(*m, headers);
      const std::uint64_t due = m->deliver_at_ms() ? m->deliver_at_ms() : (m->delay_ms() ? ts + m->delay_ms() : 0);
      if (due > ts) {
        // Invisible until due: kept aside and appended (getting its offset) then.
        if (auto st = txn.put_delayed(due, topic_, w.partition, ts, bytes_of(m->key()), headers, bytes_of(m->body()));
            !st)
          return st;
        w.offset = kDelayedOffset;
        earliest_due_ = std::min(earliest_due_, due);
        continue;
      }
      auto offset = txn.append(topic_, w.partition, ts, bytes_of(m->key()), headers, bytes_of(m->body()));
      if (!offset) {
        if (offset.error().code == ErrorCode::kUnknownPartition)
          return Error(ErrorCode::kUnknownTopic, "topic was deleted while the batch was in flight");
        return offset.error();
      }
      w.offset = *offset;
    }
    if (producer) {
      std::vector<std::pair<PartitionId, Offset>> batch;
      batch.reserve(where_.size());
      for (const Appended& w : where_) batch.emplace_back(w.partition, w.offset);
      if (auto st = txn.record_producer_batch(ProducerId(producer), Sequence(req->sequence()), batch, idempotence_window_, ts);
          !st)
        return st;
    }
    return {};
  }

  void complete(const Status& status) override {
    Responder& responder = log_.responder_;
    Connection* conn = responder.find(conn_id_);
    if (conn) responder.release_produce_bytes(*conn, frame_.size());
    if (status && !duplicate_) announce();
    if (!conn) return;  // the producer went away; the messages are stored all the same
    if (!status) return responder.reply_error(*conn, rid_, status.error());
    auto& fbb = responder.fbb();
    fbb.Clear();
    wire::MessageRef* refs = nullptr;
    auto vec = fbb.CreateUninitializedVectorOfStructs<wire::MessageRef>(where_.size(), &refs);
    for (std::size_t i = 0; i < where_.size(); ++i)
      refs[i] = wire::MessageRef(where_[i].partition.value(), where_[i].offset.value());
    responder.send_frame(*conn, rid_, wire::Body::ProduceOk, wire::CreateProduceOk(fbb, vec).Union());
  }

 private:
  // What was appended goes the one way of every append; delayed messages go theirs, and
  // are counted as appended when they come due.
  void announce() {
    if (earliest_due_ == UINT64_MAX) return log_.appended(topic_, where_, payload_bytes_);
    std::vector<Appended> now;
    std::copy_if(where_.begin(), where_.end(), std::back_inserter(now),
                 [](const Appended& w) { return w.offset != kDelayedOffset; });
    log_.appended(topic_, now, payload_bytes_);
    log_.delayed_stored(earliest_due_);
  }

  TopicLog& log_;
  std::uint64_t conn_id_;
  RequestId rid_;
  TopicId topic_;
  std::vector<std::uint8_t> frame_;
  std::vector<Appended> where_;  // per message: partition chosen on the loop, offset by the writer
  std::size_t payload_bytes_;    // key + header + body bytes of the batch
  std::uint64_t earliest_due_ = UINT64_MAX;  // of the batch's delayed messages
  std::size_t idempotence_window_;           // batches remembered per producer
  bool duplicate_ = false;                   // a resent batch, answered from the window
};

void TopicLog::produce(Connection& conn, RequestId rid, std::span<const std::uint8_t> frame,
                            const wire::Produce& req) {
  loop_thread_.check();
  if (!req.topic() || req.topic()->size() == 0)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "produce without a topic"));
  if (auto st = check_client_write(req.topic()->string_view(), req.messages()); !st)
    return responder_.reply_error(conn, rid, st.error());
  Topic* topic = topics_.find(req.topic()->string_view());
  if (!topic) {
    if (!valid_name(req.topic()->string_view()))
      return responder_.reply_error(conn, rid,
                                    Error(ErrorCode::kInvalidArgument, std::string("topic names are ") + kNameRule));
    if (!config_.auto_create_topics)
      return responder_.reply_error(
          conn, rid,
          Error(ErrorCode::kUnknownTopic,
                "unknown topic '" + req.topic()->str() + "' (create it first, or set topics.auto_create)"));
    // Creating it is the user's doing too (produce on it was checked before).
    if (auto st = conn.access.check(Operation::kCreate, ResourceType::kTopic, req.topic()->string_view()); !st)
      return responder_.reply_error(conn, rid, st.error());
    // Create it, then handle this same request again from a copy of the frame.
    std::vector<std::uint8_t> copy(frame.begin(), frame.end());
    create_topic(req.topic()->str(), config_.default_partitions, 0, 0,
                 [this, id = conn.id(), rid, copy = std::move(copy)](const Status& st) {
                   Connection* c = responder_.find(id);
                   if (!c) return;
                   if (!st && st.error().code != ErrorCode::kTopicExists)
                     return responder_.reply_error(*c, rid, st.error());
                   const auto* f = wire::GetSizePrefixedFrame(copy.data());
                   produce(*c, rid, copy, *f->body_as_Produce());
                 });
    return;
  }
  std::vector<Appended> where;
  std::size_t payload_bytes = 0;
  if (req.messages()) {
    where.reserve(req.messages()->size());
    for (const auto* m : *req.messages()) {
      payload_bytes += message_size(*m);
      if (message_size(*m) > config_.max_message_bytes)
        return responder_.reply_error(conn, rid,
                                      Error(ErrorCode::kMessageTooLarge,
                                            "message of " + std::to_string(message_size(*m)) +
                                                " bytes exceeds limits.max_message_bytes (" +
                                                std::to_string(config_.max_message_bytes) + ")"));
      auto p = TopicTable::pick_partition(*topic, m->partition(), bytes_of(m->key()));
      if (!p) return responder_.reply_error(conn, rid, p.error());
      where.push_back(Appended{*p, Offset(0)});
    }
  }
  if (where.empty()) {
    auto& fbb = responder_.fbb();
    fbb.Clear();
    return responder_.send_frame(conn, rid, wire::Body::ProduceOk, wire::CreateProduceOk(fbb).Union());
  }
  responder_.hold_produce_bytes(conn, frame.size());
  writer_.submit(std::make_unique<ProduceOp>(*this, conn.id(), rid, topic->meta.id,
                                              std::vector<std::uint8_t>(frame.begin(), frame.end()), std::move(where),
                                              payload_bytes));
}

void TopicLog::appended(TopicId topic_id, std::span<const Appended> messages, std::size_t bytes) {
  loop_thread_.check();
  Topic* topic = topics_.find(topic_id);
  if (!topic) return;
  for (const Appended& m : messages) {
    auto& part = topic->partitions[m.partition.value()];
    if (m.offset >= part.next) part.next = next(m.offset);
  }
  topic->messages_produced += messages.size();
  topic->bytes_produced += bytes;
  if (topic->series.produced) {
    topic->series.produced->inc(messages.size());
    topic->series.bytes->inc(bytes);
  }
  groups_->topic_appended(*topic);
}

void TopicLog::delayed_stored(std::uint64_t due_ms) {
  loop_thread_.check();
  groups_->delayed_stored(due_ms);
}

void TopicLog::topic_created(const storage::TopicMeta& meta) {
  loop_thread_.check();
  if (topics_.find(meta.name)) return;
  Topic& t = topics_.add(meta);
  for (auto& p : t.partitions) p = PartitionState{Offset(0), Offset(0)};
  if (probe_) t.series = probe_->topic(t.meta.name);
  spdlog::info("topic '{}' created with {} partition(s)", meta.name, meta.partitions);
}

}  // namespace txmq::broker
