// The producer's back-pressure against the real txmq-broker: send_async takes room for
// each message until its answer (max_in_flight_messages, max_buffered_bytes), waits up to
// max_block for room, and otherwise fails with kTimeout without queuing the message.
//
// A broker stopped with SIGSTOP answers nothing, so the messages sent to it stay in flight
// for as long as the test needs; SIGCONT lets them through.

#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/client_fixtures.h"
#include "txmq/client.h"

namespace {

using txmq::ErrorCode;
using txmq::Result;
using namespace txmq::client;  // the public API under test
using txmq::test::BrokerProcess;
using txmq::test::client_options;
using txmq::test::create_topic;
using txmq::test::describe;
using txmq::test::kQuiet;
using txmq::test::kWait;
using txmq::test::producer_options;
using txmq::test::start;
using txmq::test::text;

// The results of send_async callbacks, by the order the test sent them.
class Results {
 public:
  Producer::SendCallback slot(std::size_t i) {
    return [this, i](const Result<SendReceipt>& r) {
      std::lock_guard lock(mu_);
      results_.emplace(i, r);
      cv_.notify_all();
    };
  }
  // The result of send i, or nullopt when none came within timeout.
  std::optional<Result<SendReceipt>> wait(std::size_t i, Millis timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return results_.count(i) > 0; })) return std::nullopt;
    return results_.at(i);
  }
  std::size_t count() {
    std::lock_guard lock(mu_);
    return results_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::size_t, Result<SendReceipt>> results_;
};

// SIGSTOPs the broker for the scope's lifetime.
class Frozen {
 public:
  explicit Frozen(BrokerProcess& broker) : pid_(broker.pid()) { ::kill(pid_, SIGSTOP); }
  ~Frozen() { thaw(); }
  void thaw() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
    pid_ = 0;
  }

 private:
  pid_t pid_;
};

std::uint64_t next_offset(const std::string& address, const std::string& topic) {
  Admin admin(client_options(address));
  auto t = admin.describe_topic(topic, kWait);
  REQUIRE_MESSAGE(t.ok(), describe(t));
  return t->partitions.at(0).next_offset;
}

// A connected producer with the given limits: one message sent and confirmed first.
Producer::Options limited(const std::string& address, std::size_t messages, std::size_t bytes, Millis max_block) {
  auto o = producer_options(address);
  o.max_in_flight_messages = messages;
  o.max_buffered_bytes = bytes;
  o.max_block = max_block;
  return o;
}

void send_first(Producer& p) {
  auto r = p.send("t", text("first"), kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
}

}  // namespace

TEST_CASE("at max_in_flight_messages, send_async fails with kTimeout after max_block and queues nothing") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  Results results;
  Producer producer(limited(broker.address(), 3, 64u << 20, Millis(200)));
  send_first(producer);
  {
    Frozen frozen(broker);
    for (std::size_t i = 0; i < 3; ++i) producer.send_async("t", text("m" + std::to_string(i)), results.slot(i));
    producer.send_async("t", text("over"), results.slot(3));
    auto over = results.wait(3, kWait);
    REQUIRE(over.has_value());
    REQUIRE_FALSE(over->ok());
    CHECK(over->error().code == ErrorCode::kTimeout);
    CHECK_MESSAGE(over->error().message.find("3 message(s)") != std::string::npos, over->error().message);
    CHECK_MESSAGE(over->error().message.find("max_in_flight_messages = 3") != std::string::npos,
                  over->error().message);
    CHECK(results.count() == 1);  // the three in flight are still unanswered
  }
  REQUIRE(producer.flush(kWait).ok());
  for (std::size_t i = 0; i < 3; ++i) {
    auto r = results.wait(i, kWait);
    REQUIRE(r.has_value());
    CHECK_MESSAGE(r->ok(), describe(*r));
  }
  CHECK(next_offset(broker.address(), "t") == 4);  // first + three; the refused one never went out
}

