#include "broker/broker.h"

#include <spdlog/spdlog.h>

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>

#include "broker/request_access.h"
#include "common/address.h"
#include "common/resolve.h"
#include "common/version.h"

namespace txmq::broker {
namespace {

// How often lingering connections are reaped.
constexpr std::uint64_t kHousekeepingMs = 250;
// The longest heartbeat interval granted (HelloOk.heartbeat_ms is 32 bits).
constexpr std::chrono::milliseconds kMaxHeartbeat{3'600'000};

std::string sockname(const uv_tcp_t* tcp) {
  sockaddr_storage addr{};
  int len = sizeof(addr);
  uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&addr), &len);
  return common::address_text(addr);
}

}  // namespace

Broker::Broker(BrokerConfig config) : config_(std::move(config)) {
  limits_.max_frame_bytes = config_.max_frame_bytes;
  limits_.output_high_water = config_.connection_output_bytes;
  limits_.hello_max_frame_bytes = std::min(config_.hello_max_frame_bytes, config_.max_frame_bytes);
  limits_.hello_timeout = config_.hello_timeout;
  limits_.frame_timeout = config_.frame_timeout;
  limits_.output_timeout = config_.output_timeout;
  uv_loop_init(&loop_);
  budget_ = std::make_unique<ConnectionBudget>(
      &loop_, config_.total_input_bytes, config_.total_output_bytes,
      [this](std::uint64_t id) {
        if (auto it = connections_.find(id); it != connections_.end()) it->second->resume();
      },
      [this] {
        // Every connection may have stopped for the total: each gets its turn again.
        for (auto& [id, conn] : connections_) budget_->resume_soon(id);
      });
  listener_.data = sigint_.data = sigterm_.data = sighup_.data = housekeeping_timer_.data = this;
}

Broker::~Broker() {
  http_.reset();  // closed by shutdown; its destructor checks that
  uv_loop_close(&loop_);
}

