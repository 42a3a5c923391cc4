// Graceful shutdown: SIGTERM makes the broker answer what it already read, close its
// connections and exit 0, promptly, losing no confirmed message.

#include <doctest/doctest.h>

#include <signal.h>

#include <chrono>
#include <charconv>
#include <condition_variable>
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

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using namespace txmq::client;  // the public API under test
using txmq::test::BrokerProcess;
using txmq::test::describe;

constexpr Millis kWait = 10s;
const std::string kTopic = "orders";

// Counts the SIGPIPEs delivered to this process while alive, instead of dying of the first;
// restores the previous disposition afterwards. For the regression test below.
class CountSigpipe {
 public:
  CountSigpipe() {
    count_ = 0;
    struct sigaction sa {};
    sa.sa_handler = [](int) { count_ = count_ + 1; };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, &previous_);
  }
  ~CountSigpipe() { sigaction(SIGPIPE, &previous_, nullptr); }
  CountSigpipe(const CountSigpipe&) = delete;
  CountSigpipe& operator=(const CountSigpipe&) = delete;

  // SIGPIPEs delivered so far.
  int count() const { return count_; }

 private:
  static inline volatile sig_atomic_t count_ = 0;
  struct sigaction previous_ {};
};

// The shared test options with a shorter request timeout.
ClientOptions client_options(const std::string& address) {
  ClientOptions o = txmq::test::client_options(address);
  o.request_timeout = 2s;
  return o;
}

void start_with_topic(BrokerProcess& broker) {
  auto st = broker.start();
  REQUIRE_MESSAGE(st.ok(), describe(st));
  Admin admin(client_options(broker.address()));
  auto created = admin.create_topic(kTopic, 1, kWait);
  REQUIRE_MESSAGE(created.ok(), describe(created));
}

std::optional<std::uint64_t> parse_seq(const std::string& body) {
  if (body.size() <= 4 || body.compare(0, 4, "seq-") != 0) return std::nullopt;
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(body.data() + 4, body.data() + body.size(), n);
  if (ec != std::errc() || end != body.data() + body.size()) return std::nullopt;
  return n;
}

// Every stored message of the single partition, offset -> body, read with a fresh group.
std::map<std::uint64_t, std::string> read_partition(const std::string& address) {
  Admin admin(client_options(address));
  auto info = admin.describe_topic(kTopic, kWait);
  REQUIRE_MESSAGE(info.ok(), describe(info));
  const std::uint64_t stored = info->partitions.at(0).next_offset;
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::uint64_t, std::string> by_offset;  // guarded by mu
  Consumer::Options co;
  static_cast<ClientOptions&>(co) = client_options(address);
  co.request_timeout = kWait;
  co.topic = kTopic;
  co.group = "verify";
  co.window = 1u << 20;  // never acks: the window holds the whole partition
  Consumer consumer(co, [&](const Delivery& d) {
    std::lock_guard lock(mu);
    by_offset.emplace(d.offset, d.body);
    cv.notify_all();
  });
  auto st = consumer.wait_subscribed(kWait);
  REQUIRE_MESSAGE(st.ok(), describe(st));
  std::unique_lock lock(mu);
  REQUIRE_MESSAGE(cv.wait_for(lock, kWait, [&] { return by_offset.size() >= stored; }),
                  "read " << by_offset.size() << " of " << stored);
  return by_offset;
}

}  // namespace

