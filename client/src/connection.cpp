#include "connection.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cassert>
#include <random>

#include "common/address.h"
#include "common/version.h"

namespace txmq::client::detail {
namespace {

// How often request deadlines and the connect deadline are checked. A request times out
// at most this late.
constexpr std::uint64_t kTickMs = 20;
// Longer asked-for heartbeat intervals are cut to this (an hour: the wire field is 32 bits).
constexpr Millis::rep kMaxHeartbeatMs = 3'600'000;
// A connect attempt to one address that has not completed by then is abandoned for the
// next address (or the next round); so is a hello not answered by then.
constexpr auto kConnectTimeout = std::chrono::seconds(5);

struct WriteReq {
  uv_write_t req;
  std::vector<std::uint8_t> buf;
};

}  // namespace

Status as_status(const wire::Frame& frame) {
  if (frame.body_type() != wire::Body::Error) return {};
  const auto* e = frame.body_as_Error();
  ErrorCode code = error_code_from_wire(e->code());
  Error error(code, e->message() ? e->message()->str() : std::string(default_message(code)));
  if (e->leader()) error.leader = e->leader()->str();
  error.leader_epoch = e->leader_epoch();
  return error;
}

Connection::Connection(ClientOptions options, Hooks hooks, uv_loop_t* hosted)
    : options_(std::move(options)), hooks_(std::move(hooks)), backoff_(options_.reconnect_initial) {
  if (hosted) {
    loop_ = hosted;
    hosted_ = true;
  }
}

Connection::~Connection() {
  // A hosted connection's handles belong to a loop that outlives it: dispose() waits for them.
  if (hosted_)
    assert(open_handles_ == 0);
  else
    stop();
}

void Connection::start() {
  if (!hosted_) uv_loop_init(loop_);
  wake_.data = tick_.data = reconnect_.data = user_timer_.data = this;
  uv_async_init(loop_, &wake_, [](uv_async_t* h) { static_cast<Connection*>(h->data)->drain_posted(); });
  uv_timer_init(loop_, &tick_);
  uv_timer_init(loop_, &reconnect_);
  uv_timer_init(loop_, &user_timer_);
  open_handles_ = 4;
  started_ = Clock::now();
  if (hosted_) {
    thread_id_ = std::this_thread::get_id();
    return begin();
  }
  std::lock_guard lock(mu_);  // run() waits for thread_id_ to be set
  thread_ = std::thread([this] { run(); });
  thread_id_ = thread_.get_id();
}

void Connection::stop() {
  assert(!hosted_);
  {
    std::lock_guard lock(mu_);
    if (stopping_ || !thread_.joinable()) return;
    stopping_ = true;
  }
  uv_async_send(&wake_);
  thread_.join();
  uv_loop_close(loop_);
}

void Connection::dispose(std::unique_ptr<Connection> connection) {
  if (!connection || !connection->hosted_) return;  // ~Connection stops a threaded one
  Connection* self = connection.release();
  assert(self->on_io_thread() || self->open_handles_ == 0);
  if (self->open_handles_ == 0) {  // never started
    delete self;
    return;
  }
  {
    std::lock_guard lock(self->mu_);
    self->stopping_ = true;
  }
  self->free_when_closed_ = true;
  // Callers up the stack (a read, a frame's callback) see kStopped and tcp_ gone, and
  // return; the memory stays until the handles' close callbacks, after they have.
  self->close_loop();
}

void Connection::handle_closed(uv_handle_t* handle) {
  auto* self = static_cast<Connection*>(handle->data);
  if (handle->type == UV_TCP) delete reinterpret_cast<uv_tcp_t*>(handle);
  if (--self->open_handles_ == 0 && self->free_when_closed_) delete self;
}

void Connection::close_tcp() {
  if (!tcp_) return;
  // Its requests' callbacks (a write's, a connect's) run before this close callback: the
  // connection stays until it.
  uv_close(reinterpret_cast<uv_handle_t*>(tcp_), handle_closed);
  tcp_ = nullptr;
}

bool Connection::post(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    posted_.push_back(std::move(fn));
  }
  uv_async_send(&wake_);
  return true;
}

