#pragma once
// The broker process: one libuv loop that owns every connection and all in-memory state,
// and one storage writer thread that owns LMDB writes.
//
// Lifecycle: run() opens storage, loads topics, listens, prints "listening on HOST:PORT",
// and serves until SIGINT or SIGTERM. Shutdown stops accepting and reading, lets the
// writer finish and complete every operation already queued (so every produce that was
// received is answered), flushes and closes every connection, and returns 0.
// Concurrency: every method runs on the loop thread, except what StorageWriter runs.

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "broker/append_sink.h"
#include "broker/broker_probe.h"
#include "broker/config.h"
#include "broker/connection.h"
#include "broker/consumer_group.h"
#include "broker/group_policy.h"
#include "broker/names.h"
#include "broker/responder.h"
#include "broker/scheduler.h"
#include "broker/storage/store.h"
#include "broker/storage/writer.h"
#include "broker/topic_table.h"
#include "broker/transaction_coordinator.h"
#include "metrics/http_endpoint.h"
#include "metrics/process_collector.h"
#include "metrics/registry.h"

namespace txmq::broker {

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

class Broker final : public ConnectionEvents, public AppendSink {
 public:
  explicit Broker(BrokerConfig config);
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;
  ~Broker() override;

  // Runs until shutdown. Returns the process exit code: 0 after a clean shutdown, 1 when
  // start-up failed (the reason is logged).
  int run();

 private:
  friend class ProduceOp;
  friend class SettleOp;

  // Scheduler targets that are not consumer groups (groups count from kFirstGroupSerial).
  static constexpr Scheduler::Target kDelayedTarget = 1;
  static constexpr Scheduler::Target kRetentionTarget = 2;
  static constexpr Scheduler::Target kTxnCheckTarget = 3;
  static constexpr Scheduler::Target kFirstGroupSerial = 100;

  Status start();
  Status listen();
  Status start_metrics();
  void refresh_metrics();
  void begin_shutdown(const char* why);
  void maybe_finish_shutdown();
  void housekeeping();
  // Answers Timeout (what, with the limit) and closes; counted under reason.
  void close_for_timeout(Connection& conn, std::string_view reason, std::string_view what,
                         std::chrono::milliseconds limit);

  // ConnectionEvents
  void on_frame(Connection& conn, std::span<const std::uint8_t> frame) override;
  void on_writable(Connection& conn) override;
  void on_closed(Connection& conn) override;
  void on_stream_error(Connection& conn, const Error& error) override;
  void on_accept(uv_stream_t* server, int status);

  // Requests; each answers exactly once (now or from a write completion).
  void handle_hello(Connection& conn, std::uint64_t rid, const wire::Hello& req);
  void handle_produce(Connection& conn, std::uint64_t rid, std::span<const std::uint8_t> frame,
                      const wire::Produce& req);
  void handle_create_topic(Connection& conn, std::uint64_t rid, const wire::CreateTopic& req);
  void handle_delete_topic(Connection& conn, std::uint64_t rid, const wire::DeleteTopic& req);
  void handle_describe_topic(Connection& conn, std::uint64_t rid, const wire::DescribeTopic& req);
  void handle_list_topics(Connection& conn, std::uint64_t rid);
  void handle_subscribe(Connection& conn, std::uint64_t rid, const wire::Subscribe& req);
  void handle_settle(Connection& conn, std::uint64_t rid, const wire::Settle& req);
  void handle_configure_group(Connection& conn, std::uint64_t rid, const wire::ConfigureGroup& req);
  void handle_describe_groups(Connection& conn, std::uint64_t rid, const wire::DescribeGroups& req);
  void handle_fetch(Connection& conn, std::uint64_t rid, const wire::Fetch& req);
  void handle_redrive(Connection& conn, std::uint64_t rid, const wire::Redrive& req);
  void handle_stats(Connection& conn, std::uint64_t rid);

  // AppendSink
  void appended(TopicId topic, std::span<const Appended> messages, std::size_t bytes) override;
  void delayed_stored(std::uint64_t due_ms) override;

  // Answers (see Responder).
  void reply_error(Connection& conn, std::uint64_t rid, const Error& error, bool fatal = false) {
    responder_.reply_error(conn, rid, error, fatal);
  }
  void reply_ok(Connection& conn, std::uint64_t rid) { responder_.reply_ok(conn, rid); }
  void send_frame(Connection& conn, std::uint64_t rid, wire::Body type, flatbuffers::Offset<void> body) {
    responder_.send_frame(conn, rid, type, body);
  }
  flatbuffers::FlatBufferBuilder& fbb() { return responder_.fbb(); }
  flatbuffers::Offset<wire::TopicInfo> build_topic_info(const Topic& topic);

