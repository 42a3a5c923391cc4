// Crash durability: while a client produces, the broker is killed with SIGKILL at a random
// moment, several times in one test. After each restart every message whose confirm the
// client received is present, in order, exactly once, and nothing unconfirmed appears as
// garbage.
//
// The moment of each kill comes from a seeded RNG; the seed is printed, and setting
// TXMQ_CRASH_SEED to it replays the same kill points (the timing of the broker's batches
// still varies from run to run).

#include <doctest/doctest.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
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

constexpr int kRounds = 6;
// Each round kills the broker after a random number of confirms in this range.
constexpr std::uint64_t kMinConfirmsBeforeKill = 100;
constexpr std::uint64_t kMaxConfirmsBeforeKill = 3000;
// Bounds on one round's producing loop, should the broker stop confirming.
constexpr std::uint64_t kMaxSendsPerRound = 50000;
constexpr Millis kMaxRoundTime = 20s;
constexpr Millis kWait = 20s;
const std::string kTopic = "crash";

std::uint64_t seed_from_env() {
  if (const char* s = std::getenv("TXMQ_CRASH_SEED"); s && *s) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

// The shared test options with a shorter request timeout.
ClientOptions client_options(const std::string& address) {
  ClientOptions o = txmq::test::client_options(address);
  o.request_timeout = 5s;
  return o;
}

std::string payload(std::uint64_t seq) { return "seq-" + std::to_string(seq); }

// "seq-<N>" -> N; nullopt for anything else.
std::optional<std::uint64_t> parse_payload(const std::string& body) {
  if (body.size() <= 4 || body.compare(0, 4, "seq-") != 0) return std::nullopt;
  std::uint64_t n = 0;
  const char* first = body.data() + 4;
  const char* last = body.data() + body.size();
  auto [end, ec] = std::from_chars(first, last, n);
  if (ec != std::errc() || end != last) return std::nullopt;
  return n;
}

// What the producer's callbacks saw, written from the client's I/O thread.
class ConfirmLog {
 public:
  void record(std::uint64_t seq, const txmq::Result<SendReceipt>& r) {
    std::lock_guard lock(mu_);
    if (r.ok()) {
      confirmed_.emplace(seq, *r);
    } else {
      if (failed_ == 0) first_error_ = r.error().describe();
      ++failed_;
    }
  }
  std::uint64_t confirmed_count() {
    std::lock_guard lock(mu_);
    return confirmed_.size();
  }
  std::map<std::uint64_t, SendReceipt> confirmed() {
    std::lock_guard lock(mu_);
    return confirmed_;
  }
  std::uint64_t failed_count() {
    std::lock_guard lock(mu_);
    return failed_;
  }
  std::string first_error() {
    std::lock_guard lock(mu_);
    return first_error_;
  }

 private:
  std::mutex mu_;
  std::map<std::uint64_t, SendReceipt> confirmed_;  // seq -> where the broker put it
  std::uint64_t failed_ = 0;
  std::string first_error_;  // of the first failed send
};

// Reads the whole partition with a fresh group. Returns offset -> body, or fails the test.
std::map<std::uint64_t, std::string> read_partition(const std::string& address, const std::string& group) {
  Admin admin(client_options(address));
  auto info = admin.describe_topic(kTopic, kWait);
  REQUIRE_MESSAGE(info.ok(), describe(info));
  REQUIRE(info->partitions.size() == 1);
  REQUIRE(info->partitions[0].first_offset == 0);
  const std::uint64_t stored = info->partitions[0].next_offset;

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::uint64_t, std::string> by_offset;  // guarded by mu
  std::uint64_t deliveries = 0;                   // guarded by mu
  std::uint64_t duplicates = 0;                   // guarded by mu
  {
    Consumer::Options co;
    static_cast<ClientOptions&>(co) = client_options(address);
    co.topic = kTopic;
    co.group = group;
    // A fresh group that never acks: the window must hold the whole partition.
    co.window = 1u << 20;
    Consumer consumer(co, [&](const Delivery& d) {
      std::lock_guard lock(mu);
      ++deliveries;
      if (!by_offset.emplace(d.offset, d.body).second) ++duplicates;
      cv.notify_all();
    });
    auto st = consumer.wait_subscribed(kWait);
    REQUIRE_MESSAGE(st.ok(), describe(st));
    std::unique_lock lock(mu);
    bool all = cv.wait_for(lock, kWait, [&] { return by_offset.size() >= stored; });
    REQUIRE_MESSAGE(all, "read " << by_offset.size() << " of " << stored << " stored messages");
  }
  CHECK(duplicates == 0);
  CHECK(by_offset.size() == stored);
  if (!by_offset.empty()) CHECK(by_offset.rbegin()->first == stored - 1);  // dense from 0
  return by_offset;
}

}  // namespace

