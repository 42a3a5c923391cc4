#pragma once
// The topic log: the topics, the messages appended to them, retention, and the topic
// commands (create, delete, describe, list, fetch).
//
// Owns the TopicTable (each topic's metadata, where each partition's committed log ends,
// produce counters and metric series) and the retention round. Every message that enters
// a partition, whatever made it (a produce, a transaction's commit, a dead letter, a
// delayed message coming due), passes appended(): the partition's end moves, metrics count
// it, and the consumer groups hear, there and nowhere else.
//
// Reaches the rest of the broker only through what it is given: connections through the
// Responder, the consumer groups through a TopicListener, and the transactions' share of a
// retention round through the TransactionCoordinator.
// Lifecycle: made on the loop thread once storage is open and the writer started; load()
// before the other components are made (they read its table); start() once they exist;
// destroyed after the loop ended.
// Concurrency: loop thread only (its write operations' apply runs on the writer thread and
// touches none of its state).

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "broker/append_sink.h"
#include "broker/broker_probe.h"
#include "broker/config.h"
#include "broker/loop_thread.h"
#include "broker/responder.h"
#include "broker/scheduler.h"
#include "broker/storage/store.h"
#include "broker/storage/writer.h"
#include "broker/topic_table.h"

namespace txmq::broker {

class TransactionCoordinator;

// What the topic log tells the consumer groups. Loop thread.
class TopicListener {
 public:
  virtual ~TopicListener() = default;
  // Messages were appended to topic: its groups deliver them.
  virtual void topic_appended(const Topic& topic) = 0;
  // The topic is gone: its groups' states go (storage dropped their records).
  virtual void topic_deleted(TopicId topic) = 0;
  // Delayed messages were stored; the earliest comes due at due_ms.
  virtual void delayed_stored(std::uint64_t due_ms) = 0;
};

class TopicLog final : public AppendSink {
 public:
  // Everything given outlives this. probe may be null (metrics off).
  TopicLog(const BrokerConfig& config, storage::Store& store, storage::StorageWriter& writer, Scheduler& scheduler,
           Scheduler::Target retention_target, Responder& responder, BrokerProbe* probe);
  TopicLog(const TopicLog&) = delete;
  TopicLog& operator=(const TopicLog&) = delete;

  // Loads every topic and its partition bounds. Loop thread. kStorageError.
  Status load();
  // Starts serving: groups hear appends from now on, and the first retention round is
  // scheduled. Loop thread.
  void start(TopicListener& groups, TransactionCoordinator& txns);
  // The topics, for the components that read them. Loop thread.
  TopicTable& table() { return topics_; }

  // Requests; each answers exactly once, now or when its write completes. Loop thread.
  // Permissions are checked before, by the request layer (broker/request_access.h), except
  // where said here.
  // Produce: kInvalidArgument (no topic, bad name), kForbidden (a dead-letter topic, a
  // txmq-* header: check_client_write), kUnknownTopic (absent and not auto-created, or
  // deleted in flight), kNotAuthorized (absent, and auto-creating it needs create on it),
  // kMessageTooLarge, kUnknownPartition, kStorageFull, kStorageError.
  void produce(Connection& conn, RequestId rid, std::span<const std::uint8_t> frame, const wire::Produce& req);
  // CreateTopic: kInvalidArgument (name, partitions), kForbidden (a dead-letter topic),
  // kTopicExists, storage errors.
  void create(Connection& conn, RequestId rid, const wire::CreateTopic& req);
  // DeleteTopic: kUnknownTopic, storage errors.
  void remove(Connection& conn, RequestId rid, const wire::DeleteTopic& req);
  // DescribeTopic: kUnknownTopic.
  void describe(Connection& conn, RequestId rid, const wire::DescribeTopic& req);
  // ListTopics: the topics conn may describe.
  void list(Connection& conn, RequestId rid);
  // Fetch: kUnknownTopic, kUnknownPartition, kStorageError.
  void fetch(Connection& conn, RequestId rid, const wire::Fetch& req);

  // The scheduler's wake-up: one retention round. Loop thread; storage errors are logged.
  void retention_due();

  // AppendSink. Loop thread.
  void appended(TopicId topic, std::span<const Appended> messages, std::size_t bytes) override;
  void delayed_stored(std::uint64_t due_ms) override;
  void topic_created(const storage::TopicMeta& meta) override;

  // Messages and payload bytes appended since start, for Stats. Loop thread.
  struct Totals {
    std::uint64_t messages = 0;
    std::uint64_t bytes = 0;
  };
  Totals totals() const;

 private:
  // Its write operations (storage::WriteOpKind).
  class CreateTopicOp;
  class DeleteTopicOp;
  class ProduceOp;
  class RetentionOp;

  void create_topic(std::string name, std::uint32_t partitions, std::uint64_t retention_ms,
                    std::uint64_t retention_bytes, std::function<void(const Status&)> done);
  flatbuffers::Offset<wire::TopicInfo> build_topic_info(const Topic& topic);
  void retention_done(const Status& status, bool more, std::size_t deleted);

  LoopThread loop_thread_;
  const BrokerConfig& config_;
  storage::Store& store_;
  storage::StorageWriter& writer_;
  Scheduler& scheduler_;
  const Scheduler::Target retention_target_;
  Responder& responder_;
  BrokerProbe* probe_;
  TopicListener* groups_ = nullptr;        // from start()
  TransactionCoordinator* txns_ = nullptr;  // from start()
  TopicTable topics_;
};

}  // namespace txmq::broker
