// The C++ client against the real txmq-broker: topics, produce, consume, acks, consumer
// groups, flow control, and what a client sees when its broker dies and comes back.
//
// Every test starts its own broker on 127.0.0.1 port 0 with a fresh data directory, so
// tests share nothing and may run in any order.

#include <doctest/doctest.h>


#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/client_fixtures.h"
#include "tests/support/group_consumer.h"
#include "txmq/client.h"

namespace {

using namespace std::chrono_literals;
using txmq::ErrorCode;
using txmq::Status;
using namespace txmq::client;  // the public API under test
using txmq::test::BrokerProcess;
using txmq::test::GroupConsumer;
using txmq::test::TempDir;
using txmq::test::client_options;
using txmq::test::create_topic;
using txmq::test::describe;
using txmq::test::kAckAll;
using txmq::test::kHold;
using txmq::test::kQuiet;
using txmq::test::kWait;
using txmq::test::numbered;
using txmq::test::on_data_dir;
using txmq::test::produce_all;
using txmq::test::producer_options;
using txmq::test::start;
using txmq::test::text;

std::multiset<std::string> bodies_of(const std::vector<Delivery>& ds) {
  std::multiset<std::string> out;
  for (const auto& d : ds) out.insert(d.body);
  return out;
}

std::multiset<std::string> as_multiset(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

bool has_topic(const std::vector<txmq::client::TopicInfo>& topics, const std::string& name) {
  return std::any_of(topics.begin(), topics.end(), [&](const auto& t) { return t.name == name; });
}

}  // namespace

// -- topics ----------------------------------------------------------------------------

TEST_CASE("create_topic returns the topic with the requested partitions, all empty") {
  BrokerProcess broker;
  start(broker);
  Admin admin(client_options(broker.address()));
  auto r = admin.create_topic("orders", 3, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->name == "orders");
  REQUIRE(r->partitions.size() == 3);
  for (std::uint32_t p = 0; p < 3; ++p) {
    CHECK(r->partitions[p].partition == p);
    CHECK(r->partitions[p].first_offset == 0);
    CHECK(r->partitions[p].next_offset == 0);
  }
  CHECK(r->created_at_ms > 0);
}

TEST_CASE("list_topics shows every created topic") {
  BrokerProcess broker;
  start(broker);
  Admin admin(client_options(broker.address()));
  for (const char* name : {"alpha", "beta", "gamma"}) {
    auto r = admin.create_topic(name, 1, kWait);
    REQUIRE_MESSAGE(r.ok(), describe(r));
  }
  auto list = admin.list_topics(kWait);
  REQUIRE_MESSAGE(list.ok(), describe(list));
  CHECK(list->size() == 3);
  CHECK(has_topic(*list, "alpha"));
  CHECK(has_topic(*list, "beta"));
  CHECK(has_topic(*list, "gamma"));
}

TEST_CASE("describe_topic reports each partition's next offset after produce") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "orders", 2);
  {
    Producer producer(producer_options(broker.address()));
    for (int i = 0; i < 5; ++i) {
      Message m = text("m" + std::to_string(i));
      m.partition = i < 3 ? 0 : 1;
      auto r = producer.send("orders", std::move(m), kWait);
      REQUIRE_MESSAGE(r.ok(), describe(r));
    }
  }
  Admin admin(client_options(broker.address()));
  auto r = admin.describe_topic("orders", kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->name == "orders");
  REQUIRE(r->partitions.size() == 2);
  CHECK(r->partitions[0].first_offset == 0);
  CHECK(r->partitions[0].next_offset == 3);
  CHECK(r->partitions[1].first_offset == 0);
  CHECK(r->partitions[1].next_offset == 2);
}

TEST_CASE("describe_topic of an unknown topic fails with kUnknownTopic") {
  BrokerProcess broker;
  start(broker);
  Admin admin(client_options(broker.address()));
  auto r = admin.describe_topic("nope", kWait);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kUnknownTopic);
}

TEST_CASE("delete_topic removes the topic from list and describe") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "doomed", 2);
  produce_all(broker.address(), "doomed", numbered("d", 10));
  Admin admin(client_options(broker.address()));
  auto st = admin.delete_topic("doomed", kWait);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  auto list = admin.list_topics(kWait);
  REQUIRE_MESSAGE(list.ok(), describe(list));
  CHECK_FALSE(has_topic(*list, "doomed"));
  auto d = admin.describe_topic("doomed", kWait);
  REQUIRE_FALSE(d.ok());
  CHECK(d.error().code == ErrorCode::kUnknownTopic);
}

