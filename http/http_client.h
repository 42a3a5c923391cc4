// HTTP POSTs on a libuv loop: libcurl's multi interface, driven by libuv poll handles (one
// per socket curl opens) and one timer. No thread per request; the multi handle keeps idle
// connections open and reuses them (keep-alive). The notifier's callbacks and the broker's
// etcd client (whose watches are answers that stream) use it.
#pragma once

#include <curl/curl.h>
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace txmq::http {

struct HttpRequest {
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;
  // The whole request, connect included; 0: none (a stream that may last for ever, with
  // connect_timeout still bounding the connect).
  std::chrono::milliseconds timeout{15'000};
  std::chrono::milliseconds connect_timeout{0};  // 0: bounded by timeout alone
  std::size_t max_response_bytes = 64 * 1024;  // the rest of a longer body is discarded
  // When set, the body is handed over as it arrives instead of being kept in
  // HttpResponse::body, whatever its length; returning false aborts the request (its done
  // callback gets error "aborted by the receiver"). For answers that stream.
  std::function<bool(std::string_view)> on_body_chunk;
  // false: never connect to, nor send over a kept-alive connection to, an address in a
  // special-purpose range (loopback, private, link-local...: address_range.h). Checked on
  // the address actually connected to, whatever name resolved to it.
  bool allow_non_public = true;
  // PEM CAs that verify an https endpoint's certificate; "" uses the system's trust store.
  // Verification (chain and host name) is always on.
  std::string ca_file;
};

struct HttpResponse {
  long status = 0;          // 0 when no response arrived
  bool timed_out = false;
  // No connection could be made (refused, unreachable, name not resolved): nothing was sent.
  bool not_connected = false;
  std::string error;        // curl's message when no response arrived
  std::string body;         // up to max_response_bytes
  std::string retry_after;  // the Retry-After header's value, if any
  double seconds = 0;       // from start to the end of the response (or the error)
  // Set when allow_non_public was false and the address was not public: "127.0.0.1
  // (loopback)". Nothing was sent; the endpoint is not at fault.
  std::string refused_address;
};

// Lifecycle: construct and use on the loop's thread; close() and destroy only after its
// callback ran (the handles are the loop's until then). Redirects are never followed: a
// 3xx is an answer like any other (a receiver that moved must be reconfigured, not guessed).
class HttpClient {
 public:
  using Done = std::function<void(HttpResponse)>;

  // user_agent: the User-Agent's product ("txmq-notifier"), followed by txmq's version.
  HttpClient(uv_loop_t* loop, std::string_view user_agent);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Starts a POST; `done` runs on the loop thread exactly once, later (never inside post).
  // The id is for cancel().
  std::uint64_t post(HttpRequest request, Done done);
  // Aborts a request in flight: its done callback runs later with error "cancelled". False
  // when it is not in flight (done, or already cancelled). May be called from any callback
  // of this client's, a body chunk's included.
  bool cancel(std::uint64_t id);
  std::size_t in_flight() const { return transfers_.size(); }

  // Aborts requests in flight (their callbacks run with error "aborted"), releases every
  // handle and then calls on_closed on the loop thread. May be called from any callback of
  // this client's (from a streamed chunk's, it happens on the next turn).
  void close(std::function<void()> on_closed);

 private:
  struct Transfer;
  struct Socket;

  static int on_socket(CURL* easy, curl_socket_t fd, int what, void* self, void* socket);
  static curl_socket_t on_open_socket(void* transfer, curlsocktype purpose, curl_sockaddr* address);
  static int on_prereq(void* transfer, char* primary_ip, char* local_ip, int primary_port, int local_port);
  static int on_close_socket(void* self, curl_socket_t fd);
  void close_poll(Socket* s);
  static int on_timer_change(CURLM* multi, long timeout_ms, void* self);
  static void on_poll(uv_poll_t* poll, int status, int events);
  static void on_timer(uv_timer_t* timer);
  static std::size_t on_body(char* data, std::size_t size, std::size_t n, void* transfer);
  static std::size_t on_header(char* data, std::size_t size, std::size_t n, void* transfer);
  void finish_done_transfers();
  void add(Transfer* t);  // to the multi handle; a refusal is answered from the timer
  void close_now();
  void release_handle();

  uv_loop_t* loop_;
  CURLM* multi_;
  uv_timer_t timer_;
  std::string user_agent_;
  std::set<Transfer*> transfers_;  // in flight
  std::uint64_t next_id_ = 0;
  std::vector<Transfer*> failed_;  // refused by curl; answered from the timer
  std::vector<Transfer*> cancelled_;  // by cancel(); answered from the timer
  std::vector<Transfer*> to_add_;     // posted from inside curl; added from the timer
  int in_curl_ = 0;                   // inside curl_multi_socket_action
  bool close_requested_ = false;
  // Polled for curl, by descriptor. A connection's poll handle lives as long as the
  // connection, not just while curl waits on it: libuv's uv_poll_start and uv_poll_stop
  // each cost epoll_ctl calls, which per keep-alive request were a tenth of the
  // notifier's time.
  std::map<curl_socket_t, Socket*> sockets_;
  std::set<curl_socket_t> connections_;  // opened by curl for a connection (not a resolver's)
  std::vector<CURL*> idle_easy_;   // reused: keeps curl's per-handle caches warm
  int open_handles_ = 1;           // the timer, plus sockets being closed
  std::function<void()> on_closed_;
};

}  // namespace txmq::http