int Broker::run() {
  loop_thread_.bind();  // this thread runs the loop
  responder_.bind_loop_thread();
  started_ = std::chrono::steady_clock::now();
  if (auto st = start(); !st) {
    spdlog::error("{}", st.error().message);
    // Close whatever start() opened so the loop can be closed cleanly.
    begin_shutdown(nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    return 1;
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  spdlog::info("broker stopped");
  return 0;
}

Status Broker::start() {
  // First: a broker that cannot serve TLS as configured must not start at all.
  if (config_.tls_enabled) {
    auto tls = common::TlsContext::server(config_.tls_files, config_.tls_client_auth);
    if (!tls) return Error(tls.error().code, "tls." + tls.error().message);
    tls_ = std::move(*tls);
  }
  if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    max_fds_ = static_cast<int>(std::min<rlim_t>(rl.rlim_cur, INT32_MAX));
  storage::StoreOptions so{config_.data_dir, config_.storage_max_bytes, config_.sync};
  // The log's own room: its retention, and as much again for what an in-sync follower
  // still needs past it.
  if (config_.replication.enabled()) so.log_bytes = 2 * config_.replication.log_max_bytes;
  auto store = storage::Store::open(so);
  if (!store) return store.error();
  store_ = std::move(*store);
  if (store_->created()) spdlog::info("created a new, empty store in {}", config_.data_dir);
  auto audit_log = AuditLog::open(config_.audit_file.empty() ? config_.data_dir + "/audit.log" : config_.audit_file);
  if (!audit_log) return audit_log.error();
  audit_log_ = std::move(*audit_log);
  responder_.set_audit(audit_log_.get());
  if (!config_.metrics_listen.empty()) {
    probe_ = std::make_unique<BrokerProbe>(registry_);
    writer_probe_ = std::make_unique<storage::WriterProbe>(registry_);
    responder_.set_probe(probe_.get());
  }
  storage::WriterOptions wo;
  wo.sync = config_.sync;
  wo.relaxed_sync_interval = config_.relaxed_sync_interval;
  writer_ = std::make_unique<storage::StorageWriter>(&loop_, *store_, wo);
  writer_->set_probe(writer_probe_.get());
  writer_->start();
  scheduler_ = std::make_unique<Scheduler>(&loop_, [this](Scheduler::Target t) { on_scheduler_due(t); });
  auth_ = std::make_unique<Authenticator>(&loop_, config_, responder_, probe_.get(), audit_log_.get(),
                                          [this](Connection& c, RequestId rid, Authenticator::Verdict v) {
                                            finish_hello(c, rid, std::move(v));
                                          });
  if (auto st = auth_->load(); !st) return st;
  replication_ = std::make_unique<Replication>(
      &loop_, config_, *store_, *writer_, responder_, probe_ ? &registry_ : nullptr,
      Replication::Hooks{[this] {
                           Status st = start_components();
                           // A leader beginning a new epoch listens only once it leads, so that its first
                           // clients are served rather than told NotLeader.
                           if (st && !listener_.loop) st = listen();
                           if (!st) {
                             spdlog::error("cannot serve clients: {}", st.error().message);
                             begin_shutdown(nullptr);
                           }
                         },
                         [this](const std::set<std::string>& members, std::function<void(bool, bool)> done) {
                           if (!cluster_) return done(false, true);
                           cluster_->store_in_sync(members, std::move(done));
                         },
                         [this] { return cluster_ ? cluster_->view() : EtcdView{}; }});

  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sigterm_);
  auto on_signal = [](uv_signal_t* h, int signum) {
    static_cast<Broker*>(h->data)->begin_shutdown(signum == SIGINT ? "SIGINT" : "SIGTERM");
  };
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  uv_signal_init(&loop_, &sighup_);
  uv_signal_start(
      &sighup_, [](uv_signal_t* h, int) { static_cast<Broker*>(h->data)->auth_->reload(); }, SIGHUP);
  uv_timer_init(&loop_, &housekeeping_timer_);
  uv_timer_start(&housekeeping_timer_, [](uv_timer_t* t) { static_cast<Broker*>(t->data)->housekeeping(); },
                 kHousekeepingMs, kHousekeepingMs);
  if (probe_)
    if (auto st = start_metrics(); !st) return st;
  // Last: it may start the components and listen (became_leader) at once.
  if (auto st = replication_->start(); !st) return st;
  if (config_.cluster.enabled()) {
    cluster_ = std::make_unique<ClusterCoordinator>(
        &loop_, config_, *replication_, probe_ ? &registry_ : nullptr,
        ClusterCoordinator::Hooks{[this](const std::string& why) {
          // Nothing of its leading may survive: the broker starts again, as a follower.
          restart_reason_ = why;
          begin_shutdown("stepping down");
        }});
    cluster_->start();
  }
  // With [cluster] every broker starts as a follower, listening (it answers NotLeader).
  const bool awaits_epoch =
      config_.replication.enabled() && config_.replication.leader && !config_.cluster.enabled() && !topics_;
  if (!awaits_epoch && !listener_.loop)
    if (auto st = listen(); !st) return st;
  return {};
}

Status Broker::start_components() {
  // The topic log first: the other components read its table and append through it.
  topics_ = std::make_unique<TopicLog>(config_, *store_, *writer_, *scheduler_, kRetentionTarget, responder_,
                                       probe_.get());
  if (auto st = topics_->load(); !st) return st;
  groups_ = std::make_unique<ConsumerGroups>(&loop_, *store_, *writer_, *scheduler_,
                                             ConsumerGroups::Targets{kDelayedTarget, kFirstGroupTarget},
                                             topics_->table(), responder_, *topics_, probe_.get());
  if (auto st = groups_->start(); !st) return st;
  txns_ = std::make_unique<TransactionCoordinator>(config_, *store_, *writer_, *scheduler_, kTxnCheckTarget,
                                                   topics_->table(), responder_, *topics_, probe_.get());
  txns_->start();
  topics_->start(*groups_, *txns_);
  spdlog::info("txmq-broker {} serving {} topics from {}", kVersion, topics_->table().size(), config_.data_dir);
  // No producer group waits here from before: a follower refuses their hellos.
  return {};
}

Status Broker::listen() {
  auto resolved = common::listen_address(&loop_, "broker.listen", config_.listen);
  if (!resolved) return resolved.error();
  sockaddr_storage addr = *resolved;
  // Judged on the address to bind, not on the text: a name may resolve anywhere. Refused
  // before binding, so that not even one connection reaches an open port.
  if (!common::is_loopback_ip(common::host_port_of(addr).host)) {
    const std::string resolved_text = common::address_text(addr);
    const std::string shown =
        resolved_text == config_.listen ? resolved_text : config_.listen + " (" + resolved_text + ")";
    if (!config_.auth_enabled && !config_.allow_insecure)
      return Error(ErrorCode::kInvalidArgument,
                   "broker.listen " + shown +
                       " is not a loopback address and auth.enabled is false: anyone who can reach the port "
                       "could read, write and delete every topic. Turn on [auth], or set broker.allow_insecure "
                       "= true to serve it anyway");
    // allow_insecure is a decision an operator should be reminded of at every start.
    if (!config_.auth_enabled)
      spdlog::warn("listening on {}, which is not a loopback address: clients are not authenticated "
                   "(broker.allow_insecure = true), so anyone who can reach this port can read, write and "
                   "delete every topic; bind 127.0.0.1 unless a firewall guards the port",
                   shown);
  }
  uv_tcp_init(&loop_, &listener_);
  int rc = uv_tcp_bind(&listener_, reinterpret_cast<sockaddr*>(&addr), 0);
  if (rc == 0)
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 511, [](uv_stream_t* s, int status) {
      static_cast<Broker*>(s->data)->on_accept(s, status);
    });
  if (rc != 0)
    return Error(ErrorCode::kInvalidArgument,
                 "cannot listen on " + config_.listen + ": " + uv_strerror(rc));
  if (tls_) {
    static constexpr const char* kAuth[] = {"not asked for", "optional", "required"};
    spdlog::info("TLS on the protocol port (certificate {}; client certificates {})", config_.tls_files.cert_file,
                 kAuth[static_cast<int>(config_.tls_client_auth)]);
  }
  // Scripts and tests wait for exactly this line to learn the real port.
  std::printf("listening on %s\n", sockname(&listener_).c_str());
  std::fflush(stdout);
  return {};
}

