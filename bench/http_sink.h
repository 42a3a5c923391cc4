// A minimal HTTP/1.1 receiver for benchmarks: answers every request with 204 at once,
// keeps connections alive, counts requests. One libuv loop on its own thread; as cheap a
// receiver as we can write, so that what is measured is the sender.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

namespace txmq::bench {

class HttpSink {
 public:
  HttpSink();   // listens on 127.0.0.1, a free port; throws std::runtime_error
  ~HttpSink();  // stops the loop and joins its thread
  HttpSink(const HttpSink&) = delete;
  HttpSink& operator=(const HttpSink&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }
  std::uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  // Steady-clock nanoseconds of the first request since the last reset, 0 when none.
  std::int64_t first_request_ns() const { return first_ns_.load(); }
  void reset() {
    requests_ = 0;
    first_ns_ = 0;
  }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::int64_t> first_ns_{0};
  std::thread thread_;
};

}  // namespace txmq::bench
