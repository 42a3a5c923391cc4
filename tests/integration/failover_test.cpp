// Automatic failover through etcd ([cluster]): a real etcd (EtcdProcess) and three real
// brokers on 127.0.0.1 (Cluster), sync mode, min_insync = 2, lease TTL 2 s. Faults by
// process: kill -9 of the leader, SIGSTOP of the leader past its TTL (a zombie), SIGSTOP
// of followers, etcd killed and restarted; and who may win an election, clean or (with
// cluster.unclean_election) not. After each: one leader, nothing confirmed lost or
// duplicated (unless the unclean election gave it up), and every store the same.

#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/support/cluster_fixtures.h"
#include "tests/support/etcd_process.h"

namespace {

using namespace std::chrono_literals;
using txmq::ErrorCode;
using txmq::Result;
using txmq::client::Millis;
using txmq::client::Producer;
using txmq::client::SendReceipt;
using txmq::test::Cluster;
using txmq::test::ClusterOptions;
using txmq::test::ClusterView;
using txmq::test::describe;
using txmq::test::EtcdProcess;
using txmq::test::text;
using txmq::test::view;
using txmq::test::wait_until;

// Elections and catching up under ASan on two shared cores. Nothing waits this long unless
// something is wrong; how long a failover took is measured and printed instead.
constexpr Millis kElection{30'000};

ClusterOptions options_for(const EtcdProcess& etcd, bool unclean_election) {
  ClusterOptions o;
  o.etcd_endpoint = etcd.endpoint();
  o.lag_max = 2000ms;
  o.unclean_election = unclean_election;
  return o;
}

// The member that leads, as its own status and etcd's agree, other than `not_this`; the
// cluster's stop order follows it.
std::size_t wait_leader(Cluster& cluster, std::optional<std::size_t> not_this = std::nullopt) {
  std::string seen;
  auto found = txmq::test::elected_leader(cluster, kElection, not_this, &seen);
  if (!found)
    for (std::size_t i = 0; i < cluster.size(); ++i)
      seen += cluster.id(i) + "'s log ends:\n" + cluster.broker(i).log_contents(1500) + "\n";
  REQUIRE_MESSAGE(found, "no leader was elected:\n" << seen);
  cluster.set_leader(*found);
  return *found;
}

// How many members call themselves leader now (those that answer).
int leaders_now(Cluster& cluster) {
  int n = 0;
  for (std::size_t i = 0; i < cluster.size(); ++i)
    if (auto v = view(cluster.address(i)); v && v->role == "leader") ++n;
  return n;
}

void start_cluster(Cluster& cluster, EtcdProcess& etcd) {
  auto st = etcd.start();
  REQUIRE_MESSAGE(st.ok(), describe(st));
  st = cluster.start_all();
  REQUIRE_MESSAGE(st.ok(), describe(st));
  const std::size_t leader = wait_leader(cluster);
  txmq::test::wait_in_sync(cluster, leader, cluster.size(), kElection);
}

// Sends every body with one idempotent producer that knows every member, pipelined, and
// returns the confirmed ones. Sends that fail (the cluster had no leader for longer than
// the request timeout) are not confirmed and may or may not be stored.
std::set<std::string> produce_through(Producer& producer, const std::vector<std::string>& bodies) {
  // Shared with the callbacks: one may still run after a flush that timed out.
  struct Outcome {
    std::mutex mu;
    std::set<std::string> confirmed;
    int failures = 0;
  };
  auto out = std::make_shared<Outcome>();
  for (const auto& b : bodies)
    producer.send_async("orders", text(b), [out, b](const Result<SendReceipt>& r) {
      std::lock_guard lock(out->mu);
      if (r) out->confirmed.insert(b);
      else if (out->failures++ < 3) std::fprintf(stderr, "%s: %s\n", b.c_str(), r.error().describe().c_str());
    });
  auto st = producer.flush(kElection);
  if (!st) MESSAGE("flush: " << st.error().describe());
  std::lock_guard lock(out->mu);
  return out->confirmed;
}

Producer::Options producer_for(Cluster& cluster) {
  auto o = txmq::test::idempotent_producer_options(cluster.addresses());
  o.request_timeout = kElection;
  return o;
}

// Every confirmed body is stored exactly once, on the leader.
void check_stored_once(Cluster& cluster, std::size_t leader, const std::set<std::string>& confirmed) {
  std::map<std::string, int> count;
  for (const auto& b : txmq::test::stored_bodies(cluster.address(leader), "orders")) ++count[b];
  int lost = 0, duplicated = 0;
  for (const auto& b : confirmed) {
    if (count[b] == 0) ++lost;
    if (count[b] > 1) ++duplicated;
  }
  CHECK_MESSAGE(lost == 0, lost << " confirmed messages are missing");
  CHECK_MESSAGE(duplicated == 0, duplicated << " confirmed messages are stored twice");
}

// etcd first, so that no election happens while the brokers stop; then the leader, then
// the followers (Cluster's stop_all).
void stop_all(Cluster& cluster, EtcdProcess& etcd) {
  etcd.kill9();
  txmq::test::stop_all(cluster);
}

// Every member's status shows `leader` leading and the others following it, in sync.
void wait_all_follow(Cluster& cluster, std::size_t leader) {
  txmq::test::wait_in_sync(cluster, leader, cluster.size(), kElection);
  for (std::size_t i = 0; i < cluster.size(); ++i)
    if (i != leader) txmq::test::wait_caught_up(cluster, i, leader, kElection);
}

// Where every case starts: etcd and three brokers running, a leader elected with both
// followers in sync, and the topic "orders" created on it.
class Running {
 protected:
  explicit Running(bool unclean_election = false) : cluster(options_for(etcd, unclean_election)) {
    start_cluster(cluster, etcd);
    leader = cluster.leader();
    txmq::test::create_topic(cluster.address(leader), "orders");
  }

  EtcdProcess etcd;  // before cluster: its endpoint is in the cluster's configuration
  Cluster cluster;
  std::size_t leader = 0;  // elected first
};

class RunningUnclean : public Running {
 protected:
  RunningUnclean() : Running(true) {}
};

}  // namespace

TEST_CASE_FIXTURE(Running, "kill -9 of the leader: etcd elects a follower in seconds, and an idempotent producer loses and repeats nothing") {
  const std::size_t first = leader;

  Producer producer(producer_for(cluster));
  auto confirmed = produce_through(producer, txmq::test::numbered("before-", 100));
  REQUIRE(confirmed.size() == 100);

  // Sends in flight while the leader dies: the producer finds the new leader by itself and
  // sends them again with their sequence numbers, which the new leader deduplicates.
  auto mu = std::make_shared<std::mutex>();
  auto during = std::make_shared<std::set<std::string>>();
  for (const auto& b : txmq::test::numbered("during-", 100))
    producer.send_async("orders", text(b), [mu, during, b](const Result<SendReceipt>& r) {
      std::lock_guard lock(*mu);
      if (r) during->insert(b);
    });
  const auto killed = std::chrono::steady_clock::now();
  cluster.broker(first).kill9();
  const std::size_t second = wait_leader(cluster, first);
  auto one = producer.send("orders", text("first-after"), kElection);
  const auto took = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - killed);
  REQUIRE_MESSAGE(one.ok(), describe(one));
  MESSAGE("from kill -9 of " << cluster.id(first) << " to a confirm by " << cluster.id(second) << ": " << took.count()
                             << " ms (lease TTL 2 s)");
  CHECK(took < 15s);
  (void)producer.flush(kElection);
  {
    std::lock_guard lock(*mu);
    CHECK(during->size() == 100);
    confirmed.insert(during->begin(), during->end());
  }
  confirmed.insert("first-after");
  check_stored_once(cluster, second, confirmed);

