#include "broker/connection.h"

#include <spdlog/spdlog.h>

namespace txmq::broker {
namespace {

std::string peer_name(uv_tcp_t* tcp) {
  sockaddr_storage addr{};
  int len = sizeof(addr);
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char host[64] = "?";
  int port = 0;
  if (addr.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    uv_ip6_name(a, host, sizeof(host));
    port = ntohs(a->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&addr);
  uv_ip4_name(a, host, sizeof(host));
  port = ntohs(a->sin_port);
  return std::string(host) + ":" + std::to_string(port);
}

}  // namespace

Connection::Connection(std::uint64_t id, ConnectionEvents& events, const ConnectionLimits& limits,
                       ConnectionBudget& budget, const common::TlsContext* tls)
    : id_(id),
      events_(events),
      limits_(limits),
      budget_(budget),
      tls_context_(tls),
      decoder_(limits.hello_max_frame_bytes) {
  tcp_.data = this;
  write_req_.data = this;
  shutdown_req_.data = this;
}

Connection::~Connection() {
  budget_.release_input(input_reserved_);
  budget_.remove_output(output_counted_);
}

bool Connection::accept(uv_stream_t* server) {
  accepted_ = std::chrono::steady_clock::now();
  uv_tcp_init(server->loop, &tcp_);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) {
    close();
    return false;
  }
  uv_tcp_nodelay(&tcp_, 1);
  peer_ = peer_name(&tcp_);
  if (tls_context_) {
    auto session = common::TlsSession::accept(*tls_context_);
    if (!session) {
      spdlog::error("connection {} from {}: {}", id_, peer_, session.error().message);
      close();
      return false;
    }
    tls_ = std::move(*session);
  }
  update_reading();
  return true;
}

void Connection::hello_completed() {
  hello_done_ = true;
  decoder_.set_max_frame_bytes(limits_.max_frame_bytes);
}

void Connection::set_heartbeat(std::chrono::milliseconds interval) {
  heartbeat_ = interval;
  last_heard_ = last_sent_ = std::chrono::steady_clock::now();
}

void Connection::on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(h->data);
  *buf = uv_buf_init(self->read_buf_, sizeof(self->read_buf_));
}

void Connection::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  static_cast<Connection*>(s->data)->handle_read(nread);
}

void Connection::handle_read(ssize_t nread) {
  if (nread == 0) return;  // EAGAIN
  if (nread < 0) {
    if (state_ == State::kOpen && nread != UV_EOF) {
      spdlog::debug("connection {} from {}: {}", id_, peer_, uv_strerror(static_cast<int>(nread)));
    } else if (state_ == State::kOpen && tls_ && !first_read_ && !tls_->handshake_done()) {
      spdlog::info("connection {} from {}: TLS handshake failed: the peer closed the connection", id_, peer_);
      events_.on_tls_refused(*this, "tls_handshake_failed");
    } else if (state_ == State::kOpen && decoder_.buffered() > 0) {
      spdlog::info("connection {} from {} closed mid-frame ({} bytes of a frame dropped)", id_,
                   peer_, decoder_.buffered());
    }
    close();
    return;
  }
  if (state_ != State::kOpen) return;  // draining: discard until the peer hangs up
  if (heartbeat_.count() > 0) last_heard_ = std::chrono::steady_clock::now();
  if (first_read_) {
    first_read_ = false;
    if (!check_first_bytes(static_cast<std::size_t>(nread))) return;
  }
  const bool had_partial = decoder_.partial_frame_bytes() > 0;
  if (!tls_) decoder_.append(read_buf_, static_cast<std::size_t>(nread));
  else if (!receive_tls(static_cast<std::size_t>(nread))) return;
  if (!had_partial) frame_started_ = std::chrono::steady_clock::now();
  backlog_ = true;
  serve();
}