TEST_CASE("a deleted topic created again starts empty") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "reborn", 1);
  produce_all(broker.address(), "reborn", numbered("old-", 5));
  Admin admin(client_options(broker.address()));
  auto st = admin.delete_topic("reborn", kWait);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  auto again = admin.create_topic("reborn", 1, kWait);
  REQUIRE_MESSAGE(again.ok(), describe(again));
  REQUIRE(again->partitions.size() == 1);
  CHECK(again->partitions[0].next_offset == 0);

  auto receipts = produce_all(broker.address(), "reborn", {"new-0"});
  CHECK(receipts[0].offset == 0);
  GroupConsumer c(broker.address(), "reborn", "g", kAckAll);
  c.require_subscribed();
  REQUIRE(c.wait_for(1, kWait));
  CHECK_FALSE(c.wait_for(2, kQuiet));
  CHECK(c.deliveries()[0].body == "new-0");
}

TEST_CASE("deleting an unknown topic fails with kUnknownTopic") {
  BrokerProcess broker;
  start(broker);
  Admin admin(client_options(broker.address()));
  auto st = admin.delete_topic("nope", kWait);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::kUnknownTopic);
}

TEST_CASE("creating an existing topic fails with kTopicExists and changes nothing") {
  BrokerProcess broker;
  start(broker);
  Admin admin(client_options(broker.address()));
  auto first = admin.create_topic("orders", 2, kWait);
  REQUIRE_MESSAGE(first.ok(), describe(first));
  auto second = admin.create_topic("orders", 5, kWait);
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().code == ErrorCode::kTopicExists);
  CHECK_FALSE(second.error().retryable());
  auto d = admin.describe_topic("orders", kWait);
  REQUIRE_MESSAGE(d.ok(), describe(d));
  CHECK(d->partitions.size() == 2);
}

TEST_CASE("create_topic rejects a bad name or partition count with kInvalidArgument") {
  BrokerProcess broker;
  start(broker);
  Admin admin(client_options(broker.address()));
  auto bad_name = admin.create_topic("no spaces/allowed", 1, kWait);
  REQUIRE_FALSE(bad_name.ok());
  CHECK(bad_name.error().code == ErrorCode::kInvalidArgument);
  auto zero = admin.create_topic("zero", 0, kWait);
  REQUIRE_FALSE(zero.ok());
  CHECK(zero.error().code == ErrorCode::kInvalidArgument);
}

// -- produce ---------------------------------------------------------------------------

TEST_CASE("send returns partition and offset, and offsets are dense per partition") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "dense", 3);
  std::vector<SendReceipt> receipts;
  {
    Producer producer(producer_options(broker.address()));
    for (const auto& body : numbered("m", 30)) {
      auto r = producer.send("dense", text(body), kWait);
      REQUIRE_MESSAGE(r.ok(), describe(r));
      receipts.push_back(*r);
    }
  }
  std::map<std::uint32_t, std::vector<std::uint64_t>> by_partition;
  for (const auto& r : receipts) {
    CHECK(r.partition < 3);
    by_partition[r.partition].push_back(r.offset);
  }
  std::size_t total = 0;
  for (auto& [p, offsets] : by_partition) {
    INFO("partition " << p);
    // One producer sending synchronously: each partition's offsets arrive as 0, 1, 2, ...
    for (std::size_t i = 0; i < offsets.size(); ++i) CHECK(offsets[i] == i);
    total += offsets.size();
  }
  CHECK(total == 30);

  Admin admin(client_options(broker.address()));
  auto d = admin.describe_topic("dense", kWait);
  REQUIRE_MESSAGE(d.ok(), describe(d));
  for (const auto& p : d->partitions) CHECK(p.next_offset == by_partition[p.partition].size());
}

TEST_CASE("messages with the same key land in the same partition") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "keyed", 8);
  Producer producer(producer_options(broker.address()));
  std::map<std::string, std::set<std::uint32_t>> partitions_of_key;
  for (int round = 0; round < 5; ++round) {
    for (int k = 0; k < 12; ++k) {
      std::string key = "customer-" + std::to_string(k);
      auto r = producer.send("keyed", text("r" + std::to_string(round), key), kWait);
      REQUIRE_MESSAGE(r.ok(), describe(r));
      partitions_of_key[key].insert(r->partition);
    }
  }
  std::set<std::uint32_t> used;
  for (const auto& [key, parts] : partitions_of_key) {
    INFO("key " << key);
    CHECK(parts.size() == 1);
    used.insert(*parts.begin());
  }
  // Twelve keys over eight partitions: a hash that ignored the key would use only one.
  CHECK(used.size() > 1);
}

