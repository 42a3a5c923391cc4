#include "metrics/http_endpoint.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

using txmq::metrics::HttpEndpoint;
using txmq::metrics::HttpEndpointOptions;
using txmq::metrics::ListenResult;
using txmq::metrics::Registry;

namespace {

// A client blocked on a socket gives up after this, so that a broken endpoint fails a test
// instead of hanging it.
constexpr int kClientTimeoutSeconds = 5;
// The loop must have finished (client done, endpoint closed) within this.
constexpr std::uint64_t kLoopDeadlineMs = 20'000;

constexpr std::string_view kGetMetrics = "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n";

// A blocking client socket on the loopback, with send and receive deadlines.
class Client {
 public:
  Client(const std::string& host, std::uint16_t port) {
    sockaddr_storage address{};
    auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
    socklen_t length = 0;
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      v4->sin_port = htons(port);
      length = sizeof *v4;
    } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(port);
      length = sizeof *v6;
    } else {
      return;
    }
    fd_ = ::socket(address.ss_family, SOCK_STREAM, 0);
    if (fd_ < 0) return;
    const timeval timeout{kClientTimeoutSeconds, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), length) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return fd_ >= 0; }

  bool send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t sent = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (sent <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(sent));
    }
    return true;
  }

  // Everything the server sends until it closes the connection (by FIN or reset);
  // std::nullopt if it is still open at the deadline.
  std::optional<std::string> read_until_closed() {
    std::string received;
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n > 0) {
        received.append(buffer, static_cast<std::size_t>(n));
      } else if (n == 0 || errno == ECONNRESET) {
        return received;
      } else if (errno != EINTR) {
        return std::nullopt;
      }
    }
  }

 private:
  int fd_ = -1;
};

// One request on a fresh connection; the whole response, or std::nullopt.
std::optional<std::string> exchange(std::uint16_t port, std::string_view request,
                                    const std::string& host = "127.0.0.1") {
  Client client(host, port);
  if (!client.connected() || !client.send(request)) return std::nullopt;
  return client.read_until_closed();
}

int status_of(const std::optional<std::string>& response) {
  if (!response || !response->starts_with("HTTP/1.1 ") || response->size() < 12) return 0;
  return std::stoi(response->substr(9, 3));
}

std::string body_of(const std::string& response) {
  const std::size_t head_end = response.find("\r\n\r\n");
  return head_end == std::string::npos ? "" : response.substr(head_end + 4);
}

// Listens on `host` port 0 and drives a fresh loop on this thread while `client` runs on its
// own thread with the bound port; when the client returns, closes the endpoint. Checks that
// the close callback ran exactly once and that the loop then closes cleanly. If listen fails
// the client is not run and the result says why.
ListenResult serve_on(const char* host, Registry& registry, const HttpEndpointOptions& options,
                      const std::function<void(std::uint16_t port)>& client) {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  auto endpoint = std::make_unique<HttpEndpoint>(&loop, registry, options);
  const ListenResult listened = endpoint->listen(host, 0);

  struct Context {
    HttpEndpoint* endpoint = nullptr;
    uv_async_t client_done;  // sent by the client thread when it returns
    uv_timer_t watchdog;     // the deadline for the whole test
    int close_callbacks = 0;
    bool timed_out = false;
  } context;
  context.endpoint = endpoint.get();
  uv_async_init(&loop, &context.client_done, [](uv_async_t* async) {
    auto& ctx = *static_cast<Context*>(async->data);
    ctx.endpoint->close([&ctx] { ++ctx.close_callbacks; });
    uv_close(reinterpret_cast<uv_handle_t*>(&ctx.client_done), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&ctx.watchdog), nullptr);
  });
  uv_timer_init(&loop, &context.watchdog);
  context.client_done.data = &context;
  context.watchdog.data = &context;
  uv_timer_start(
      &context.watchdog,
      [](uv_timer_t* timer) {
        static_cast<Context*>(timer->data)->timed_out = true;
        uv_stop(timer->loop);
      },
      kLoopDeadlineMs, 0);

  std::thread client_thread([&] {
    if (listened.ok()) client(listened.port);
    uv_async_send(&context.client_done);
  });
  uv_run(&loop, UV_RUN_DEFAULT);
  client_thread.join();
  if (context.timed_out) {
    // The loop still holds the endpoint's handles: leak it rather than abort in its destructor.
    (void)endpoint.release();
    FAIL("the loop did not finish within the deadline");
  }
  CHECK(context.close_callbacks == 1);
  endpoint.reset();
  CHECK(uv_loop_close(&loop) == 0);
  return listened;
}