TEST_CASE("a send_async waiting for room goes through once an answer frees it") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  Results results;
  Producer producer(limited(broker.address(), 2, 64u << 20, kWait));
  send_first(producer);
  Frozen frozen(broker);
  producer.send_async("t", text("a"), results.slot(0));
  producer.send_async("t", text("b"), results.slot(1));
  std::atomic<bool> returned{false};
  std::thread third([&] {
    producer.send_async("t", text("c"), results.slot(2));
    returned = true;
  });
  // Watching for something that must not happen: the third waits while two are in flight.
  auto until = std::chrono::steady_clock::now() + kQuiet;
  while (std::chrono::steady_clock::now() < until && !returned) std::this_thread::yield();
  CHECK_FALSE(returned.load());
  frozen.thaw();
  third.join();
  REQUIRE(producer.flush(kWait).ok());
  for (std::size_t i = 0; i < 3; ++i) {
    auto r = results.wait(i, kWait);
    REQUIRE(r.has_value());
    CHECK_MESSAGE(r->ok(), describe(*r));
  }
}

TEST_CASE("at max_buffered_bytes, send_async fails with kTimeout after max_block and queues nothing") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  Results results;
  Producer producer(limited(broker.address(), 0, 1500, Millis(200)));
  send_first(producer);
  {
    Frozen frozen(broker);
    producer.send_async("t", text(std::string(1000, 'a')), results.slot(0));
    producer.send_async("t", text(std::string(1000, 'b')), results.slot(1));
    auto over = results.wait(1, kWait);
    REQUIRE(over.has_value());
    REQUIRE_FALSE(over->ok());
    CHECK(over->error().code == ErrorCode::kTimeout);
    CHECK_MESSAGE(over->error().message.find("max_buffered_bytes = 1500") != std::string::npos,
                  over->error().message);
  }
  REQUIRE(producer.flush(kWait).ok());
  auto first = results.wait(0, kWait);
  REQUIRE(first.has_value());
  CHECK_MESSAGE(first->ok(), describe(*first));
  CHECK(next_offset(broker.address(), "t") == 2);
}

TEST_CASE("a send callback may send the next message at max_in_flight_messages = 1") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  constexpr int kChain = 50;
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::vector<ErrorCode> failures;
  Producer producer(limited(broker.address(), 1, 64u << 20, kWait));
  std::function<void(const Result<SendReceipt>&)> next = [&](const Result<SendReceipt>& r) {
    std::lock_guard lock(mu);
    if (!r.ok()) failures.push_back(r.error().code);
    if (++done < kChain) producer.send_async("t", text("m"), next);  // from the I/O thread
    cv.notify_all();
  };
  producer.send_async("t", text("m"), next);
  {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, kWait, [&] { return done == kChain; }));
    CHECK(failures.empty());
  }
  REQUIRE(producer.flush(kWait).ok());
  CHECK(next_offset(broker.address(), "t") == kChain);
}

TEST_CASE("send_async from a send callback with no room fails at once with kInvalidArgument") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  Results results;
  Producer producer(limited(broker.address(), 2, 64u << 20, kWait));
  // The I/O thread runs this callback, so no answer can free room while it runs: its own
  // message's room is back, two more fill it, and the last finds none.
  producer.send_async("t", text("a"), [&](const Result<SendReceipt>&) {
    producer.send_async("t", text("b"), results.slot(0));
    producer.send_async("t", text("c"), results.slot(1));
    producer.send_async("t", text("d"), results.slot(2));
  });
  auto refused = results.wait(2, kWait);
  REQUIRE(refused.has_value());
  REQUIRE_FALSE(refused->ok());
  CHECK(refused->error().code == ErrorCode::kInvalidArgument);
  REQUIRE(producer.flush(kWait).ok());
  for (std::size_t i = 0; i < 2; ++i) {
    auto r = results.wait(i, kWait);
    REQUIRE(r.has_value());
    CHECK_MESSAGE(r->ok(), describe(*r));
  }
}