TEST_CASE("a message with an explicit partition lands in that partition") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "explicit", 4);
  Producer producer(producer_options(broker.address()));
  for (int p = 0; p < 4; ++p) {
    Message m = text("to-" + std::to_string(p), "same-key");
    m.partition = p;
    auto r = producer.send("explicit", std::move(m), kWait);
    REQUIRE_MESSAGE(r.ok(), describe(r));
    CHECK(r->partition == static_cast<std::uint32_t>(p));
  }
}

TEST_CASE("a message for a partition the topic does not have fails with kUnknownPartition") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "small", 2);
  Producer producer(producer_options(broker.address()));
  Message m = text("x");
  m.partition = 2;
  auto r = producer.send("small", std::move(m), kWait);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kUnknownPartition);
}

TEST_CASE("send_async with many messages fires every callback once with ok") {
  constexpr int kMessages = 5000;
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "bulk", 4);
  // Declared before the producer, whose destructor may still run callbacks.
  std::mutex mu;
  std::vector<int> calls(kMessages, 0);                  // guarded by mu
  std::set<std::pair<std::uint32_t, std::uint64_t>> refs;  // guarded by mu
  std::vector<std::string> errors;                        // guarded by mu
  Producer producer(producer_options(broker.address()));
  // 5000 small messages stay far below max_buffered_bytes, so send_async never blocks:
  // the loop takes no time; the flush below bounds the wait.
  for (int i = 0; i < kMessages; ++i) {
    producer.send_async("bulk", text("bulk-" + std::to_string(i)), [&, i](const txmq::Result<SendReceipt>& r) {
      std::lock_guard lock(mu);
      ++calls[i];
      if (r.ok())
        refs.emplace(r->partition, r->offset);
      else if (errors.size() < 5)
        errors.push_back(r.error().describe());
    });
  }
  auto st = producer.flush(30s);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  std::lock_guard lock(mu);
  CHECK_MESSAGE(errors.empty(), (errors.empty() ? "" : errors.front()));
  CHECK(std::all_of(calls.begin(), calls.end(), [](int n) { return n == 1; }));
  CHECK(refs.size() == kMessages);  // every message got its own (partition, offset)
}

TEST_CASE("produce to an unknown topic fails with kUnknownTopic, not retryable") {
  BrokerProcess broker;
  start(broker);
  Producer producer(producer_options(broker.address()));
  auto r = producer.send("does-not-exist", text("x"), kWait);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kUnknownTopic);
  CHECK_FALSE(r.error().retryable());
}

// -- consume ---------------------------------------------------------------------------

TEST_CASE("a consumer receives every message once with body, key and headers intact") {
  constexpr int kMessages = 50;
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "rich", 3);
  // Bodies and header values are bytes, not text: include a NUL and a high byte.
  auto body_of = [](int i) { return std::string("body-") + std::to_string(i) + std::string("\0\xff", 2); };
  {
    Producer producer(producer_options(broker.address()));
    for (int i = 0; i < kMessages; ++i) {
      Message m;
      m.key = "key-" + std::to_string(i % 7);
      m.body = body_of(i);
      m.headers = {Header{"trace-id", "t-" + std::to_string(i)}, Header{"bin", std::string("\0\x01", 2)}};
      auto r = producer.send("rich", std::move(m), kWait);
      REQUIRE_MESSAGE(r.ok(), describe(r));
    }
  }
  GroupConsumer c(broker.address(), "rich", "readers", kAckAll);
  c.require_subscribed();
  REQUIRE(c.wait_for(kMessages, kWait));
  CHECK_FALSE(c.wait_for(kMessages + 1, kQuiet));  // once each: no duplicates trickle in
  std::map<std::string, Delivery> by_body;
  for (const auto& d : c.deliveries()) by_body.emplace(d.body, d);
  REQUIRE(by_body.size() == kMessages);
  for (int i = 0; i < kMessages; ++i) {
    INFO("message " << i);
    auto it = by_body.find(body_of(i));
    REQUIRE(it != by_body.end());
    const Delivery& d = it->second;
    CHECK(d.topic == "rich");
    CHECK(d.group == "readers");
    CHECK(d.key == "key-" + std::to_string(i % 7));
    CHECK(d.delivery_count == 1);
    CHECK(d.timestamp_ms > 0);
    REQUIRE(d.headers.size() == 2);
    CHECK(d.headers[0].name == "trace-id");
    CHECK(d.headers[0].value == "t-" + std::to_string(i));
    CHECK(d.headers[1].name == "bin");
    CHECK(d.headers[1].value == std::string("\0\x01", 2));
  }
  auto st = c.consumer().flush_acks(kWait);
  CHECK_MESSAGE(st.ok(), txmq::test::describe(st));
}

