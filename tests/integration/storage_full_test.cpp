// A full store frees itself. The broker's data file is filled to storage.max_size (8 MiB)
// with several topics and messages of varied sizes (some on overflow pages, some sharing
// leaves) until produce is refused: the shape in which a plain LMDB map ends up with no
// page left to copy on write, so that even a delete fails. Then an operator deletes a
// topic with the real `txmq` tool, or retention trims, and the broker must take writes
// again without a restart or a larger limit, and lose nothing it confirmed.

#include <doctest/doctest.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/cli_run.h"
#include "tests/support/client_fixtures.h"
#include "txmq/client.h"

namespace {

using namespace std::chrono_literals;
using txmq::ErrorCode;
using namespace txmq::client;  // the public API under test
using txmq::test::BrokerProcess;
using txmq::test::describe;
using txmq::test::kWait;
using txmq::test::TempDir;

// Retention off (max_age_ms = 0), so that only what a test asks for deletes anything.
const std::string kFullConfig = "[storage]\nmax_size = \"8MiB\"\n[retention]\nmax_age_ms = 0\n";

// (partition, offset) -> body of every confirmed message of one topic.
using TopicContents = std::map<std::pair<std::uint32_t, std::uint64_t>, std::string>;
using Contents = std::map<std::string, TopicContents>;

// A body that says where it was sent from, padded to `size` with a pattern of its own.
std::string body_for(const std::string& topic, int round, int i, std::size_t size) {
  std::string b = topic + "/" + std::to_string(round) + "/" + std::to_string(i) + "/";
  while (b.size() < size) b.push_back(static_cast<char>('a' + (b.size() * 7 + static_cast<std::size_t>(round)) % 26));
  return b;
}

// Produces to the topics in turn, 32 messages a round, until the broker refuses with
// StorageFull; then goes on with small messages until a whole round is refused, so that
// the file is full to the last page. Returns every confirmed message.
Contents fill(const std::string& address, const std::vector<std::string>& topics) {
  Producer producer(txmq::test::producer_options(address));
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<std::size_t> varied(16, 6000), small(16, 200);
  std::mutex mu;
  Contents confirmed;
  int refused = 0;
  std::string unexpected;
  bool full = false, brim = false;
  for (int round = 0; round < 2000 && !brim; ++round) {
    {
      std::lock_guard lock(mu);
      refused = 0;
    }
    constexpr int kPerRound = 32;
    for (int i = 0; i < kPerRound; ++i) {
      const std::string& topic = topics[static_cast<std::size_t>(round * kPerRound + i) % topics.size()];
      Message m;
      m.body = body_for(topic, round, i, full ? small(rng) : varied(rng));
      producer.send_async(topic, m, [&, topic, body = m.body](const txmq::Result<SendReceipt>& r) {
        std::lock_guard lock(mu);
        if (r.ok())
          confirmed[topic][{r->partition, r->offset}] = body;
        else if (r.error().code == ErrorCode::kStorageFull)
          ++refused;
        else
          unexpected = r.error().describe();
      });
    }
    auto st = producer.flush(kWait);
    REQUIRE_MESSAGE(st.ok(), describe(st));
    std::lock_guard lock(mu);
    REQUIRE_MESSAGE(unexpected.empty(), unexpected);
    if (refused > 0) full = true;
    if (refused == kPerRound) brim = true;
  }
  REQUIRE_MESSAGE(brim, "8 MiB never filled up");
  std::size_t n = 0;
  for (const auto& [t, c] : confirmed) n += c.size();
  MESSAGE("filled with " << n << " confirmed messages");
  return confirmed;
}

// Every stored message of the topic, read without a group (nothing is written).
TopicContents read_topic(const std::string& address, const std::string& topic) {
  Admin admin(txmq::test::client_options(address));
  auto info = admin.describe_topic(topic, kWait);
  REQUIRE_MESSAGE(info.ok(), describe(info));
  TopicContents out;
  for (const auto& p : info->partitions) {
    for (std::uint64_t from = p.first_offset; from < p.next_offset;) {
      auto batch = admin.fetch(topic, p.partition, from, 500, kWait);
      REQUIRE_MESSAGE(batch.ok(), describe(batch));
      REQUIRE_FALSE(batch->empty());
      for (const Delivery& d : *batch) out[{d.partition, d.offset}] = d.body;
      from = batch->back().offset + 1;
    }
  }
  return out;
}

// Consumes the whole topic as a fresh group, acking each message, until `expected` many
// arrived; returns them.
TopicContents consume_topic(const std::string& address, const std::string& topic, std::size_t expected) {
  Consumer::Options co;
  static_cast<txmq::client::ClientOptions&>(co) = txmq::test::client_options(address);
  co.topic = topic;
  co.group = "verify";
  std::mutex mu;
  TopicContents got;
  Consumer* self = nullptr;
  Consumer consumer(co, [&](const Delivery& d) {
    {
      std::lock_guard lock(mu);
      got[{d.partition, d.offset}] = d.body;
    }
    self->ack(d);
  });
  self = &consumer;
  auto st = consumer.wait_subscribed(kWait);
  REQUIRE_MESSAGE(st.ok(), describe(st));
  bool all = txmq::test::wait_until(
      [&] {
        std::lock_guard lock(mu);
        return got.size() >= expected;
      },
      3 * kWait);
  st = consumer.flush_acks(kWait);
  CHECK_MESSAGE(st.ok(), describe(st));
  std::lock_guard lock(mu);
  CHECK_MESSAGE(all, "consumed " << got.size() << " of " << expected);
  return got;
}

std::uint64_t used_bytes(const std::string& address) {
  Admin admin(txmq::test::client_options(address));
  auto s = admin.stats(kWait);
  REQUIRE_MESSAGE(s.ok(), describe(s));
  return s->storage_used_bytes;
}

void send_ok(const std::string& address, const std::string& topic, const std::string& body, TopicContents& into) {
  Producer producer(txmq::test::producer_options(address));
  Message m;
  m.body = body;
  auto r = producer.send(topic, m, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  into[{r->partition, r->offset}] = body;
}

void create_topics(const std::string& address) {
  txmq::test::create_topic(address, "filler-a", 2);
  txmq::test::create_topic(address, "filler-b", 1);
  txmq::test::create_topic(address, "keep", 1);
}

}  // namespace

TEST_CASE("txmq topic delete on a filled 8 MiB store succeeds and the next produce is accepted") {
  BrokerProcess::Options options;
  options.config_toml = kFullConfig;
  BrokerProcess broker(options);
  txmq::test::start(broker);
  INFO("broker log:\n" << broker.log_contents());
  create_topics(broker.address());
  Contents confirmed = fill(broker.address(), {"filler-a", "filler-b", "keep"});
  const std::uint64_t used_full = used_bytes(broker.address());

  const txmq::test::CliRun deleted = txmq::test::run_cli({"--broker", broker.address(), "topic", "delete", "filler-a"});
  REQUIRE_MESSAGE(deleted.exit_code == 0,
                  "txmq topic delete filler-a: exit " << deleted.exit_code << "\n" << deleted.out << deleted.err);

  // At once, with no restart and no larger limit.
  TopicContents keep = confirmed["keep"];
  send_ok(broker.address(), "keep", "after the delete", keep);
  send_ok(broker.address(), "filler-b", "after the delete", confirmed["filler-b"]);
  // The room the delete made is reported: used bytes count live pages, not the file's end.
  CHECK(used_bytes(broker.address()) < used_full);
  CHECK(read_topic(broker.address(), "keep") == keep);
}

TEST_CASE("deleting a topic of a filled store leaves the other topics intact, across a kill -9") {
  BrokerProcess::Options options;
  options.config_toml = kFullConfig;
  BrokerProcess broker(options);
  txmq::test::start(broker);
  INFO("broker log:\n" << broker.log_contents());
  create_topics(broker.address());
  Contents confirmed = fill(broker.address(), {"filler-a", "filler-b", "keep"});
  {
    Admin admin(txmq::test::client_options(broker.address()));
    auto st = admin.delete_topic("filler-a", kWait);
    REQUIRE_MESSAGE(st.ok(), describe(st));
  }
  TopicContents& keep = confirmed["keep"];
  for (int i = 0; i < 20; ++i) send_ok(broker.address(), "keep", "after the delete " + std::to_string(i), keep);

  // Consumed as a group (its acks are writes too) and compared message by message.
  CHECK(consume_topic(broker.address(), "keep", keep.size()) == keep);
  CHECK(read_topic(broker.address(), "filler-b") == confirmed["filler-b"]);

  broker.kill9();
  auto restarted = broker.restart();
  REQUIRE_MESSAGE(restarted.ok(), describe(restarted));
  CHECK(read_topic(broker.address(), "keep") == keep);
  CHECK(read_topic(broker.address(), "filler-b") == confirmed["filler-b"]);
  Admin admin(txmq::test::client_options(broker.address()));
  auto gone = admin.describe_topic("filler-a", kWait);
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.error().code == ErrorCode::kUnknownTopic);
  send_ok(broker.address(), "keep", "after the restart", keep);
}

