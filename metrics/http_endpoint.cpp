#include "metrics/http_endpoint.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "common/tls_session.h"
#include "metrics/text_format.h"

namespace txmq::metrics {

namespace {

constexpr std::string_view kMetricsPath = "/metrics";
constexpr std::string_view kPlainText = "text/plain; charset=utf-8";
// Pending connections the kernel queues before accept: scrapers are few.
constexpr int kBacklog = 64;
// libuv reads into a buffer of this size; a request head rarely needs two reads.
constexpr std::size_t kReadChunkBytes = 4096;
// How often deadlines are checked; a connection lives at most this much past its deadline.
constexpr std::uint64_t kMaxSweepIntervalMs = 1000;

uv_handle_t* as_handle(auto* handle) { return reinterpret_cast<uv_handle_t*>(handle); }
uv_stream_t* as_stream(uv_tcp_t* tcp) { return reinterpret_cast<uv_stream_t*>(tcp); }

ListenResult listen_error(int error) { return {error, {}, 0}; }

}  // namespace

// One accepted client. Reading -> Writing -> Draining: after the response is written, the
// write side is shut down and input is read and discarded until the client closes. Closing at
// once instead would make the kernel answer unread input (the rest of an oversized request)
// with a reset, which can destroy the response before the client reads it. Over TLS the
// handshake runs while Reading; the response and close_notify go out as one write.
struct HttpEndpoint::Connection {
  enum class Phase { kReading, kWriting, kDraining };

  Connection(HttpEndpoint& owner, std::uint64_t deadline)
      : endpoint(owner), deadline_ms(deadline) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  HttpEndpoint& endpoint;
  uv_tcp_t tcp;                             // the client socket; data points here
  uv_write_t write_request;                 // the one response write
  uv_shutdown_t shutdown_request;           // half-close after the response
  std::array<char, kReadChunkBytes> chunk;  // libuv reads into this
  std::string head;                         // request bytes so far, bounded by the head limit
  std::string response;                     // must live until write_request completes
  std::unique_ptr<common::TlsSession> tls;  // null on a plain endpoint
  std::uint64_t deadline_ms;                // loop time after which the sweep closes it
  Phase phase = Phase::kReading;
};

// A handshake flight on its way out; freed by its write callback, which libuv runs (with
// UV_ECANCELED if need be) before the connection's close callback frees the connection.
struct HttpEndpoint::TlsWrite {
  uv_write_t request;
  std::vector<std::uint8_t> bytes;  // ciphertext, alive until the callback
  Connection* connection;           // the connection it belongs to
};

HttpEndpoint::HttpEndpoint(uv_loop_t* loop, Registry& registry, HttpEndpointOptions options)
    : loop_(loop),
      registry_(registry),
      options_(options),
      owner_thread_(std::this_thread::get_id()) {
  // Neither can fail: an AF_UNSPEC TCP handle opens no socket until bind, and a timer only
  // links itself into the loop. Both are closed by close(), whatever happens in between.
  uv_tcp_init(loop_, &server_);
  uv_timer_init(loop_, &sweep_timer_);
  server_.data = this;
  sweep_timer_.data = this;
}

HttpEndpoint::~HttpEndpoint() {
  // The loop still links the handles embedded in this object; carrying on would be a
  // use-after-free that shows up far from here.
  if (state_ != State::kClosed) {
    std::fputs("txmq::metrics::HttpEndpoint destroyed before close() completed\n", stderr);
    std::abort();
  }
}

ListenResult HttpEndpoint::listen(std::string_view host, std::uint16_t port) {
  assert(on_owner_thread());
  if (state_ != State::kOpen) return listen_error(UV_EINVAL);

  const std::string host_text(host);  // libuv wants it NUL-terminated
  sockaddr_storage address{};
  if (uv_ip4_addr(host_text.c_str(), port, reinterpret_cast<sockaddr_in*>(&address)) != 0 &&
      uv_ip6_addr(host_text.c_str(), port, reinterpret_cast<sockaddr_in6*>(&address)) != 0) {
    return listen_error(UV_EINVAL);
  }
  if (int rc = uv_tcp_bind(&server_, reinterpret_cast<const sockaddr*>(&address), 0); rc != 0) {
    return listen_error(rc);
  }
  if (int rc = uv_listen(as_stream(&server_), kBacklog, &on_connection); rc != 0)
    return listen_error(rc);
  state_ = State::kListening;
  const std::uint64_t sweep_ms =
      std::clamp<std::uint64_t>(options_.request_timeout_ms, 1, kMaxSweepIntervalMs);
  uv_timer_start(&sweep_timer_, &on_sweep, sweep_ms, sweep_ms);

  sockaddr_storage bound{};
  int length = sizeof bound;
  char name[INET6_ADDRSTRLEN] = {};
  if (int rc = uv_tcp_getsockname(&server_, reinterpret_cast<sockaddr*>(&bound), &length);
      rc != 0) {
    return listen_error(rc);
  }
  if (int rc = uv_ip_name(reinterpret_cast<const sockaddr*>(&bound), name, sizeof name); rc != 0) {
    return listen_error(rc);
  }
  const std::uint16_t bound_port = bound.ss_family == AF_INET6
                                       ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                       : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return {0, name, bound_port};
}

void HttpEndpoint::close(std::function<void()> on_closed) {
  assert(on_owner_thread());
  assert(state_ == State::kOpen || state_ == State::kListening);
  if (state_ == State::kClosing || state_ == State::kClosed) return;
  state_ = State::kClosing;
  on_closed_ = std::move(on_closed);
  uv_close(as_handle(&server_), &on_listener_closed);
  uv_close(as_handle(&sweep_timer_), &on_listener_closed);
  for (const auto& connection : connections_) close_connection(*connection);
}

void HttpEndpoint::on_connection(uv_stream_t* server, int status) noexcept {
  // An accept error (EMFILE, ECONNABORTED) concerns one pending connection; libuv keeps
  // listening and calls again for the next.
  if (status < 0) return;
  static_cast<HttpEndpoint*>(server->data)->accept_connection();
}

void HttpEndpoint::accept_connection() {
  auto owned = std::make_unique<Connection>(*this, uv_now(loop_) + options_.request_timeout_ms);
  Connection& connection = *owned;
  uv_tcp_init(loop_, &connection.tcp);  // cannot fail, as in the constructor
  connection.tcp.data = &connection;
  connection.write_request.data = &connection;
  connection.shutdown_request.data = &connection;
  connections_.push_back(std::move(owned));

  if (options_.tls) {
    auto session = common::TlsSession::accept(*options_.tls);
    if (session) connection.tls = std::move(*session);
  }
  if (uv_accept(as_stream(&server_), as_stream(&connection.tcp)) != 0 ||
      (options_.tls && !connection.tls) ||
      connections_.size() > options_.max_connections ||
      uv_read_start(as_stream(&connection.tcp), &on_alloc, &on_read) != 0) {
    close_connection(connection);
  }
}

void HttpEndpoint::on_alloc(uv_handle_t* handle, std::size_t, uv_buf_t* buf) noexcept {
  auto& connection = *static_cast<Connection*>(handle->data);
  *buf = uv_buf_init(connection.chunk.data(), connection.chunk.size());
}

void HttpEndpoint::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto& connection = *static_cast<Connection*>(stream->data);
  if (nread < 0) {  // end of input or an error: either way there is nobody left to answer
    connection.endpoint.close_connection(connection);
    return;
  }
  if (connection.phase != Connection::Phase::kReading) return;  // draining: discard
  if (connection.tls) {
    if (!connection.endpoint.receive_tls(connection, buf->base, static_cast<std::size_t>(nread))) return;
  } else {
    connection.head.append(buf->base, static_cast<std::size_t>(nread));
  }
  connection.endpoint.handle_request(connection);
}

