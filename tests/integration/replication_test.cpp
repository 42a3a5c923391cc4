// Replication with real brokers: a leader and two followers on 127.0.0.1 (tests/support's
// Cluster), sync mode, min_insync = 2. What a confirm promises must survive the leader's
// machine: after kill -9 of the leader and the promotion of a follower, every confirmed
// message, ack and transaction outcome is there; a follower that crashed or started empty
// catches up to the same store; and below min_insync nothing is confirmed.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/support/cluster_fixtures.h"

namespace {

using namespace std::chrono_literals;
using txmq::ErrorCode;
using txmq::Result;
using txmq::client::Admin;
using txmq::client::ClientOptions;
using txmq::client::Consumer;
using txmq::client::Delivery;
using txmq::client::LocalTransactionState;
using txmq::client::Millis;
using txmq::client::Producer;
using txmq::client::SendReceipt;
using txmq::client::TransactionalProducer;
using txmq::client::TxnState;
using txmq::test::ask;
using txmq::test::Cluster;
using txmq::test::ClusterOptions;
using txmq::test::ClusterView;
using txmq::test::describe;
using txmq::test::kWait;
using txmq::test::stop_all;
using txmq::test::stored_bodies;
using txmq::test::text;
using txmq::test::view;
using txmq::test::wait_caught_up;
using txmq::test::wait_in_sync;
using txmq::test::wait_until;

// Replication under ASan on two shared cores: catching up and leaving the in-sync set take
// seconds, not milliseconds. Nothing waits this long unless something is wrong.
constexpr Millis kCatchUp{60'000};

// Transactions checked back within a test, and never parked while it runs.
constexpr const char* kTxnToml =
    "[transactions]\ntimeout_ms = 300\ncheck_backoff_initial_ms = 200\ncheck_backoff_max_ms = 400\n"
    "max_checks = 10000\n";

ClusterOptions cluster_options() {
  ClusterOptions o;
  o.extra_toml = kTxnToml;
  return o;
}

void start_cluster(Cluster& cluster) {
  auto st = cluster.start_all();
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  wait_in_sync(cluster, 0, cluster.size(), kCatchUp);
}

// -- reading what a broker holds -------------------------------------------------------------

std::map<std::string, int> counted(const std::vector<std::string>& all) {
  std::map<std::string, int> n;
  for (const auto& b : all) ++n[b];
  return n;
}

// Produces each body with an idempotent producer and returns the confirmed ones.
std::set<std::string> produce_idempotent(const std::string& address, const std::string& topic,
                                         const std::vector<std::string>& all) {
  std::mutex mu;
  std::set<std::string> confirmed;
  Producer producer(txmq::test::idempotent_producer_options(address));
  for (const auto& b : all)
    producer.send_async(topic, text(b), [&mu, &confirmed, b](const Result<SendReceipt>& r) {
      std::lock_guard lock(mu);
      if (r) confirmed.insert(b);
    });
  auto st = producer.flush(kCatchUp);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  std::lock_guard lock(mu);
  return confirmed;
}

TransactionalProducer::Options txn_options(const std::string& address) {
  TransactionalProducer::Options o;
  static_cast<ClientOptions&>(o) = txmq::test::client_options(address);
  o.producer_group = "shop";
  return o;
}

// Every member's stopped store the same, and its digest says where the log ends.
void check_same_stores(Cluster& cluster) {
  CHECK(txmq::test::check_same_digests(cluster).find("last_index ") != std::string::npos);
}

}  // namespace

TEST_CASE("txmq-broker --digest names every replicated key space of a stopped store and refuses a missing one") {
  txmq::test::TempDir dir("txmq-digest");
  // No store: refused, and none is created.
  auto none = txmq::test::store_digest(dir.file("none"));
  CHECK_FALSE(none.ok());
  CHECK_FALSE(std::filesystem::exists(dir.file("none") + "/data.mdb"));

  txmq::test::BrokerProcess broker(txmq::test::on_data_dir(dir.file("data")));
  txmq::test::start(broker);
  txmq::test::create_topic(broker.address(), "events");
  txmq::test::produce_all(broker.address(), "events", txmq::test::numbered("event-", 10));
  REQUIRE(broker.terminate() == 0);
  auto first = txmq::test::store_digest(dir.file("data"));
  REQUIRE_MESSAGE(first.ok(), txmq::test::describe(first));
  // One line per key space but the log itself, then where the log ends.
  CHECK(first->find("\ntopics 1 ") != std::string::npos);
  CHECK(first->find("\nlog 10 ") != std::string::npos);
  CHECK(first->find("replog") == std::string::npos);
  CHECK(first->find("\nlast_index ") != std::string::npos);
  // The same store, the same digest; one more message, another.
  auto again = txmq::test::store_digest(dir.file("data"));
  REQUIRE(again.ok());
  CHECK(*again == *first);
  txmq::test::start(broker);
  txmq::test::produce_one(broker.address(), "events", text("one more"));
  REQUIRE(broker.terminate() == 0);
  auto after = txmq::test::store_digest(dir.file("data"));
  REQUIRE(after.ok());
  CHECK(after->find("\nlog 11 ") != std::string::npos);
  CHECK(*after != *first);
}

TEST_CASE("after kill -9 of the leader, a promoted follower holds every confirmed message, ack and transaction") {
  Cluster cluster(cluster_options());
  start_cluster(cluster);
  const std::string leader = cluster.address(0);
  txmq::test::create_topic(leader, "orders");
  txmq::test::create_topic(leader, "payments");
  txmq::client::GroupConfig lease;
  lease.ack_wait = Millis(1000);  // deliveries nobody settled come back soon after the failover
  txmq::test::configure(leader, "billing", lease);

  // Messages, confirmed by an idempotent producer: each confirm means on two disks.
  const auto orders = txmq::test::numbered("order-", 100);
  const auto confirmed = produce_idempotent(leader, "orders", orders);
  REQUIRE(confirmed.size() == orders.size());

  // Group billing acks offsets 0..39 and leaves the rest.
  {
    std::mutex mu;
    std::set<std::uint64_t> acked;
    Consumer::Options co;
    static_cast<ClientOptions&>(co) = txmq::test::client_options(leader);
    co.topic = "orders";
    co.group = "billing";
    co.window = 40;
    Consumer consumer(co, [&](Consumer& self, const Delivery& d) {
      if (d.offset >= 40) return;
      self.ack(d);
      std::lock_guard lock(mu);
      acked.insert(d.offset);
    });
    REQUIRE(wait_until(
        [&] {
          std::lock_guard lock(mu);
          return acked.size() == 40;
        },
        kWait));
    auto st = consumer.flush_acks(kCatchUp);
    REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  }

  // Group audit dead-letters order-0.
  {
    std::atomic<bool> settled{false};
    Consumer::Options co;
    static_cast<ClientOptions&>(co) = txmq::test::client_options(leader);
    co.topic = "orders";
    co.group = "audit";
    co.window = 1;
    Consumer consumer(co, [&](Consumer& self, const Delivery& d) {
      if (d.offset != 0) return;
      self.terminate(d, "test: unpayable");
      settled = true;
    });
    REQUIRE(wait_until([&] { return settled.load(); }, kWait));
    auto st = consumer.flush_acks(kCatchUp);
    REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  }

  // Transactions: one committed, one rolled back, one left prepared. The producer's local
  // database cannot tell the last one's outcome until the failover.
  std::atomic<bool> decided{false};
  auto checker = [&](const txmq::client::TransactionCheck&) {
    return decided ? LocalTransactionState::kCommit : LocalTransactionState::kUnknown;
  };
  std::uint64_t committed_id = 0, rolled_back_id = 0, in_doubt_id = 0;
  std::set<std::string> late_confirmed;
  {
    TransactionalProducer txns(txn_options(leader), checker);
    auto c = txns.prepare("payments", text("pay-committed"), kWait);
    REQUIRE_MESSAGE(c.ok(), txmq::test::describe(c));
    committed_id = *c;
    auto ce = txns.end(committed_id, LocalTransactionState::kCommit, kWait);
    REQUIRE_MESSAGE(ce.ok(), txmq::test::describe(ce));
    REQUIRE(ce->state == TxnState::kCommitted);
    auto r = txns.prepare("payments", text("pay-rolled-back"), kWait);
    REQUIRE_MESSAGE(r.ok(), txmq::test::describe(r));
    rolled_back_id = *r;
    auto re = txns.end(rolled_back_id, LocalTransactionState::kRollback, kWait);
    REQUIRE_MESSAGE(re.ok(), txmq::test::describe(re));
    REQUIRE(re->state == TxnState::kRolledBack);
    auto p = txns.prepare("payments", text("pay-in-doubt"), kWait);
    REQUIRE_MESSAGE(p.ok(), txmq::test::describe(p));
    in_doubt_id = *p;

    // More messages, in flight when the leader dies: those confirmed before it died must
    // be there once, whatever became of the others.
    std::mutex mu;
    auto o = txmq::test::idempotent_producer_options(leader);
    o.max_batch_messages = 10;  // many batches, so that some are in flight at the kill
    Producer producer(o);
    for (const auto& b : txmq::test::numbered("late-", 300))
      producer.send_async("orders", text(b), [&mu, &late_confirmed, b](const Result<SendReceipt>& r) {
        std::lock_guard lock(mu);
        if (r) late_confirmed.insert(b);
      });
    REQUIRE(wait_until(
        [&] {
          std::lock_guard lock(mu);
          return !late_confirmed.empty();
        },
        kWait, 1ms));
    cluster.broker(0).kill9();
  }  // the producers fail what was not confirmed (kClosed)

  txmq::test::promote_member(cluster, 1, kWait);
  const std::string next = cluster.address(1);
  wait_in_sync(cluster, 1, 2, kCatchUp);  // the new leader and b3

  // Every confirmed message exactly once; nothing stored twice.
  const auto stored = counted(stored_bodies(next, "orders"));
  MESSAGE(late_confirmed.size() << " of 300 late messages confirmed before the kill; " << stored.size()
                                << " distinct messages on the new leader");
  for (const auto& b : confirmed) CHECK_MESSAGE(stored.count(b) == 1, b);
  for (const auto& b : late_confirmed) CHECK_MESSAGE(stored.count(b) == 1, b);
  for (const auto& [b, n] : stored) CHECK_MESSAGE(n == 1, b << " stored " << n << " times");

  // The dead letter moved.
  const auto letters = stored_bodies(next, txmq::dead_letter_topic("audit"));
  CHECK(letters == std::vector<std::string>{"order-0"});

  // The committed transaction visible, the rolled-back one not; the one in doubt still
  // prepared, and resolved by a check-back from the new leader.
  Admin admin(txmq::test::client_options(next));
  auto show = [&](std::uint64_t id) {
    auto t = admin.show_transaction(id, kWait);
    REQUIRE_MESSAGE(t.ok(), txmq::test::describe(t));
    return t->state;
  };
  CHECK(show(committed_id) == TxnState::kCommitted);
  CHECK(show(rolled_back_id) == TxnState::kRolledBack);
  CHECK(show(in_doubt_id) == TxnState::kPrepared);
  CHECK(counted(stored_bodies(next, "payments")) == std::map<std::string, int>{{"pay-committed", 1}});
  decided = true;
  {
    TransactionalProducer txns(txn_options(next), checker);
    CHECK(wait_until([&] { return show(in_doubt_id) == TxnState::kCommitted; }, kCatchUp, 50ms));
  }
  CHECK(counted(stored_bodies(next, "payments")) == std::map<std::string, int>{{"pay-committed", 1}, {"pay-in-doubt", 1}});

  // Group billing gets everything from offset 40 on again, and nothing it acked.
  auto topic = admin.describe_topic("orders", kWait);
  REQUIRE_MESSAGE(topic.ok(), txmq::test::describe(topic));
  const std::uint64_t end = topic->partitions.at(0).next_offset;
  std::mutex mu;
  std::set<std::uint64_t> redelivered;
  Consumer::Options co;
  static_cast<ClientOptions&>(co) = txmq::test::client_options(next);
  co.topic = "orders";
  co.group = "billing";
  Consumer consumer(co, [&](Consumer& self, const Delivery& d) {
    self.ack(d);
    std::lock_guard lock(mu);
    redelivered.insert(d.offset);
  });
  CHECK(wait_until(
      [&] {
        std::lock_guard lock(mu);
        return redelivered.size() >= end - 40;
      },
      kCatchUp));
  std::lock_guard lock(mu);
  CHECK(redelivered.size() == end - 40);
  REQUIRE_FALSE(redelivered.empty());
  CHECK(*redelivered.begin() == 40);
}

TEST_CASE("a follower killed with kill -9 catches up after its restart, and every store ends the same") {
  Cluster cluster(cluster_options());
  start_cluster(cluster);
  const std::string leader = cluster.address(0);
  txmq::test::create_topic(leader, "events");
  txmq::test::produce_all(leader, "events", txmq::test::numbered("before-", 100));

  cluster.broker(2).kill9();
  // Confirmed by the leader and b2 once b3 left the in-sync set.
  txmq::test::produce_all(leader, "events", txmq::test::numbered("while-down-", 100));
  wait_in_sync(cluster, 0, 2, kCatchUp);

  auto st = cluster.start(2);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  wait_caught_up(cluster, 2, 0, kCatchUp);
  wait_in_sync(cluster, 0, 3, kCatchUp);
  txmq::test::produce_all(leader, "events", txmq::test::numbered("after-", 10));
  wait_caught_up(cluster, 1, 0, kCatchUp);
  wait_caught_up(cluster, 2, 0, kCatchUp);

  stop_all(cluster);
  check_same_stores(cluster);
}

TEST_CASE("a follower started empty catches up to the leader's store") {
  Cluster cluster(cluster_options());
  start_cluster(cluster);
  const std::string leader = cluster.address(0);
  txmq::test::create_topic(leader, "events", 2);
  txmq::test::produce_all(leader, "events", txmq::test::numbered("event-", 300));

  REQUIRE(cluster.broker(2).terminate() == 0);
  cluster.wipe(2);
  wait_in_sync(cluster, 0, 2, kCatchUp);
  auto st = cluster.start(2);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  wait_caught_up(cluster, 2, 0, kCatchUp);
  wait_in_sync(cluster, 0, 3, kCatchUp);
  wait_caught_up(cluster, 1, 0, kCatchUp);

  stop_all(cluster);
  check_same_stores(cluster);
}

TEST_CASE("below min_insync a write is refused with NotEnoughReplicas and nothing is confirmed off two disks") {
  Cluster cluster(cluster_options());
  start_cluster(cluster);
  const std::string leader = cluster.address(0);
  txmq::test::create_topic(leader, "t");
  txmq::test::produce_one(leader, "t", text("first"));

  cluster.broker(1).kill9();
  cluster.broker(2).kill9();
  // Sent while the leader still counts the followers in sync: it is on one disk only, so
  // it must not be confirmed until a follower holds it too.
  auto conn = txmq::test::RawConnection::connect(leader, kWait);
  REQUIRE_MESSAGE(conn.ok(), txmq::test::describe(conn));
  REQUIRE(conn->send_frame(txmq::test::hello(1)).ok());
  auto hello = conn->read_frame(kWait);
  REQUIRE(hello.ok());
  REQUIRE(conn->send_frame(txmq::test::produce(2, "t", {"held"})).ok());
  wait_in_sync(cluster, 0, 1, kCatchUp, false);

  // A write now is refused at once; reads go on.
  auto o = txmq::test::producer_options(leader);
  Producer producer(o);
  auto refused = producer.send("t", text("refused"), kWait);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::kNotEnoughReplicas);
  CHECK(refused.error().retryable());
  CHECK(counted(stored_bodies(leader, "t")).count("first") == 1);