void Broker::on_accept(uv_stream_t* server, int status) {
  if (shutting_down_) return;
  auto now = std::chrono::steady_clock::now();
  const bool may_log = now - last_accept_error_log_ >= std::chrono::seconds(1);  // once a second
  if (status < 0) {
    // Out of file descriptors (EMFILE/ENFILE) or memory. (On EMFILE libuv mostly accepts and
    // closes the waiting connections itself without telling us; the warning below, as the
    // limit nears, is the one that shows reliably.)
    if (probe_) probe_->accept_failed();
    if (may_log) {
      last_accept_error_log_ = now;
      spdlog::error("cannot accept a connection: {} ({} connections open; raise the open-files limit, "
                    "ulimit -n)",
                    uv_strerror(status), connections_.size());
    }
    return;
  }
  if (probe_) probe_->connection_accepted();
  auto conn = std::make_unique<Connection>(next_connection_id_++, *this, limits_, *budget_, tls_.get());
  Connection* c = conn.get();
  connections_[c->id()] = std::move(conn);
  if (!c->accept(server)) return;
  spdlog::debug("connection {} from {}", c->id(), c->peer());
  // Descriptors are handed out lowest first, so one this close to the limit means it is
  // nearly reached: past it the kernel drops new connections before the broker sees them.
  constexpr int kFdHeadroom = 16;
  if (const int fd = c->fd(); max_fds_ > 0 && fd + kFdHeadroom >= max_fds_ && may_log) {
    last_accept_error_log_ = now;
    spdlog::error("connection {} took file descriptor {} of the open-files limit {} ({} connections open): "
                  "new connections will be refused; raise the limit (ulimit -n, LimitNOFILE)",
                  c->id(), fd, max_fds_, connections_.size());
  }
}