bool Connection::check_first_bytes(std::size_t nread) {
  const std::span<const std::uint8_t> first(reinterpret_cast<const std::uint8_t*>(read_buf_), nread);
  if (!tls_ && common::looks_like_tls_record(first)) {
    // Read as a frame, a ClientHello would be a length of some 66 KB and wait for bytes
    // that never come; the client, waiting for the server's hello, would hang as well.
    spdlog::info("connection {} from {}: sent a TLS ClientHello, but this port is plain (tls.enabled is "
                 "false); closing",
                 id_, peer_);
    events_.on_tls_refused(*this, "tls_on_plain_port");
    close_after_flush();
    return false;
  }
  if (tls_ && first[0] != 22) {
    // A plain client: tell it in its own protocol, which it can read and report.
    spdlog::info("connection {} from {}: not TLS (a plain txmq client on the TLS port?)", id_, peer_);
    tls_.reset();
    events_.on_tls_refused(*this, "not_tls");
    send_error_and_close(
        Error(ErrorCode::kInvalidArgument, "this broker port takes TLS connections only: connect with TLS (txmq --tls)"));
    return false;
  }
  return true;
}

bool Connection::receive_tls(std::size_t nread) {
  tls_->feed(reinterpret_cast<const std::uint8_t*>(read_buf_), nread);
  // All of it is decrypted now: the session keeps no plaintext, so what the decoder holds
  // is all this connection holds, and the budget sees it. One read yields at most its own
  // size in plaintext plus the rest of a record begun in the read before.
  std::uint8_t plain[16 * 1024];  // one TLS record's plaintext at most
  for (;;) {
    auto n = tls_->read(plain, sizeof(plain));
    if (!n) {
      fail_tls(n.error());
      return false;
    }
    if (*n == 0) break;
    decoder_.append(reinterpret_cast<const char*>(plain), *n);
  }
  if (tls_->peer_closed()) {  // close_notify: as good as the end of the stream
    close();
    return false;
  }
  // Handshake messages (and, after it, session tickets) go out now.
  if (!write_in_flight_ && tls_->has_output()) start_write();
  return state_ == State::kOpen;
}

void Connection::fail_tls(const Error& error) {
  spdlog::info("connection {} from {}: {}", id_, peer_, error.message);
  events_.on_tls_refused(*this, "tls_handshake_failed");
  // Nothing more can be encrypted; the alert OpenSSL queued still goes, so that the client
  // learns why.
  pending_.clear();
  if (!write_in_flight_) start_write();
  close_after_flush();
}

bool Connection::may_serve() const {
  return state_ == State::kOpen && !flush_then_close_ && pause_reasons_ == 0 && writable();
}

void Connection::serve() {
  if (serving_) return;
  serving_ = true;
  // A fatal error (close_after_flush) ends the conversation: frames after it in the same
  // read are not served. A pause taken by a handler, or output past high water, stops the
  // loop with the rest left buffered (and reading stopped) until it ends.
  int served = 0;
  while (backlog_ && may_serve()) {
    if (served == kFramesPerTurn) {
      budget_.resume_soon(id_);  // the rest after the other connections had their turn
      break;
    }
    auto frame = decoder_.next();
    if (!frame) {
      fail_stream(frame.error());
      break;
    }
    if (frame->empty()) {
      backlog_ = false;
      break;
    }
    ++served;
    events_.on_frame(*this, *frame);
  }
  serving_ = false;
  // A frame left partial arrived in this read at the earliest: its clock starts now (one
  // clock read per turn, not per frame).
  if (served > 0) frame_started_ = std::chrono::steady_clock::now();
  if (state_ != State::kOpen) return;
  decoder_.release_memory();
  reserve_input();
  update_reading();
}

void Connection::fail_stream(const Error& err) {
  spdlog::info("connection {} from {}: {}", id_, peer_, err.describe());
  events_.on_stream_error(*this, err);
  send_error_and_close(err);
}

void Connection::send_error_and_close(const Error& err) {
  // The stream cannot be resynchronised; the Server answers with an error frame via
  // on_frame's contract, so build the error here instead.
  flatbuffers::FlatBufferBuilder fbb(256);
  auto body = wire::CreateError(fbb, static_cast<std::uint16_t>(err.code), fbb.CreateString(err.message));
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, 0, wire::Body::Error, body.Union()));
  send(common::frame_bytes(fbb));
  close_after_flush();
}