TEST_CASE("SIGTERM with sends in flight exits 0 and keeps every confirmed message") {
  constexpr std::uint64_t kConfirmsBeforeBurst = 500;
  constexpr std::uint64_t kBurst = 1000;
  constexpr std::uint64_t kMaxSends = 100000;
  BrokerProcess broker;
  start_with_topic(broker);

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::uint64_t, SendReceipt> confirmed;  // guarded by mu; seq -> receipt
  std::uint64_t failed = 0;                        // guarded by mu
  std::uint64_t sent = 0;                          // guarded by mu; send_async calls begun
  bool burst_sent = false;                         // guarded by mu
  bool stop = false;                               // guarded by mu

  Producer::Options po;
  static_cast<ClientOptions&>(po) = client_options(broker.address());
  po.max_buffered_bytes = 1u << 20;  // the burst fits: send_async never blocks on it
  auto producer = std::make_unique<Producer>(po);
  // One thread sends, in seq order: a steady stream until 500 confirms, then a burst of
  // 1000 at once (so that many sends are surely in flight when SIGTERM lands), then the
  // stream again, so that sends keep arriving while the broker shuts down.
  std::thread producing([&] {
    const auto deadline = Clock::now() + 30s;
    bool burst_done = false;
    for (std::uint64_t seq = 0; seq < kMaxSends && Clock::now() < deadline; ++seq) {
      bool burst;
      {
        std::lock_guard lock(mu);
        if (stop) break;
        ++sent;
        burst = !burst_done && confirmed.size() >= kConfirmsBeforeBurst;
      }
      Message m;
      m.body = "seq-" + std::to_string(seq);
      producer->send_async(kTopic, std::move(m), [&, seq](const txmq::Result<SendReceipt>& r) {
        std::lock_guard lock(mu);
        if (r.ok())
          confirmed.emplace(seq, *r);
        else
          ++failed;
        cv.notify_all();
      });
      if (burst) {
        for (std::uint64_t i = 0; i < kBurst; ++i) {
          ++seq;
          {
            std::lock_guard lock(mu);
            ++sent;
          }
          Message b;
          b.body = "seq-" + std::to_string(seq);
          producer->send_async(kTopic, std::move(b), [&, seq](const txmq::Result<SendReceipt>& r) {
            std::lock_guard lock(mu);
            if (r.ok())
              confirmed.emplace(seq, *r);
            else
              ++failed;
            cv.notify_all();
          });
        }
        burst_done = true;
        std::lock_guard lock(mu);
        burst_sent = true;
        cv.notify_all();
      }
    }
  });

  std::uint64_t in_flight_at_term = 0;
  bool ready;
  {
    std::unique_lock lock(mu);
    ready = cv.wait_for(lock, kWait, [&] { return burst_sent; });
    in_flight_at_term = sent - confirmed.size() - failed;
  }
  int exit_code = -1;
  if (ready) exit_code = broker.terminate(kWait);
  {
    std::lock_guard lock(mu);
    stop = true;
  }
  producing.join();
  producer.reset();  // fails whatever still waits; every callback has run afterwards
  REQUIRE_MESSAGE(ready, "fewer than " << kConfirmsBeforeBurst << " confirms within " << kWait.count() << " ms");
  CHECK(exit_code == 0);
  CHECK(in_flight_at_term > 0);

  std::map<std::uint64_t, SendReceipt> confirms;
  {
    std::lock_guard lock(mu);
    confirms = confirmed;
    CHECK(confirmed.size() + failed == sent);  // every callback ran exactly once
    MESSAGE("sent " << sent << ", confirmed " << confirmed.size() << ", in flight at SIGTERM "
                    << in_flight_at_term);
  }

  auto st = broker.start();
  REQUIRE_MESSAGE(st.ok(), describe(st));
  auto stored = read_partition(broker.address());
  std::map<std::uint64_t, std::uint64_t> offset_of_seq;
  std::optional<std::uint64_t> previous;
  for (const auto& [offset, body] : stored) {
    auto seq = parse_seq(body);
    REQUIRE_MESSAGE(seq.has_value(), "offset " << offset << " holds garbage: '" << body << "'");
    if (previous) REQUIRE_MESSAGE(*seq > *previous, "offset " << offset << " holds " << body << " out of order");
    previous = seq;
    offset_of_seq[*seq] = offset;
  }
  std::uint64_t missing = 0;
  for (const auto& [seq, receipt] : confirms) {
    auto it = offset_of_seq.find(seq);
    if (it == offset_of_seq.end() || it->second != receipt.offset)
      if (missing++ < 5) FAIL_CHECK("confirmed seq-" << seq << " (offset " << receipt.offset << ") is not stored there");
  }
  CHECK(missing == 0);
}

