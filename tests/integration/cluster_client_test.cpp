// Clients against a real leader and follower (two txmq-broker processes on 127.0.0.1,
// sync mode, min_insync = 2): producers pointed at the follower have their sends confirmed
// through the leader, and `txmq cluster status|digest` answer on both.

#include <doctest/doctest.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/cli_run.h"
#include "tests/support/client_fixtures.h"
#include "tests/support/cluster.h"

using namespace txmq;
using namespace txmq::test;
using client::Millis;

namespace {

// A loopback address free a moment ago: a follower's config must name every broker's
// address before either starts. Another process may take it meanwhile; LeaderAndFollower
// retries then.
std::string free_address() {
  const std::uint16_t port = reserve_port();
  REQUIRE(port != 0);
  return "127.0.0.1:" + std::to_string(port);
}

// Sync mode. min_insync 2 by default: a confirm means both disks. A failover test takes 1
// (the survivor must confirm alone) and a short replica_lag_max_ms (the dead leader leaves
// the survivor's in-sync set soon).
struct Settings {
  int min_insync = 2;
  int lag_max_ms = 10000;
};

std::string replication_toml(const std::string& id, const char* role, const std::string& b1, const std::string& b2,
                             const Settings& settings) {
  return "[replication]\nid = \"" + id + "\"\nrole = \"" + role + "\"\nmode = \"sync\"\nmin_insync = " +
         std::to_string(settings.min_insync) + "\nreplica_lag_max_ms = " + std::to_string(settings.lag_max_ms) +
         "\n[replication.peers]\nb1 = \"" + b1 + "\"\nb2 = \"" + b2 + "\"\n";
}

// b1 leads, b2 follows; both started, and b2 in the leader's in-sync set.
struct LeaderAndFollower {
  explicit LeaderAndFollower(Settings settings = {}) {
    for (int attempt = 0; attempt < 5 && !follower; ++attempt) {
      const std::string b1 = free_address();
      const std::string b2 = free_address();
      BrokerOptions lo;
      lo.listen = b1;
      lo.config_toml = replication_toml("b1", "leader", b1, b2, settings);
      auto l = std::make_unique<BrokerProcess>(lo);
      if (auto st = l->start(); !st) {
        MESSAGE("leader did not start on " << b1 << ", retrying: " << describe(st));
        continue;
      }
      BrokerOptions fo;
      fo.listen = b2;
      fo.config_toml = replication_toml("b2", "follower", b1, b2, settings);
      auto f = std::make_unique<BrokerProcess>(fo);
      if (auto st = f->start(); !st) {
        MESSAGE("follower did not start on " << b2 << ", retrying: " << describe(st));
        continue;
      }
      leader = std::move(l);
      follower = std::move(f);
    }
    REQUIRE(follower);
    client::Admin admin(client_options(leader->address()));
    REQUIRE_MESSAGE(wait_until(
                        [&] {
                          auto s = admin.cluster_status(kWait);
                          return s.ok() && s->in_sync.size() == 2;
                        },
                        kWait),
                    "the follower never joined the in-sync set");
    create_topic(leader->address(), "orders");
  }

  std::string both() const { return follower->address() + "," + leader->address(); }
  std::string in_order() const { return leader->address() + "," + follower->address(); }

  std::unique_ptr<BrokerProcess> leader;
  std::unique_ptr<BrokerProcess> follower;
};

}  // namespace

TEST_CASE("a producer given follower,leader, and one given the follower alone, are confirmed through the leader") {
  LeaderAndFollower cluster;
  {
    client::Producer producer(idempotent_producer_options(cluster.both()));
    for (const char* body : {"a", "b"}) {
      auto r = producer.send("orders", text(body), kWait);
      REQUIRE_MESSAGE(r.ok(), describe(r));
    }
  }
  {
    client::Producer producer(idempotent_producer_options(cluster.follower->address()));
    auto r = producer.send("orders", text("c"), kWait);
    REQUIRE_MESSAGE(r.ok(), describe(r));
    CHECK(r->offset == 2);
  }
  CHECK(stored_bodies(cluster.leader->address(), "orders") == std::vector<std::string>{"a", "b", "c"});
}

TEST_CASE("the follower's NotLeader names the leader's address, and the next send goes there") {
  LeaderAndFollower cluster;
  client::Producer producer(producer_options(cluster.follower->address()));
  auto refused = producer.send("orders", text("refused"), kWait);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::kNotLeader);
  CHECK(refused.error().leader == cluster.leader->address());
  auto r = producer.send("orders", text("accepted"), kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(stored_bodies(cluster.leader->address(), "orders") == std::vector<std::string>{"accepted"});
}