void Connection::run() {
  { std::lock_guard lock(mu_); }
  // A write to a socket the broker closed raises SIGPIPE in the writing thread, which would
  // kill the application. Blocked here, the write fails with EPIPE and we reconnect.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  begin();
  uv_run(loop_, UV_RUN_DEFAULT);
}

void Connection::begin() {
  uv_timer_start(&tick_, [](uv_timer_t* t) { static_cast<Connection*>(t->data)->check_deadlines(); }, kTickMs, kTickMs);
  connect();
}

void Connection::drain_posted() {
  std::vector<std::function<void()>> work;
  bool stopping;
  {
    std::lock_guard lock(mu_);
    work.swap(posted_);
    stopping = stopping_;
  }
  for (auto& fn : work) fn();
  if (stopping && state_ != State::kStopped) close_loop();
}

void Connection::close_loop() {
  state_ = State::kStopped;
  fail_all(Error(ErrorCode::kClosed), true);
  // A lookup already running cannot be stopped: the loop runs until its worker is done.
  common::cancel_resolve(resolving_);
  resolving_ = nullptr;
  close_tcp();
  for (auto* h : {reinterpret_cast<uv_handle_t*>(&wake_), reinterpret_cast<uv_handle_t*>(&tick_),
                  reinterpret_cast<uv_handle_t*>(&reconnect_), reinterpret_cast<uv_handle_t*>(&user_timer_)})
    uv_close(h, handle_closed);
}

void Connection::set_timer(Millis delay, std::function<void()> fn) {
  assert(on_io_thread());
  if (state_ == State::kStopped) return;
  user_timer_fn_ = std::move(fn);
  uv_timer_start(&user_timer_, [](uv_timer_t* t) {
    auto* self = static_cast<Connection*>(t->data);
    auto fn = std::move(self->user_timer_fn_);
    self->user_timer_fn_ = nullptr;
    if (fn) fn();
  }, static_cast<std::uint64_t>(delay.count()), 0);
}

void Connection::connect() {
  if (state_ == State::kStopped) return;
  if (!brokers_) {
    auto list = BrokerList::parse(options_.broker);
    if (!list) {
      // A bad address never gets better: fail what waits, keep failing what comes.
      fail_all(Error(ErrorCode::kInvalidArgument, "broker address: " + list.error().message), true);
      schedule_reconnect();
      return;
    }
    brokers_ = std::move(*list);
  }
  if (options_.tls.enabled && !tls_context_) {
    auto tls = common::TlsContext::client({options_.tls.cert_file, options_.tls.key_file, options_.tls.ca_file});
    if (!tls) {
      // Like a bad address: the files do not get better by retrying soon, but may be fixed.
      last_error_ = Error(ErrorCode::kInvalidArgument, "TLS: " + tls.error().message);
      fail_all(last_error_, true);
      schedule_reconnect();
      return;
    }
    tls_context_ = std::move(*tls);
  }
  round_errors_.clear();
  brokers_->start_round();
  resolve_entry();
}

void Connection::resolve_entry() {
  const common::HostPort& hp = brokers_->current_entry();
  host_ = hp.host;
  // Resolved again on every round: a name may move to other addresses while we retry.
  state_ = State::kResolving;
  resolving_ = common::resolve_async(loop_, hp, [this](Result<common::Addresses> r) {
    resolving_ = nullptr;
    on_resolved(std::move(r));
  });
}

void Connection::next_entry() {
  if (brokers_->next()) {
    resolve_entry();
    return;
  }
  disconnected(Error(ErrorCode::kNotConnected, "cannot connect to " + options_.broker + ": " + round_errors_));
}

void Connection::on_resolved(Result<common::Addresses> addresses) {
  if (state_ != State::kResolving) return;
  if (!addresses) {
    if (brokers_->size() == 1) {
      disconnected(addresses.error());  // names the host and says why
      return;
    }
    round_errors_ += (round_errors_.empty() ? "" : "; ") + addresses.error().message;
    next_entry();
    return;
  }
  addresses_ = std::move(*addresses);
  next_address_ = 0;
  connect_next();
}