  // Whatever answers the held produce meanwhile is not a confirm.
  std::optional<bool> held_confirmed;
  if (auto f = conn->read_frame(txmq::test::kQuiet); f.ok()) {
    CHECK(f->request_id() == 2);
    CHECK(f->type() != txmq::wire::Body::ProduceOk);
    held_confirmed = false;
  }

  // b2 back: two in sync, writes confirmed again; the held produce may be confirmed now
  // that b2 holds it.
  auto st = cluster.start(1);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  wait_in_sync(cluster, 0, 2, kCatchUp);
  txmq::test::produce_one(leader, "t", text("after"));
  if (!held_confirmed) {
    auto f = conn->read_frame(kWait);
    if (f.ok()) held_confirmed = f->type() == txmq::wire::Body::ProduceOk;
  }

  MESSAGE("the held produce was " << std::string(held_confirmed.value_or(false) ? "confirmed" : "not confirmed"));
  // What the leader confirmed is on b2: promoted after the leader's kill -9 (with b3 back,
  // so that the new leader's epoch can be confirmed), it has it.
  cluster.broker(0).kill9();
  st = cluster.start(2);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  txmq::test::promote_member(cluster, 1, kWait);
  wait_in_sync(cluster, 1, 2, kCatchUp);
  const auto stored = counted(stored_bodies(cluster.address(1), "t"));
  CHECK(stored.count("first") == 1);
  CHECK(stored.count("after") == 1);
  CHECK(stored.count("refused") == 0);
  if (held_confirmed.value_or(false)) CHECK(stored.count("held") == 1);
}

