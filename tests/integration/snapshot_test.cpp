// Snapshot catch-up with real brokers: a leader and two followers on 127.0.0.1 (tests/
// support's Cluster), sync mode, min_insync = 2, and a replication log small enough to be
// trimmed. A follower started empty after the log moved on cannot replay it: it installs a
// snapshot of the leader's store, then follows the log, and every store ends the same. A
// follower killed with kill -9 half way through an install starts it again and ends the
// same too: nothing of the cut-off install is applied twice or left half; and so does one
// whose leader is killed half way, once another member is promoted.

#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <vector>

#include "tests/support/cluster_fixtures.h"

namespace {

using namespace std::chrono_literals;
using txmq::client::Millis;
using txmq::test::ask;
using txmq::test::check_same_digests;
using txmq::test::Cluster;
using txmq::test::ClusterOptions;
using txmq::test::describe;
using txmq::test::stop_all;
using txmq::test::view;
using txmq::test::wait_caught_up;
using txmq::test::wait_in_sync;
using txmq::test::wait_until;

// Replication under ASan on two shared cores: catching up takes seconds, not milliseconds.
constexpr Millis kCatchUp{90'000};

// The log keeps 64 KiB: a few hundred messages trim it past its first record.
ClusterOptions cluster_options(const std::string& chunk_bytes) {
  ClusterOptions o;
  o.replication_toml = "log_max_bytes = \"64KiB\"\nsnapshot_chunk_bytes = \"" + chunk_bytes + "\"\n";
  return o;
}

// Bodies of about `size` bytes, numbered.
std::vector<std::string> bodies(const std::string& prefix, int n, std::size_t size) {
  std::vector<std::string> out;
  for (auto& b : txmq::test::numbered(prefix, n)) out.push_back(b + std::string(size, '.'));
  return out;
}

double metric(Cluster& cluster, std::size_t i, const std::string& sample) {
  return txmq::test::scrape_metric(cluster.broker(i), sample);
}

// Starts a cluster with state in several key spaces (topics, messages, a group's acks)
// and a log trimmed past its first record, then stops b3 and empties its data directory.
void start_with_trimmed_log(Cluster& cluster, int messages, std::size_t size) {
  auto st = cluster.start_all();
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  wait_in_sync(cluster, 0, 3, kCatchUp);
  const std::string leader = cluster.address(0);
  txmq::test::create_topic(leader, "events", 2);
  txmq::test::produce_all(leader, "events", bodies("before-", messages, size));
  {
    std::atomic<int> acked{0};
    txmq::client::Consumer::Options co;
    static_cast<txmq::client::ClientOptions&>(co) = txmq::test::client_options(leader);
    co.topic = "events";
    co.group = "audit";
    txmq::client::Consumer consumer(co, [&](txmq::client::Consumer& self, const txmq::client::Delivery& d) {
      if (acked.load() >= 20) return;
      self.ack(d);
      ++acked;
    });
    REQUIRE(wait_until([&] { return acked.load() >= 20; }, kCatchUp));
    auto st = consumer.flush_acks(kCatchUp);
    REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  }
  REQUIRE(cluster.broker(2).terminate() == 0);
  cluster.wipe(2);
  wait_in_sync(cluster, 0, 2, kCatchUp);
  txmq::test::produce_all(leader, "events", bodies("while-down-", messages / 4, size));
  auto v = view(leader);
  REQUIRE(v);
  // The log no longer starts at 1: an empty follower cannot replay it.
  REQUIRE_MESSAGE(v->first_index > 1, describe(v));
}

// Starts b3 (empty, behind the trimmed log) and returns once some of its snapshot is
// installed, not all of it (about 1 MB in 4 KiB chunks).
void start_half_installed(Cluster& cluster) {
  auto st = cluster.start(2);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  REQUIRE_MESSAGE(
      wait_until([&] { return metric(cluster, 2, "txmq_replication_snapshot_bytes_total") > 100'000; }, kCatchUp, 5ms),
      cluster.broker(2).log_contents(4096));
  REQUIRE(metric(cluster, 2, "txmq_replication_snapshots_total") == 0);
}

// Writes more through the leader and, once every follower's log ends where the leader's
// does, stops them all and compares their stores.
void write_more_then_compare(Cluster& cluster) {
  const std::size_t leader = cluster.leader();
  txmq::test::produce_all(cluster.address(leader), "events", bodies("after-", 50, 200));
  for (std::size_t i = 0; i < cluster.size(); ++i)
    if (i != leader) wait_caught_up(cluster, i, leader, kCatchUp);
  stop_all(cluster);
  check_same_digests(cluster);
}

}  // namespace

TEST_CASE("a follower started empty after the log was trimmed catches up through a snapshot") {
  Cluster cluster(cluster_options("16KiB"));
  start_with_trimmed_log(cluster, 600, 200);

  auto st = cluster.start(2);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  REQUIRE_MESSAGE(wait_until([&] { return metric(cluster, 2, "txmq_replication_snapshots_total") == 1; }, kCatchUp, 20ms),
                  cluster.broker(2).log_contents(4096));
  CHECK(metric(cluster, 2, "txmq_replication_snapshot_bytes_total") > 100'000);
  CHECK(metric(cluster, 0, "txmq_replication_snapshots_served_total") == 1);
  CHECK(cluster.broker(2).log_contents().find("snapshot installed") != std::string::npos);
  wait_caught_up(cluster, 2, 0, kCatchUp);
  wait_in_sync(cluster, 0, 3, kCatchUp);
  auto v = view(cluster.address(2));
  REQUIRE(v);
  CHECK(!v->installing_snapshot);

  // It follows the log from the snapshot on.
  write_more_then_compare(cluster);
}

TEST_CASE("a follower killed half way through a snapshot install starts it again and ends with the leader's store") {
  Cluster cluster(cluster_options("4KiB"));
  start_with_trimmed_log(cluster, 2000, 500);

  start_half_installed(cluster);
  cluster.broker(2).kill9();

  // What it holds is neither the leader's store nor its own: started without replication
  // it refuses to serve, and says why.
  {
    txmq::test::BrokerProcess standalone(txmq::test::on_data_dir(cluster.data_dir(2)));
    auto refused = standalone.start();
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().message.find("did not finish") != std::string::npos);
  }

  auto st = cluster.start(2);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  // While it installs, it says so and cannot be promoted. (Once the install is done, as it
  // may be by the time the answers come, it is refused for another reason: it was not in
  // the in-sync set.)
  auto promoted = ask(cluster.address(2), txmq::test::promote(3));
  REQUIRE_MESSAGE(promoted.ok(), txmq::test::describe(promoted));
  const auto* refusal = promoted->frame().body_as_Error();
  REQUIRE(refusal != nullptr);
  const std::string why = refusal->message() ? refusal->message()->str() : "";
  if (metric(cluster, 2, "txmq_replication_snapshots_total") == 0) {
    CHECK_MESSAGE(why.find("installing a snapshot") != std::string::npos, why);
    auto v = view(cluster.address(2));
    CHECK((v && (v->installing_snapshot || metric(cluster, 2, "txmq_replication_snapshots_total") == 1)));
  }
  REQUIRE_MESSAGE(wait_until([&] { return metric(cluster, 2, "txmq_replication_snapshots_total") == 1; }, kCatchUp, 20ms),
                  cluster.broker(2).log_contents(4096));
  CHECK(cluster.broker(2).log_contents().find("did not finish") != std::string::npos);
  wait_caught_up(cluster, 2, 0, kCatchUp);
  wait_in_sync(cluster, 0, 3, kCatchUp);

  write_more_then_compare(cluster);
}

TEST_CASE("a leader killed half way through a follower's snapshot: the follower installs the new leader's and ends the same") {
  Cluster cluster(cluster_options("4KiB"));
  start_with_trimmed_log(cluster, 2000, 500);

  start_half_installed(cluster);
  cluster.broker(0).kill9();

  // b2 leads epoch 2; b3's session was the dead leader's, which b2 never opened: b3 begins
  // again from b2's store, installs it whole, and follows b2's log.
  txmq::test::promote_member(cluster, 1, kCatchUp);
  REQUIRE_MESSAGE(wait_until([&] { return metric(cluster, 2, "txmq_replication_snapshots_total") == 1; }, kCatchUp, 20ms),
                  cluster.broker(2).log_contents(4096));
  CHECK(metric(cluster, 1, "txmq_replication_snapshots_served_total") == 1);
  wait_caught_up(cluster, 2, 1, kCatchUp);
  wait_in_sync(cluster, 1, 2, kCatchUp);

  // The old leader rejoins as a follower; writes go on, and all three end the same.
  auto st = cluster.start(0);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  wait_in_sync(cluster, 1, 3, kCatchUp);
  write_more_then_compare(cluster);
}