void Connection::connect_next() {
  const sockaddr_storage& addr = addresses_[next_address_++];
  tcp_ = new uv_tcp_t;
  uv_tcp_init(loop_, tcp_);
  tcp_->data = this;
  ++open_handles_;
  // Heap: a cancelled attempt's request is still linked until its callback, which may come
  // after the next attempt has started.
  auto* req = new uv_connect_t;
  req->data = this;
  state_ = State::kConnecting;
  connect_started_ = Clock::now();
  int rc = uv_tcp_connect(req, tcp_, reinterpret_cast<const sockaddr*>(&addr), [](uv_connect_t* req, int status) {
    auto* self = static_cast<Connection*>(req->data);
    delete req;
    if (status != UV_ECANCELED) self->on_connected(status);  // cancelled: the handle closed
  });
  if (rc != 0) {
    delete req;
    attempt_failed(uv_strerror(rc));
  }
}

void Connection::attempt_failed(const std::string& why) {
  close_tcp();
  const std::string address = common::address_text(addresses_[next_address_ - 1]);
  // A literal address alone needs no repeating; a name, or an entry of a list, says which
  // of its addresses failed how.
  const bool alone = brokers_->size() == 1 && address == brokers_->current_entry().to_string();
  round_errors_ += (round_errors_.empty() ? "" : "; ") + (alone ? why : address + ": " + why);
  if (next_address_ < addresses_.size()) {
    connect_next();
    return;
  }
  next_entry();
}

bool Connection::failing_fast() const { return options_.first_connect_timeout.count() > 0 && !ever_ready_; }

void Connection::on_connected(int status) {
  if (status == UV_ECANCELED || state_ != State::kConnecting) return;
  if (status != 0) {
    attempt_failed(uv_strerror(status));
    return;
  }
  uv_tcp_nodelay(tcp_, 1);
  heard_ = false;
  start_reading();
  if (!tls_context_) {
    send_hello();
    return;
  }
  auto session = common::TlsSession::connect(*tls_context_, host_);
  if (!session) {
    attempt_failed(session.error().message);
    return;
  }
  tls_ = std::move(*session);
  state_ = State::kHandshake;
  // The first read() writes the ClientHello; the broker's answer moves the handshake on.
  std::uint8_t none[1];
  if (auto started = tls_->read(none, 0); !started) {
    disconnected(Error(ErrorCode::kNotConnected, started.error().message));
    return;
  }
  flush_writes();
}

void Connection::start_reading() {
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(tcp_),
      [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
        auto* self = static_cast<Connection*>(h->data);
        *buf = uv_buf_init(self->read_buf_, sizeof(self->read_buf_));
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
        auto* self = static_cast<Connection*>(s->data);
        if (nread == 0) return;
        if (nread < 0) self->read_failed(nread);
        else self->received(self->read_buf_, static_cast<std::size_t>(nread));
      });
}

void Connection::read_failed(ssize_t status) {
  const std::string why = uv_strerror(static_cast<int>(status));
  if (state_ == State::kHandshake) {
    // A broker without TLS on this port closes as soon as it sees the ClientHello.
    disconnected(Error(ErrorCode::kNotConnected,
                       heard_ ? "TLS handshake failed: the broker closed the connection (" + why + ")"
                              : "the broker did not answer with TLS (it closed the connection: " + why +
                                    "); is tls.enabled set on its port?"));
    return;
  }
  disconnected(Error(ErrorCode::kConnectionLost, "connection lost: " + why));
}

void Connection::received(const char* data, std::size_t len) {
  const bool first = !heard_;
  heard_ = true;
  last_heard_ = Clock::now();
  const std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(data), len);
  if (tls_) {
    if (first && !common::looks_like_tls_record(bytes)) {
      disconnected(Error(ErrorCode::kNotConnected, "the broker did not answer with TLS; is tls.enabled set on its port?"));
      return;
    }
    received_tls(data, len);
    return;
  }
  if (first && state_ == State::kHello && common::looks_like_tls_record(bytes)) {
    disconnected(Error(ErrorCode::kNotConnected,
                       "the broker answered with TLS: connect with TLS (ClientOptions::tls, txmq --tls)"));
    return;
  }
  decode(data, len);
}

