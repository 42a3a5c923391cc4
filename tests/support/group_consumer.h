// A consumer for integration tests that records every delivery with its arrival time and
// hands it to a verdict callback (kAckAll: acknowledge each). Shared by the consumer-group,
// dead-letter, delayed-delivery, produce/consume and transaction tests.
//
// Threads: the verdict runs on the client's I/O thread and must not block; the accessors
// are for the test's thread. Deliveries that reach the handler before the constructor
// returned are judged as soon as the Consumer exists.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/client_fixtures.h"
#include "txmq/client.h"

namespace txmq::test {

struct Arrival {
  client::Delivery delivery;
  std::chrono::steady_clock::time_point at;  // when the handler saw it, before any verdict on it
  std::uint64_t wall_ms;                     // the same moment on the wall clock
};

class GroupConsumer {
 public:
  using Verdict = std::function<void(client::Consumer&, const client::Delivery&)>;
  // The client library's default window.
  static inline const std::uint32_t kDefaultWindow = client::Consumer::Options().window;

  GroupConsumer(const std::string& address, std::string topic, std::string group, std::uint32_t window,
                Verdict verdict)
      : verdict_(std::move(verdict)) {
    client::Consumer::Options co;
    static_cast<client::ClientOptions&>(co) = client_options(address);
    co.topic = std::move(topic);
    co.group = std::move(group);
    co.window = window;
    consumer_ = std::make_unique<client::Consumer>(co, [this](const client::Delivery& d) { on_delivery(d); });
    std::lock_guard lock(mu_);
    attached_ = true;
    if (verdict_)
      for (const auto& a : arrivals_) verdict_(*consumer_, a.delivery);
  }
  // With the client's default window.
  GroupConsumer(const std::string& address, std::string topic, std::string group, Verdict verdict)
      : GroupConsumer(address, std::move(topic), std::move(group), kDefaultWindow, std::move(verdict)) {}
  GroupConsumer(const GroupConsumer&) = delete;
  GroupConsumer& operator=(const GroupConsumer&) = delete;
  ~GroupConsumer() { close(); }

  client::Consumer& consumer() { return *consumer_; }

  void require_subscribed() {
    auto st = consumer_->wait_subscribed(kWait);
    REQUIRE_MESSAGE(st.ok(), describe(st));
  }

  // True once at least n deliveries arrived; false if they did not within timeout.
  bool wait_for(std::size_t n, client::Millis timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return arrivals_.size() >= n; });
  }

  std::size_t count() {
    std::lock_guard lock(mu_);
    return arrivals_.size();
  }

  std::vector<Arrival> arrivals() {
    std::lock_guard lock(mu_);
    return arrivals_;
  }

  Arrival arrival(std::size_t i) {
    std::lock_guard lock(mu_);
    return arrivals_.at(i);
  }

  std::vector<client::Delivery> deliveries() {
    std::lock_guard lock(mu_);
    std::vector<client::Delivery> out;
    for (const auto& a : arrivals_) out.push_back(a.delivery);
    return out;
  }

  std::vector<std::string> bodies() {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (const auto& a : arrivals_) out.push_back(a.delivery.body);
    return out;
  }

  void require_flushed() {
    auto st = consumer_->flush_acks(kWait);
    REQUIRE_MESSAGE(st.ok(), describe(st));
  }

  // Closes the connection: what this consumer holds goes back to the group.
  void close() {
    {
      std::lock_guard lock(mu_);
      attached_ = false;
    }
    consumer_.reset();
  }

 private:
  void on_delivery(const client::Delivery& d) {
    const std::uint64_t wall = wall_ms();
    std::lock_guard lock(mu_);
    arrivals_.push_back(Arrival{d, std::chrono::steady_clock::now(), wall});
    if (attached_ && verdict_) verdict_(*consumer_, d);
    cv_.notify_all();
  }

  Verdict verdict_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Arrival> arrivals_;  // guarded by mu_
  bool attached_ = false;          // guarded by mu_: consumer_ may be used by the handler
  std::unique_ptr<client::Consumer> consumer_;
};

// Verdicts most tests need: ack everything; or none, the test's thread decides.
inline const GroupConsumer::Verdict kAckAll = [](client::Consumer& c, const client::Delivery& d) { c.ack(d); };
inline const GroupConsumer::Verdict kHold = nullptr;

}  // namespace txmq::test