TEST_CASE("every confirmed message survives repeated SIGKILLs exactly once and in order") {
  const std::uint64_t seed = seed_from_env();
  std::printf("crash_durability_test: seed %llu (replay with TXMQ_CRASH_SEED=%llu)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  INFO("seed " << seed << " (replay with TXMQ_CRASH_SEED=" << seed << ")");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::uint64_t> kill_after(kMinConfirmsBeforeKill, kMaxConfirmsBeforeKill);
  BrokerProcess broker;
  auto st = broker.start();
  REQUIRE_MESSAGE(st.ok(), describe(st));
  {
    Admin admin(client_options(broker.address()));
    auto created = admin.create_topic(kTopic, 1, kWait);
    REQUIRE_MESSAGE(created.ok(), describe(created));
  }

  std::uint64_t next_seq = 0;                        // the sequence continues across rounds
  std::map<std::uint64_t, SendReceipt> confirmed;    // every confirm of every round
  for (int round = 0; round < kRounds; ++round) {
    INFO("round " << round);
    const std::uint64_t threshold = kill_after(rng);
    ConfirmLog log;
    std::uint64_t sent = 0;
    {
      Producer::Options po;
      static_cast<ClientOptions&>(po) = client_options(broker.address());
      // A small buffer keeps a few thousand sends in flight at the kill, not the whole round.
      po.max_buffered_bytes = 128u << 10;
      Producer producer(po);
      bool killed = false;
      const auto deadline = Clock::now() + kMaxRoundTime;
      while (!killed && sent < kMaxSendsPerRound && Clock::now() < deadline) {
        const std::uint64_t seq = next_seq++;
        Message m;
        m.body = payload(seq);
        producer.send_async(kTopic, std::move(m),
                            [&log, seq](const txmq::Result<SendReceipt>& r) { log.record(seq, r); });
        ++sent;
        if (log.confirmed_count() >= threshold) {
          broker.kill9();
          killed = true;
        }
      }
      REQUIRE_MESSAGE(killed, "only " << log.confirmed_count() << " of " << sent << " sends confirmed; needed "
                                      << threshold << "; " << log.failed_count() << " failed, the first with '"
                                      << log.first_error() << "'\n--- broker log ---\n" << broker.log_contents(8192));
      // The producer is destroyed here: what it still waited for fails with kClosed.
      // Confirms already in its socket were sent after a commit, so they count.
    }
    auto round_confirms = log.confirmed();
    std::printf("round %d: kill after %llu confirms; sent %llu, confirmed %zu, failed %llu\n", round,
                static_cast<unsigned long long>(threshold), static_cast<unsigned long long>(sent),
                round_confirms.size(), static_cast<unsigned long long>(log.failed_count()));
    CHECK(round_confirms.size() + log.failed_count() == sent);  // every callback ran once
    confirmed.insert(round_confirms.begin(), round_confirms.end());

    st = broker.start();  // same data directory
    REQUIRE_MESSAGE(st.ok(), describe(st));
    auto stored = read_partition(broker.address(), "verify-" + std::to_string(round));

    // Nothing is garbage, and the log is in send order without duplicates: each stored
    // payload is a seq that was sent, and seqs strictly increase with the offset.
    std::map<std::uint64_t, std::uint64_t> offset_of_seq;
    std::optional<std::uint64_t> previous;
    for (const auto& [offset, body] : stored) {
      auto seq = parse_payload(body);
      REQUIRE_MESSAGE(seq.has_value(), "offset " << offset << " holds garbage: '" << body << "'");
      REQUIRE_MESSAGE(*seq < next_seq, "offset " << offset << " holds " << body << ", never sent");
      if (previous) REQUIRE_MESSAGE(*seq > *previous, "offset " << offset << " holds " << body
                                                                 << " after seq-" << *previous);
      previous = seq;
      offset_of_seq[*seq] = offset;
    }
    // Every confirmed message is there, exactly where its receipt said.
    std::uint64_t missing = 0, misplaced = 0;
    for (const auto& [seq, receipt] : confirmed) {
      auto it = offset_of_seq.find(seq);
      if (it == offset_of_seq.end()) {
        if (missing++ < 5) FAIL_CHECK("confirmed " << payload(seq) << " is missing");
      } else if (it->second != receipt.offset || receipt.partition != 0) {
        if (misplaced++ < 5)
          FAIL_CHECK("confirmed " << payload(seq) << " at offset " << receipt.offset << " is stored at offset "
                                  << it->second);
      }
    }
    REQUIRE(missing == 0);
    REQUIRE(misplaced == 0);
    CHECK(stored.size() >= confirmed.size());
  }
  // The test is only meaningful if the kills landed with sends in flight at least once.
  CHECK(next_seq > confirmed.size());
}