TEST_CASE("a consumer receives one partition's messages in offset order") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "ordered", 1);
  auto sent = numbered("o", 200);
  produce_all(broker.address(), "ordered", sent);
  GroupConsumer c(broker.address(), "ordered", "g", kAckAll);
  c.require_subscribed();
  REQUIRE(c.wait_for(sent.size(), kWait));
  auto got = c.deliveries();
  for (std::size_t i = 0; i < sent.size(); ++i) {
    CHECK(got[i].offset == i);
    CHECK(got[i].body == sent[i]);
  }
}

TEST_CASE("a consumer started after the group acked everything receives nothing old") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "acked", 2);
  auto sent = numbered("a", 20);
  produce_all(broker.address(), "acked", sent);
  {
    GroupConsumer first(broker.address(), "acked", "g", kAckAll);
    first.require_subscribed();
    REQUIRE(first.wait_for(sent.size(), kWait));
    auto st = first.consumer().flush_acks(kWait);
    REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  }
  GroupConsumer second(broker.address(), "acked", "g", kAckAll);
  second.require_subscribed();
  CHECK_FALSE(second.wait_for(1, kQuiet));
  // It is live, not stuck: a new message reaches it.
  produce_all(broker.address(), "acked", {"fresh"});
  REQUIRE(second.wait_for(1, kWait));
  CHECK(second.deliveries()[0].body == "fresh");
}

TEST_CASE("deliveries a consumer did not ack are redelivered to the next consumer with delivery_count 2") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "redeliver", 2);
  auto sent = numbered("r", 10);
  produce_all(broker.address(), "redeliver", sent);

  std::set<std::pair<std::uint32_t, std::uint64_t>> first_refs;
  {
    GroupConsumer first(broker.address(), "redeliver", "g", kHold);
    first.require_subscribed();
    REQUIRE(first.wait_for(sent.size(), kWait));
    for (const auto& d : first.deliveries()) {
      CHECK(d.delivery_count == 1);
      first_refs.emplace(d.partition, d.offset);
    }
  }  // destroyed without acking

  GroupConsumer second(broker.address(), "redeliver", "g", kAckAll);
  second.require_subscribed();
  REQUIRE(second.wait_for(sent.size(), kWait));
  CHECK_FALSE(second.wait_for(sent.size() + 1, kQuiet));
  auto got = second.deliveries();
  CHECK(bodies_of(got) == as_multiset(sent));
  std::set<std::pair<std::uint32_t, std::uint64_t>> second_refs;
  for (const auto& d : got) {
    INFO("offset " << d.offset << " body " << d.body);
    CHECK(d.delivery_count == 2);
    second_refs.emplace(d.partition, d.offset);
  }
  CHECK(second_refs == first_refs);
}

TEST_CASE("a consumer that comes back resumes after the last acked message") {
  constexpr std::size_t kMessages = 20;
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "resume", 1);
  auto sent = numbered("s", kMessages);
  produce_all(broker.address(), "resume", sent);
  {
    GroupConsumer first(broker.address(), "resume", "g", kHold);
    first.require_subscribed();
    REQUIRE(first.wait_for(kMessages, kWait));
    for (const auto& d : first.deliveries())
      if (d.offset < kMessages / 2) first.consumer().ack(d);
    auto st = first.consumer().flush_acks(kWait);
    REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  }
  GroupConsumer second(broker.address(), "resume", "g", kAckAll);
  second.require_subscribed();
  REQUIRE(second.wait_for(kMessages / 2, kWait));
  CHECK_FALSE(second.wait_for(kMessages / 2 + 1, kQuiet));
  std::vector<std::string> expected(sent.begin() + kMessages / 2, sent.end());
  CHECK(bodies_of(second.deliveries()) == as_multiset(expected));
  for (const auto& d : second.deliveries()) CHECK(d.offset >= kMessages / 2);
}