void Connection::received_tls(const char* data, std::size_t len) {
  tls_->feed(reinterpret_cast<const std::uint8_t*>(data), len);
  std::uint8_t plain[16 * 1024];  // one TLS record's plaintext at most
  for (;;) {
    auto n = tls_->read(plain, sizeof(plain));
    if (!n) {
      // Before the hello was answered this is a refused connection (the broker did not
      // accept our certificate, or we not its), not a lost one.
      const bool refused = state_ == State::kHandshake || state_ == State::kHello;
      disconnected(Error(refused ? ErrorCode::kNotConnected : ErrorCode::kConnectionLost, n.error().message));
      return;
    }
    if (*n == 0) break;
    decode(reinterpret_cast<const char*>(plain), *n);
    if (!tls_) return;  // a frame ended the connection
  }
  if (tls_->peer_closed()) {
    disconnected(Error(ErrorCode::kConnectionLost, "connection lost: the broker closed the TLS session"));
    return;
  }
  if (state_ == State::kHandshake && tls_->handshake_done()) send_hello();
  if (!write_in_flight_) flush_writes();
}

void Connection::decode(const char* data, std::size_t len) {
  decoder_.append(data, len);
  while (tcp_) {
    auto frame = decoder_.next();
    if (!frame) {
      disconnected(Error(ErrorCode::kConnectionLost, "broker sent " + frame.error().message));
      return;
    }
    if (frame->empty()) break;
    handle_frame(*frame);
  }
}

void Connection::send_hello() {
  state_ = State::kHello;
  hello_rid_ = next_request_id();
  fbb_.Clear();
  flatbuffers::Offset<flatbuffers::String> mechanism = 0;
  flatbuffers::Offset<flatbuffers::Vector<std::uint8_t>> auth = 0;
  scram_.reset();
  if (!options_.user.empty()) {
    scram_.emplace(options_.user, options_.password);
    const std::string first = scram_->first_message();
    mechanism = fbb_.CreateString(common::scram::kMechanism.data(), common::scram::kMechanism.size());
    auth = fbb_.CreateVector(reinterpret_cast<const std::uint8_t*>(first.data()), first.size());
  }
  auto hello = wire::CreateHello(fbb_, kProtocolVersion, fbb_.CreateString(options_.client_name),
                                 options_.producer_group.empty() ? 0 : fbb_.CreateString(options_.producer_group),
                                 mechanism, auth, static_cast<std::uint32_t>(std::clamp<Millis::rep>(
                                                      options_.heartbeat_interval.count(), 0, kMaxHeartbeatMs)));
  fbb_.FinishSizePrefixed(wire::CreateFrame(fbb_, hello_rid_, wire::Body::Hello, hello.Union()));
  write(common::frame_bytes(fbb_));
}

void Connection::handle_frame(std::span<const std::uint8_t> bytes) {
  const wire::Frame* frame = common::verify_frame(bytes);
  if (!frame) {
    disconnected(Error(ErrorCode::kConnectionLost, "broker sent a frame that failed verification"));
    return;
  }
  // The verifier accepts an absent union member; every reader below needs its body.
  if (frame->body() == nullptr) {
    disconnected(Error(ErrorCode::kConnectionLost, "broker sent a frame without a body"));
    return;
  }
  const std::uint64_t rid = frame->request_id();
  // An Error without a request id before the hello is answered is about the connection
  // itself (a plain hello on a TLS port): the broker refused us all the same.
  const bool refusal = rid == 0 && frame->body_type() == wire::Body::Error;
  if (state_ == State::kHello && (rid == hello_rid_ || refusal)) {
    if (!hello_answered(*frame) || state_ != State::kReady) return;
    ever_ready_ = true;
    brokers_->connected();
    backoff_ = options_.reconnect_initial;
    // Requests too large for this broker are refused here, their callbacks run after the
    // loop: a callback may make requests or stop the connection.
    std::vector<std::pair<ResponseFn, Error>> refused;
    for (auto it = pending_.begin(); it != pending_.end();) {
      auto& p = it->second;
      if (p.sent) {
        ++it;
        continue;
      }
      if (auto st = check_size(p.frame); !st) {
        refused.emplace_back(std::move(p.cb), st.error());
        it = pending_.erase(it);
        continue;
      }
      ++it;
      write(p.frame);
      p.sent = true;
      if (!p.resend) {
        p.frame.clear();
        p.frame.shrink_to_fit();
      }
    }
    if (hooks_.on_ready) hooks_.on_ready();
    for (auto& [cb, error] : refused) cb(error);
    return;
  }
  if (rid == 0) {
    if (frame->body_type() == wire::Body::Heartbeat) return;  // its bytes were the point
    if (hooks_.on_push) hooks_.on_push(*frame);
    return;
  }
  auto it = pending_.find(rid);
  if (it == pending_.end()) return;  // timed out earlier
  auto st = as_status(*frame);
  if (!st && st.error().code == ErrorCode::kNotLeader) {
    // The broker refused the request unprocessed: one that may be resent goes out again
    // to the leader; any other gets the refusal, which is retryable.
    ResponseFn cb;
    if (it->second.resend) {
      it->second.sent = false;
    } else {
      cb = std::move(it->second.cb);
      pending_.erase(it);
    }
    follow_leader(st.error());
    if (cb) cb(st.error());
    return;
  }
  ResponseFn cb = std::move(it->second.cb);
  pending_.erase(it);
  if (!st)
    cb(st.error());
  else
    cb(frame);
}

