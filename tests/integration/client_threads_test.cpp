// The client's thread rules against the real txmq-broker: every blocking call made on the
// object's own I/O thread (from a handler, a send callback, a checker) fails at once with
// kInvalidArgument instead of blocking that thread; and flush_acks waits for the verdicts
// given before it, not for those given while it waits.
//
// Admin runs no user code on its I/O thread, so its check (client/src/admin.cpp) cannot be
// reached through the public API and has no test here.

#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/client_fixtures.h"
#include "txmq/client.h"

namespace {

using txmq::ErrorCode;
using txmq::Status;
using namespace txmq::client;  // the public API under test
using txmq::test::BrokerProcess;
using txmq::test::client_options;
using txmq::test::create_topic;
using txmq::test::describe;
using txmq::test::kWait;
using txmq::test::producer_options;
using txmq::test::start;
using txmq::test::text;

// One value handed from a client thread to the test thread; the first one set wins.
template <typename T>
class Outcome {
 public:
  void set(T value) {
    std::lock_guard lock(mu_);
    if (value_) return;
    value_ = std::move(value);
    cv_.notify_all();
  }
  // The value, or nullopt when none came within timeout.
  std::optional<T> wait(Millis timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return value_.has_value(); });
    return value_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<T> value_;
};

ErrorCode code_of(const Status& st) { return st.ok() ? ErrorCode::kOk : st.error().code; }

Consumer::Options consumer_options(const std::string& address, const std::string& topic, const std::string& group) {
  Consumer::Options co;
  static_cast<ClientOptions&>(co) = client_options(address);
  co.topic = topic;
  co.group = group;
  return co;
}

TransactionalProducer::Options txn_options(const std::string& address) {
  TransactionalProducer::Options o;
  static_cast<ClientOptions&>(o) = client_options(address);
  o.producer_group = "threads-test";
  return o;
}

void produce_one(const std::string& address, const std::string& topic) {
  txmq::test::produce_one(address, topic, text("m"));
}

// Runs call(consumer, delivery) in the handler of the first delivery and returns its status.
template <typename Call>
std::optional<ErrorCode> from_consumer_handler(Call call) {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  Outcome<ErrorCode> outcome;
  Consumer consumer(consumer_options(broker.address(), "t", "g"),
                    [&](Consumer& self, const Delivery& d) { outcome.set(code_of(call(self, d))); });
  REQUIRE(consumer.wait_subscribed(kWait).ok());
  produce_one(broker.address(), "t");
  return outcome.wait(kWait);
}

// Runs call(producer) in the callback of a send_async and returns its error code.
template <typename Call>
std::optional<ErrorCode> from_send_callback(Call call) {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  Outcome<ErrorCode> outcome;
  Producer producer(producer_options(broker.address()));
  producer.send_async("t", text("m"), [&](const txmq::Result<SendReceipt>&) { outcome.set(call(producer)); });
  auto code = outcome.wait(kWait);
  REQUIRE(producer.flush(kWait).ok());
  return code;
}

// Runs call(producer) in the callback of a prepare_async and returns its error code.
template <typename Call>
std::optional<ErrorCode> from_prepare_callback(Call call) {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  Outcome<ErrorCode> outcome;
  TransactionalProducer producer(txn_options(broker.address()), nullptr);
  producer.prepare_async("t", text("m"), [&](const txmq::Result<std::uint64_t>&) { outcome.set(call(producer)); });
  return outcome.wait(kWait);
}

}  // namespace