  // The old leader comes back as a follower of the new one; every store ends the same.
  auto st = cluster.start(first);
  REQUIRE_MESSAGE(st.ok(), describe(st));
  wait_all_follow(cluster, second);
  auto v = view(cluster.address(first));
  REQUIRE(v);
  CHECK(v->role == "follower");
  CHECK(v->etcd_leader == cluster.id(second));
  stop_all(cluster, etcd);
  txmq::test::check_same_digests(cluster);
}

TEST_CASE_FIXTURE(Running, "a leader frozen past its lease confirms nothing when it wakes, steps down, and rejoins as a follower") {
  const std::size_t zombie = leader;
  Producer producer(producer_for(cluster));
  auto confirmed = produce_through(producer, txmq::test::numbered("before-", 50));
  REQUIRE(confirmed.size() == 50);

  // A session opened on the leader before it froze, as a client that does not know.
  auto raw = txmq::test::RawConnection::connect(cluster.address(zombie), 2s);
  REQUIRE(raw.ok());
  REQUIRE(raw->send_frame(txmq::test::hello(1)).ok());
  REQUIRE(raw->read_frame(txmq::test::kWait).ok());

  REQUIRE(txmq::test::stop_process(cluster.broker(zombie).pid()));
  const std::size_t next = wait_leader(cluster, zombie);
  auto after = produce_through(producer, txmq::test::numbered("after-", 50));
  CHECK(after.size() == 50);
  confirmed.insert(after.begin(), after.end());

  // Written to the zombie while it sleeps, read by it first thing when it wakes.
  REQUIRE(raw->send_frame(txmq::test::produce(2, "orders", {"zombie-write"})).ok());
  ::kill(cluster.broker(zombie).pid(), SIGCONT);
  auto answer = raw->read_frame(txmq::test::kWait);
  if (answer.ok()) {
    INFO("the zombie answered " << txmq::wire::EnumNameBody(answer->type()));
    CHECK(answer->type() == txmq::wire::Body::Error);
  }  // else: it closed the connection as it stepped down, which confirms nothing either

  // It restarts itself (same process, exec) and follows the new leader, its log truncated
  // to the new leader's.
  std::optional<ClusterView> v;
  CHECK_MESSAGE(wait_until(
                    [&] {
                      v = view(cluster.address(zombie));
                      return v && v->role == "follower" && v->etcd_leader == cluster.id(next);
                    },
                    kElection, 50ms),
                "the zombie did not rejoin as a follower: " << describe(v));
  CHECK(cluster.broker(zombie).log_contents().find("steps down") != std::string::npos);
  CHECK(leaders_now(cluster) == 1);
  wait_all_follow(cluster, next);
  const auto stored = txmq::test::stored_bodies(cluster.address(next), "orders");
  CHECK(std::count(stored.begin(), stored.end(), "zombie-write") == 0);
  check_stored_once(cluster, next, confirmed);
  stop_all(cluster, etcd);
  txmq::test::check_same_digests(cluster);
}