TEST_CASE("acked positions survive a broker crash: a new consumer gets only the unacked half") {
  constexpr std::size_t kMessages = 20;
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "durable-acks", 1);
  auto sent = numbered("s", kMessages);
  produce_all(broker.address(), "durable-acks", sent);
  {
    GroupConsumer first(broker.address(), "durable-acks", "g", kHold);
    first.require_subscribed();
    REQUIRE(first.wait_for(kMessages, kWait));
    // Out of order on purpose: the floor moves only once the gap below it closes.
    auto ds = first.deliveries();
    std::reverse(ds.begin(), ds.end());
    for (const auto& d : ds)
      if (d.offset < kMessages / 2) first.consumer().ack(d);
    auto st = first.consumer().flush_acks(kWait);
    REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
    broker.kill9();
  }
  start(broker);
  GroupConsumer second(broker.address(), "durable-acks", "g", kAckAll);
  second.require_subscribed();
  REQUIRE(second.wait_for(kMessages / 2, kWait));
  CHECK_FALSE(second.wait_for(kMessages / 2 + 1, kQuiet));
  std::vector<std::string> expected(sent.begin() + kMessages / 2, sent.end());
  CHECK(bodies_of(second.deliveries()) == as_multiset(expected));
}

TEST_CASE("two consumer groups each receive every message") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "fanout", 3);
  auto sent = numbered("f", 30);
  produce_all(broker.address(), "fanout", sent);
  GroupConsumer billing(broker.address(), "fanout", "billing", kAckAll);
  GroupConsumer shipping(broker.address(), "fanout", "shipping", kAckAll);
  billing.require_subscribed();
  shipping.require_subscribed();
  REQUIRE(billing.wait_for(sent.size(), kWait));
  REQUIRE(shipping.wait_for(sent.size(), kWait));
  CHECK_FALSE(billing.wait_for(sent.size() + 1, kQuiet));
  CHECK(shipping.count() == sent.size());
  CHECK(bodies_of(billing.deliveries()) == as_multiset(sent));
  CHECK(bodies_of(shipping.deliveries()) == as_multiset(sent));
}

TEST_CASE("two consumers of one group share the messages without overlap") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "shared", 2);
  auto sent = numbered("x", 40);
  GroupConsumer a(broker.address(), "shared", "g", 5, kAckAll);
  GroupConsumer b(broker.address(), "shared", "g", 5, kAckAll);
  a.require_subscribed();
  b.require_subscribed();
  produce_all(broker.address(), "shared", sent);
  REQUIRE(txmq::test::wait_until([&] { return a.count() + b.count() >= sent.size(); }, kWait));
  CHECK_FALSE(txmq::test::wait_until([&] { return a.count() + b.count() > sent.size(); }, kQuiet));
  auto all = a.deliveries();
  auto more = b.deliveries();
  all.insert(all.end(), more.begin(), more.end());
  CHECK(bodies_of(all) == as_multiset(sent));
}

TEST_CASE("subscribing to an unknown topic fails with kUnknownTopic") {
  BrokerProcess broker;
  start(broker);
  GroupConsumer c(broker.address(), "missing", "g", kAckAll);
  auto st = c.consumer().wait_subscribed(kWait);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::kUnknownTopic);
}

// -- flow control ----------------------------------------------------------------------

TEST_CASE("a consumer that never acks holds exactly its window of deliveries") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "windowed", 2);
  produce_all(broker.address(), "windowed", numbered("w", 30));
  GroupConsumer c(broker.address(), "windowed", "g", 10, kHold);
  c.require_subscribed();
  REQUIRE(c.wait_for(10, kWait));
  CHECK_FALSE(c.wait_for(11, kQuiet));
  CHECK(c.count() == 10);
}

TEST_CASE("each ack frees one slot of the window") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "windowed", 1);
  produce_all(broker.address(), "windowed", numbered("w", 30));
  GroupConsumer c(broker.address(), "windowed", "g", 10, kHold);
  c.require_subscribed();
  REQUIRE(c.wait_for(10, kWait));
  auto first = c.deliveries();
  c.consumer().ack(first[0]);
  c.consumer().ack(first[1]);
  REQUIRE(c.wait_for(12, kWait));
  CHECK_FALSE(c.wait_for(13, kQuiet));
  auto got = c.deliveries();
  CHECK(got[10].offset == 10);
  CHECK(got[11].offset == 11);
}