  void create_topic(std::string name, std::uint32_t partitions, std::uint64_t retention_ms,
                    std::uint64_t retention_bytes, std::function<void(const Status&)> done);
  Connection* find_connection(std::uint64_t id) { return responder_.find(id); }
  ConsumerGroup* find_group(std::string_view group, std::string_view topic);
  // The group a Settle names; answers kNotSubscribed and returns null when unknown.
  ConsumerGroup* settling_group(Connection& conn, std::uint64_t rid, const flatbuffers::String* topic,
                                const flatbuffers::String* group);
  // The group's state on the topic, loaded from storage on first use; null on a storage error.
  ConsumerGroup* load_group(const std::string& group, storage::GroupId gid, Topic& topic);
  GroupPolicy effective_policy(std::string_view group, std::string_view topic) const;
  GroupRow group_row(const std::string& group, const std::string& topic, const GroupPolicy& policy,
                     ConsumerGroup* g);
  // Answers rid with the rows as a GroupList once their dead letters are counted. Counting
  // reads every letter (redrives delete from the middle, so offsets overcount) and a
  // dead-letter topic can hold millions, so it runs on libuv's thread pool, each
  // dead-letter topic read once, and the loop goes on serving meanwhile.
  void reply_group_list(std::uint64_t conn_id, std::uint64_t rid, std::vector<GroupRow> rows);
  void dispatch_topic(const Topic& topic);
  void dispatch_group(ConsumerGroup& group);
  void schedule_group(ConsumerGroup& group);
  void on_group_due(ConsumerGroup& group);
  void consumer_gone(Connection& conn);
  void persist(ConsumerGroup& group, SettleBatch batch, std::vector<std::pair<PartitionId, Offset>> marks,
               std::uint64_t conn_id, std::uint64_t rid, bool reply);
  void dead_letters_appended(const storage::TopicMeta& dlq, const std::vector<Offset>& offsets);
  void drop_topic_groups(TopicId topic);

  // Background work (background.cpp).
  void on_scheduler_due(Scheduler::Target target);
  void schedule_delayed();
  void release_delayed();
  void run_retention();

  BrokerConfig config_;
  // Declared first so that it outlives everything that holds one of its series.
  metrics::Registry registry_;
  std::unique_ptr<BrokerProbe> probe_;  // null when metrics are off
  std::unique_ptr<storage::WriterProbe> writer_probe_;
  std::unique_ptr<metrics::HttpEndpoint> http_;
  bool http_closing_ = false;
  ConnectionLimits limits_;
  uv_loop_t loop_;
  // Memory of all connections together; declared before connections_, which use it.
  std::unique_ptr<ConnectionBudget> budget_;
  // Zero-initialised so that shutdown can tell which handles were ever opened (loop set).
  uv_tcp_t listener_{};
  uv_signal_t sigint_{};
  uv_signal_t sigterm_{};
  uv_timer_t housekeeping_timer_{};
  // Declared before the components, which answer through the responder.
  Responder::ConnectionTable connections_;
  Responder responder_{connections_, config_.connection_inflight_bytes};
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<storage::StorageWriter> writer_;
  TopicTable topics_;
  std::map<std::string, storage::GroupId, std::less<>> group_ids_;  // interned names
  // (group, topic) -> state
  std::map<std::pair<std::string, std::string>, std::unique_ptr<ConsumerGroup>, std::less<>> groups_;
  std::unordered_map<Scheduler::Target, ConsumerGroup*> groups_by_serial_;
  Scheduler::Target next_group_serial_ = kFirstGroupSerial;
  std::map<std::string, PolicyOverride, std::less<>> policies_;  // "g:group" / "t:topic"
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<TransactionCoordinator> txns_;
  std::chrono::steady_clock::time_point last_accept_error_log_;  // EMFILE is logged once a second
  int max_fds_ = 0;  // the open-files limit (RLIMIT_NOFILE); 0 when unlimited
  std::uint64_t next_connection_id_ = 1;
  bool shutting_down_ = false;
  bool writer_stopped_ = false;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace txmq::broker