TEST_CASE_FIXTURE(Running, "frozen followers leave etcd's in-sync set by compare-and-swap; below min_insync writes are refused") {
  const std::size_t f1 = (leader + 1) % 3, f2 = (leader + 2) % 3;

  auto etcd_in_sync_is = [&](std::set<std::string> want) {
    std::optional<ClusterView> v;
    const bool ok = wait_until(
        [&] {
          v = view(cluster.address(leader));
          return v && v->etcd_in_sync == want && v->in_sync == want;
        },
        kElection, 50ms);
    CHECK_MESSAGE(ok, "in-sync set never became what was expected: " << describe(v));
  };

  REQUIRE(txmq::test::stop_process(cluster.broker(f1).pid()));
  etcd_in_sync_is({cluster.id(leader), cluster.id(f2)});
  // Two in sync: still min_insync.
  txmq::test::produce_one(cluster.address(leader), "orders", text("two-in-sync"));

  REQUIRE(txmq::test::stop_process(cluster.broker(f2).pid()));
  etcd_in_sync_is({cluster.id(leader)});
  {
    auto o = txmq::test::producer_options(cluster.address(leader));
    o.request_timeout = 3000ms;
    Producer p(o);
    auto r = p.send("orders", text("alone"), 3000ms);
    REQUIRE_FALSE(r.ok());
    CHECK_MESSAGE(r.error().code == ErrorCode::kNotEnoughReplicas, r.error().describe());
  }

  ::kill(cluster.broker(f1).pid(), SIGCONT);
  ::kill(cluster.broker(f2).pid(), SIGCONT);
  etcd_in_sync_is({cluster.id(leader), cluster.id(f1), cluster.id(f2)});
  txmq::test::produce_one(cluster.address(leader), "orders", text("all-back"));
  CHECK(leaders_now(cluster) == 1);
}

