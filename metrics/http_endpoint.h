#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "metrics/http_message.h"
#include "metrics/registry.h"

namespace txmq::common {
class TlsContext;  // common/tls_session.h
}  // namespace txmq::common

namespace txmq::metrics {

struct HttpEndpointOptions {
  // A request head larger than this gets 431. Prometheus sends about 300 bytes.
  std::size_t max_head_bytes = 8 * 1024;
  // A connection is closed this long after it was accepted, whatever it is doing, so that an
  // idle or slow client cannot hold a file descriptor of the broker's process for ever.
  std::uint64_t request_timeout_ms = 10'000;
  // Connections beyond this are accepted and closed at once. A few Prometheus servers scrape;
  // the cap only bounds what a misbehaving client can take.
  std::size_t max_connections = 64;
  // A server context (common/tls_session.h) to serve HTTPS with; null serves plain HTTP.
  // Each connection then handshakes before its request is read; one that fails the
  // handshake, a plain HTTP request among them, is closed without an answer.
  std::shared_ptr<const common::TlsContext> tls;
};

struct [[nodiscard]] ListenResult {
  int error = 0;           // 0, or a negative libuv error code: uv_err_name / uv_strerror
  std::string host;        // the bound address: "127.0.0.1", "::1"
  std::uint16_t port = 0;  // the bound port, the real one when 0 was asked for
  bool ok() const noexcept { return error == 0; }
};

// Serves the registry over HTTP/1.1 for Prometheus, or over HTTPS (HttpEndpointOptions::tls):
// GET /metrics gets 200 and the rendered text; any other path gets 404, another method on
// /metrics 405, a malformed request 400, a request head over the limit 431. Each connection
// carries one request and is closed after the response ("Connection: close"); several
// connections are served concurrently.
//
// Lifecycle: construct, listen() once, and close() before destroying; destroy only after
// close()'s callback has run (or in it). This holds even when listen() failed or was never
// called: the constructor already registers handles with the loop. Destroying an endpoint
// that is not closed aborts, because libuv would still point at its memory.
// Concurrency: runs entirely on the loop's thread. Construct it, and call listen() and
// close(), on the thread that runs (or will run) the loop; a debug assertion checks that they
// are the thread the endpoint was constructed on. Rendering happens on that thread too, so
// collect-time callbacks run on it, and a scrape blocks the loop for as long as the render
// takes (tens of microseconds per thousand series, plus whatever the callbacks cost).
// Errors: no exception leaves a libuv callback. A render that throws is answered with 500;
// running out of memory inside a callback terminates the process, as it cannot be reported to
// anyone and unwinding through libuv's C frames is undefined.
class HttpEndpoint {
 public:
  // Thread: the loop's. Errors: none. The registry must outlive the endpoint.
  HttpEndpoint(uv_loop_t* loop, Registry& registry, HttpEndpointOptions options = {});
  // Thread: the loop's, once close() has called back (aborts otherwise). Errors: none.
  ~HttpEndpoint();
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // Binds host (an IPv4 or IPv6 literal without brackets: "127.0.0.1", "::1", "0.0.0.0") and
  // port (0 picks a free one) and starts accepting. Thread: the loop's. Errors, as libuv
  // codes: UV_EINVAL for a host that is not an IP literal or a second call, UV_EADDRINUSE,
  // UV_EACCES, UV_EADDRNOTAVAIL and whatever else bind(), listen() and getsockname() report.
  // Whatever the result, the endpoint must still be closed.
  ListenResult listen(std::string_view host, std::uint16_t port);

  // Stops accepting, closes every connection (responses being written are cut off) and
  // calls on_closed on the loop thread once libuv has released every handle; the endpoint
  // may be destroyed from then on, including inside on_closed, which must not throw.
  // Thread: the loop's. Errors: none. Calling it twice is a programming error.
  void close(std::function<void()> on_closed);

 private:
  struct Connection;
  struct TlsWrite;
  enum class State { kOpen, kListening, kClosing, kClosed };

  static void on_connection(uv_stream_t* server, int status) noexcept;
  static void on_alloc(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf) noexcept;
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void on_write(uv_write_t* request, int status) noexcept;
  static void on_tls_write(uv_write_t* request, int status) noexcept;
  static void on_shutdown(uv_shutdown_t* request, int status) noexcept;
  static void on_sweep(uv_timer_t* timer) noexcept;
  static void on_listener_closed(uv_handle_t* handle) noexcept;
  static void on_connection_closed(uv_handle_t* handle) noexcept;

  void accept_connection();
  bool receive_tls(Connection& connection, const char* data, std::size_t length);
  void send_tls_output(Connection& connection);
  void handle_request(Connection& connection);
  void respond(Connection& connection, HttpStatus status, std::string_view content_type,
               std::string_view body);
  void close_connection(Connection& connection);
  void finish_close_if_done();
  bool on_owner_thread() const { return std::this_thread::get_id() == owner_thread_; }

  uv_loop_t* loop_;
  Registry& registry_;
  const HttpEndpointOptions options_;
  const std::thread::id owner_thread_;  // the loop's thread, for the debug assertions
  State state_ = State::kOpen;
  uv_tcp_t server_;                  // the listening socket
  uv_timer_t sweep_timer_;           // closes connections past their deadline
  int listener_handles_open_ = 2;    // server_ and sweep_timer_, until their close callbacks
  std::function<void()> on_closed_;  // set by close()
  std::vector<std::unique_ptr<Connection>> connections_;  // each freed in its close callback
};

}  // namespace txmq::metrics
