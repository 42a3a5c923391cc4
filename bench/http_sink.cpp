#include "http_sink.h"

#include <uv.h>

#include <chrono>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string_view>

namespace txmq::bench {
namespace {

constexpr std::string_view kResponse = "HTTP/1.1 204 No Content\r\nServer: txmq-bench-sink\r\n\r\n";

// Content-Length of a request head, 0 when absent.
std::size_t content_length(std::string_view head) {
  constexpr std::string_view kName = "content-length:";
  for (std::size_t i = 0; i + kName.size() <= head.size(); ++i) {
    if (i != 0 && head[i - 1] != '\n') continue;
    bool match = true;
    for (std::size_t k = 0; k < kName.size() && match; ++k)
      match = std::tolower(static_cast<unsigned char>(head[i + k])) == kName[k];
    if (match) return std::strtoull(head.data() + i + kName.size(), nullptr, 10);
  }
  return 0;
}

}  // namespace

struct HttpSink::Impl {
  uv_loop_t loop;
  uv_tcp_t server;
  uv_async_t stop;
  HttpSink* owner;

  struct Conn {
    uv_tcp_t tcp;
    Impl* impl;
    std::string in;
  };
  std::set<Conn*> conns;  // open connections, closed at stop

  static void free_conn(uv_handle_t* h) { delete static_cast<Conn*>(h->data); }
  static void close_conn(Conn* c) {
    c->impl->conns.erase(c);
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), &free_conn);
  }

  static void on_alloc(uv_handle_t*, std::size_t suggested, uv_buf_t* buf) {
    buf->base = new char[suggested];
    buf->len = suggested;
  }

  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* c = static_cast<Conn*>(s->data);
    if (n < 0) {
      delete[] buf->base;
      close_conn(c);
      return;
    }
    c->in.append(buf->base, static_cast<std::size_t>(n));
    delete[] buf->base;
    // Answer every complete request in the buffer with one write (pipelining allowed).
    std::size_t answered = 0, pos = 0;
    for (;;) {
      const auto end = c->in.find("\r\n\r\n", pos);
      if (end == std::string::npos) break;
      const std::size_t total = end + 4 + content_length(std::string_view(c->in).substr(pos, end - pos));
      if (total > c->in.size()) break;
      pos = total;
      ++answered;
    }
    if (answered == 0) return;
    c->in.erase(0, pos);
    HttpSink* owner = c->impl->owner;
    if (owner->requests_.fetch_add(answered) == 0) {
      std::int64_t zero = 0;
      owner->first_ns_.compare_exchange_strong(
          zero, std::chrono::steady_clock::now().time_since_epoch().count());
    }
    auto* out = new std::string;
    for (std::size_t i = 0; i < answered; ++i) out->append(kResponse);
    auto* req = new uv_write_t;
    req->data = out;
    uv_buf_t b = uv_buf_init(out->data(), static_cast<unsigned>(out->size()));
    uv_write(req, s, &b, 1, [](uv_write_t* r, int) {
      delete static_cast<std::string*>(r->data);
      delete r;
    });
  }

  static void on_connection(uv_stream_t* server, int status) {
    if (status < 0) return;
    auto* impl = static_cast<Impl*>(server->data);
    auto* c = new Conn{{}, impl, {}};
    uv_tcp_init(&impl->loop, &c->tcp);
    c->tcp.data = c;
    impl->conns.insert(c);
    if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) return close_conn(c);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
  }
};

HttpSink::HttpSink() : impl_(std::make_unique<Impl>()) {
  Impl& i = *impl_;
  i.owner = this;
  uv_loop_init(&i.loop);
  uv_tcp_init(&i.loop, &i.server);
  i.server.data = &i;
  sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  if (uv_tcp_bind(&i.server, reinterpret_cast<const sockaddr*>(&addr), 0) != 0 ||
      uv_listen(reinterpret_cast<uv_stream_t*>(&i.server), 1024, &Impl::on_connection) != 0)
    throw std::runtime_error("http sink: cannot listen on 127.0.0.1");
  sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&i.server, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  i.stop.data = &i;
  uv_async_init(&i.loop, &i.stop, [](uv_async_t* a) {
    // Close every handle; the loop then runs out of work and the thread ends.
    auto* impl = static_cast<Impl*>(a->data);
    for (Impl::Conn* c : impl->conns) uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), &Impl::free_conn);
    impl->conns.clear();
    uv_close(reinterpret_cast<uv_handle_t*>(&impl->server), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&impl->stop), nullptr);
  });
  thread_ = std::thread([&i] { uv_run(&i.loop, UV_RUN_DEFAULT); });
}

HttpSink::~HttpSink() {
  uv_async_send(&impl_->stop);
  thread_.join();
  uv_loop_close(&impl_->loop);
}

}  // namespace txmq::bench