TEST_CASE_FIXTURE(Running, "etcd killed: no broker leads past its lease, none splits off; etcd restarted, writes resume by themselves") {
  Producer producer(producer_for(cluster));
  auto confirmed = produce_through(producer, txmq::test::numbered("before-", 20));
  REQUIRE(confirmed.size() == 20);

  etcd.kill9();
  // Past the lease deadline the leader takes no writes; no follower can be elected.
  {
    auto o = txmq::test::producer_options(cluster.address(leader));
    o.request_timeout = 2000ms;
    Producer p(o);
    std::optional<Result<SendReceipt>> last;
    CHECK_MESSAGE(wait_until(
                      [&] {
                        last.emplace(p.send("orders", text("while-etcd-is-gone"), 2000ms));
                        return !last->ok() && last->error().code == ErrorCode::kNotLeader;
                      },
                      kElection, 100ms),
                  "the leader went on taking writes without etcd: " << (last ? describe(*last) : "nothing sent"));
  }
  CHECK(leaders_now(cluster) <= 1);

  auto st = etcd.start();
  REQUIRE_MESSAGE(st.ok(), describe(st));
  auto after = produce_through(producer, txmq::test::numbered("after-", 20));
  CHECK(after.size() == 20);
  confirmed.insert(after.begin(), after.end());
  const std::size_t now_leading = wait_leader(cluster);
  CHECK(leaders_now(cluster) == 1);
  wait_all_follow(cluster, now_leading);
  check_stored_once(cluster, now_leading, confirmed);
}

TEST_CASE_FIXTURE(Running, "only a member of etcd's in-sync set is elected: a follower that fell out waits for one") {
  const std::size_t in_sync = (leader + 1) % 3, behind = (leader + 2) % 3;

  // `behind` falls out of the in-sync set; then writes it never saw are confirmed.
  REQUIRE(txmq::test::stop_process(cluster.broker(behind).pid()));
  std::optional<ClusterView> v;
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        v = view(cluster.address(leader));
                        return v && v->etcd_in_sync == std::set<std::string>{cluster.id(leader), cluster.id(in_sync)};
                      },
                      kElection, 50ms),
                  describe(v));
  Producer producer(producer_for(cluster));
  auto confirmed = produce_through(producer, txmq::test::numbered("only-two-hold-", 30));
  REQUIRE(confirmed.size() == 30);

  // Both brokers that hold them die; the one left is awake but not in the set.
  cluster.broker(leader).kill9();
  cluster.broker(in_sync).kill9();
  ::kill(cluster.broker(behind).pid(), SIGCONT);
  // Three lease TTLs: long past the dead leader's lease, and no election.
  std::optional<ClusterView> waiting;
  CHECK_FALSE(wait_until(
      [&] {
        waiting = view(cluster.address(behind));
        return waiting && waiting->role == "leader";
      },
      6000ms, 100ms));
  CHECK(cluster.broker(behind).log_contents().find("not in the in-sync set") != std::string::npos);

  // A member of the set comes back and wins; the other follows and catches up.
  REQUIRE(cluster.start(in_sync).ok());
  const std::size_t next = wait_leader(cluster, leader);
  CHECK(next == in_sync);
  REQUIRE(cluster.start(leader).ok());
  wait_all_follow(cluster, next);
  check_stored_once(cluster, next, confirmed);
  stop_all(cluster, etcd);
  txmq::test::check_same_digests(cluster);
}