namespace {

// "last_index N" from a stopped store's digest.
std::uint64_t stored_last_index(const std::string& data_dir) {
  auto d = txmq::test::store_digest(data_dir);
  REQUIRE_MESSAGE(d.ok(), txmq::test::describe(d));
  const auto at = d->find("last_index ");
  REQUIRE(at != std::string::npos);
  return std::stoull(d->substr(at + 11));
}

}  // namespace

TEST_CASE("a former leader with records no one else holds (async) truncates exactly those when it rejoins") {
  ClusterOptions o = cluster_options();
  o.sync = false;
  Cluster cluster(o);
  start_cluster(cluster);
  txmq::test::create_topic(cluster.address(0), "events");
  const auto replicated = txmq::test::numbered("replicated-", 100);
  txmq::test::produce_all(cluster.address(0), "events", replicated);
  wait_caught_up(cluster, 1, 0, kCatchUp);
  wait_caught_up(cluster, 2, 0, kCatchUp);

  cluster.broker(1).kill9();
  cluster.broker(2).kill9();
  // Async: confirmed at once, on the leader's disk alone (the risk the README states).
  // One by one, so that the former leader's log ends past the new leader's when it
  // rejoins: its extra records are found by epoch, not by where the leader's log ends.
  for (const auto& b : txmq::test::numbered("leader-only-", 20)) txmq::test::produce_one(cluster.address(0), "events", text(b));
  cluster.broker(0).kill9();
  const std::uint64_t leader_last = stored_last_index(cluster.data_dir(0));
  const std::uint64_t follower_last = stored_last_index(cluster.data_dir(1));
  REQUIRE(leader_last > follower_last);

  // b2 leads a new epoch; its records take the indexes b1's last ones had.
  cluster.set_leader(1);
  for (std::size_t i : {1, 2}) {
    auto st = cluster.start(i);
    REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  }
  wait_in_sync(cluster, 1, 2, kCatchUp);
  REQUIRE(view(cluster.address(1))->last_index < leader_last);

  // The former leader rejoins as a follower.
  auto st = cluster.start(0);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  wait_caught_up(cluster, 0, 1, kCatchUp);
  wait_in_sync(cluster, 1, 3, kCatchUp);
  const auto after = txmq::test::numbered("new-leader-", 30);
  txmq::test::produce_all(cluster.address(1), "events", after);
  const std::uint64_t n = leader_last - follower_last;
  const std::string said = "truncated " + std::to_string(n) + " records (" + std::to_string(follower_last + 1) + ".." +
                           std::to_string(leader_last) + ")";
  CHECK_MESSAGE(cluster.broker(0).log_contents().find(said) != std::string::npos,
                "no \"" << said << "\" in b1's log:\n" << cluster.broker(0).log_contents(8192));
  CHECK(txmq::test::scrape_metric(cluster.broker(0), "txmq_replication_truncated_records_total") ==
        static_cast<double>(n));
  // Every member now serves the new leader's log: what b1 alone had is gone everywhere.
  txmq::test::produce_all(cluster.address(1), "events", txmq::test::numbered("last-", 5));
  wait_caught_up(cluster, 0, 1, kCatchUp);
  wait_caught_up(cluster, 2, 1, kCatchUp);  // async: b3 may still be a fetch behind
  auto all = counted(stored_bodies(cluster.address(1), "events"));
  for (const auto& b : replicated) CHECK(all[b] == 1);
  for (const auto& b : after) CHECK(all[b] == 1);
  for (const auto& [body, count] : all) CHECK_MESSAGE(body.rfind("leader-only-", 0) != 0, body);

  stop_all(cluster);
  check_same_stores(cluster);
}