TEST_CASE("Consumer::flush_acks called from the handler fails at once with kInvalidArgument") {
  // A long timeout: before the check, the call blocked the I/O thread for all of it.
  auto code = from_consumer_handler([](Consumer& self, const Delivery& d) {
    self.ack(d);
    return self.flush_acks(Millis(60'000));
  });
  REQUIRE(code.has_value());
  CHECK(*code == ErrorCode::kInvalidArgument);
}

TEST_CASE("Consumer::wait_subscribed called from the handler fails at once with kInvalidArgument") {
  auto code = from_consumer_handler([](Consumer& self, const Delivery&) { return self.wait_subscribed(Millis(60'000)); });
  REQUIRE(code.has_value());
  CHECK(*code == ErrorCode::kInvalidArgument);
}

TEST_CASE("Producer::send called from a send callback fails at once with kInvalidArgument") {
  auto code = from_send_callback([](Producer& p) { return p.send("t", text("inner"), Millis(60'000)).error().code; });
  REQUIRE(code.has_value());
  CHECK(*code == ErrorCode::kInvalidArgument);
}

TEST_CASE("Producer::flush called from a send callback fails at once with kInvalidArgument") {
  auto code = from_send_callback([](Producer& p) { return code_of(p.flush(Millis(60'000))); });
  REQUIRE(code.has_value());
  CHECK(*code == ErrorCode::kInvalidArgument);
}

TEST_CASE("TransactionalProducer::prepare called from a prepare_async callback fails at once with kInvalidArgument") {
  auto code = from_prepare_callback(
      [](TransactionalProducer& p) { return p.prepare("t", text("inner"), Millis(60'000)).error().code; });
  REQUIRE(code.has_value());
  CHECK(*code == ErrorCode::kInvalidArgument);
}

TEST_CASE("TransactionalProducer::end called from a prepare_async callback fails at once with kInvalidArgument") {
  auto code = from_prepare_callback([](TransactionalProducer& p) {
    return p.end(1, LocalTransactionState::kCommit, Millis(60'000)).error().code;
  });
  REQUIRE(code.has_value());
  CHECK(*code == ErrorCode::kInvalidArgument);
}

TEST_CASE("TransactionalProducer::send_in_transaction called from a prepare_async callback fails at once without running the executor") {
  bool ran = false;
  auto code = from_prepare_callback([&](TransactionalProducer& p) {
    auto r = p.send_in_transaction(
        "t", text("inner"),
        [&](std::uint64_t) {
          ran = true;
          return LocalTransactionState::kCommit;
        },
        Millis(60'000));
    return r.ok() ? ErrorCode::kOk : r.error().code;
  });
  REQUIRE(code.has_value());
  CHECK(*code == ErrorCode::kInvalidArgument);
  CHECK_FALSE(ran);
}

TEST_CASE("TransactionalProducer::prepare called from the checker fails at once with kInvalidArgument") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  Outcome<ErrorCode> outcome;
  TransactionalProducer* self = nullptr;  // set before anything is prepared, so before any check
  auto options = txn_options(broker.address());
  options.check_after = Millis(100);
  TransactionalProducer producer(options, [&](const TransactionCheck&) {
    outcome.set(self->prepare("t", text("inner"), Millis(60'000)).error().code);
    return LocalTransactionState::kRollback;
  });
  self = &producer;
  auto id = producer.prepare("t", text("m"), kWait);
  REQUIRE_MESSAGE(id.ok(), describe(id));
  auto code = outcome.wait(kWait);
  REQUIRE(code.has_value());
  CHECK(*code == ErrorCode::kInvalidArgument);
}

TEST_CASE("flush_acks returns ok while verdicts keep being given after the call") {
  // Regression (fixed): flush_acks waited until no verdict at all was outstanding, so
  // under a steady flow of acks it ran into its timeout although every verdict given
  // before the call had long been confirmed (with the three ackers below it failed every
  // time).
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  Outcome<Delivery> first;
  Consumer consumer(consumer_options(broker.address(), "t", "g"), [&](Consumer& self, const Delivery& d) {
    self.ack(d);
    first.set(d);
  });
  REQUIRE(consumer.wait_subscribed(kWait).ok());
  produce_one(broker.address(), "t");
  auto d = first.wait(kWait);
  REQUIRE(d.has_value());

  // Acking an acked message again changes nothing on the broker, and keeps verdicts
  // outstanding without pause.
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> given{0};
  // Several threads, so that no pause of one leaves a moment with no verdict outstanding.
  std::vector<std::thread> ackers;
  for (int i = 0; i < 3; ++i)
    ackers.emplace_back([&] {
      while (!stop.load()) {
        consumer.ack(d->partition, d->offset);
        given.fetch_add(1);
      }
    });
  while (given.load() < 1000) std::this_thread::yield();  // the flow is under way
  Status st = consumer.flush_acks(kWait);
  stop = true;
  for (auto& t : ackers) t.join();
  CHECK_MESSAGE(st.ok(), describe(st));
  REQUIRE(consumer.flush_acks(kWait).ok());
}

TEST_CASE("flush_acks with no verdicts given returns ok at once") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  Consumer consumer(consumer_options(broker.address(), "t", "g"), [](Consumer&, const Delivery&) {});
  REQUIRE(consumer.flush_acks(Millis(0)).ok());
}