namespace {

// Freezes `behind` until the leader's compare-and-swap has taken it out of etcd's in-sync
// set, then confirms `n` writes it never saw, and returns them.
std::set<std::string> leave_behind(Cluster& cluster, std::size_t leader, std::size_t behind, int n) {
  REQUIRE(txmq::test::stop_process(cluster.broker(behind).pid()));
  std::optional<ClusterView> v;
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        v = view(cluster.address(leader));
                        return v && v->etcd_in_sync.size() == cluster.size() - 1 &&
                               !v->etcd_in_sync.contains(cluster.id(behind));
                      },
                      kElection, 50ms),
                  describe(v));
  Producer producer(producer_for(cluster));
  auto confirmed = produce_through(producer, txmq::test::numbered("only-two-hold-", n));
  REQUIRE(confirmed.size() == static_cast<std::size_t>(n));
  return confirmed;
}

}  // namespace

TEST_CASE_FIXTURE(RunningUnclean, "unclean_election: a broker out of the in-sync set does not stand while a member of it is registered") {
  const std::size_t in_sync = (leader + 1) % 3, behind = (leader + 2) % 3;
  const auto confirmed = leave_behind(cluster, leader, behind, 30);

  // Both stand once the dead leader's key expires: the one out of the set must wait.
  cluster.broker(leader).kill9();
  ::kill(cluster.broker(behind).pid(), SIGCONT);
  const std::size_t next = wait_leader(cluster, leader);
  CHECK_MESSAGE(next == in_sync, cluster.id(next) << " won: " << cluster.broker(behind).log_contents(2000));
  // It saw the leader key gone, and waited rather than racing for it.
  CHECK_MESSAGE(cluster.broker(behind).log_contents().find("is registered and stands first") != std::string::npos,
                cluster.broker(behind).log_contents(2000));
  REQUIRE(cluster.start(leader).ok());
  wait_all_follow(cluster, next);
  check_stored_once(cluster, next, confirmed);
}

TEST_CASE_FIXTURE(RunningUnclean, "unclean_election: with no member of the in-sync set left, one out of it leads; the others follow it, dropping what only they held") {
  const std::size_t in_sync = (leader + 1) % 3, behind = (leader + 2) % 3;
  const auto confirmed = leave_behind(cluster, leader, behind, 30);

  cluster.broker(leader).kill9();
  cluster.broker(in_sync).kill9();
  ::kill(cluster.broker(behind).pid(), SIGCONT);
  const std::size_t next = wait_leader(cluster, leader);
  REQUIRE(next == behind);
  CHECK(cluster.broker(behind).log_contents().find("stands uncleanly") != std::string::npos);
  auto v = view(cluster.address(behind));
  REQUIRE(v);
  CHECK(v->etcd_in_sync == std::set<std::string>{cluster.id(behind)});

  // The others come back as its followers: their logs are cut back to its, and the writes
  // only they held are gone, as the README warns. Every store then ends the same.
  REQUIRE(cluster.start(leader).ok());
  REQUIRE(cluster.start(in_sync).ok());
  wait_all_follow(cluster, behind);
  int kept = 0;
  for (const auto& b : txmq::test::stored_bodies(cluster.address(behind), "orders")) kept += confirmed.contains(b);
  CHECK(kept == 0);
  CHECK(leaders_now(cluster) == 1);
  stop_all(cluster, etcd);
  txmq::test::check_same_digests(cluster);
}