// serve_on the IPv4 loopback, which must work.
void serve(Registry& registry, const HttpEndpointOptions& options,
           const std::function<void(std::uint16_t port)>& client) {
  const ListenResult listened = serve_on("127.0.0.1", registry, options, client);
  REQUIRE(listened.ok());
}

// A registry with something in it, for the tests that do not care what.
class SampleRegistry : public Registry {
 public:
  SampleRegistry() {
    counter("txmq_test_scrapes_total", "Scrapes.").inc(5);
    gauge_family("txmq_test_depth", "Depth.", {"topic"}).with({"a"}).set(2);
  }
};

}  // namespace

TEST_CASE("GET /metrics answers 200 with the rendered registry") {
  SampleRegistry registry;
  std::optional<std::string> response;
  serve(registry, {}, [&](std::uint16_t port) { response = exchange(port, kGetMetrics); });
  REQUIRE(status_of(response) == 200);
  CHECK(response->find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n") !=
        std::string::npos);
  CHECK(body_of(*response) == registry.render());
}

TEST_CASE("listen reports the bound address and the real port when asked for port 0") {
  Registry registry;
  const ListenResult listened = serve_on("127.0.0.1", registry, {}, [](std::uint16_t) {});
  REQUIRE(listened.ok());
  CHECK(listened.host == "127.0.0.1");
  CHECK(listened.port != 0);
}

TEST_CASE("GET on another path answers 404") {
  SampleRegistry registry;
  std::optional<std::string> response;
  serve(registry, {},
        [&](std::uint16_t port) { response = exchange(port, "GET /other HTTP/1.1\r\n\r\n"); });
  CHECK(status_of(response) == 404);
}