void Broker::begin_shutdown(const char* why) {
  if (shutting_down_) return;
  shutting_down_ = true;
  if (why) spdlog::info("{}: shutting down", why);
  // Stop taking work: no new connections, nothing more read or served. Requests being
  // written are answered; whole frames still buffered behind a paused connection are not
  // served (nor acknowledged: a client sends them again after the restart).
  if (listener_.loop) uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  for (auto& [id, conn] : connections_) conn->pause_reading();
  if (groups_) groups_->stop_dispatching();  // what consumers hold is delivered after restart
  if (cluster_) {
    // Confirms nothing more: once the lease is revoked another broker may lead.
    replication_->set_fenced(true, "shutting down");
    cluster_->close([] {});
  }
  if (replication_ && !replication_closed_) {
    replication_closed_ = true;
    replication_->close([] {});
  }
  auto finish = [this] {
    writer_stopped_ = true;
    limits_.linger = std::chrono::milliseconds(0);
    for (auto& [id, conn] : connections_) conn->close_after_flush();
    maybe_finish_shutdown();
  };
  if (writer_)
    writer_->stop(finish);  // completes every queued op first, so each produce is answered
  else
    finish();
}

void Broker::maybe_finish_shutdown() {
  if (!shutting_down_ || !writer_stopped_ || !connections_.empty()) return;
  // The last handles; once they are closed the loop has nothing left and run() returns.
  for (auto* h : {reinterpret_cast<uv_handle_t*>(&sigint_), reinterpret_cast<uv_handle_t*>(&sigterm_),
                  reinterpret_cast<uv_handle_t*>(&sighup_), reinterpret_cast<uv_handle_t*>(&housekeeping_timer_)})
    if (h->loop && !uv_is_closing(h)) uv_close(h, nullptr);
  if (auth_) auth_->close();
  if (scheduler_) scheduler_->close();
  budget_->close();
  if (http_ && !http_closing_) {
    http_closing_ = true;
    http_->close([] {});
  }
}

void Broker::send_heartbeat(Connection& conn) {
  auto& fbb = responder_.fbb();
  fbb.Clear();
  responder_.send_frame(conn, RequestId(), wire::Body::Heartbeat, wire::CreateHeartbeat(fbb).Union());
}

void Broker::close_for_timeout(Connection& conn, std::string_view reason, std::string_view what,
                               std::chrono::milliseconds limit) {
  if (probe_) probe_->connection_closed(reason);
  responder_.reply_error(
      conn, RequestId(), Error(ErrorCode::kTimeout, std::string(what) + " (" + std::to_string(limit.count()) + " ms)"), true);
}

void Broker::housekeeping() {
  auto now = std::chrono::steady_clock::now();
  // A loop held up since the last look has not read what came meanwhile: no one is silent.
  const bool stalled = now - last_housekeeping_ > std::chrono::milliseconds(4 * kHousekeepingMs);
  last_housekeeping_ = now;
  std::vector<Connection*> late;
  for (auto& [id, conn] : connections_) {
    if (conn->overdue(now) != Overdue::kNone) late.push_back(conn.get());
    else if (conn->heartbeat_due(now)) send_heartbeat(*conn);
  }
  for (Connection* conn : late) {
    switch (conn->overdue(now)) {
      case Overdue::kLinger: conn->close(); break;
      case Overdue::kSilent:
        // A peer gone without a FIN (a dead machine, a cut network, a stopped process):
        // closed at once, not after a flush its full socket may never take, so that its
        // deliveries go back to its group and its transaction checks to live connections.
        if (stalled) break;
        if (probe_) probe_->connection_closed("heartbeat_timeout");
        spdlog::info("connection {} from {}: nothing heard for {} heartbeat intervals of {} ms; closing", conn->id(),
                     conn->peer(), Connection::kHeartbeatMisses, conn->heartbeat().count());
        conn->close();
        break;
      case Overdue::kHello:
        close_for_timeout(*conn, "hello_timeout", "no hello within limits.hello_timeout_ms", limits_.hello_timeout);
        break;
      case Overdue::kFrame:
        close_for_timeout(*conn, "frame_timeout", "a frame was not received whole within limits.frame_timeout_ms",
                          limits_.frame_timeout);
        break;
      case Overdue::kOutput:
        // Nothing more can reach a client that does not read; what it was sent is dropped
        // (a consumer's deliveries go back to its group).
        if (probe_) probe_->connection_closed("output_timeout");
        spdlog::info("connection {} from {}: not reading its answers ({} bytes queued for over {} ms); closing",
                     conn->id(), conn->peer(), conn->output_bytes(), limits_.output_timeout.count());
        conn->close();
        break;
      case Overdue::kNone: break;
    }
  }
}