void Connection::reserve_input() {
  // What the partial frame needs, reserved once its length is known and before its body is
  // read: a connection that cannot have it stops reading until another one gives some back.
  std::size_t need = backlog_ ? input_reserved_ : decoder_.partial_frame_bytes();
  if (need <= kUnreservedFrameBytes) need = 0;
  if (need <= input_reserved_) {
    budget_.release_input(input_reserved_ - need);
    input_reserved_ = need;
    input_waiting_ = false;
    return;
  }
  if (budget_.try_reserve_input(need - input_reserved_)) {
    input_reserved_ = need;
    input_waiting_ = false;
    return;
  }
  if (!input_waiting_) spdlog::debug("connection {}: a frame of {} bytes waits for input memory", id_, need);
  budget_.wait_for_input(id_, !input_waiting_);
  input_waiting_ = true;
}

void Connection::resume() {
  if (state_ != State::kOpen) return;
  serve();
  if (state_ == State::kOpen && !flush_then_close_ && writable()) events_.on_writable(*this);
}

Overdue Connection::overdue(std::chrono::steady_clock::time_point now) {
  if (state_ == State::kDraining) return now >= linger_deadline_ ? Overdue::kLinger : Overdue::kNone;
  if (state_ != State::kOpen) return Overdue::kNone;
  if (write_in_flight_) {
    // The deadline is for progress, not for the whole write: a consumer that reads slowly
    // but steadily empties the queue a little at every look.
    const std::size_t queued = uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&tcp_));
    if (queued < write_queued_) write_started_ = now;
    write_queued_ = queued;
    if (now - write_started_ >= limits_.output_timeout) return Overdue::kOutput;  // condemned ones too
  }
  if (flush_then_close_) return Overdue::kNone;
  if (!hello_done_ && now - accepted_ >= limits_.hello_timeout) return Overdue::kHello;
  // Only while reading: a frame held up because the broker stopped reading (its memory,
  // the disk, this client's unread answers) is not the peer's delay.
  if (reading_ && decoder_.partial_frame_bytes() > 0 && now - frame_started_ >= limits_.frame_timeout)
    return Overdue::kFrame;
  // Likewise: heartbeats the broker did not read are not missed.
  if (reading_ && heartbeat_.count() > 0 && now - last_heard_ >= kHeartbeatMisses * heartbeat_) return Overdue::kSilent;
  return Overdue::kNone;
}

void Connection::send(std::span<const std::uint8_t> frame) {
  if (state_ != State::kOpen) return;  // the error frame before close_after_flush still goes
  last_sent_ = std::chrono::steady_clock::now();
  if (!tls_ && !write_in_flight_ && pending_.empty()) {
    // Nothing is ahead of it: what the socket takes now goes from the caller's buffer, and
    // only the rest is copied (a follower's fetch answer is megabytes).
    uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(const_cast<std::uint8_t*>(frame.data())),
                               static_cast<unsigned>(frame.size()));
    const int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1);
    if (n > 0) frame = frame.subspan(static_cast<std::size_t>(n));
    if (frame.empty()) return;
  }
  pending_.insert(pending_.end(), frame.begin(), frame.end());
  sync_output();
  if (!write_in_flight_) start_write();
  update_reading();
}

void Connection::sync_output() {
  const std::size_t now = output_bytes();
  if (now > output_counted_) budget_.add_output(now - output_counted_);
  else budget_.remove_output(output_counted_ - now);
  output_counted_ = now;
}

