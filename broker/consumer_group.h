#pragma once
// A consumer group's state on one topic, and the dispatch of messages to its consumers.
//
// Each partition has a cursor (PartitionCursor): the durable ack floor and the acks above
// it, what is in flight to whom and until when (the lease), and what failed and waits for
// its retry time. Within the group each message is with at most one consumer at a time;
// every group sees every message.
//
// The group decides; the broker persists. Methods that change what must survive a crash
// (a failure's delivery count and due time, a dead letter) return a Failure for the broker
// to write, and the in-memory state already reflects it.
//
// The group reaches the world through two small interfaces: it reads messages and cursors
// from a LogReader (the broker's Store) and pushes deliveries to DeliverySinks (the
// broker's Connections), so that it runs, and is tested, without either. Time is always a
// parameter (now_ms): the group never reads a clock.
//
// Lifecycle: created on the first subscribe of a (group, topic) in this broker run, from
// the durable cursors and pending records; lives until its topic is deleted or the broker
// stops. Concurrency: loop thread only.
// Limits: a consumer never holds more unacknowledged deliveries than its window, no
// delivery is built while its sink is not writable (a connection's output above high
// water), and in ordered mode a partition has at most one delivery in flight. Memory: in
// flight (bounded by windows) plus messages that failed and wait for a retry, plus acks
// above the floor; never the backlog.

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "broker/broker_probe.h"
#include "broker/delivery_sink.h"
#include "broker/group_policy.h"
#include "broker/log_reader.h"
#include "broker/topic_table.h"

namespace txmq::broker {

// One subscription: a sink (a connection) consuming this group's topic.
struct Consumer {
  DeliverySink* sink;
  std::uint32_t window;         // most unacknowledged deliveries it may hold
  std::uint32_t in_flight = 0;  // deliveries it holds now
};

// A message's failure reasons, as kept in its PendingRecord and delivered to consumers
// with each retry (the wire's and the client's Delivery call them its history): the
// reasons given with nacks and terminates, oldest first, the last kMaxReasons of them. A
// consumer such as txmq-notifier records each attempt here, so the broker, not the
// consumer, remembers what happened across consumer crashes.
inline constexpr std::size_t kMaxReasons = 64;
// Each reason is kept to its first kMaxReasonBytes: the reasons travel in every retry's
// delivery and every dead letter's headers, so they must stay far below a message's limit.
inline constexpr std::size_t kMaxReasonBytes = 1024;
using FailureReasons = std::vector<std::string>;

struct InFlight {
  DeliverySink* holder;                // the consumer's sink
  DeliveryCount delivery_count;        // including this one
  std::uint64_t first_delivery_ms;     // of the message's first delivery
  std::uint64_t lease_deadline_ms;     // a failed delivery once passed
  bool has_record;                     // a PendingRecord exists (it failed before)
  FailureReasons reasons;              // of the earlier failures
};

// A message that failed and waits for its next delivery (it has a PendingRecord).
struct Pending {
  DeliveryCount delivery_count;     // deliveries so far
  std::uint64_t due_ms;             // not delivered again before this
  std::uint64_t first_delivery_ms;  // 0 when never delivered (a redriven dead letter)
  const DeliverySink* last_holder = nullptr;  // whose lease ran out: others get it first
  FailureReasons reasons;           // of the failures so far
};

// One group's position in one partition.
struct PartitionCursor {
  Offset ack_floor;                      // every offset below is acknowledged (durable)
  Offset next;                           // next offset not yet delivered in this broker run
  Offset delivered_upto;                 // below it every offset was delivered at least once
  std::set<Offset> acked;                // acknowledged offsets above the floor
  std::map<Offset, InFlight> in_flight;  // delivered, awaiting a verdict
  std::map<Offset, Pending> pending;     // failed; delivered again once due
  std::set<std::pair<std::uint64_t, Offset>> leases;     // (deadline, offset) of in_flight
  std::set<std::pair<std::uint64_t, Offset>> retry_due;  // (due, offset) of pending
};

// A delivery that failed, as the broker must persist it: a new PendingRecord, or a move to
// the dead-letter topic.
struct Failure {
  PartitionId partition;
  Offset offset;
  bool dead_letter;               // past the maximum, or terminated
  storage::OwnedPending record;   // count, first and last delivery, due time, new reason
  bool had_record;                // an older PendingRecord exists (its reasons are kept)
};

// The verdicts of one Settle request on this group.
struct SettleBatch {
  std::map<PartitionId, std::vector<Offset>> acks;                   // to record
  std::vector<std::pair<PartitionId, Offset>> clear;                  // PendingRecords to remove
  std::vector<Failure> failures;
  std::uint32_t ignored = 0;                                         // named nothing we hold
};

class ConsumerGroup {
 public:
  ConsumerGroup(std::string name, storage::GroupId id, Topic& topic, GroupPolicy policy, std::uint64_t serial);

