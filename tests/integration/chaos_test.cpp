// A Jepsen-style check of the cluster under faults: a real etcd and three brokers
// (lease TTL 2 s, sync, min_insync = 2), an idempotent producer, a transactional producer
// whose transactions commit or roll back by a rule the checker knows (t-N commits unless N
// is a multiple of 3, in the executor and in every check-back), and a consumer group that
// acks everything, all running while a nemesis strikes every 3 to 6 seconds:
//   kill -9 of the leader (restarted 1-3 s later), SIGSTOP of the leader past its lease,
//   SIGSTOP of a follower, kill -9 of a follower, kill -9 of etcd (restarted 2 s later);
// and, run as root, network partitions (NetLab: each broker in a network namespace of its
// own): the leader isolated past its lease, the leader cut from etcd alone (its clients
// and followers still reach it), the leader cut from its followers alone, a follower
// isolated. TXMQ_CHAOS_PARTITIONS=0 leaves those out.
// After healing, with every process back and a leader with everyone in sync, it reports:
//   lost                    confirmed by the idempotent producer, not stored
//   unexpected              stored, never sent
//   duplicated              stored more than once
//   rolled_back_visible     a t-N the rule rolls back, stored
//   committed_missing       a t-N whose prepare was confirmed and the rule commits, not
//                           stored once the check-backs had time to end it
//   acked_redelivered       delivered again after its ack was confirmed (flush_acks)
//   digests_differ          members whose stores differ once all are stopped
// and requires every count to be 0.
//
// TXMQ_CHAOS_SECONDS (60 in CI) sets how long the faults go on; TXMQ_CHAOS_SEED the
// nemesis's choices (else the time, printed, so that a failing run can be repeated).

#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/cluster_fixtures.h"
#include "tests/support/etcd_process.h"
#include "tests/support/net_lab.h"