void Connection::follow_leader(const Error& refusal) {
  const std::string from = brokers_->current_entry().to_string();
  std::string where = "its leader is unknown to it";
  if (refusal.leader.empty() || !brokers_->prefer(refusal.leader)) {
    brokers_->skip_current();
  } else {
    where = "its leader is " + refusal.leader;
  }
  // To the requests still in flight this is a lost connection: those that may be resent go
  // out again on the next one (to the leader), the others fail with kConnectionLost. A
  // broker that answered is no failure to connect: first_connect_timeout does not fail
  // what waits for the leader.
  redirecting_ = true;
  disconnected(Error(ErrorCode::kConnectionLost, from + " is not the leader (" + where + ")"));
  redirecting_ = false;
}

bool Connection::hello_answered(const wire::Frame& frame) {
  auto refused = [this](const Error& error) {
    // Nothing queued can succeed on this connection: the broker refused us (a protocol
    // version, credentials) or we refused the broker.
    fail_all(error, true);
    disconnected(error);
    return false;
  };
  if (auto st = as_status(frame); !st) {
    if (st.error().code != ErrorCode::kNotLeader) return refused(st.error());
    // A follower that does not even take the hello: nothing was processed, nothing fails.
    follow_leader(st.error());
    return false;
  }
  auto text = [](const flatbuffers::Vector<std::uint8_t>* v) {
    return v ? std::string_view(reinterpret_cast<const char*>(v->data()), v->size()) : std::string_view{};
  };
  if (const auto* challenge = frame.body_as_AuthChallenge()) {
    if (!scram_) return refused(Error(ErrorCode::kAuthenticationFailed, "the broker sent an unasked-for challenge"));
    auto final_message = scram_->final_message(text(challenge->data()));
    if (!final_message) return refused(final_message.error());
    fbb_.Clear();
    auto body = wire::CreateAuthResponse(
        fbb_, fbb_.CreateVector(reinterpret_cast<const std::uint8_t*>(final_message->data()), final_message->size()));
    fbb_.FinishSizePrefixed(wire::CreateFrame(fbb_, hello_rid_, wire::Body::AuthResponse, body.Union()));
    write(common::frame_bytes(fbb_));
    return true;  // still in kHello
  }
  const auto* ok = frame.body_as_HelloOk();
  if (!ok) return refused(Error(ErrorCode::kConnectionLost, "the broker answered the hello with something else"));
  if (scram_) {
    if (!ok->auth())
      return refused(Error(ErrorCode::kAuthenticationFailed,
                           "the broker did not authenticate user '" + options_.user +
                               "' (is auth.enabled set?): refusing a broker that could be anyone"));
    if (auto st = scram_->verify_server(text(ok->auth())); !st) return refused(st.error());
    scram_.reset();
  }
  max_frame_bytes_.store(ok->max_frame_bytes(), std::memory_order_relaxed);
  max_message_bytes_.store(ok->max_message_bytes(), std::memory_order_relaxed);
  heartbeat_ = Millis(ok->heartbeat_ms());
  last_heard_ = last_sent_ = Clock::now();
  state_ = State::kReady;
  return true;
}

