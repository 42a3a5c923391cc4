#pragma once
// The consumer groups of this broker: every (group, topic) state (ConsumerGroup), the
// interned group names, the stored policies, the delivery of messages to subscribed
// connections, the verdicts they send back, group administration, dead-letter redrive, and
// the release of delayed messages when they come due.
//
// Owns: the groups' states (created on first use, dropped with their topic), the group
// name -> id table, the policy overrides ("g:group" and "t:topic"), and the scheduler
// targets of the groups. Storage holds their durable part: cursors, pending records, dead
// letters, delayed messages; every change to it is one write operation whose completion
// updates memory.
//
// Reaches the rest of the broker only through what it is given: connections through the
// Responder, topics through the TopicTable, what it appends (dead letters, delayed messages
// released) through the AppendSink.
// Lifecycle: made on the loop thread once storage is open and the writer started; start()
// schedules the delayed-message release; stop_dispatching() at shutdown; destroyed after
// the loop ended.
// Concurrency: loop thread only, except the dead-letter counting of a GroupList answer,
// which reads storage on libuv's thread pool (see reply_group_list).

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "broker/append_sink.h"
#include "broker/broker_probe.h"
#include "broker/consumer_group.h"
#include "broker/group_policy.h"
#include "broker/loop_thread.h"
#include "broker/responder.h"
#include "broker/scheduler.h"
#include "broker/storage/store.h"
#include "broker/storage/writer.h"
#include "broker/topic_log.h"
#include "broker/topic_table.h"

namespace txmq::broker {

struct FailureOrigin;

// One group on one topic as a GroupList answer shows it. Everything but the dead letters
// is read on the loop; those are counted from the dead-letter topic off it.
struct GroupRow {
  std::string group, topic;  // topic empty: the group's policy, not its state on a topic
  GroupPolicy policy;
  std::uint32_t consumers = 0;
  std::uint64_t lag = 0, in_flight = 0, waiting_retry = 0, redelivered = 0;
  std::optional<TopicId> dead_letter_topic;
  std::uint64_t dead_letters = 0;
};

class ConsumerGroups final : public TopicListener {
 public:
  // The scheduler targets it uses: delayed_target for the delayed-message release, and
  // first_group_target upwards, one per group state.
  struct Targets {
    Scheduler::Target delayed;
    Scheduler::Target first_group;
  };

  // Everything given outlives this. probe may be null (metrics off).
  ConsumerGroups(uv_loop_t* loop, storage::Store& store, storage::StorageWriter& writer, Scheduler& scheduler,
                 Targets targets, TopicTable& topics, Responder& responder, AppendSink& appends, BrokerProbe* probe);
  ConsumerGroups(const ConsumerGroups&) = delete;
  ConsumerGroups& operator=(const ConsumerGroups&) = delete;

  // Loads the group names and policies, and schedules the delayed-message release. Loop
  // thread. kStorageError.
  Status start();
  // Shutdown: nothing more is delivered (what is held is delivered after the restart).
  // Loop thread.
  void stop_dispatching() { dispatching_ = false; }

  // Requests; each answers exactly once, now or when its write completes. Loop thread.
  // Subscribe: kInvalidArgument (group name, window 0 without a subscription),
  // kUnknownTopic, kStorageError, kStorageFull.
  void subscribe(Connection& conn, RequestId rid, const wire::Subscribe& req);
  // Settle: kNotSubscribed (no such group on the topic), kInvalidArgument (no such
  // partition), storage errors once written.
  void settle(Connection& conn, RequestId rid, const wire::Settle& req);
  // ConfigureGroup: kInvalidArgument (no name, bad name, bad schedule), kUnknownTopic,
  // storage errors.
  void configure(Connection& conn, RequestId rid, const wire::ConfigureGroup& req);
  // DescribeGroups: the groups conn may describe (the request layer refuses a named group
  // it may not). kInvalidArgument (unknown group), kStorageError.
  void describe(Connection& conn, RequestId rid, const wire::DescribeGroups& req);
  // Redrive: kInvalidArgument (unknown group), kUnknownTopic (no dead letters), storage
  // errors; letters that cannot move are listed as failed, and those without the broker's
  // mark (unless req.trust_unmarked) also as unmarked.
  void redrive(Connection& conn, RequestId rid, const wire::Redrive& req);

