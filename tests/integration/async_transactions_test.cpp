// TransactionalProducer::send_in_transaction_async against the real txmq-broker: local
// transactions run on the producer's worker threads, never on its I/O thread; done says
// each transaction's final state; a local transaction that throws leaves its transaction
// prepared for the check-back and says why; and transactions in flight are capped.

#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
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
using txmq::test::kWait;
using txmq::test::start;
using txmq::test::text;

TransactionalProducer::Options txn_options(const std::string& address) {
  TransactionalProducer::Options o;
  static_cast<ClientOptions&>(o) = client_options(address);
  o.producer_group = "async-test";
  return o;
}

// The done results by index, with the thread each ran on.
class Done {
 public:
  TransactionalProducer::TransactionCallback slot(std::size_t i) {
    return [this, i](const Result<TransactionResult>& r) {
      std::lock_guard lock(mu_);
      results_.emplace(i, r);
      threads_.insert(std::this_thread::get_id());
      cv_.notify_all();
    };
  }
  bool wait_all(std::size_t n, Millis timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return results_.size() >= n; });
  }
  std::map<std::size_t, Result<TransactionResult>> results() {
    std::lock_guard lock(mu_);
    return results_;
  }
  std::set<std::thread::id> threads() {
    std::lock_guard lock(mu_);
    return threads_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::size_t, Result<TransactionResult>> results_;
  std::set<std::thread::id> threads_;
};

std::uint64_t next_offset(Admin& admin, const std::string& topic) {
  auto t = admin.describe_topic(topic, kWait);
  REQUIRE_MESSAGE(t.ok(), describe(t));
  return t->partitions.at(0).next_offset;
}

// Waits until the topic's partition 0 holds n messages; false when it did not in time.
bool wait_for_offset(const std::string& address, const std::string& topic, std::uint64_t n) {
  Admin admin(client_options(address));
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (std::chrono::steady_clock::now() < deadline) {
    if (next_offset(admin, topic) >= n) return true;
    std::this_thread::yield();
  }
  return false;
}

}  // namespace

TEST_CASE("send_in_transaction_async ends each transaction as its local transaction says, run on worker threads") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  constexpr std::size_t kCount = 200;
  auto options = txn_options(broker.address());
  options.executor_threads = 3;
  TransactionalProducer producer(options, nullptr);
  Done done;
  std::mutex mu;
  std::set<std::thread::id> executor_threads;
  for (std::size_t i = 0; i < kCount; ++i)
    producer.send_in_transaction_async(
        "t", text("m" + std::to_string(i)),
        [&, i](std::uint64_t) {
          std::lock_guard lock(mu);
          executor_threads.insert(std::this_thread::get_id());
          return i % 2 == 0 ? LocalTransactionState::kCommit : LocalTransactionState::kRollback;
        },
        done.slot(i));
  REQUIRE(done.wait_all(kCount, kWait));
  for (const auto& [i, r] : done.results()) {
    REQUIRE_MESSAGE(r.ok(), describe(r));
    CHECK(r->state == (i % 2 == 0 ? TxnState::kCommitted : TxnState::kRolledBack));
    CHECK(r->why_prepared.empty());
  }
  std::lock_guard lock(mu);
  CHECK(executor_threads.size() <= 3);
  // done runs on the I/O thread: no local transaction ran there, nor on this thread.
  for (auto id : done.threads()) CHECK(executor_threads.count(id) == 0);
  CHECK(executor_threads.count(std::this_thread::get_id()) == 0);
  Admin admin(client_options(broker.address()));
  CHECK(next_offset(admin, "t") == kCount / 2);
}

TEST_CASE("a local transaction that throws leaves its transaction prepared, says why, and the check-back ends it") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  auto options = txn_options(broker.address());
  options.check_after = Millis(100);
  std::atomic<int> checks{0};
  TransactionalProducer producer(options, [&](const TransactionCheck&) {
    ++checks;
    return LocalTransactionState::kCommit;  // the local transaction did commit, after all
  });
  Done done;
  producer.send_in_transaction_async(
      "t", text("m"), [](std::uint64_t) -> LocalTransactionState { throw std::runtime_error("database went away"); },
      done.slot(0));
  REQUIRE(done.wait_all(1, kWait));
  auto r = done.results().at(0);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->state == TxnState::kPrepared);
  CHECK(r->transaction_id != 0);
  CHECK_MESSAGE(r->why_prepared.find("threw: database went away") != std::string::npos, r->why_prepared);
  REQUIRE(wait_for_offset(broker.address(), "t", 1));
  CHECK(checks.load() >= 1);
}