void Broker::on_scheduler_due(Scheduler::Target target) {
  loop_thread_.check();
  if (shutting_down_ || !topics_) return;
  if (target == kRetentionTarget) return topics_->retention_due();
  if (target == kTxnCheckTarget) return txns_->check_round();
  groups_->wake(target);
}

void Broker::on_closed(Connection& conn) {
  loop_thread_.check();
  if (groups_) groups_->connection_closed(conn, shutting_down_);
  if (txns_) txns_->producer_left(conn);
  if (auth_) auth_->connection_closed(conn);
  responder_.connection_closed(conn);
  spdlog::debug("connection {} closed", conn.id());
  connections_.erase(conn.id());
  maybe_finish_shutdown();
}

void Broker::on_stream_error(Connection& conn, const Error& error) {
  if (probe_) {
    probe_->request_error(error.code);
    probe_->connection_closed(error.code == ErrorCode::kFrameTooLarge ? "frame_too_large" : "malformed_frame");
  }
}

void Broker::on_tls_refused(Connection& conn, std::string_view reason) {
  if (probe_) probe_->connection_closed(reason);
}

void Broker::on_writable(Connection& conn) {
  if (shutting_down_ || !groups_) return;
  groups_->connection_writable(conn);
}

void Broker::on_frame(Connection& conn, std::span<const std::uint8_t> bytes) {
  loop_thread_.check();
  const wire::Frame* frame = common::verify_frame(bytes);
  if (!frame) {
    if (probe_) probe_->connection_closed("malformed_frame");
    responder_.reply_error(conn, RequestId(), Error(ErrorCode::kMalformedFrame, "frame failed verification"), true);
    return;
  }
  const RequestId rid(frame->request_id());
  const wire::Body type = frame->body_type();
  // The verifier accepts a union member that is absent; every handler needs its body.
  if (frame->body() == nullptr) {
    responder_.reply_error(conn, rid, Error(ErrorCode::kMalformedFrame, "frame has no body"), true);
    return;
  }
  if (!conn.hello_done()) {
    if (type == wire::Body::Hello) return handle_hello(conn, rid, *frame->body_as_Hello());
    if (type == wire::Body::AuthResponse) return auth_->respond(conn, rid, *frame->body_as_AuthResponse());
    responder_.reply_error(conn, rid, Error(ErrorCode::kHelloRequired), true);
    return;
  }
  // Its arrival was the point (Connection::overdue); it is never answered.
  if (type == wire::Body::Heartbeat) return;
  if (shutting_down_) {
    responder_.reply_error(conn, rid, Error(ErrorCode::kShuttingDown));
    return;
  }
  // Before the permission check, so that a refused operator action is in the trail too.
  audit(conn, rid, *frame);
  // What each request needs is in broker/request_access.h; with authentication off this
  // branch is all it costs.
  if (conn.access.restricted())
    if (auto st = authorize(conn.access, conn.producer_group, *frame); !st)
      return responder_.reply_error(conn, rid, st.error());
  switch (type) {
    case wire::Body::ReplicaFetch:
    case wire::Body::SnapshotFetch:
    case wire::Body::ClusterStatus:
    case wire::Body::Promote:
    case wire::Body::GetDigest: return handle_cluster(conn, rid, *frame);
    default: break;
  }
  // A follower serves no client; a sync leader below min_insync takes no write.
  if (auto refusal = replication_->refuse(type)) return responder_.reply_error(conn, rid, *refusal);
  if (type == wire::Body::GetStats) return handle_stats(conn, rid);
  switch (type) {
    case wire::Body::Produce: return topics_->produce(conn, rid, bytes, *frame->body_as_Produce());
    case wire::Body::CreateTopic: return topics_->create(conn, rid, *frame->body_as_CreateTopic());
    case wire::Body::DeleteTopic: return topics_->remove(conn, rid, *frame->body_as_DeleteTopic());
    case wire::Body::DescribeTopic: return topics_->describe(conn, rid, *frame->body_as_DescribeTopic());
    case wire::Body::ListTopics: return topics_->list(conn, rid);
    case wire::Body::Subscribe: return groups_->subscribe(conn, rid, *frame->body_as_Subscribe());
    case wire::Body::Settle: return groups_->settle(conn, rid, *frame->body_as_Settle());
    case wire::Body::ConfigureGroup: return groups_->configure(conn, rid, *frame->body_as_ConfigureGroup());
    case wire::Body::DescribeGroups: return groups_->describe(conn, rid, *frame->body_as_DescribeGroups());
    case wire::Body::Fetch: return topics_->fetch(conn, rid, *frame->body_as_Fetch());
    case wire::Body::Redrive: return groups_->redrive(conn, rid, *frame->body_as_Redrive());
    case wire::Body::Prepare: return txns_->prepare(conn, rid, bytes, *frame->body_as_Prepare());
    case wire::Body::EndTransactions: return txns_->end(conn, rid, *frame->body_as_EndTransactions());
    case wire::Body::ListTransactions: return txns_->list(conn, rid, *frame->body_as_ListTransactions());
    case wire::Body::Hello:
      return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "hello sent twice"));
    default:
      return responder_.reply_error(conn, rid,
                                    Error(ErrorCode::kUnknownRequest, "request type " +
                                                                          std::to_string(static_cast<int>(type)) +
                                                                          " is not a request this broker serves"));
  }
}