bool HttpEndpoint::receive_tls(Connection& connection, const char* data, std::size_t length) {
  connection.tls->feed(reinterpret_cast<const std::uint8_t*>(data), length);
  std::array<std::uint8_t, kReadChunkBytes> plain;
  for (;;) {
    const auto got = connection.tls->read(plain.data(), plain.size());
    if (!got) {
      // A failed handshake (a plain HTTP request, an unknown protocol version) or a bad
      // record: nobody to answer in a language both understand, so the connection closes.
      close_connection(connection);
      return false;
    }
    if (*got == 0) break;
    connection.head.append(reinterpret_cast<const char*>(plain.data()), *got);
  }
  send_tls_output(connection);  // the handshake's next flight, if any
  return true;
}

void HttpEndpoint::send_tls_output(Connection& connection) {
  if (!connection.tls->has_output()) return;
  auto write = std::make_unique<TlsWrite>();
  write->connection = &connection;
  write->request.data = write.get();
  connection.tls->take_output(write->bytes);
  const uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(write->bytes.data()), write->bytes.size());
  if (uv_write(&write->request, as_stream(&connection.tcp), &buf, 1, &on_tls_write) != 0) {
    close_connection(connection);
    return;
  }
  write.release();  // on_tls_write frees it
}

void HttpEndpoint::on_tls_write(uv_write_t* request, int status) noexcept {
  const std::unique_ptr<TlsWrite> write(static_cast<TlsWrite*>(request->data));
  if (status < 0) write->connection->endpoint.close_connection(*write->connection);
}