void Connection::request(std::uint64_t rid, std::span<const std::uint8_t> frame, Clock::time_point deadline,
                         ResponseFn cb, bool resend) {
  assert(on_io_thread());
  if (state_ == State::kStopped) {
    cb(Error(ErrorCode::kClosed));
    return;
  }
  if (auto st = check_size(frame); !st) {
    cb(st.error());
    return;
  }
  Pending p{deadline, std::move(cb), {}, false, resend};
  if (state_ == State::kReady) {
    write(frame);
    p.sent = true;
  }
  if (!p.sent || resend) p.frame.assign(frame.begin(), frame.end());
  pending_.emplace(rid, std::move(p));
}

Status Connection::check_size(std::span<const std::uint8_t> frame) const {
  const std::uint32_t limit = max_frame_bytes();
  const std::size_t size = frame.size() - common::kFrameHeaderBytes;
  if (limit == 0 || size <= limit) return {};
  return Error(ErrorCode::kFrameTooLarge, "request of " + std::to_string(size) +
                                              " bytes is larger than the broker accepts (limits.max_frame_bytes = " +
                                              std::to_string(limit) + ")");
}

void Connection::write(std::span<const std::uint8_t> frame) {
  last_sent_ = Clock::now();
  out_.insert(out_.end(), frame.begin(), frame.end());
  if (!write_in_flight_) flush_writes();
}

void Connection::flush_writes() {
  if (!tcp_) return;
  auto* w = new WriteReq;
  if (tls_) {
    // Encrypted when the write starts, so that frames queued meanwhile share records.
    if (!out_.empty()) {
      if (auto st = tls_->write(out_); !st) {
        delete w;
        disconnected(Error(ErrorCode::kConnectionLost, st.error().message));
        return;
      }
      out_.clear();
    }
    tls_->take_output(w->buf);
  } else {
    w->buf.swap(out_);
  }
  if (w->buf.empty()) {
    delete w;
    return;
  }
  w->req.data = this;
  uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(w->buf.data()), static_cast<unsigned>(w->buf.size()));
  write_in_flight_ = true;
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(tcp_), &buf, 1, [](uv_write_t* req, int status) {
    auto* w = reinterpret_cast<WriteReq*>(req);
    auto* self = static_cast<Connection*>(req->data);
    delete w;
    if (status == UV_ECANCELED) return;  // the handle closed (disconnected() reset the rest)
    self->write_in_flight_ = false;
    if (status != 0) {
      self->disconnected(Error(ErrorCode::kConnectionLost, std::string("write: ") + uv_strerror(status)));
      return;
    }
    self->flush_writes();
  });
  if (rc != 0) {
    delete w;
    write_in_flight_ = false;
    disconnected(Error(ErrorCode::kConnectionLost, std::string("write: ") + uv_strerror(rc)));
  }
}

void Connection::disconnected(const Error& why) {
  if (state_ == State::kStopped) return;
  if (tcp_ && tls_ && tls_->has_output()) {
    // The alert saying why we refused the broker (its certificate): best effort, so that
    // its log names the reason too. A socket just connected has room for it.
    std::vector<std::uint8_t> alert;
    tls_->take_output(alert);
    uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(alert.data()), static_cast<unsigned>(alert.size()));
    uv_try_write(reinterpret_cast<uv_stream_t*>(tcp_), &buf, 1);
  }
  close_tcp();
  tls_.reset();
  write_in_flight_ = false;
  out_.clear();
  decoder_ = common::FrameDecoder(64u << 20);
  last_error_ = why;
  // What was on the wire may or may not have been processed: its callers must decide.
  // What was never sent waits for the next connection.
  fail_all(Error(why.code == ErrorCode::kNotConnected ? ErrorCode::kNotConnected : ErrorCode::kConnectionLost,
                 why.message),
           false);
  // A callback may have stopped the connection (a hosted one's owner disposes it).
  if (state_ == State::kStopped) return;
  // Before the first connection, a caller that asked to fail fast hears of each failure.
  if (failing_fast() && !redirecting_) fail_all(Error(ErrorCode::kNotConnected, why.message), true);
  if (state_ == State::kStopped) return;
  state_ = State::kIdle;
  schedule_reconnect();
}