TEST_CASE("retention trims a filled 8 MiB store and produce is accepted again") {
  TempDir data("txmq-full-data");
  Contents confirmed;
  {
    BrokerProcess::Options options;
    options.config_toml = kFullConfig;
    options.data_dir = data.path();
    BrokerProcess broker(options);
    txmq::test::start(broker);
    INFO("broker log:\n" << broker.log_contents());
    create_topics(broker.address());
    confirmed = fill(broker.address(), {"filler-a", "filler-b", "keep"});
    REQUIRE(broker.terminate() == 0);
  }
  // The same full data file, now with a byte limit per partition that every partition is
  // over: retention's first round runs on a full store.
  BrokerProcess::Options options;
  options.config_toml = "[storage]\nmax_size = \"8MiB\"\n[retention]\nmax_age_ms = 0\n"
                        "max_partition_bytes = \"512KiB\"\ncheck_interval_ms = 50\n";
  options.data_dir = data.path();
  BrokerProcess broker(options);
  txmq::test::start(broker);
  INFO("broker log:\n" << broker.log_contents());
  Admin admin(txmq::test::client_options(broker.address()));
  bool trimmed = txmq::test::wait_until(
      [&] {
        auto info = admin.describe_topic("keep", kWait);
        return info.ok() && info->partitions[0].first_offset > 0;
      },
      3 * kWait, 20ms);
  REQUIRE_MESSAGE(trimmed, "retention never trimmed 'keep'");
  TopicContents keep = read_topic(broker.address(), "keep");
  REQUIRE_FALSE(keep.empty());
  // What is left is the newest of what was confirmed, unchanged.
  for (const auto& [where, body] : keep) CHECK(confirmed["keep"].at(where) == body);
  CHECK(keep.rbegin()->first == confirmed["keep"].rbegin()->first);
  send_ok(broker.address(), "keep", "after retention", keep);
  CHECK(broker.log_contents().find("MDB_MAP_FULL") == std::string::npos);
}
