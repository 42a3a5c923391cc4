// Delayed delivery and retention against the real txmq-broker: a delayed message is
// invisible to every group until it is due, also across kill -9; retention deletes messages
// by age (the broker's retention.max_age_ms or a topic's retention_ms) and by size (a
// topic's retention_bytes), and a group that starts late sees only what is left.
//
// Every test starts its own broker on 127.0.0.1 port 0 with a fresh data directory. No test
// sleeps to synchronise: each waits for a condition with a deadline.

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "broker/storage/store.h"
#include "tests/support/broker_process.h"
#include "tests/support/client_fixtures.h"
#include "tests/support/group_consumer.h"
#include "txmq/client.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using namespace txmq::client;  // the public API under test
using txmq::test::Arrival;
using txmq::test::BrokerProcess;
using txmq::test::GroupConsumer;
using txmq::test::TempDir;
using txmq::test::client_options;
using txmq::test::create_topic;
using txmq::test::describe;
using txmq::test::kAckAll;
using txmq::test::kEarly;
using txmq::test::kQuiet;
using txmq::test::kWait;
using txmq::test::ms_between;
using txmq::test::numbered;
using txmq::test::on_data_dir;
using txmq::test::produce_all;
using txmq::test::producer_options;
using txmq::test::start;
using txmq::test::wait_until;
using txmq::test::wall_ms;

// Partition 0 of the topic as the broker describes it now.
PartitionInfo partition0(Admin& admin, const std::string& topic) {
  auto r = admin.describe_topic(topic, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  REQUIRE(!r->partitions.empty());
  return r->partitions[0];
}

// Broker options with a retention check every 100 ms and `more` TOML in [retention].
txmq::test::BrokerOptions with_retention(const std::string& more = "") {
  txmq::test::BrokerOptions o;
  o.config_toml = "[retention]\ncheck_interval_ms = 100\n" + more;
  return o;
}

}  // namespace

// -- delayed delivery --------------------------------------------------------------------

TEST_CASE("a delayed message is invisible until it is due, then delivered once") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "reminders");
  GroupConsumer c(broker.address(), "reminders", "g", kAckAll);
  c.require_subscribed();

  Producer producer(producer_options(broker.address()));
  Message m;
  m.body = "wake up";
  m.delay = 700ms;
  const auto sent_at = Clock::now();
  auto r = producer.send("reminders", std::move(m), kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->delayed());
  CHECK(r->offset == kDelayedOffset);
  {
    // Not in the log yet: it gets its offset when it comes due.
    Admin admin(client_options(broker.address()));
    const PartitionInfo p = partition0(admin, "reminders");
    if (ms_between(sent_at, Clock::now()) < 600ms) CHECK(p.next_offset == 0);
  }

  REQUIRE(c.wait_for(1, kWait));
  CHECK_FALSE(c.wait_for(2, kQuiet));
  const Arrival got = c.arrivals()[0];
  CHECK(got.delivery.body == "wake up");
  CHECK(got.delivery.offset == 0);
  CHECK(got.delivery.delivery_count == 1);
  CHECK(ms_between(sent_at, got.at) >= 700ms - kEarly);
  c.require_flushed();
  Admin admin(client_options(broker.address()));
  CHECK(partition0(admin, "reminders").next_offset == 1);
}

TEST_CASE("a message with deliver_at_ms is not delivered before that time") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "scheduled");
  GroupConsumer c(broker.address(), "scheduled", "g", kAckAll);
  c.require_subscribed();
  Producer producer(producer_options(broker.address()));
  Message m;
  m.body = "at noon";
  m.deliver_at_ms = wall_ms() + 500;
  const std::uint64_t due = m.deliver_at_ms;
  auto r = producer.send("scheduled", std::move(m), kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->delayed());
  REQUIRE(c.wait_for(1, kWait));
  CHECK_FALSE(c.wait_for(2, kQuiet));
  CHECK(c.arrivals()[0].wall_ms >= due);
}