void Broker::handle_hello(Connection& conn, RequestId rid, const wire::Hello& req) {
  if (req.protocol_version() != kProtocolVersion) {
    responder_.reply_error(conn, rid,
                           Error(ErrorCode::kUnsupportedVersion,
                                 "client speaks protocol " + std::to_string(req.protocol_version()) +
                                     ", this broker speaks " + std::to_string(kProtocolVersion)),
                           true);
    return;
  }
  std::string producer_group = req.producer_group() ? req.producer_group()->str() : "";
  if (!producer_group.empty() && !valid_name(producer_group)) {
    responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "invalid producer group name"), true);
    return;
  }
  conn.client_name = req.client_name() ? req.client_name()->str() : "";
  conn.producer_group = std::move(producer_group);
  conn.heartbeat_asked = std::chrono::milliseconds(req.heartbeat_ms());
  auth_->hello(conn, rid, req);
}

void Broker::finish_hello(Connection& conn, RequestId rid, Authenticator::Verdict verdict) {
  // Answering a producer group's checks is acting for it.
  if (!conn.producer_group.empty() && !conn.access.allows(Operation::kTransact, ResourceType::kProducerGroup,
                                                          conn.producer_group))
    return auth_->refuse(
        conn, rid, conn.access.refusal(Operation::kTransact, ResourceType::kProducerGroup, conn.producer_group),
        "permission");
  // Only the leader sends check-backs: a transactional producer that settled on a follower,
  // or on a leader fenced off from etcd (after its last send, on a reconnection), would
  // never be asked about its transactions. Told NotLeader now, its client goes on to the
  // leader as it does for any refused request.
  if (!conn.producer_group.empty())
    if (auto refusal = replication_->refuse_producer_group()) return responder_.reply_error(conn, rid, *refusal, true);
  conn.hello_completed();
  // A client that asked for heartbeats gets them at its interval, or at the broker's
  // shortest: a client cannot make the broker send them as fast as it likes.
  if (conn.heartbeat_asked.count() > 0)
    conn.set_heartbeat(std::clamp(conn.heartbeat_asked, config_.heartbeat_min, kMaxHeartbeat));
  if (!conn.producer_group.empty() && txns_) txns_->producer_joined(conn);
  spdlog::debug("connection {} from {} is '{}'", conn.id(), conn.peer(), conn.client_name);
  auto& fbb = responder_.fbb();
  fbb.Clear();
  auto body = wire::CreateHelloOk(
      fbb, kProtocolVersion, fbb.CreateString(kVersion.data(), kVersion.size()), config_.max_frame_bytes,
      config_.max_message_bytes, fbb.CreateString(verdict.user),
      verdict.final_message.empty()
          ? 0
          : fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(verdict.final_message.data()),
                             verdict.final_message.size()),
      static_cast<std::uint32_t>(conn.heartbeat().count()));
  responder_.send_frame(conn, rid, wire::Body::HelloOk, body.Union());
}

