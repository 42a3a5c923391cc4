// Produce: validate a batch on the loop, append it in the writer's next transaction, and
// confirm it only after that transaction committed.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "broker/broker.h"
#include "broker/wire_views.h"

namespace txmq::broker {
namespace {

// What ProduceOk says for a delayed message: its offset is assigned when it comes due.
constexpr Offset kDelayedOffset(UINT64_MAX);

}  // namespace

// Appends one produce request's batch. Holds a copy of the verified frame so the writer
// thread can read the messages without touching the connection's buffers.
class ProduceOp final : public storage::WriteOp {
 public:
  ProduceOp(Broker& broker, std::uint64_t conn_id, std::uint64_t rid, TopicId topic,
            std::vector<std::uint8_t> frame, std::vector<PartitionId> partitions, std::size_t payload_bytes)
      : broker_(broker), conn_id_(conn_id), rid_(rid), topic_(topic), frame_(std::move(frame)),
        partitions_(std::move(partitions)), payload_bytes_(payload_bytes),
        idempotence_window_(broker.config_.idempotence_window) {}

  std::size_t bytes() const override { return frame_.size(); }

  Status apply(storage::WriteTxn& txn) override {
    const auto* req = wire::GetSizePrefixedFrame(frame_.data())->body_as_Produce();
    const std::uint64_t ts = wall_ms();
    earliest_due_ = UINT64_MAX;
    offsets_.clear();
    duplicate_ = false;
    const std::uint64_t producer = req->producer_id();
    if (producer) {
      // A batch this producer sent before (resent after a reconnect) is answered from the
      // window, with the offsets it got the first time, and not appended again.
      auto seen = txn.producer_batch(producer, req->sequence());
      if (!seen) return seen.error();
      if (*seen) {
        duplicate_ = true;
        partitions_.clear();
        for (auto [p, o] : **seen) {
          partitions_.push_back(p);
          offsets_.push_back(o);
        }
        return {};
      }
    }
    offsets_.reserve(partitions_.size());
    std::vector<storage::HeaderView> headers;
    std::size_t i = 0;
    for (const auto* m : *req->messages()) {
      header_views(*m, headers);
      const std::uint64_t due = m->deliver_at_ms() ? m->deliver_at_ms() : (m->delay_ms() ? ts + m->delay_ms() : 0);
      if (due > ts) {
        // Invisible until due: kept aside and appended (getting its offset) then.
        if (auto st = txn.put_delayed(due, topic_, partitions_[i], ts, bytes_of(m->key()), headers, bytes_of(m->body()));
            !st)
          return st;
        offsets_.push_back(kDelayedOffset);
        earliest_due_ = std::min(earliest_due_, due);
        ++i;
        continue;
      }
      auto offset = txn.append(topic_, partitions_[i], ts, bytes_of(m->key()), headers, bytes_of(m->body()));
      if (!offset) {
        if (offset.error().code == ErrorCode::kUnknownPartition)
          return Error(ErrorCode::kUnknownTopic, "topic was deleted while the batch was in flight");
        return offset.error();
      }
      offsets_.push_back(*offset);
      ++i;
    }
    if (producer) {
      std::vector<std::pair<PartitionId, Offset>> batch;
      for (std::size_t j = 0; j < offsets_.size(); ++j) batch.emplace_back(partitions_[j], offsets_[j]);
      if (auto st = txn.record_producer_batch(producer, req->sequence(), batch, idempotence_window_, ts); !st) return st;
    }
    return {};
  }