TEST_CASE("a delayed message survives kill -9 and is delivered once, after its due time") {
  TempDir data("txmq-delayed-crash");
  BrokerProcess broker(on_data_dir(data.path()));
  start(broker);
  create_topic(broker.address(), "reminders");
  const auto sent_at = Clock::now();
  {
    Producer producer(producer_options(broker.address()));
    Message m;
    m.body = "after the crash";
    m.delay = 2000ms;
    auto r = producer.send("reminders", std::move(m), kWait);
    REQUIRE_MESSAGE(r.ok(), describe(r));
    REQUIRE(r->delayed());
  }
  broker.kill9();
  start(broker);
  INFO("restarted " << ms_between(sent_at, Clock::now()).count() << " ms after the send");
  CHECK(ms_between(sent_at, Clock::now()) < 2000ms);  // else the timing check below proves less

  GroupConsumer c(broker.address(), "reminders", "g", kAckAll);
  c.require_subscribed();
  REQUIRE(c.wait_for(1, kWait));
  CHECK_FALSE(c.wait_for(2, kQuiet));
  const Arrival got = c.arrivals()[0];
  CHECK(got.delivery.body == "after the crash");
  CHECK(got.delivery.delivery_count == 1);
  CHECK(ms_between(sent_at, got.at) >= 2000ms - kEarly);
  c.require_flushed();
  Admin admin(client_options(broker.address()));
  CHECK(partition0(admin, "reminders").next_offset == 1);  // stored exactly once
}

// Regression (fixed): ProduceOp::complete (broker/produce.cpp) adds every message of the batch to
// messages_produced, delayed ones included, and Broker::release_delayed
// (broker/background.cpp) adds it again when it comes due: stats (and
// txmq_messages_produced_total) count a delayed message twice.
TEST_CASE("a delayed message counts once in the broker's produced total") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "counted");
  GroupConsumer c(broker.address(), "counted", "g", kAckAll);
  c.require_subscribed();
  Producer producer(producer_options(broker.address()));
  Message m;
  m.body = "once";
  m.delay = 200ms;
  auto r = producer.send("counted", std::move(m), kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  REQUIRE(c.wait_for(1, kWait));
  Admin admin(client_options(broker.address()));
  auto stats = admin.stats(kWait);
  REQUIRE_MESSAGE(stats.ok(), describe(stats));
  CHECK(stats->messages_produced == 1);
}

// -- retention ---------------------------------------------------------------------------

TEST_CASE("retention by age deletes old messages and a group that starts late sees only what is left") {
  BrokerProcess broker(with_retention("max_age_ms = 500\n"));
  start(broker);
  create_topic(broker.address(), "ephemeral");
  produce_all(broker.address(), "ephemeral", numbered("old-", 10));
  Admin admin(client_options(broker.address()));
  PartitionInfo p;
  CHECK(wait_until([&] { p = partition0(admin, "ephemeral"); return p.first_offset == 10; }, kWait));
  CHECK(p.first_offset == 10);
  CHECK(p.next_offset == 10);

  produce_all(broker.address(), "ephemeral", numbered("new-", 5));
  GroupConsumer late(broker.address(), "ephemeral", "late", kAckAll);
  late.require_subscribed();
  REQUIRE(late.wait_for(5, kWait));
  CHECK_FALSE(late.wait_for(6, kQuiet));
  const auto got = late.arrivals();
  for (std::size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i].delivery.body == "new-" + std::to_string(i));
    CHECK(got[i].delivery.offset == 10 + i);
  }
  late.require_flushed();
}