TEST_CASE("txmq cluster status answers on the leader and on the follower") {
  LeaderAndFollower cluster;
  auto leader = run_cli({"--broker", cluster.leader->address(), "cluster", "status"});
  CHECK_MESSAGE(leader.exit_code == 0, leader.err);
  CAPTURE(leader.out);
  CHECK(leader.out.find("role            leader") != std::string::npos);
  CHECK(leader.out.find("in_sync         b1,b2") != std::string::npos);
  CHECK(leader.out.find(cluster.follower->address()) != std::string::npos);  // b2's row
  auto follower = run_cli({"--broker", cluster.follower->address(), "cluster", "status", "--json"});
  CHECK_MESSAGE(follower.exit_code == 0, follower.err);
  CAPTURE(follower.out);
  CHECK(follower.out.find("\"role\":\"follower\"") != std::string::npos);
  CHECK(follower.out.find("\"leader_address\":\"" + cluster.leader->address() + "\"") != std::string::npos);
}

TEST_CASE("txmq cluster digest prints the same store on the leader and the follower once it caught up") {
  LeaderAndFollower cluster;
  produce_all(cluster.leader->address(), "orders", numbered("m", 20));
  client::Admin leader(client_options(cluster.leader->address()));
  client::Admin follower(client_options(cluster.follower->address()));
  auto same = [](const client::StoreDigest& a, const client::StoreDigest& b) {
    if (a.last_index != b.last_index || a.epoch != b.epoch || a.key_spaces.size() != b.key_spaces.size()) return false;
    for (std::size_t i = 0; i < a.key_spaces.size(); ++i)
      if (a.key_spaces[i].key_space != b.key_spaces[i].key_space || a.key_spaces[i].sha256 != b.key_spaces[i].sha256)
        return false;
    return true;
  };
  // Confirmed means on both disks; applied on the follower may trail by a fetch.
  REQUIRE(wait_until(
      [&] {
        auto l = leader.digest(kWait);
        auto f = follower.digest(kWait);
        return l.ok() && f.ok() && !l->key_spaces.empty() && same(*l, *f);
      },
      kWait));
  auto l = run_cli({"--broker", cluster.leader->address(), "cluster", "digest"});
  auto f = run_cli({"--broker", cluster.follower->address(), "cluster", "digest"});
  CHECK_MESSAGE(l.exit_code == 0, l.err);
  CHECK_MESSAGE(f.exit_code == 0, f.err);
  CHECK(l.out.find("last_index") != std::string::npos);
  CHECK(l.out == f.out);
}

TEST_CASE("after the leader's kill -9 and txmq cluster promote on the follower, an idempotent producer carries on there") {
  LeaderAndFollower cluster(Settings{1, 1000});
  std::mutex mu;
  std::vector<Result<client::SendReceipt>> results;
  client::Producer producer(idempotent_producer_options(cluster.in_order()));
  auto before = producer.send("orders", text("before"), kWait);
  REQUIRE_MESSAGE(before.ok(), describe(before));
  // Confirmed in sync mode: on the follower's disk too.
  cluster.leader->kill9();
  // Sent while no broker leads: the producer finds the follower, which refuses it with
  // NotLeader naming the dead leader, and keeps trying both until the promotion.
  producer.send_async("orders", text("during"), [&](const Result<client::SendReceipt>& r) {
    std::lock_guard lock(mu);
    results.push_back(r);
  });
  auto promoted = run_cli({"--broker", cluster.follower->address(), "cluster", "promote"});
  REQUIRE_MESSAGE(promoted.exit_code == 0, promoted.err);
  CAPTURE(promoted.out);
  CHECK(promoted.out.find("role            leader") != std::string::npos);
  CHECK(promoted.out.find("replication.role = \"leader\"") != std::string::npos);
  auto st = producer.flush(kWait);
  REQUIRE_MESSAGE(st.ok(), describe(st));
  {
    std::lock_guard lock(mu);
    REQUIRE(results.size() == 1);
    REQUIRE_MESSAGE(results[0].ok(), describe(results[0]));
  }
  auto after = producer.send("orders", text("after"), kWait);
  REQUIRE_MESSAGE(after.ok(), describe(after));
  CHECK(stored_bodies(cluster.follower->address(), "orders") == std::vector<std::string>{"before", "during", "after"});
}

TEST_CASE("txmq cluster promote on the leader is refused with the broker's reason") {
  LeaderAndFollower cluster;
  auto r = run_cli({"--broker", cluster.leader->address(), "cluster", "promote"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.err.find("already leads") != std::string::npos, r.err);
}
