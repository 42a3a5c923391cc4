#pragma once
// A consumer group's state on one topic, and the dispatch of messages to its consumers.
//
// Each partition has a cursor (PartitionCursor): the durable ack floor, the acks above it,
// what is in flight and to whom, and what must be sent again because its consumer went
// away. Within the group each message is with at most one consumer at a time; every
// group sees every message.
// Lifecycle: created on the first subscribe of a (group, topic) on this broker run, from
// the durable cursors; lives until its topic is deleted or the broker stops.
// Concurrency: loop thread only.
// Limits: a consumer never holds more unacknowledged deliveries than its window, and no
// delivery is built while its connection's output queue is above high water.

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "broker/connection.h"
#include "broker/storage/store.h"
#include "broker/topic_table.h"

namespace txmq::broker {

// One subscription: a connection consuming this group's topic.
struct Consumer {
  Connection* conn;
  std::uint32_t window;         // most unacknowledged deliveries it may hold
  std::uint32_t in_flight = 0;  // deliveries it holds now
};

struct InFlight {
  Connection* holder;           // the consumer's connection
  DeliveryCount deliveries;     // how many times this broker run delivered it
};

// One group's position in one partition.
struct PartitionCursor {
  Offset ack_floor;                      // every offset below is acknowledged (durable)
  Offset next;                           // next offset not yet delivered since start-up
  std::set<Offset> acked;                // acknowledged offsets above the floor
  std::map<Offset, InFlight> in_flight;  // delivered, awaiting an ack
  std::map<Offset, DeliveryCount> redeliver;  // returned by a departed consumer; sent first
};

class ConsumerGroup {
 public:
  ConsumerGroup(std::string name, storage::GroupId id, Topic& topic);

  // Loads the durable cursors of every partition. kStorageError.
  Status load(const storage::Store& store);

  const std::string& name() const { return name_; }
  storage::GroupId id() const { return id_; }
  Topic& topic() { return *topic_; }

  Consumer* find_consumer(const Connection* conn);
  void add_consumer(Connection& conn, std::uint32_t window);
  // Returns the connection's deliveries to the group for redelivery.
  void remove_consumer(const Connection* conn);
  bool has_consumers() const { return !consumers_.empty(); }

  // Marks offsets acknowledged in memory and frees the holders' windows. Returns the
  // offsets that were not yet acknowledged, per partition, to be made durable. An ack for
  // an offset beyond the log, or of an unknown partition, is kInvalidArgument.
  Result<std::map<PartitionId, std::vector<Offset>>> ack(std::span<const wire::MessageRef* const> refs);
  // The durable floor after an ack committed.
  void set_ack_floor(PartitionId p, Offset floor);

  // Pushes deliveries to consumers that have room, up to their windows. Returns how many
  // were sent.
  std::size_t dispatch(const storage::Store& store, flatbuffers::FlatBufferBuilder& fbb);

  // Totals for stats: deliveries held by consumers; messages not yet acknowledged.
  std::size_t in_flight() const;
  std::uint64_t lag() const;
  std::size_t consumers() const { return consumers_.size(); }
  std::uint64_t delivered = 0;
  std::uint64_t acked_total = 0;
  GroupSeries series;  // metrics; null when metrics are off

 private:
  Consumer* next_consumer_with_room();
  std::size_t fill(Consumer& c, PartitionId p, const storage::Store& store,
                   flatbuffers::FlatBufferBuilder& fbb);
  void send_delivery(Consumer& c, PartitionId p, const storage::LogEntry& e, DeliveryCount n,
                     flatbuffers::FlatBufferBuilder& fbb);

  std::string name_;
  storage::GroupId id_;
  Topic* topic_;
  std::vector<PartitionCursor> cursors_;  // indexed by partition
  std::vector<std::unique_ptr<Consumer>> consumers_;
  std::size_t next_consumer_ = 0;   // round robin over consumers
  std::uint32_t next_partition_ = 0;  // round robin over partitions
};

}  // namespace txmq::broker