void Broker::audit(Connection& conn, RequestId rid, const wire::Frame& frame) {
  auto str = [](const flatbuffers::String* s) { return s ? s->str() : std::string(); };
  switch (frame.body_type()) {
    case wire::Body::CreateTopic:
      return responder_.audit_on_answer(conn, rid, {{}, {}, "topic.create", "topic:" + str(frame.body_as_CreateTopic()->name()), {}});
    case wire::Body::DeleteTopic:
      return responder_.audit_on_answer(conn, rid, {{}, {}, "topic.delete", "topic:" + str(frame.body_as_DeleteTopic()->name()), {}});
    case wire::Body::ConfigureGroup: {
      const auto* req = frame.body_as_ConfigureGroup();
      std::string resource = req->group() && req->group()->size() ? "group:" + str(req->group()) : "";
      if (req->topic() && req->topic()->size()) resource += (resource.empty() ? "topic:" : " topic:") + str(req->topic());
      return responder_.audit_on_answer(conn, rid, {{}, {}, "group.configure", resource, {}});
    }
    case wire::Body::Redrive: {
      const auto* req = frame.body_as_Redrive();
      const std::size_t n = req->offsets() ? req->offsets()->size() : 0;
      return responder_.audit_on_answer(conn, rid, {{}, {}, "group.redrive",
                                                    "group:" + str(req->group()) + " letters:" + std::to_string(n), {}});
    }
    case wire::Body::EndTransactions: {
      const auto* req = frame.body_as_EndTransactions();
      if (!req->operator_() || !req->items()) return;
      std::string resource = "transactions:";
      std::size_t listed = 0;
      for (const auto* item : *req->items()) {
        if (listed++ == 20) {
          resource += ",...(" + std::to_string(req->items()->size()) + " in all)";
          break;
        }
        resource += (listed > 1 ? "," : "") + std::to_string(item->transaction_id()) + "=" +
                    wire::EnumNameTxnAction(item->action());
      }
      return responder_.audit_on_answer(conn, rid, {{}, {}, "transactions.end", resource, {}});
    }
    default: return;
  }
}

void Broker::handle_cluster(Connection& conn, RequestId rid, const wire::Frame& frame) {
  switch (frame.body_type()) {
    case wire::Body::ReplicaFetch: return replication_->fetch(conn, rid, *frame.body_as_ReplicaFetch());
    case wire::Body::SnapshotFetch: return replication_->snapshot_fetch(conn, rid, *frame.body_as_SnapshotFetch());
    case wire::Body::ClusterStatus: return replication_->status(conn, rid);
    case wire::Body::Promote: return replication_->promote(conn, rid, *frame.body_as_Promote());
    case wire::Body::GetDigest: return replication_->digest(conn, rid);
    default: return;
  }
}

void Broker::handle_stats(Connection& conn, RequestId rid) {
  // A follower has no components: its Stats count no topics, messages or groups.
  const TopicLog::Totals produced = topics_ ? topics_->totals() : TopicLog::Totals{};
  const ConsumerGroups::Totals groups = groups_ ? groups_->totals() : ConsumerGroups::Totals{};
  auto usage = store_->usage();
  auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_);
  auto& fbb = responder_.fbb();
  fbb.Clear();
  auto body = wire::CreateStats(fbb, fbb.CreateString(kVersion.data(), kVersion.size()),
                                static_cast<std::uint64_t>(uptime.count()),
                                static_cast<std::uint32_t>(connections_.size()),
                                static_cast<std::uint32_t>(topics_ ? topics_->table().size() : 0), produced.messages,
                                produced.bytes,
                                groups.delivered, groups.acked, usage.used_bytes, usage.max_bytes,
                                writer_->commits());
  responder_.send_frame(conn, rid, wire::Body::Stats, body.Union());
}

}  // namespace txmq::broker