  // Loads the durable cursors and pending records of every partition. kStorageError.
  Status load(const LogReader& log);

  const std::string& name() const { return name_; }
  storage::GroupId id() const { return id_; }
  std::uint64_t serial() const { return serial_; }  // the group's scheduler target
  Topic& topic() { return *topic_; }
  const GroupPolicy& policy() const { return policy_; }
  void set_policy(const GroupPolicy& policy) { policy_ = policy; }

  Consumer* find_consumer(const DeliverySink* sink);
  // Adds a consumer, or sets the window of one already there (0 pauses it).
  void add_consumer(DeliverySink& sink, std::uint32_t window);
  // The sink's deliveries fail (with no delay: another consumer may take them).
  std::vector<Failure> remove_consumer(const DeliverySink* sink, std::uint64_t now_ms);
  bool has_consumers() const { return !consumers_.empty(); }
  std::size_t consumers() const { return consumers_.size(); }

  // Applies one verb from `sink` to a message it holds. now_ms times failures and leases.
  // kInvalidArgument for a partition the topic does not have.
  Status settle(const DeliverySink& sink, PartitionId p, Offset o, wire::SettleVerb verb, std::uint64_t delay_ms,
                std::string_view reason, std::uint64_t now_ms, SettleBatch& batch);

  // Leases that ran out fail; returns what to persist.
  std::vector<Failure> expire_leases(std::uint64_t now_ms);
  // The earliest lease deadline or future retry time, for the scheduler; UINT64_MAX if
  // none. Retries already due are not wake-ups: they go out as soon as a consumer has
  // room, which dispatch sees anyway.
  std::uint64_t next_wakeup(std::uint64_t now_ms) const;

  // The durable floor after an ack committed.
  void set_ack_floor(PartitionId p, Offset floor);
  // A dead letter was redriven for this group: deliver it again with a fresh count.
  void reopen(PartitionId p, Offset o, std::uint64_t now_ms);

  // Pushes deliveries to consumers with room, up to their windows. Returns the offsets
  // below which fresh deliveries were made per partition, to mark durable (only raised
  // marks are returned).
  // Frames are built in fbb and handed to the sinks.
  std::vector<std::pair<PartitionId, Offset>> dispatch(const LogReader& log, flatbuffers::FlatBufferBuilder& fbb,
                                                       std::uint64_t now_ms);

  // For stats and metrics.
  std::size_t in_flight() const;
  std::size_t pending() const;  // failed, waiting for their retry time (the wire's waiting_retry)
  std::uint64_t lag() const;
  std::uint64_t delivered = 0;
  std::uint64_t redelivered = 0;
  std::uint64_t acked_total = 0;
  std::uint64_t dead_lettered = 0;
  GroupSeries series;  // metrics; null when metrics are off

 private:
  Consumer* next_consumer_with_room();
  Consumer* ordered_owner(PartitionId p);
  std::size_t fill(Consumer& c, PartitionId p, const LogReader& log, flatbuffers::FlatBufferBuilder& fbb,
                   std::uint64_t now_ms);
  bool deliver(Consumer& c, PartitionId p, Offset o, DeliveryCount n, std::uint64_t first_ms, bool has_record,
               FailureReasons reasons, const LogReader& log, flatbuffers::FlatBufferBuilder& fbb, std::uint64_t now_ms,
               const storage::LogEntry* entry);
  Failure fail(PartitionId p, Offset o, std::string_view reason, std::optional<std::uint64_t> delay_ms,
               bool terminate, std::uint64_t now_ms);
  void release(PartitionId p, std::map<Offset, InFlight>::iterator it);

  std::string name_;
  storage::GroupId id_;
  Topic* topic_;
  GroupPolicy policy_;
  std::uint64_t serial_;
  std::vector<PartitionCursor> cursors_;  // indexed by partition
  std::vector<std::unique_ptr<Consumer>> consumers_;
  std::size_t next_consumer_ = 0;     // round robin over consumers
  std::uint32_t next_partition_ = 0;  // round robin over partitions
  std::vector<Offset> marked_;        // per partition: delivered-up-to marks already sent to storage
  std::mt19937_64 rng_{std::random_device{}()};
};

}  // namespace txmq::broker
