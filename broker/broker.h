#pragma once
// The broker process and its request layer: one libuv loop that owns every connection, and
// one storage writer thread that owns LMDB writes.
//
// The Broker is the request layer: it accepts connections, serves the hello and Stats, and
// routes each request to the component that owns its state: the topic log (TopicLog:
// topics, produce, retention, topic commands), the consumer groups (ConsumerGroups) and the
// transaction coordinator (TransactionCoordinator). The components reach connections
// through the Responder, and report what they append through the topic log's AppendSink:
// every message that enters a partition passes TopicLog::appended().
//
// Lifecycle: run() opens storage, starts replication (broker/replication.h), makes the
// components (at once, or for a follower when it is promoted), listens, prints
// "listening on HOST:PORT", and serves until SIGINT or SIGTERM. A follower listens too:
// it answers clients NotLeader, and its leader's fetches are the cluster requests. Shutdown stops accepting
// and reading, lets the writer finish and complete every operation already queued (so every
// produce that was received is answered), flushes and closes every connection, and returns 0.
// Concurrency: the constructor may run on any thread; run() and everything it calls on the
// thread that called run() (the loop thread), except what StorageWriter runs.

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "broker/audit.h"
#include "broker/authenticator.h"
#include "broker/broker_probe.h"
#include "broker/cluster_coordinator.h"
#include "broker/config.h"
#include "broker/connection.h"
#include "broker/consumer_groups.h"
#include "broker/loop_thread.h"
#include "broker/names.h"
#include "broker/replication.h"
#include "broker/responder.h"
#include "broker/scheduler.h"
#include "broker/storage/store.h"
#include "broker/storage/writer.h"
#include "broker/topic_log.h"
#include "broker/transaction_coordinator.h"
#include "metrics/http_endpoint.h"
#include "metrics/process_collector.h"
#include "metrics/registry.h"

namespace txmq::broker {

class Broker final : public ConnectionEvents {
 public:
  explicit Broker(BrokerConfig config);
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;
  ~Broker() override;

  // Runs until shutdown. Returns the process exit code: 0 after a clean shutdown, 1 when
  // start-up failed (the reason is logged). The calling thread becomes the loop thread.
  int run();
  // After run(): why this broker stepped down as leader ([cluster]), when it did. It must
  // start again (main() execs itself), so that it rejoins as a follower.
  const std::string& restart_reason() const { return restart_reason_; }

 private:
  // Scheduler targets: the components' own, then one per consumer group state.
  static constexpr Scheduler::Target kDelayedTarget = 1;
  static constexpr Scheduler::Target kRetentionTarget = 2;
  static constexpr Scheduler::Target kTxnCheckTarget = 3;
  static constexpr Scheduler::Target kFirstGroupTarget = 100;

  Status start();
  // The components that serve clients (topic log, groups, transactions), made from the
  // store as it is: at start, or once a follower is promoted.
  Status start_components();
  Status listen();
  Status start_metrics();
  void begin_shutdown(const char* why);
  void maybe_finish_shutdown();
  void housekeeping();
  // A Heartbeat frame (request id 0) to a connection that agreed on them.
  void send_heartbeat(Connection& conn);
  // Answers Timeout (what, with the limit) and closes; counted under reason.
  void close_for_timeout(Connection& conn, std::string_view reason, std::string_view what,
                         std::chrono::milliseconds limit);
  void on_scheduler_due(Scheduler::Target target);

  // ConnectionEvents
  void on_frame(Connection& conn, std::span<const std::uint8_t> frame) override;
  void on_writable(Connection& conn) override;
  void on_closed(Connection& conn) override;
  void on_stream_error(Connection& conn, const Error& error) override;
  void on_tls_refused(Connection& conn, std::string_view reason) override;
  void on_accept(uv_stream_t* server, int status);

  // Requests the Broker serves itself; each answers exactly once.
  void handle_hello(Connection& conn, RequestId rid, const wire::Hello& req);
  // The hello passed authentication: the producer group's permission, then HelloOk.
  void finish_hello(Connection& conn, RequestId rid, Authenticator::Verdict verdict);
  // An operator request to record in the audit trail when it is answered.
  void audit(Connection& conn, RequestId rid, const wire::Frame& frame);
  void handle_stats(Connection& conn, RequestId rid);
  // ReplicaFetch, ClusterStatus, Promote, GetDigest: answered by Replication, on any role.
  void handle_cluster(Connection& conn, RequestId rid, const wire::Frame& frame);

  BrokerConfig config_;
  LoopThread loop_thread_;  // bound in run()
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
  // Certificate, key and client CA of the protocol port; null when tls.enabled is false.
  // Declared before connections_, which use it.
  std::shared_ptr<common::TlsContext> tls_;
  // Zero-initialised so that shutdown can tell which handles were ever opened (loop set).
  uv_tcp_t listener_{};
  uv_signal_t sigint_{};
  uv_signal_t sigterm_{};
  uv_signal_t sighup_{};  // reloads the users and ACL files
  uv_timer_t housekeeping_timer_{};
  std::chrono::steady_clock::time_point last_housekeeping_ = std::chrono::steady_clock::now();
  // Declared before the components, which answer through the responder.
  Responder::ConnectionTable connections_;
  Responder responder_{connections_, config_.connection_inflight_bytes};
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<storage::StorageWriter> writer_;
  std::unique_ptr<Replication> replication_;
  bool replication_closed_ = false;
  std::unique_ptr<ClusterCoordinator> cluster_;  // [cluster] only
  std::string restart_reason_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<TopicLog> topics_;
  std::unique_ptr<ConsumerGroups> groups_;
  std::unique_ptr<TransactionCoordinator> txns_;
  std::unique_ptr<AuditLog> audit_log_;
  std::unique_ptr<Authenticator> auth_;
  std::chrono::steady_clock::time_point last_accept_error_log_;  // EMFILE is logged once a second
  int max_fds_ = 0;  // the open-files limit (RLIMIT_NOFILE); 0 when unlimited
  std::uint64_t next_connection_id_ = 1;
  bool shutting_down_ = false;
  bool writer_stopped_ = false;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace txmq::broker
