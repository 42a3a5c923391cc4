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

Connection::Connection(std::uint64_t id, ConnectionEvents& events, const ConnectionLimits& limits)
    : id_(id), events_(events), limits_(limits), decoder_(limits.max_frame_bytes) {
  tcp_.data = this;
  write_req_.data = this;
  shutdown_req_.data = this;
}

bool Connection::accept(uv_stream_t* server) {
  uv_tcp_init(server->loop, &tcp_);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) {
    close();
    return false;
  }
  uv_tcp_nodelay(&tcp_, 1);
  peer_ = peer_name(&tcp_);
  update_reading();
  return true;
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
    if (state_ == State::kOpen && nread != UV_EOF)
      spdlog::debug("connection {} from {}: {}", id_, peer_, uv_strerror(static_cast<int>(nread)));
    else if (state_ == State::kOpen && decoder_.buffered() > 0)
      spdlog::info("connection {} from {} closed mid-frame ({} bytes of a frame dropped)", id_,
                   peer_, decoder_.buffered());
    close();
    return;
  }
  if (state_ != State::kOpen) return;  // draining: discard until the peer hangs up
  decoder_.append(read_buf_, static_cast<std::size_t>(nread));
  // Every whole frame in this read is handled now: the read size (64 KiB) bounds the work
  // one callback does, and a slow frame can stop the loop through pause_reading().
  // A fatal error (close_after_flush) ends the conversation: frames after it in the same
  // read are not served.
  while (state_ == State::kOpen && !flush_then_close_) {
    auto frame = decoder_.next();
    if (!frame) {
      // The stream cannot be resynchronised; the Server answers with an error frame via
      // on_frame's contract, so build the error here instead.
      flatbuffers::FlatBufferBuilder fbb(256);
      const auto& err = frame.error();
      auto body = wire::CreateError(fbb, static_cast<std::uint16_t>(err.code),
                                    fbb.CreateString(err.message));
      fbb.FinishSizePrefixed(wire::CreateFrame(fbb, 0, wire::Body::Error, body.Union()));
      spdlog::info("connection {} from {}: {}", id_, peer_, err.describe());
      send(common::frame_bytes(fbb));
      close_after_flush();
      return;
    }
    if (frame->empty()) break;
    events_.on_frame(*this, *frame);
  }
}

void Connection::send(std::span<const std::uint8_t> frame) {
  if (state_ != State::kOpen) return;  // the error frame before close_after_flush still goes
  pending_.insert(pending_.end(), frame.begin(), frame.end());
  if (!write_in_flight_) start_write();
  update_reading();
}

void Connection::start_write() {
  if (pending_.empty()) return;
  writing_.swap(pending_);
  pending_.clear();
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
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* self = static_cast<Connection*>(req->data);
  self->write_in_flight_ = false;
  self->writing_.clear();
  if (self->state_ == State::kClosing) return;
  if (status != 0) {
    self->close();
    return;
  }
  if (!self->pending_.empty()) {
    self->start_write();
  } else if (self->flush_then_close_ && self->state_ == State::kOpen) {
    self->begin_draining();
    return;
  }
  self->update_reading();
  if (self->state_ == State::kOpen && self->writable()) self->events_.on_writable(*self);
}

void Connection::pause_reading() {
  ++pause_reasons_;
  update_reading();
}

void Connection::resume_reading() {
  if (pause_reasons_ > 0) --pause_reasons_;
  update_reading();
}

void Connection::update_reading() {
  bool want = state_ == State::kDraining ||
              (state_ == State::kOpen && pause_reasons_ == 0 && writable());
  if (want == reading_) return;
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  if (want) {
    if (uv_read_start(stream, &Connection::on_alloc, &Connection::on_read) == 0) reading_ = true;
  } else {
    uv_read_stop(stream);
    reading_ = false;
  }
}

void Connection::close_after_flush() {
  if (state_ != State::kOpen) return;
  flush_then_close_ = true;
  if (!write_in_flight_ && pending_.empty()) begin_draining();
}

void Connection::begin_draining() {
  // Closing a socket that still has unread input makes the kernel send a reset, which can
  // destroy our error frame before the peer reads it. So: half-close our side, keep
  // reading and discarding until the peer hangs up, and give up after the linger time.
  state_ = State::kDraining;
  linger_deadline_ = std::chrono::steady_clock::now() + limits_.linger;
  uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), [](uv_shutdown_t*, int) {});
  update_reading();
}

void Connection::close() {
  if (state_ == State::kClosing) return;
  state_ = State::kClosing;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) {
    auto* self = static_cast<Connection*>(h->data);
    self->events_.on_closed(*self);
  });
}

}  // namespace txmq::broker