TEST_CASE("a store that ran standalone becomes a leader; followers started empty take its state by snapshot") {
  Cluster cluster(cluster_options());
  {
    // The future leader's data directory, first served by a broker without replication.
    txmq::test::BrokerProcess alone(txmq::test::on_data_dir(cluster.data_dir(0)));
    txmq::test::start(alone);
    txmq::test::create_topic(alone.address(), "history");
    txmq::test::produce_all(alone.address(), "history", txmq::test::numbered("before-", 50));
    REQUIRE(alone.terminate() == 0);
  }
  start_cluster(cluster);
  for (std::size_t i : {1, 2}) {
    INFO(cluster.id(i));
    CHECK(txmq::test::scrape_metric(cluster.broker(i), "txmq_replication_snapshots_total") == 1);
  }
  txmq::test::produce_all(cluster.address(0), "history", txmq::test::numbered("after-", 10));
  wait_caught_up(cluster, 1, 0, kCatchUp);
  wait_caught_up(cluster, 2, 0, kCatchUp);
  auto all = counted(stored_bodies(cluster.address(0), "history"));
  for (const auto& b : txmq::test::numbered("before-", 50)) CHECK(all[b] == 1);
  for (const auto& b : txmq::test::numbered("after-", 10)) CHECK(all[b] == 1);
  // Equal digests: the followers hold what the standalone broker confirmed too.
  stop_all(cluster);
  check_same_stores(cluster);
}