TEST_CASE("a local transaction that says unknown leaves its transaction prepared and says so") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  TransactionalProducer producer(txn_options(broker.address()), nullptr);
  Done done;
  producer.send_in_transaction_async("t", text("m"), [](std::uint64_t) { return LocalTransactionState::kUnknown; },
                                     done.slot(0));
  REQUIRE(done.wait_all(1, kWait));
  auto r = done.results().at(0);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->state == TxnState::kPrepared);
  CHECK_MESSAGE(r->why_prepared.find("unknown") != std::string::npos, r->why_prepared);
}

TEST_CASE("at max_in_flight_transactions, send_in_transaction_async fails with kTimeout after max_block") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  auto options = txn_options(broker.address());
  options.max_in_flight_transactions = 2;
  options.max_block = Millis(200);
  TransactionalProducer producer(options, nullptr);
  // The local transactions wait for the test: the two stay in flight until it lets them go.
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  auto held = [&](std::uint64_t) {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return release; });
    return LocalTransactionState::kCommit;
  };
  Done done;
  producer.send_in_transaction_async("t", text("a"), held, done.slot(0));
  producer.send_in_transaction_async("t", text("b"), held, done.slot(1));
  producer.send_in_transaction_async("t", text("c"), held, done.slot(2));
  REQUIRE(done.wait_all(1, kWait));
  {
    auto results = done.results();
    REQUIRE(results.count(2) == 1);
    REQUIRE_FALSE(results.at(2).ok());
    CHECK(results.at(2).error().code == ErrorCode::kTimeout);
    CHECK_MESSAGE(results.at(2).error().message.find("max_in_flight_transactions = 2") != std::string::npos,
                  results.at(2).error().message);
  }
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  REQUIRE(done.wait_all(3, kWait));
  for (std::size_t i = 0; i < 2; ++i) {
    auto r = done.results().at(i);
    REQUIRE_MESSAGE(r.ok(), describe(r));
    CHECK(r->state == TxnState::kCommitted);
  }
  Admin admin(client_options(broker.address()));
  CHECK(next_offset(admin, "t") == 2);
}

TEST_CASE("callers that wait for room get it as soon as a transaction finishes, from several threads") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "t");
  auto options = txn_options(broker.address());
  // One transaction in flight at a time, so that nearly every call waits and is woken by
  // the one before it finishing. A lost wake-up leaves a caller waiting its whole
  // max_block (it then finds the room free and goes on): no call may take that long.
  options.max_in_flight_transactions = 1;
  options.max_block = Millis(5000);
  TransactionalProducer producer(options, nullptr);
  constexpr std::size_t kThreads = 3, kPerThread = 20;
  Done done;
  std::atomic<std::size_t> full_waits{0};
  auto commit = [](std::uint64_t) { return LocalTransactionState::kCommit; };
  std::vector<std::thread> callers;
  for (std::size_t t = 0; t < kThreads; ++t) {
    callers.emplace_back([&, t] {
      for (std::size_t i = 0; i < kPerThread; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        producer.send_in_transaction_async("t", text("m"), commit, done.slot(t * kPerThread + i));
        if (std::chrono::steady_clock::now() - t0 >= options.max_block) ++full_waits;
      }
    });
  }
  for (auto& c : callers) c.join();
  CHECK(full_waits.load() == 0);
  REQUIRE(done.wait_all(kThreads * kPerThread, kWait));
  std::size_t committed = 0;
  for (const auto& [i, r] : done.results()) {
    CHECK_MESSAGE(r.ok(), describe(r));
    if (r.ok() && r->state == TxnState::kCommitted) ++committed;
  }
  CHECK(committed == kThreads * kPerThread);
  Admin admin(client_options(broker.address()));
  CHECK(next_offset(admin, "t") == kThreads * kPerThread);
}