TEST_CASE("SIGTERM with idle connected clients exits 0 within a few seconds") {
  BrokerProcess broker;
  start_with_topic(broker);
  const std::string address = broker.address();

  Admin admin(client_options(address));
  REQUIRE(admin.list_topics(kWait).ok());
  Producer::Options po;
  static_cast<ClientOptions&>(po) = client_options(address);
  Producer producer(po);
  Message m;
  m.body = "hello";
  auto sent = producer.send(kTopic, std::move(m), kWait);
  REQUIRE_MESSAGE(sent.ok(), describe(sent));
  Consumer::Options co;
  static_cast<ClientOptions&>(co) = client_options(address);
  co.topic = kTopic;
  co.group = "idle";
  Consumer consumer(co, [](const Delivery&) {});
  auto sub = consumer.wait_subscribed(kWait);
  REQUIRE_MESSAGE(sub.ok(), txmq::test::describe(sub));

  const auto t0 = Clock::now();
  const int exit_code = broker.terminate(5s);
  const auto took = std::chrono::duration_cast<Millis>(Clock::now() - t0);
  MESSAGE("SIGTERM to exit: " << took.count() << " ms");
  CHECK(exit_code == 0);
  CHECK(took < 3s);
}

TEST_CASE("SIGTERM with no clients exits 0") {
  BrokerProcess broker;
  start_with_topic(broker);
  CHECK(broker.terminate(5s) == 0);
}

// Regression: libuv writes with write(2), which raises SIGPIPE when the peer has closed the
// connection (the broker's graceful shutdown half-closes, then closes with unread input, so
// the client socket sees FIN then RST and the next write gets EPIPE). The client once let
// that kill the whole application from a producer's I/O thread (and `txmq produce` exited
// 141 instead of reporting unconfirmed messages); it now blocks SIGPIPE on its I/O thread
// (client/src/connection.cpp). Each round streams sends through a broker's SIGTERM; a
// SIGPIPE that gets through is counted and fails the CHECK rather than killing the test.
TEST_CASE("a producer whose broker shuts down mid-stream is not killed by SIGPIPE") {
  constexpr int kRounds = 20;
  constexpr int kProducers = 4;  // each connection is one more chance per round
  constexpr std::uint64_t kConfirmsBeforeTerm = 200;
  CountSigpipe sigpipe;
  const auto deadline = Clock::now() + 60s;
  int rounds = 0;
  for (; rounds < kRounds && sigpipe.count() == 0 && Clock::now() < deadline; ++rounds) {
    BrokerProcess broker;
    start_with_topic(broker);
    std::mutex mu;
    std::condition_variable cv;
    std::uint64_t confirmed = 0;  // guarded by mu
    bool stop = false;            // guarded by mu
    Producer::Options po;
    static_cast<ClientOptions&>(po) = client_options(broker.address());
    std::vector<std::unique_ptr<Producer>> producers;
    for (int i = 0; i < kProducers; ++i) producers.push_back(std::make_unique<Producer>(po));
    std::thread producing([&] {
      const auto until = Clock::now() + 10s;
      for (int i = 0; i < 200000 && Clock::now() < until; ++i) {
        {
          std::lock_guard lock(mu);
          if (stop) break;
        }
        Message m;
        m.body = "m" + std::to_string(i);
        producers[i % kProducers]->send_async(kTopic, std::move(m), [&](const txmq::Result<SendReceipt>& r) {
          std::lock_guard lock(mu);
          if (r.ok()) ++confirmed;
          cv.notify_all();
        });
      }
    });
    {
      std::unique_lock lock(mu);
      cv.wait_for(lock, kWait, [&] { return confirmed >= kConfirmsBeforeTerm; });
    }
    const int exit_code = broker.terminate(kWait);
    {
      std::lock_guard lock(mu);
      stop = true;
    }
    producing.join();
    producers.clear();
    CHECK(exit_code == 0);
  }
  CHECK_MESSAGE(sigpipe.count() == 0, "the client raised SIGPIPE in round " << rounds << " of " << kRounds);
}