TEST_CASE("an async follower with fetch_interval_ms fetches no more often than that, and still catches up") {
  ClusterOptions o = cluster_options();
  o.sync = false;
  // Every gap between two fetches is then at least the interval: one after an apply waits
  // for it, one after an empty answer has waited fetch_wait_ms at the leader.
  o.fetch_wait = 1000ms;
  const auto interval = 400ms;
  o.replication_toml = "fetch_interval_ms = " + std::to_string(interval.count()) + "\n";
  Cluster cluster(o);
  start_cluster(cluster);
  txmq::test::create_topic(cluster.address(0), "events");
  wait_caught_up(cluster, 1, 0, kCatchUp);

  const double before = txmq::test::scrape_metric(cluster.broker(1), "txmq_replication_fetches_total");
  const auto started = std::chrono::steady_clock::now();
  // One record each: a follower that fetched after every apply would fetch about once a record.
  const auto bodies = txmq::test::numbered("paced-", 40);
  for (const auto& b : bodies) txmq::test::produce_one(cluster.address(0), "events", text(b));
  wait_caught_up(cluster, 1, 0, kCatchUp);
  const double fetches = txmq::test::scrape_metric(cluster.broker(1), "txmq_replication_fetches_total") - before;
  const auto elapsed = std::chrono::steady_clock::now() - started;
  // The fetch held when producing began, and one per interval since.
  const double most = 1.0 + std::floor(std::chrono::duration<double>(elapsed) / interval) + 1.0;
  CHECK_MESSAGE(fetches <= most, fetches << " fetches in "
                                         << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()
                                         << " ms, paced at " << interval.count() << " ms");
  CHECK(fetches >= 1);
  auto all = counted(stored_bodies(cluster.address(0), "events"));
  for (const auto& b : bodies) CHECK(all[b] == 1);
  // The other follower is paced too, and may still be a fetch behind: the stores are
  // compared only once it has caught up (async, so the leader does not wait for it).
  wait_caught_up(cluster, 2, 0, kCatchUp);
  stop_all(cluster);
  check_same_stores(cluster);  // and the followers' stores hold the same
}