void Connection::start_write() {
  if (!output_waiting()) return;
  if (tls_) {
    // Encrypted here rather than in send(): the frames queued while a write was in flight
    // go out in as few records as fit.
    if (!pending_.empty()) {
      if (auto st = tls_->write(pending_); !st) spdlog::debug("connection {}: {}", id_, st.error().message);
      pending_.clear();
    }
    tls_->take_output(writing_);
    if (writing_.empty()) return;  // held until the handshake is done
  } else {
    writing_.swap(pending_);
    pending_.clear();
  }
  if (pending_.capacity() > kKeepOutputCapacity) std::vector<std::uint8_t>().swap(pending_);
  uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(writing_.data()),
                             static_cast<unsigned>(writing_.size()));
  int rc = uv_write(&write_req_, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1, &Connection::on_write);
  if (rc != 0) {
    spdlog::debug("connection {}: write failed: {}", id_, uv_strerror(rc));
    writing_.clear();
    close();
    return;
  }
  write_in_flight_ = true;
  write_started_ = std::chrono::steady_clock::now();
  write_queued_ = uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&tcp_));
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* self = static_cast<Connection*>(req->data);
  self->write_in_flight_ = false;
  self->writing_.clear();
  // A large answer's buffer is given back rather than kept by an idle connection.
  if (self->writing_.capacity() > kKeepOutputCapacity) std::vector<std::uint8_t>().swap(self->writing_);
  self->sync_output();
  if (self->state_ == State::kClosing) return;
  if (status != 0) {
    self->close();
    return;
  }
  if (self->output_waiting()) self->start_write();
  // Done flushing when nothing more went out (TLS: frames held for an unfinished handshake
  // never will).
  if (!self->write_in_flight_ && self->flush_then_close_ && self->state_ == State::kOpen) {
    self->begin_draining();
    return;
  }
  // Below high water again: what is buffered is served and pushes may go, from the next
  // loop iteration (never from inside this write's completion).
  if (self->state_ == State::kOpen && self->writable()) self->budget_.resume_soon(self->id_);
  else self->update_reading();
}

void Connection::pause_reading() {
  ++pause_reasons_;
  update_reading();
}

void Connection::resume_reading() {
  if (pause_reasons_ > 0) --pause_reasons_;
  // Frames left buffered by the pause are served in the next loop iteration: this may be
  // called from inside another request's completion.
  if (pause_reasons_ == 0 && backlog_) budget_.resume_soon(id_);
  update_reading();
}

void Connection::update_reading() {
  // serve() decides once it is done; stopping and restarting for every answer sent while
  // serving would cost two system calls per read.
  if (serving_ && state_ == State::kOpen) return;
  // Reading stops while whole frames wait to be served (they were read already) and while
  // the partial frame has no memory reserved.
  bool want = state_ == State::kDraining ||
              (state_ == State::kOpen && may_serve() && !backlog_ && !input_waiting_);
  if (want == reading_) return;
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  if (want) {
    if (uv_read_start(stream, &Connection::on_alloc, &Connection::on_read) == 0) reading_ = true;
    // A partial frame's clock runs from now: it did not run while the broker did not read;
    // nor did the heartbeats'.
    frame_started_ = last_heard_ = std::chrono::steady_clock::now();
  } else {
    uv_read_stop(stream);
    reading_ = false;
  }
}

void Connection::close_after_flush() {
  if (state_ != State::kOpen) return;
  flush_then_close_ = true;
  if (!write_in_flight_ && !output_waiting()) begin_draining();
}

void Connection::begin_draining() {
  // Closing a socket that still has unread input makes the kernel send a reset, which can
  // destroy our error frame before the peer reads it. So: half-close our side, keep
  // reading and discarding until the peer hangs up, and give up after the linger time.
  state_ = State::kDraining;
  linger_deadline_ = std::chrono::steady_clock::now() + limits_.linger;
  if (tls_) {
    tls_->close_notify();  // written before the shutdown, which waits for it
    start_write();
  }
  uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), [](uv_shutdown_t*, int) {});
  update_reading();
}

void Connection::close() {
  if (state_ == State::kClosing) return;
  state_ = State::kClosing;
  budget_.cancel_wait(id_);
  budget_.release_input(input_reserved_);
  input_reserved_ = 0;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) {
    auto* self = static_cast<Connection*>(h->data);
    self->events_.on_closed(*self);
  });
}

}  // namespace txmq::broker