TEST_CASE("another method on /metrics answers 405") {
  SampleRegistry registry;
  std::optional<std::string> response;
  serve(registry, {}, [&](std::uint16_t port) {
    response = exchange(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  });
  REQUIRE(status_of(response) == 405);
  CHECK(response->find("\r\nAllow: GET\r\n") != std::string::npos);
}

TEST_CASE("a malformed request answers 400") {
  SampleRegistry registry;
  std::optional<std::string> response;
  serve(registry, {}, [&](std::uint16_t port) { response = exchange(port, "HELLO\r\n\r\n"); });
  CHECK(status_of(response) == 400);
}

TEST_CASE("an oversized request head gets 431 and the endpoint keeps serving") {
  SampleRegistry registry;
  std::optional<std::string> oversized;
  std::optional<std::string> next;
  serve(registry, {}, [&](std::uint16_t port) {
    const std::string request =
        "GET /metrics HTTP/1.1\r\nX-Fill: " + std::string(16 * 1024, 'a') + "\r\n\r\n";
    oversized = exchange(port, request);
    next = exchange(port, kGetMetrics);
  });
  CHECK(status_of(oversized) == 431);
  CHECK(status_of(next) == 200);
}

TEST_CASE("two concurrent connections are both answered") {
  SampleRegistry registry;
  std::optional<std::string> first;
  std::optional<std::string> second;
  serve(registry, {}, [&](std::uint16_t port) {
    Client a("127.0.0.1", port);
    Client b("127.0.0.1", port);
    if (!a.connected() || !b.connected()) return;
    // a's request stays incomplete while b is served from start to end.
    a.send("GET /metrics HTTP/1.1\r\n");
    b.send(kGetMetrics);
    second = b.read_until_closed();
    a.send("\r\n");
    first = a.read_until_closed();
  });
  CHECK(status_of(first) == 200);
  CHECK(status_of(second) == 200);
}

TEST_CASE("a render that throws is answered with 500") {
  Registry registry;
  registry.callback_gauge("txmq_broken", "Throws.",
                          []() -> double { throw std::runtime_error("lmdb is gone"); });
  std::optional<std::string> response;
  serve(registry, {}, [&](std::uint16_t port) { response = exchange(port, kGetMetrics); });
  REQUIRE(status_of(response) == 500);
  CHECK(body_of(*response) == "render failed: lmdb is gone\n");
}

TEST_CASE("a connection that sends nothing is closed after the request timeout") {
  SampleRegistry registry;
  HttpEndpointOptions options;
  options.request_timeout_ms = 50;
  std::optional<std::string> response;
  serve(registry, options, [&](std::uint16_t port) {
    Client idle("127.0.0.1", port);
    if (idle.connected()) response = idle.read_until_closed();
  });
  CHECK(response == std::string());
}

TEST_CASE("connections beyond the limit are closed at once while the others are served") {
  SampleRegistry registry;
  HttpEndpointOptions options;
  options.max_connections = 1;
  std::optional<std::string> first;
  std::optional<std::string> refused;
  serve(registry, options, [&](std::uint16_t port) {
    Client a("127.0.0.1", port);
    Client b("127.0.0.1", port);  // accepted after a: the kernel queues them in order
    if (!a.connected() || !b.connected()) return;
    refused = b.read_until_closed();
    a.send(kGetMetrics);
    first = a.read_until_closed();
  });
  CHECK(refused == std::string());
  CHECK(status_of(first) == 200);
}

TEST_CASE("close() closes connections that are still open") {
  SampleRegistry registry;
  std::unique_ptr<Client> open_client;
  std::optional<std::string> served;
  serve(registry, {}, [&](std::uint16_t port) {
    open_client = std::make_unique<Client>("127.0.0.1", port);
    open_client->send("GET /metrics HTTP/1.1\r\n");
    // Connections are accepted in order, so once this one is answered the endpoint holds the
    // first one open, waiting for the rest of its request.
    served = exchange(port, kGetMetrics);
  });
  REQUIRE(status_of(served) == 200);
  CHECK(open_client->read_until_closed() == std::string());
}

TEST_CASE("an endpoint that never listened closes and lets the loop close") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  Registry registry;
  int close_callbacks = 0;
  {
    auto endpoint = std::make_unique<HttpEndpoint>(&loop, registry);
    // Destroying the endpoint inside its own close callback is allowed.
    endpoint->close([&] {
      ++close_callbacks;
      endpoint.reset();
    });
    CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
    CHECK(endpoint == nullptr);
  }
  CHECK(close_callbacks == 1);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("listen rejects a host that is not an IP literal") {
  Registry registry;
  const ListenResult listened = serve_on("localhost", registry, {}, [](std::uint16_t) {});
  CHECK(listened.error == UV_EINVAL);
}

TEST_CASE("listen reports an address already in use") {
  Registry registry;
  int second_error = 0;
  int second_loop_close = -1;
  serve(registry, {}, [&](std::uint16_t port) {
    // A second endpoint on its own loop and thread, bound to the port the first one holds.
    uv_loop_t loop;
    uv_loop_init(&loop);
    auto second = std::make_unique<HttpEndpoint>(&loop, registry);
    second_error = second->listen("127.0.0.1", port).error;
    second->close([&] { second.reset(); });
    uv_run(&loop, UV_RUN_DEFAULT);
    second_loop_close = uv_loop_close(&loop);
  });
  CHECK(second_error == UV_EADDRINUSE);
  CHECK(second_loop_close == 0);
}

TEST_CASE("the endpoint serves on the IPv6 loopback") {
  SampleRegistry registry;
  std::optional<std::string> response;
  const ListenResult listened = serve_on("::1", registry, {}, [&](std::uint16_t port) {
    response = exchange(port, kGetMetrics, "::1");
  });
  if (listened.error == UV_EADDRNOTAVAIL || listened.error == UV_EAFNOSUPPORT) {
    MESSAGE("skipped: this machine has no IPv6 loopback");
    return;
  }
  REQUIRE(listened.ok());
  CHECK(listened.host == "::1");
  CHECK(status_of(response) == 200);
}