TEST_CASE("a follower refuses a producer group's hello with NotLeader naming the leader, which takes it") {
  // Only the leader sends check-backs: a transactional producer must not settle on a follower.
  Cluster cluster(cluster_options());
  start_cluster(cluster);
  auto hello_answer = [&](std::size_t member, const std::string& group) {
    auto conn = txmq::test::RawConnection::connect(cluster.address(member), 2s);
    REQUIRE_MESSAGE(conn.ok(), describe(conn));
    REQUIRE(conn->send_frame(txmq::test::hello(1, txmq::kProtocolVersion, group)).ok());
    auto answer = conn->read_frame(kWait);
    REQUIRE_MESSAGE(answer.ok(), describe(answer));
    std::optional<txmq::Error> refused;
    if (const auto* e = answer->frame().body_as_Error()) {
      refused = txmq::Error(static_cast<ErrorCode>(e->code()), e->message() ? e->message()->str() : "");
      refused->leader = e->leader() ? e->leader()->str() : "";
      // A refused hello ends the connection: nothing more is read from it.
      CHECK_FALSE(conn->read_frame(kWait).ok());
    } else {
      CHECK(answer->type() == txmq::wire::Body::HelloOk);
    }
    return refused;
  };
  auto refused = hello_answer(1, "shop");
  REQUIRE(refused);
  CHECK(refused->code == ErrorCode::kNotLeader);
  CHECK(refused->leader == cluster.address(0));
  CHECK_FALSE(hello_answer(1, ""));      // other clients (cluster status, any first contact) are answered
  CHECK_FALSE(hello_answer(0, "shop"));  // the leader takes the producer group
  stop_all(cluster);
}