namespace {

using namespace std::chrono_literals;
using txmq::Result;
using txmq::client::Consumer;
using txmq::client::Delivery;
using txmq::client::LocalTransactionState;
using txmq::client::Millis;
using txmq::client::Producer;
using txmq::client::SendReceipt;
using txmq::client::TransactionalProducer;
using txmq::client::TransactionCheck;
using txmq::client::TransactionResult;
using txmq::test::Cluster;
using txmq::test::ClusterOptions;
using txmq::test::describe;
using txmq::test::EtcdProcess;
using txmq::test::NetLab;
using txmq::test::text;
using txmq::test::view;
using txmq::test::wait_until;

constexpr Millis kHeal{60'000};
constexpr const char* kTopic = "chaos";

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

// t-N commits unless N is a multiple of 3.
bool commits(const std::string& body) { return std::stoull(body.substr(2)) % 3 != 0; }

LocalTransactionState by_rule(const std::string& body) {
  return commits(body) ? LocalTransactionState::kCommit : LocalTransactionState::kRollback;
}

// How long a fault lasts, or the quiet between two: the nemesis's schedule, chosen at
// random, not a wait for anything to happen (those poll a condition with a deadline).
void hold(Millis how_long) { std::this_thread::sleep_for(how_long); }

std::optional<std::size_t> find_leader(Cluster& cluster, Millis timeout) {
  return txmq::test::elected_leader(cluster, timeout);
}

// What the clients saw, shared with their callbacks (which may outlive a flush).
struct History {
  std::mutex mu;
  std::set<std::string> sent, confirmed;           // the idempotent producer's
  std::set<std::string> txn_sent, txn_prepared;    // the transactional producer's
  std::set<std::pair<std::uint32_t, std::uint64_t>> acked, ack_confirmed;
  int acked_redelivered = 0;
};

}  // namespace

TEST_CASE("under kills, freezes and partitions of leaders, followers and etcd, nothing confirmed is lost, repeated or wrongly visible") {
  const auto seconds = std::chrono::seconds(env_number("TXMQ_CHAOS_SECONDS", 60));
  const std::uint64_t seed =
      env_number("TXMQ_CHAOS_SEED", static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()));
  MESSAGE("chaos for " << seconds.count() << " s, TXMQ_CHAOS_SEED=" << seed);
  std::mt19937_64 rng(seed);
  auto pick = [&](std::uint64_t lo, std::uint64_t hi) { return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng); };

  // Partitions need a network of our own, and so come first: the test's thread moves into
  // it, and everything started afterwards with it.
  std::unique_ptr<NetLab> lab;
  const std::string no_lab =
      env_number("TXMQ_CHAOS_PARTITIONS", 1) == 0 ? "TXMQ_CHAOS_PARTITIONS=0" : NetLab::unavailable_reason();
  if (no_lab.empty()) {
    auto made = NetLab::create(3);
    REQUIRE_MESSAGE(made.ok(), describe(made));
    lab = std::move(*made);
  } else {
    MESSAGE("no network partitions: " << no_lab);
  }

  EtcdProcess etcd(lab ? NetLab::etcd_host() : "127.0.0.1");
  ClusterOptions o;
  o.etcd_endpoint = etcd.endpoint();
  if (lab)
    for (std::size_t i = 0; i < lab->size(); ++i) {
      o.hosts.push_back(lab->host(i));
      o.netns.push_back(lab->netns_path(i));
    }
  o.lag_max = 2000ms;
  o.keep = env_number("TXMQ_CHAOS_KEEP", 0) != 0;  // leave the stores and logs for a look
  // Check-backs soon and often, and never parked, so that every prepared transaction ends
  // within the healing.
  o.extra_toml = "[transactions]\ntimeout_ms = 500\ncheck_backoff_initial_ms = 300\ncheck_backoff_max_ms = 1000\n"
                 "max_checks = 100000\n";
  Cluster cluster(o);
  REQUIRE(etcd.start().ok());
  REQUIRE(cluster.start_all().ok());
  auto leader = find_leader(cluster, kHeal);
  REQUIRE(leader);
  txmq::test::wait_in_sync(cluster, *leader, 3, kHeal);
  txmq::test::create_topic(cluster.address(*leader), kTopic);

  // Bounds on the load, above what these machines send in the time (about 2,000 messages
  // and 500 transactions a second under ASan), so that the load lasts as long as the faults.
  const std::int64_t max_messages = 5'000 * seconds.count();
  const std::int64_t max_transactions = 2'000 * seconds.count();
  auto history = std::make_shared<History>();
  std::atomic<bool> stop{false};
  // The transactional producer answers check-backs until the healing is over.
  std::atomic<bool> transactions_ended{false};

  // The idempotent producer: bounded by time and count, paced by its in-flight limit.
  std::thread producing([&] {
    auto po = txmq::test::idempotent_producer_options(cluster.addresses());
    po.request_timeout = 20'000ms;
    po.max_in_flight_messages = 200;
    Producer producer(po);
    for (std::int64_t n = 0; n < max_messages && !stop; ++n) {
      const std::string body = "p-" + std::to_string(n);
      {
        std::lock_guard lock(history->mu);
        history->sent.insert(body);
      }
      producer.send_async(kTopic, text(body), [history, body](const Result<SendReceipt>& r) {
        if (!r) return;
        std::lock_guard lock(history->mu);
        history->confirmed.insert(body);
      });
    }
    (void)producer.flush(kHeal);
  });

  // The transactional producer: the executor and the check-back both follow the rule.
  std::thread transacting([&] {
    TransactionalProducer::Options to;
    static_cast<txmq::client::ClientOptions&>(to) = txmq::test::client_options(cluster.addresses());
    to.request_timeout = 20'000ms;
    to.producer_group = "chaos-shop";
    to.max_in_flight_transactions = 50;
    TransactionalProducer producer(to, [](const TransactionCheck& c) { return by_rule(c.message.body); });
    for (std::int64_t n = 0; n < max_transactions && !stop; ++n) {
      const std::string body = "t-" + std::to_string(n);
      {
        std::lock_guard lock(history->mu);
        history->txn_sent.insert(body);
      }
      producer.send_in_transaction_async(
          kTopic, text(body), [body](std::uint64_t) { return by_rule(body); },
          [history, body](const Result<TransactionResult>& r) {
            if (!r) return;  // nothing prepared (or not known to be)
            std::lock_guard lock(history->mu);
            history->txn_prepared.insert(body);
          });
    }
    wait_until([&] { return transactions_ended.load(); }, kHeal * 2, 50ms);
  });

  // The consumer: acks every delivery; a delivery of what it acked and saw confirmed is
  // a violation.
  std::thread consuming([&] {
    Consumer::Options co;
    static_cast<txmq::client::ClientOptions&>(co) = txmq::test::client_options(cluster.addresses());
    co.topic = kTopic;
    co.group = "chaos-billing";
    co.window = 500;
    Consumer consumer(co, [history](Consumer& self, const Delivery& d) {
      const auto at = std::make_pair(d.partition, d.offset);
      {
        std::lock_guard lock(history->mu);
        if (history->ack_confirmed.contains(at)) ++history->acked_redelivered;
        history->acked.insert(at);
      }
      self.ack(d);
    });
    while (!stop) {
      std::set<std::pair<std::uint32_t, std::uint64_t>> before;
      {
        std::lock_guard lock(history->mu);
        before = history->acked;
      }
      if (consumer.flush_acks(10'000ms)) {
        std::lock_guard lock(history->mu);
        history->ack_confirmed.insert(before.begin(), before.end());
      }
      wait_until([&] { return stop.load(); }, 200ms, 50ms);  // a flush every 200 ms, or the end
    }
    (void)consumer.flush_acks(kHeal);
  });

  // However the test ends (a REQUIRE throws), the clients are told to stop and their
  // threads joined before they are destroyed: a joinable std::thread destroyed aborts.
  struct JoinClients {
    std::atomic<bool>& stop;
    std::atomic<bool>& transactions_ended;
    std::vector<std::thread*> threads;
    ~JoinClients() {
      stop = true;
      transactions_ended = true;
      for (auto* t : threads)
        if (t->joinable()) t->join();
    }
  } join_clients{stop, transactions_ended, {&producing, &transacting, &consuming}};

  // The nemesis, on this thread (the brokers die with the thread that started them).
  int faults = 0;
  std::map<std::string, int> kinds;
  const auto until = std::chrono::steady_clock::now() + seconds;
  while (std::chrono::steady_clock::now() < until) {
    hold(Millis(pick(3000, 6000)));
    auto l = find_leader(cluster, 10'000ms);
    const std::size_t target = l ? *l : pick(0, 2);
    const std::size_t follower = (target + pick(1, 2)) % 3;
    const int kind = static_cast<int>(pick(0, lab ? 8 : 4));
    auto net = [](const txmq::Status& st) { REQUIRE_MESSAGE(st.ok(), describe(st)); };
    ++faults;
    switch (kind) {
      case 0:
        ++kinds["kill -9 leader"];
        cluster.broker(target).kill9();
        hold(Millis(pick(1000, 3000)));
        CHECK(cluster.start(target).ok());
        break;
      case 1:
        ++kinds["SIGSTOP leader past its lease"];
        REQUIRE(txmq::test::stop_process(cluster.broker(target).pid()));
        hold(3500ms);  // past the 2 s lease
        ::kill(cluster.broker(target).pid(), SIGCONT);
        break;
      case 2:
        ++kinds["SIGSTOP follower"];
        REQUIRE(txmq::test::stop_process(cluster.broker(follower).pid()));
        hold(3000ms);  // past replica_lag_max_ms: it leaves the in-sync set
        ::kill(cluster.broker(follower).pid(), SIGCONT);
        break;
      case 3:
        ++kinds["kill -9 follower"];
        cluster.broker(follower).kill9();
        hold(2000ms);
        CHECK(cluster.start(follower).ok());
        break;
      case 4:
        ++kinds["kill -9 etcd"];
        etcd.kill9();
        hold(2000ms);
        CHECK(etcd.start().ok());
        break;
      case 5:
        ++kinds["leader isolated past its lease"];
        net(lab->isolate(target));
        hold(3500ms);
        net(lab->heal(target));
        break;
      case 6:
        // Its clients and followers still reach it: a leader that went on confirming past
        // its lease would be a second leader.
        ++kinds["leader cut from etcd"];
        net(lab->cut(target, NetLab::etcd_host()));
        hold(3500ms);
        net(lab->heal(target));
        break;
      case 7:
        // It keeps its lease: the followers leave the in-sync set, and writes stop below
        // min_insync until the links heal.
        ++kinds["leader cut from its followers"];
        for (std::size_t i = 0; i < cluster.size(); ++i)
          if (i != target) net(lab->cut(target, lab->host(i)));
        hold(3000ms);
        net(lab->heal(target));
        break;
      default:
        ++kinds["follower isolated"];
        net(lab->isolate(follower));
        hold(3000ms);
        net(lab->heal(follower));
        break;
    }
  }

  // Heal: everything runs; a leader with all three in sync.
  if (lab)
    for (std::size_t i = 0; i < lab->size(); ++i) CHECK(lab->heal(i).ok());
  for (std::size_t i = 0; i < cluster.size(); ++i)
    if (!cluster.broker(i).running()) CHECK(cluster.start(i).ok());
  if (!etcd.running()) CHECK(etcd.start().ok());
  stop = true;
  producing.join();
  leader = find_leader(cluster, kHeal);
  REQUIRE_MESSAGE(leader, "no leader after healing");
  txmq::test::wait_in_sync(cluster, *leader, 3, kHeal);

  // Every transaction the rule commits and whose prepare was confirmed ends visible: the
  // check-backs may take a while.
  std::set<std::string> txn_prepared, confirmed, sent, txn_sent;
  {
    std::lock_guard lock(history->mu);
    txn_prepared = history->txn_prepared;
    confirmed = history->confirmed;
    sent = history->sent;
    txn_sent = history->txn_sent;
  }
  std::map<std::string, int> stored;
  auto read_stored = [&] {
    stored.clear();
    for (const auto& b : txmq::test::stored_bodies(cluster.address(*leader), kTopic)) ++stored[b];
  };
  auto committed_missing = [&] {
    int n = 0;
    for (const auto& b : txn_prepared)
      if (commits(b) && !stored.contains(b)) ++n;
    return n;
  };
  read_stored();
  wait_until([&] { read_stored(); return committed_missing() == 0; }, kHeal, 500ms);
  transactions_ended = true;
  transacting.join();
  consuming.join();

  int lost = 0, unexpected = 0, duplicated = 0, rolled_back_visible = 0;
  for (const auto& b : confirmed)
    if (!stored.contains(b)) ++lost;
  for (const auto& [b, n] : stored) {
    if (n > 1) ++duplicated;
    if (!sent.contains(b) && !txn_sent.contains(b)) ++unexpected;
    if (b.starts_with("t-") && !commits(b)) ++rolled_back_visible;
  }
  const int missing = committed_missing();
  int acked_redelivered = 0;
  {
    std::lock_guard lock(history->mu);
    acked_redelivered = history->acked_redelivered;
  }

  // Stores: etcd first, so that nothing is elected while the brokers stop.
  etcd.kill9();
  txmq::test::stop_all(cluster);
  std::vector<std::string> digests;
  for (std::size_t i = 0; i < cluster.size(); ++i) {
    auto d = txmq::test::store_digest(cluster.data_dir(i));
    digests.push_back(d ? *d : "unreadable: " + describe(d));
  }
  int digests_differ = 0;
  for (std::size_t i = 1; i < digests.size(); ++i)
    if (digests[i] != digests[0]) ++digests_differ;

  std::string fault_list;
  for (const auto& [k, n] : kinds) fault_list += " " + k + ": " + std::to_string(n) + ";";
  MESSAGE("faults " << faults << " (" << fault_list << " ); sent " << sent.size() << ", confirmed " << confirmed.size()
                    << ", transactions sent " << txn_sent.size() << ", prepared " << txn_prepared.size() << ", stored "
                    << stored.size() << "\nlost " << lost << ", unexpected " << unexpected << ", duplicated " << duplicated
                    << ", rolled_back_visible " << rolled_back_visible << ", committed_missing " << missing
                    << ", acked_redelivered " << acked_redelivered << ", digests_differ " << digests_differ);
  if (lost + unexpected + duplicated + rolled_back_visible + missing + acked_redelivered + digests_differ > 0) {
    std::string some;
    int shown = 0;
    for (const auto& b : txn_prepared)
      if (commits(b) && !stored.contains(b) && shown++ < 20) some += " " + b;
    std::string where;
    for (std::size_t i = 0; i < cluster.size(); ++i)
      where += "\n  " + cluster.id(i) + ": log " + cluster.broker(i).log_path() + ", store " + cluster.data_dir(i);
    MESSAGE("committed but missing:" << some << "\n" << cluster.id(0) << "'s store:\n"
                                     << digests[0] << "(kept with TXMQ_CHAOS_KEEP=1)" << where);
  }
  CHECK(lost == 0);
  CHECK(unexpected == 0);
  CHECK(duplicated == 0);
  CHECK(rolled_back_visible == 0);
  CHECK(missing == 0);
  CHECK(acked_redelivered == 0);
  CHECK(digests_differ == 0);
  CHECK(faults > 0);
}
