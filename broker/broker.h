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

#include "broker/broker_probe.h"
#include "broker/config.h"
#include "broker/connection.h"
#include "broker/consumer_group.h"
#include "broker/storage/store.h"
#include "broker/storage/writer.h"
#include "broker/topic_table.h"
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
  // start-up failed (the reason is logged).
  int run();

 private:
  friend class ProduceOp;
  friend class AckOp;

  Status start();
  Status listen();
  Status start_metrics();
  void refresh_metrics();
  void begin_shutdown(const char* why);
  void maybe_finish_shutdown();
  void housekeeping();

  // ConnectionEvents
  void on_frame(Connection& conn, std::span<const std::uint8_t> frame) override;
  void on_writable(Connection& conn) override;
  void on_closed(Connection& conn) override;

  // Requests; each answers exactly once (now or from a write completion).
  void handle_hello(Connection& conn, std::uint64_t rid, const wire::Hello& req);
  void handle_produce(Connection& conn, std::uint64_t rid, std::span<const std::uint8_t> frame,
                      const wire::Produce& req);
  void handle_create_topic(Connection& conn, std::uint64_t rid, const wire::CreateTopic& req);
  void handle_delete_topic(Connection& conn, std::uint64_t rid, const wire::DeleteTopic& req);
  void handle_describe_topic(Connection& conn, std::uint64_t rid, const wire::DescribeTopic& req);
  void handle_list_topics(Connection& conn, std::uint64_t rid);
  void handle_subscribe(Connection& conn, std::uint64_t rid, const wire::Subscribe& req);
  void handle_ack(Connection& conn, std::uint64_t rid, const wire::Ack& req);
  void handle_stats(Connection& conn, std::uint64_t rid);

  // Answers. `fatal` closes the connection once the error is written.
  void reply_error(Connection& conn, std::uint64_t rid, const Error& error, bool fatal = false);
  void reply_ok(Connection& conn, std::uint64_t rid);
  void send_frame(Connection& conn, std::uint64_t rid, wire::Body type, flatbuffers::Offset<void> body);
  flatbuffers::Offset<wire::TopicInfo> build_topic_info(const Topic& topic);

  void create_topic(std::string name, std::uint32_t partitions, std::function<void(const Status&)> done);
  void hold_produce_bytes(Connection& conn, std::size_t n);
  void release_produce_bytes(Connection& conn, std::size_t n);
  Connection* find_connection(std::uint64_t id);
  ConsumerGroup* find_group(std::string_view group, std::string_view topic);
  void dispatch_topic(const Topic& topic);
  void drop_topic_groups(TopicId topic);

  BrokerConfig config_;
  // Declared first so that it outlives everything that holds one of its series.
  metrics::Registry registry_;
  std::unique_ptr<BrokerProbe> probe_;  // null when metrics are off
  std::unique_ptr<storage::WriterProbe> writer_probe_;
  std::unique_ptr<metrics::HttpEndpoint> http_;
  bool http_closing_ = false;
  ConnectionLimits limits_;
  uv_loop_t loop_;
  // Zero-initialised so that shutdown can tell which handles were ever opened (loop set).
  uv_tcp_t listener_{};
  uv_signal_t sigint_{};
  uv_signal_t sigterm_{};
  uv_timer_t housekeeping_timer_{};
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<storage::StorageWriter> writer_;
  TopicTable topics_;
  std::map<std::string, storage::GroupId, std::less<>> group_ids_;  // interned names
  // (group, topic) -> state
  std::map<std::pair<std::string, std::string>, std::unique_ptr<ConsumerGroup>, std::less<>> groups_;
  std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections_;
  std::uint64_t next_connection_id_ = 1;
  flatbuffers::FlatBufferBuilder fbb_{4096};  // reused for every answer built on the loop
  bool shutting_down_ = false;
  bool writer_stopped_ = false;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace txmq::broker