  void complete(const Status& status) override {
    Connection* conn = broker_.find_connection(conn_id_);
    if (conn) broker_.responder_.release_produce_bytes(*conn, frame_.size());
    Topic* topic = broker_.topics_.find(topic_);
    if (status && topic && !duplicate_) {
      for (std::size_t i = 0; i < offsets_.size(); ++i) {
        if (offsets_[i] == kDelayedOffset) continue;
        auto& part = topic->partitions[partitions_[i].value()];
        if (offsets_[i] >= part.next) part.next = next(offsets_[i]);
      }
      // Delayed messages are counted when they come due and are appended.
      const auto appended = static_cast<std::size_t>(
          std::count_if(offsets_.begin(), offsets_.end(), [](Offset o) { return o != kDelayedOffset; }));
      topic->messages_produced += appended;
      topic->bytes_produced += payload_bytes_;
      if (topic->series.produced) {
        topic->series.produced->inc(appended);
        topic->series.bytes->inc(payload_bytes_);
      }
      broker_.dispatch_topic(*topic);
    }
    if (status && earliest_due_ != UINT64_MAX) broker_.delayed_stored(earliest_due_);
    if (!conn) return;  // the producer went away; the messages are stored all the same
    if (!status) {
      broker_.reply_error(*conn, rid_, status.error());
      return;
    }
    auto& fbb = broker_.fbb();
    fbb.Clear();
    wire::MessageRef* refs = nullptr;
    auto vec = fbb.CreateUninitializedVectorOfStructs<wire::MessageRef>(offsets_.size(), &refs);
    for (std::size_t i = 0; i < offsets_.size(); ++i)
      refs[i] = wire::MessageRef(partitions_[i].value(), offsets_[i].value());
    broker_.send_frame(*conn, rid_, wire::Body::ProduceOk, wire::CreateProduceOk(fbb, vec).Union());
  }

 private:
  Broker& broker_;
  std::uint64_t conn_id_;
  std::uint64_t rid_;
  TopicId topic_;
  std::vector<std::uint8_t> frame_;
  std::vector<PartitionId> partitions_;  // chosen on the loop, one per message
  std::vector<Offset> offsets_;          // assigned by the writer, one per message
  std::size_t payload_bytes_;            // key + header + body bytes of the batch
  std::uint64_t earliest_due_ = UINT64_MAX;  // of the batch's delayed messages
  std::size_t idempotence_window_;           // batches remembered per producer
  bool duplicate_ = false;                   // a resent batch, answered from the window
};

void Broker::handle_produce(Connection& conn, std::uint64_t rid, std::span<const std::uint8_t> frame,
                            const wire::Produce& req) {
  if (!req.topic() || req.topic()->size() == 0)
    return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "produce without a topic"));
  Topic* topic = topics_.find(req.topic()->string_view());
  if (!topic) {
    if (!valid_name(req.topic()->string_view()))
      return reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, std::string("topic names are ") + kNameRule));
    if (!config_.auto_create_topics)
      return reply_error(conn, rid, Error(ErrorCode::kUnknownTopic,
                                          "unknown topic '" + req.topic()->str() +
                                              "' (create it first, or set topics.auto_create)"));
    // Create it, then handle this same request again from a copy of the frame.
    std::vector<std::uint8_t> copy(frame.begin(), frame.end());
    create_topic(req.topic()->str(), config_.default_partitions, 0, 0,
                 [this, id = conn.id(), rid, copy = std::move(copy)](const Status& st) {
                   Connection* c = find_connection(id);
                   if (!c) return;
                   if (!st && st.error().code != ErrorCode::kTopicExists) return reply_error(*c, rid, st.error());
                   const auto* f = wire::GetSizePrefixedFrame(copy.data());
                   handle_produce(*c, rid, copy, *f->body_as_Produce());
                 });
    return;
  }
  std::vector<PartitionId> partitions;
  std::size_t payload_bytes = 0;
  if (req.messages()) {
    partitions.reserve(req.messages()->size());
    for (const auto* m : *req.messages()) {
      payload_bytes += message_size(*m);
      if (message_size(*m) > config_.max_message_bytes)
        return reply_error(conn, rid, Error(ErrorCode::kMessageTooLarge,
                                            "message of " + std::to_string(message_size(*m)) +
                                                " bytes exceeds limits.max_message_bytes (" +
                                                std::to_string(config_.max_message_bytes) + ")"));
      auto p = TopicTable::pick_partition(*topic, m->partition(), bytes_of(m->key()));
      if (!p) return reply_error(conn, rid, p.error());
      partitions.push_back(*p);
    }
  }
  if (partitions.empty()) {
    fbb().Clear();
    return send_frame(conn, rid, wire::Body::ProduceOk, wire::CreateProduceOk(fbb()).Union());
  }
  responder_.hold_produce_bytes(conn, frame.size());
  writer_->submit(std::make_unique<ProduceOp>(*this, conn.id(), rid, topic->meta.id,
                                              std::vector<std::uint8_t>(frame.begin(), frame.end()),
                                              std::move(partitions), payload_bytes));
}

void Broker::appended(TopicId topic_id, std::span<const Appended> messages, std::size_t bytes) {
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
  dispatch_topic(*topic);
}

}  // namespace txmq::broker