void HttpEndpoint::handle_request(Connection& connection) {
  const RequestHead head = parse_request_head(connection.head, options_.max_head_bytes);
  switch (head.status) {
    case HeadStatus::kIncomplete:
      return;
    case HeadStatus::kMalformed:
      return respond(connection, HttpStatus::kBadRequest, kPlainText, "bad request\n");
    case HeadStatus::kTooLarge:
      return respond(connection, HttpStatus::kHeadersTooLarge, kPlainText,
                     "request head too large\n");
    case HeadStatus::kComplete:
      break;
  }
  if (head.path != kMetricsPath) {
    return respond(connection, HttpStatus::kNotFound, kPlainText, "not found\n");
  }
  if (head.method != "GET") {
    return respond(connection, HttpStatus::kMethodNotAllowed, kPlainText, "use GET\n");
  }
  std::string body;
  try {
    body = registry_.render();
  } catch (const std::exception& error) {
    return respond(connection, HttpStatus::kInternalError, kPlainText,
                   std::string("render failed: ") + error.what() + "\n");
  } catch (...) {
    return respond(connection, HttpStatus::kInternalError, kPlainText, "render failed\n");
  }
  respond(connection, HttpStatus::kOk, kTextContentType, body);
}

void HttpEndpoint::respond(Connection& connection, HttpStatus status, std::string_view content_type,
                           std::string_view body) {
  // One request per connection: stop reading until the response is out, so that an end of
  // input arriving meanwhile cannot close the connection under the write.
  uv_read_stop(as_stream(&connection.tcp));
  connection.phase = Connection::Phase::kWriting;
  connection.response = format_response(status, content_type, body);
  if (connection.tls) {
    // The handshake is done (the request arrived through it): the response is encrypted
    // now, close_notify after it, and both leave in the one response write.
    const auto* plain = reinterpret_cast<const std::uint8_t*>(connection.response.data());
    if (!connection.tls->write({plain, connection.response.size()})) {
      close_connection(connection);
      return;
    }
    connection.tls->close_notify();
    std::vector<std::uint8_t> cipher;
    connection.tls->take_output(cipher);
    connection.response.assign(cipher.begin(), cipher.end());
  }
  const uv_buf_t buf = uv_buf_init(connection.response.data(), connection.response.size());
  if (uv_write(&connection.write_request, as_stream(&connection.tcp), &buf, 1, &on_write) != 0) {
    close_connection(connection);
  }
}

void HttpEndpoint::on_write(uv_write_t* request, int status) noexcept {
  auto& connection = *static_cast<Connection*>(request->data);
  HttpEndpoint& self = connection.endpoint;
  if (status < 0) {  // includes UV_ECANCELED when the connection is already closing
    self.close_connection(connection);
    return;
  }
  connection.phase = Connection::Phase::kDraining;
  uv_stream_t* stream = as_stream(&connection.tcp);
  if (uv_shutdown(&connection.shutdown_request, stream, &on_shutdown) != 0 ||
      uv_read_start(stream, &on_alloc, &on_read) != 0) {
    self.close_connection(connection);
  }
}

void HttpEndpoint::on_shutdown(uv_shutdown_t* request, int status) noexcept {
  auto& connection = *static_cast<Connection*>(request->data);
  if (status < 0) connection.endpoint.close_connection(connection);
}

void HttpEndpoint::on_sweep(uv_timer_t* timer) noexcept {
  auto& self = *static_cast<HttpEndpoint*>(timer->data);
  const std::uint64_t now = uv_now(self.loop_);
  // close_connection only starts closing; connections_ changes in the close callbacks, later.
  for (const auto& connection : self.connections_) {
    if (connection->deadline_ms <= now) self.close_connection(*connection);
  }
}

void HttpEndpoint::close_connection(Connection& connection) {
  uv_handle_t* handle = as_handle(&connection.tcp);
  if (!uv_is_closing(handle)) uv_close(handle, &on_connection_closed);
}

void HttpEndpoint::on_connection_closed(uv_handle_t* handle) noexcept {
  auto* connection = static_cast<Connection*>(handle->data);
  HttpEndpoint& self = connection->endpoint;
  auto& all = self.connections_;
  const auto it = std::find_if(all.begin(), all.end(), [connection](const auto& owned) {
    return owned.get() == connection;
  });
  assert(it != all.end());
  std::iter_swap(it, all.end() - 1);
  all.pop_back();  // frees the connection: libuv is done with its handle and requests
  self.finish_close_if_done();
}

void HttpEndpoint::on_listener_closed(uv_handle_t* handle) noexcept {
  auto& self = *static_cast<HttpEndpoint*>(handle->data);
  --self.listener_handles_open_;
  self.finish_close_if_done();
}

void HttpEndpoint::finish_close_if_done() {
  if (state_ != State::kClosing || listener_handles_open_ > 0 || !connections_.empty()) return;
  state_ = State::kClosed;
  // on_closed may destroy this endpoint: nothing touches a member after it.
  const std::function<void()> on_closed = std::move(on_closed_);
  if (on_closed) on_closed();
}

}  // namespace txmq::metrics