// -- a broker that goes away -----------------------------------------------------------

TEST_CASE("messages confirmed before a SIGKILL are readable by a new client after restart") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "survivor", 2);
  auto sent = numbered("c", 100);
  produce_all(broker.address(), "survivor", sent);
  broker.kill9();
  start(broker);  // same data directory, new port

  Admin admin(client_options(broker.address()));
  auto d = admin.describe_topic("survivor", kWait);
  REQUIRE_MESSAGE(d.ok(), describe(d));
  std::uint64_t stored = 0;
  for (const auto& p : d->partitions) stored += p.next_offset - p.first_offset;
  CHECK(stored == sent.size());
  GroupConsumer c(broker.address(), "survivor", "g", kAckAll);
  c.require_subscribed();
  REQUIRE(c.wait_for(sent.size(), kWait));
  CHECK(bodies_of(c.deliveries()) == as_multiset(sent));
  // New messages after the restart continue the offsets rather than overwrite.
  auto after = produce_all(broker.address(), "survivor", {"after-restart"});
  CHECK(after[0].offset == d->partitions[after[0].partition].next_offset);
}

TEST_CASE("a send to a broker that disappeared fails with a retryable error") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "gone", 1);
  Producer::Options po = producer_options(broker.address());
  po.request_timeout = 1s;
  Producer producer(po);
  auto ok = producer.send("gone", text("before"), kWait);
  REQUIRE_MESSAGE(ok.ok(), describe(ok));
  broker.kill9();
  auto r = producer.send("gone", text("after"), kWait);
  REQUIRE_FALSE(r.ok());
  INFO(describe(r));
  CHECK(r.error().retryable());
  const ErrorCode code = r.error().code;
  CHECK((code == ErrorCode::kConnectionLost || code == ErrorCode::kTimeout || code == ErrorCode::kNotConnected));
}

TEST_CASE("an admin call to a broker that disappeared fails with a retryable error") {
  BrokerProcess broker;
  start(broker);
  Admin admin(client_options(broker.address()));
  auto ok = admin.list_topics(kWait);
  REQUIRE_MESSAGE(ok.ok(), describe(ok));
  broker.kill9();
  auto r = admin.list_topics(1s);
  REQUIRE_FALSE(r.ok());
  INFO(describe(r));
  CHECK(r.error().retryable());
}

// The broker comes back on the address the clients already know, so the same client
// objects must find it again by themselves.
TEST_CASE("a producer reconnects by itself when the broker restarts on the same address") {
  TempDir data("txmq-reconnect");
  BrokerProcess first(on_data_dir(data.path()));
  start(first);
  const std::string address = first.address();
  create_topic(address, "again", 1);
  Producer producer(producer_options(address));
  auto before = producer.send("again", text("before"), kWait);
  REQUIRE_MESSAGE(before.ok(), describe(before));

  first.kill9();
  BrokerProcess second(on_data_dir(data.path(), address));
  start(second);

  // A send can race the client's discovery that the old connection died, and fail
  // retryably; the client's contract is that retrying then succeeds.
  txmq::Result<SendReceipt> after = txmq::Error(ErrorCode::kNotConnected);
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  for (int attempt = 0; attempt < 20 && std::chrono::steady_clock::now() < deadline; ++attempt) {
    after = producer.send("again", text("after"), kWait);
    if (after.ok() || !after.error().retryable()) break;
  }
  REQUIRE_MESSAGE(after.ok(), describe(after));
  CHECK(after->offset >= 1);  // appended after "before", which survived the crash
}

TEST_CASE("a consumer resubscribes by itself when the broker restarts on the same address") {
  TempDir data("txmq-resubscribe");
  BrokerProcess first(on_data_dir(data.path()));
  start(first);
  const std::string address = first.address();
  create_topic(address, "again", 1);
  GroupConsumer c(address, "again", "g", kAckAll);
  c.require_subscribed();
  produce_all(address, "again", {"before"});
  REQUIRE(c.wait_for(1, kWait));
  REQUIRE(c.consumer().flush_acks(kWait).ok());

  first.kill9();
  BrokerProcess second(on_data_dir(data.path(), address));
  start(second);
  produce_all(address, "again", {"after"});
  REQUIRE(c.wait_for(2, kWait));
  CHECK_FALSE(c.wait_for(3, kQuiet));
  CHECK(c.deliveries()[1].body == "after");
}