namespace txmq::broker {

Status Broker::start_metrics() {
  metrics::register_process_metrics(registry_);
  registry_.callback_gauge("txmq_connections", "Open client connections.",
                           [this] { return static_cast<double>(connections_.size()); });
  registry_.callback_gauge("txmq_topics", "Topics.", [this] {
    return topics_ ? static_cast<double>(topics_->table().size()) : 0.0;
  });
  registry_.callback_gauge("txmq_connection_input_bytes",
                           "Bytes reserved for frames being received, all connections together.",
                           [this] { return static_cast<double>(budget_->input_bytes()); });
  registry_.callback_gauge("txmq_connection_output_bytes",
                           "Answer bytes queued and not yet written, all connections together.",
                           [this] { return static_cast<double>(budget_->output_bytes()); });
  registry_.callback_counter("txmq_connection_input_waits_total",
                             "Frames that waited because limits.total_input_bytes was reserved.",
                             [this] { return static_cast<double>(budget_->input_waits()); });
  registry_.callback_counter("txmq_connection_output_stalls_total",
                             "Times all connections stopped serving because limits.total_output_bytes was queued.",
                             [this] { return static_cast<double>(budget_->output_stalls()); });
  registry_.callback_gauge("txmq_storage_map_size_bytes",
                           "storage.max_size: the live bytes past which produce gets StorageFull.",
                           [this] { return static_cast<double>(store_->usage().max_bytes); });
  registry_.callback_gauge("txmq_storage_used_bytes", "Live bytes in the data file (free pages not counted).",
                           [this] { return static_cast<double>(store_->usage().used_bytes); });
  registry_.callback_gauge("txmq_storage_file_bytes",
                           "The data file's end: the most it ever held, at most storage.max_size plus the reserve.",
                           [this] { return static_cast<double>(store_->usage().file_bytes); });
  registry_.gauge_family("txmq_build_info", "Always 1; the version is a label.", {"version"})
      .with({std::string_view(kVersion)})
      .set(1);
  registry_.callback_gauge("txmq_idempotent_producers",
                           "Idempotent producers whose last batches are remembered for resends.",
                           [this] { return static_cast<double>(store_->producer_count()); });
  registry_.callback_gauge("txmq_transactions_pending", "Half messages prepared and not yet ended (parked excluded).",
                           [this] { return static_cast<double>(store_->txn_counts().prepared); });
  registry_.callback_gauge("txmq_transactions_parked", "Transactions whose checks ran out, waiting for an operator.",
                           [this] { return static_cast<double>(store_->txn_counts().parked); });
  registry_.callback_gauge("txmq_transaction_oldest_pending_age_seconds",
                           "Age of the oldest prepared transaction; 0 when there is none.", [this] {
                             auto oldest = store_->txn_counts().oldest_prepared_ms;
                             const auto now = wall_ms();
                             return oldest && now > oldest ? static_cast<double>(now - oldest) / 1000.0 : 0.0;
                           });
  // Scrapes render on the loop thread, so the groups may read their loop-owned state.
  registry_.on_render([this] {
    if (groups_) groups_->refresh_metrics();
  });

  auto resolved = common::listen_address(&loop_, "broker.metrics_listen", config_.metrics_listen);
  if (!resolved) return resolved.error();
  const auto hp = common::host_port_of(*resolved);
  metrics::HttpEndpointOptions options;
  if (config_.tls_metrics) {
    // A context of its own: the protocol port's may ask for client certificates, which a
    // Prometheus server scraping the page would have to be given.
    common::TlsFiles files = config_.tls_files;
    files.ca_file.clear();
    auto tls = common::TlsContext::server(files, common::TlsClientAuth::kNone);
    if (!tls) return Error(tls.error().code, "tls." + tls.error().message);
    options.tls = std::move(*tls);
  }
  // The page names topics and groups (no messages): worth a warning, not a refusal.
  if (!common::is_loopback_ip(hp.host) && !config_.tls_metrics)
    spdlog::warn("metrics on {}, which is not a loopback address, without TLS: anyone who can reach it can read "
                 "the names of topics and groups; bind 127.0.0.1, or set tls.metrics = true",
                 config_.metrics_listen);
  http_ = std::make_unique<metrics::HttpEndpoint>(&loop_, registry_, options);
  auto bound = http_->listen(hp.host, hp.port);
  if (!bound.ok())
    return Error(ErrorCode::kInvalidArgument,
                 "cannot serve metrics on " + config_.metrics_listen + ": " + uv_strerror(bound.error));
  if (config_.tls_metrics) spdlog::info("TLS on the metrics endpoint (certificate {})", config_.tls_files.cert_file);
  std::printf("metrics on %s\n", common::HostPort{bound.host, bound.port}.to_string().c_str());
  return {};
}

}  // namespace txmq::broker