void Connection::schedule_reconnect() {
  if (state_ == State::kStopped) return;
  // Full jitter over the backoff keeps a fleet of clients from reconnecting in lockstep.
  static thread_local std::mt19937 rng{std::random_device{}()};
  auto delay = std::uniform_int_distribution<long>(backoff_.count() / 2, backoff_.count())(rng);
  backoff_ = std::min(options_.reconnect_max, backoff_ * 2);
  uv_timer_start(&reconnect_, [](uv_timer_t* t) { static_cast<Connection*>(t->data)->connect(); },
                 static_cast<std::uint64_t>(delay), 0);
}

void Connection::check_heartbeats(Clock::time_point now, bool stalled) {
  if (state_ != State::kReady || heartbeat_.count() == 0) return;
  if (stalled) last_heard_ = now;  // the loop reads what came meanwhile before the next look
  if (now - last_heard_ >= 3 * heartbeat_) {
    // A broker frozen or cut off still completes TCP handshakes (its kernel does): the
    // next round starts at another entry, or it would be tried again first, and again.
    brokers_->skip_current();
    disconnected(Error(ErrorCode::kConnectionLost,
                       "nothing heard from " + brokers_->current_entry().to_string() + " in " +
                           std::to_string(3 * heartbeat_.count()) + " ms (heartbeats every " +
                           std::to_string(heartbeat_.count()) + " ms): it is gone"));
    return;
  }
  if (now - last_sent_ < heartbeat_) return;
  flatbuffers::FlatBufferBuilder fbb(64);
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, 0, wire::Body::Heartbeat, wire::CreateHeartbeat(fbb).Union()));
  write(common::frame_bytes(fbb));
}

void Connection::check_deadlines() {
  auto now = Clock::now();
  const bool stalled = last_tick_ != Clock::time_point() && now - last_tick_ > std::max(heartbeat_, Millis(kTickMs * 5));
  last_tick_ = now;
  check_heartbeats(now, stalled);
  if (state_ == State::kStopped) return;  // a failed request's callback disposed it
  // A broker that accepts but never answers the hello is as good as none.
  if (state_ == State::kConnecting && now - connect_started_ > kConnectTimeout) {
    attempt_failed("connect timed out");
  } else if (state_ == State::kHandshake && now - connect_started_ > kConnectTimeout) {
    brokers_->skip_current();
    disconnected(Error(ErrorCode::kNotConnected, "no TLS handshake with " + brokers_->current_entry().to_string() + " in time"));
  } else if (state_ == State::kHello && now - connect_started_ > kConnectTimeout) {
    brokers_->skip_current();
    disconnected(Error(ErrorCode::kNotConnected, "no hello answer from " + brokers_->current_entry().to_string() + " in time"));
  }
  if (failing_fast() && now - started_ >= options_.first_connect_timeout && !pending_.empty()) {
    const std::string doing = state_ == State::kResolving    ? "still resolving the name"
                              : state_ == State::kConnecting ? "still connecting"
                              : state_ == State::kHandshake  ? "still in the TLS handshake"
                                                             : "last error: " + last_error_.message;
    fail_all(Error(ErrorCode::kNotConnected, "not connected to " + options_.broker + " within " +
                                                 std::to_string(options_.first_connect_timeout.count()) + " ms (" +
                                                 doing + ")"),
             true);
  }
  std::vector<ResponseFn> expired;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.deadline <= now) {
      expired.push_back(std::move(it->second.cb));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& cb : expired) {
    if (state_ == State::kReady)
      cb(Error(ErrorCode::kTimeout, "no answer from the broker in time"));
    else
      cb(Error(ErrorCode::kTimeout, "not connected to " + options_.broker + " in time (last error: " +
                                        last_error_.message + ")"));
  }
}

void Connection::fail_all(const Error& why, bool include_unsent) {
  std::vector<ResponseFn> failed;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (!include_unsent && it->second.resend) {
      it->second.sent = false;  // goes out again on the next connection
      ++it;
    } else if (include_unsent || it->second.sent) {
      failed.push_back(std::move(it->second.cb));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& cb : failed) cb(why);
}

}  // namespace txmq::client::detail