  // TopicListener. Loop thread.
  void topic_appended(const Topic& topic) override;
  void topic_deleted(TopicId topic) override;
  void delayed_stored(std::uint64_t due_ms) override;

  // Events from the request layer. Loop thread.
  // The connection's output drained: its groups may push again.
  void connection_writable(const Connection& conn);
  // The connection closed: what it held fails and goes to others (persisted), unless the
  // broker is shutting down (then nothing is persisted and it is delivered after restart).
  void connection_closed(const Connection& conn, bool shutting_down);
  // A scheduler wake-up of one of its targets: false when the target is not its own.
  bool wake(Scheduler::Target target);

  // Deliveries and acknowledgements of all groups since start, for Stats. Loop thread.
  struct Totals {
    std::uint64_t delivered = 0;
    std::uint64_t acked = 0;
  };
  Totals totals() const;
  // Sets the groups' gauges, at each metrics scrape. Loop thread.
  void refresh_metrics();

 private:
  // Its write operations (storage::WriteOpKind).
  class InternGroupOp;
  class ConfigureGroupOp;
  class SettleOp;
  class ReleaseDelayedOp;
  class RedriveOp;

  ConsumerGroup* find(std::string_view group, std::string_view topic);
  // The group's state on the topic, loaded from storage on first use; null on a storage
  // error (logged). The one place a ConsumerGroup is made.
  ConsumerGroup* load(const std::string& group, storage::GroupId gid, Topic& topic);
  void join(std::uint64_t conn_id, RequestId rid, const std::string& topic, const std::string& group,
            std::uint32_t window, storage::GroupId gid);
  GroupPolicy effective_policy(std::string_view group, std::string_view topic) const;
  // The group a Settle names; answers kNotSubscribed and returns null when unknown.
  ConsumerGroup* settling_group(Connection& conn, RequestId rid, const flatbuffers::String* topic,
                                const flatbuffers::String* group);

  void dispatch(ConsumerGroup& group);
  void schedule(ConsumerGroup& group);
  void group_due(ConsumerGroup& group);
  // Writes a batch of verdicts (and delivered-up-to marks); answers rid when reply.
  void persist(ConsumerGroup& group, SettleBatch batch, std::vector<std::pair<PartitionId, Offset>> marks,
               std::uint64_t conn_id, RequestId rid, bool reply);
  void persist_failures(ConsumerGroup& group, std::vector<Failure> failures);
  void settled(const FailureOrigin& origin, std::span<const std::pair<PartitionId, Offset>> floors,
               const std::optional<storage::TopicMeta>& dlq, std::span<const Appended> dead_letters,
               const Status& status);
  void release_delayed();
  void schedule_delayed();

  void policy_stored(const std::string& key, const PolicyOverride& merged, const std::string& group,
                     const std::string& topic);
  GroupRow row(const std::string& group, const std::string& topic, const GroupPolicy& policy, ConsumerGroup* g);
  // Answers rid with the rows as a GroupList once their dead letters are counted. Counting
  // reads every letter (redrives delete from the middle, so offsets overcount) and a
  // dead-letter topic can hold millions, so it runs on libuv's thread pool, each
  // dead-letter topic read once, and the loop goes on serving meanwhile.
  void reply_group_list(std::uint64_t conn_id, RequestId rid, std::vector<GroupRow> rows);
  void send_group_list(std::uint64_t conn_id, RequestId rid, const std::vector<GroupRow>& rows);
  struct RedriveResult;
  void redriven(const std::string& group, storage::GroupId group_id, const RedriveResult& result);

  LoopThread loop_thread_;
  uv_loop_t* loop_;
  storage::Store& store_;
  storage::StorageWriter& writer_;
  Scheduler& scheduler_;
  const Targets targets_;
  TopicTable& topics_;
  Responder& responder_;
  AppendSink& appends_;
  BrokerProbe* probe_;
  bool dispatching_ = true;  // false from shutdown on

  std::map<std::string, storage::GroupId, std::less<>> group_ids_;  // interned names
  // (group, topic) -> state
  std::map<std::pair<std::string, std::string>, std::unique_ptr<ConsumerGroup>, std::less<>> groups_;
  std::unordered_map<Scheduler::Target, ConsumerGroup*> by_target_;
  Scheduler::Target next_target_;                               // for the next group state
  PolicyTable policies_;
};

}  // namespace txmq::broker