// White-box: the broker is stopped and its store opened to read the group's durable cursor.
// A group whose first messages retention removed before it acknowledged them must still
// move its durable ack floor with its acks; otherwise every ack is kept as a separate key
// (on disk and in memory) for ever.
// Regression (fixed): WriteTxn::ack (broker/storage/store.cpp) advances the floor only over
// offsets acknowledged one by one; offsets retention deleted are never acknowledged, so the
// floor stays at 0 and every later ack becomes an AckedKey. ConsumerGroup::load raises the
// floor in memory only, and set_ack_floor ignores the stuck durable floor, so the in-memory
// `acked` set is never pruned either.
TEST_CASE("a group's durable ack floor moves past messages retention removed") {
  BrokerProcess broker(with_retention("max_age_ms = 500\n"));
  start(broker);
  create_topic(broker.address(), "ephemeral");
  produce_all(broker.address(), "ephemeral", numbered("old-", 10));
  {
    Admin admin(client_options(broker.address()));
    REQUIRE(wait_until([&] { return partition0(admin, "ephemeral").first_offset == 10; }, kWait));
  }
  produce_all(broker.address(), "ephemeral", numbered("new-", 5));
  {
    GroupConsumer late(broker.address(), "ephemeral", "late", kAckAll);
    late.require_subscribed();
    REQUIRE(late.wait_for(5, kWait));
    late.require_flushed();
  }
  REQUIRE(broker.terminate() == 0);

  namespace storage = txmq::broker::storage;
  auto store = storage::Store::open(storage::StoreOptions{broker.data_dir()});
  REQUIRE_MESSAGE(store.ok(), describe(store));
  auto groups = (*store)->load_groups();
  auto topics = (*store)->load_topics();
  REQUIRE_MESSAGE(groups.ok(), describe(groups));
  REQUIRE_MESSAGE(topics.ok(), describe(topics));
  std::optional<storage::GroupId> group;
  std::optional<txmq::TopicId> topic;
  for (const auto& [name, id] : *groups)
    if (name == "late") group = id;
  for (const auto& t : *topics)
    if (t.name == "ephemeral") topic = t.id;
  REQUIRE(group);
  REQUIRE(topic);
  auto cursor = (*store)->load_cursor(*group, *topic, txmq::PartitionId(0));
  REQUIRE_MESSAGE(cursor.ok(), describe(cursor));
  INFO("durable ack floor " << cursor->ack_floor.value() << ", " << cursor->acked_above.size()
                            << " acks kept above it");
  CHECK(cursor->ack_floor.value() == 15);
  CHECK(cursor->acked_above.empty());
}

TEST_CASE("a topic's retention_ms overrides the broker's default age") {
  BrokerProcess broker(with_retention());  // the default: seven days
  start(broker);
  TopicOptions short_lived;
  short_lived.retention_ms = 300;
  create_topic(broker.address(), "short", short_lived);
  create_topic(broker.address(), "long");
  produce_all(broker.address(), "short", numbered("s", 5));
  produce_all(broker.address(), "long", numbered("l", 5));
  Admin admin(client_options(broker.address()));
  auto d = admin.describe_topic("short", kWait);
  REQUIRE_MESSAGE(d.ok(), describe(d));
  CHECK(d->retention_ms == 300);
  CHECK(wait_until([&] { return partition0(admin, "short").first_offset == 5; }, kWait));
  // By then retention has run several times over "long" and kept all of it.
  const PartitionInfo kept = partition0(admin, "long");
  CHECK(kept.first_offset == 0);
  CHECK(kept.next_offset == 5);
}

TEST_CASE("retention by size keeps about retention_bytes per partition, the newest messages") {
  BrokerProcess broker(with_retention());
  start(broker);
  TopicOptions small;
  small.retention_bytes = 20 * 1024;
  create_topic(broker.address(), "capped", small);
  const std::string kilobyte(1024, 'x');
  std::vector<std::string> bodies;
  for (int i = 0; i < 100; ++i) bodies.push_back(std::to_string(i) + ":" + kilobyte.substr(0, 1020));
  produce_all(broker.address(), "capped", bodies);

  Admin admin(client_options(broker.address()));
  auto d = admin.describe_topic("capped", kWait);
  REQUIRE_MESSAGE(d.ok(), describe(d));
  CHECK(d->retention_bytes == 20 * 1024);
  PartitionInfo p;
  // Each stored record is its 1 KiB body plus a little framing: at most 20 fit.
  CHECK(wait_until([&] { p = partition0(admin, "capped"); return p.next_offset - p.first_offset <= 20; }, kWait));
  const std::uint64_t kept = p.next_offset - p.first_offset;
  INFO("kept offsets " << p.first_offset << ".." << p.next_offset);
  CHECK(p.next_offset == 100);
  CHECK(kept >= 15);  // roughly 20 KiB, not much less
  // The newest message is among those kept, intact.
  auto newest = admin.fetch("capped", 0, 99, 1, kWait);
  REQUIRE_MESSAGE(newest.ok(), describe(newest));
  REQUIRE(newest->size() == 1);
  CHECK((*newest)[0].body == bodies[99]);
  // The oldest kept is the first offset, and nothing older is readable.
  auto oldest = admin.fetch("capped", 0, 0, 1, kWait);
  REQUIRE_MESSAGE(oldest.ok(), describe(oldest));
  REQUIRE(oldest->size() == 1);
  CHECK((*oldest)[0].offset == p.first_offset);
}
