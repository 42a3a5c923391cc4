// Broker-owned topics and headers against the real txmq-broker, with anonymous access: a
// client can neither write a dead-letter topic nor set a txmq-* header, so it cannot forge
// a dead letter that redrive would trust; redrive moves only letters the broker marked as
// its own, unless the operator vouches for them.
//
// Every test starts its own broker on 127.0.0.1 port 0 with a fresh data directory. No test
// sleeps to synchronise: each waits for a condition with a deadline.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "broker/storage/store.h"
#include "tests/support/broker_process.h"
#include "tests/support/cli_run.h"
#include "tests/support/client_fixtures.h"
#include "tests/support/group_consumer.h"
#include "txmq/client.h"

namespace {

using namespace std::chrono_literals;
using txmq::ErrorCode;
using namespace txmq::client;  // the public API under test
using txmq::test::BrokerOptions;
using txmq::test::BrokerProcess;
using txmq::test::GroupConsumer;
using txmq::test::TempDir;
using txmq::test::client_options;
using txmq::test::create_topic;
using txmq::test::describe;
using txmq::test::kAckAll;
using txmq::test::kQuiet;
using txmq::test::kWait;
using txmq::test::on_data_dir;
using txmq::test::produce_one;
using txmq::test::producer_options;
using txmq::test::start;
using txmq::test::text;
using txmq::test::wait_until;

// The headers of a dead letter of group `group` that names `topic`/0/`offset` as its origin:
// what redrive reads to decide which message to deliver again.
std::vector<Header> forged_history(const std::string& group, const std::string& topic, std::uint64_t offset) {
  return {Header{"txmq-origin-topic", topic},
          Header{"txmq-origin-partition", "0"},
          Header{"txmq-origin-offset", std::to_string(offset)},
          Header{"txmq-origin-message-id", topic + "/0/" + std::to_string(offset)},
          Header{"txmq-group", group},
          Header{"txmq-delivery-count", "1"},
          Header{"txmq-reason", "forged"}};
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

template <typename T>
void check_forbidden(const txmq::Result<T>& r, const std::string& naming) {
  REQUIRE_FALSE_MESSAGE(r.ok(), "expected Forbidden naming '" << naming << "'");
  CHECK(r.error().code == ErrorCode::kForbidden);
  CHECK_MESSAGE(contains(r.error().message, naming), r.error().describe());
}

// Topic `billing`, group `billing` consuming it and acknowledging all: one message, sent,
// delivered and acknowledged durably. Returns its offset (partition 0).
std::uint64_t paid_and_acked(const std::string& address) {
  create_topic(address, "billing");
  const SendReceipt paid = produce_one(address, "billing", text("invoice 42 paid"));
  GroupConsumer billing(address, "billing", "billing", kAckAll);
  billing.require_subscribed();
  REQUIRE(billing.wait_for(1, kWait));
  billing.require_flushed();
  return paid.offset;
}

// Appends messages to partition 0 of `topic` (created if absent) straight into the store
// of a stopped broker, without the broker's mark: as a broker from before the mark (or a
// bug) would have left them. Returns their offsets.
std::vector<std::uint64_t> append_unmarked(const std::string& data_dir, const std::string& topic,
                                           const std::vector<Message>& messages) {
  namespace storage = txmq::broker::storage;
  auto bytes = [](const std::string& s) {
    return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
  };
  auto store = storage::Store::open(storage::StoreOptions{data_dir});
  REQUIRE_MESSAGE(store.ok(), describe(store));
  auto txn = (*store)->begin_write(nullptr);
  REQUIRE_MESSAGE(txn.ok(), describe(txn));
  auto found = (*txn)->find_topic(topic);
  REQUIRE_MESSAGE(found.ok(), describe(found));
  if (!*found) {
    auto created = (*txn)->create_topic(topic, 1, txmq::test::wall_ms());
    REQUIRE_MESSAGE(created.ok(), describe(created));
    *found = *created;
  }
  std::vector<std::uint64_t> offsets;
  for (const Message& m : messages) {
    std::vector<storage::HeaderView> headers;
    for (const auto& h : m.headers) headers.emplace_back(h.name, bytes(h.value));
    auto at = (*txn)->append((*found)->id, txmq::PartitionId(0), txmq::test::wall_ms(), bytes(m.key), headers,
                             bytes(m.body));
    REQUIRE_MESSAGE(at.ok(), describe(at));
    offsets.push_back(at->value());
  }
  REQUIRE((*txn)->commit().ok());
  return offsets;
}

struct ToolRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs the txmq tool against the broker, with `input` on its standard input. `args` are
// split at spaces (none of them holds one).
ToolRun run_tool(const std::string& address, const std::string& args, const std::string& input = {}) {
  std::vector<std::string> argv = {"--broker", address};
  std::istringstream words(args);
  for (std::string w; words >> w;) argv.push_back(w);
  const txmq::test::CliRun run = txmq::test::run_cli(argv, input);
  return ToolRun{run.exit_code, run.out + run.err};
}

}  // namespace

// -- the forged dead letter ----------------------------------------------------------------

TEST_CASE("a forged dead letter naming an acknowledged message is refused at the produce") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "billing");
  // Group billing gives up on one message (so billing.dlq exists, as in any group that
  // ever dead-lettered) and acknowledges the other.
  GroupConsumer billing(broker.address(), "billing", "billing", [](Consumer& c, const Delivery& d) {
    if (d.body == "bounced" && d.delivery_count == 1) return c.terminate(d, "card declined");
    c.ack(d);
  });
  billing.require_subscribed();
  produce_one(broker.address(), "billing", text("bounced"));
  const std::uint64_t acked = produce_one(broker.address(), "billing", text("invoice 42 paid")).offset;
  REQUIRE(billing.wait_for(2, kWait));
  billing.require_flushed();
  Admin admin(client_options(broker.address()));
  std::vector<Delivery> letters;
  REQUIRE(wait_until(
      [&] {
        auto r = admin.fetch("billing.dlq", 0, 0, 10, kWait);
        if (r.ok()) letters = *r;
        return letters.size() == 1;
      },
      kWait));

  Producer producer(producer_options(broker.address()));
  Message forged = text("invoice 42 paid");
  forged.headers = forged_history("billing", "billing", acked);
  check_forbidden(producer.send("billing.dlq", forged, kWait), "'billing.dlq' is a dead-letter topic");

  // Only the genuine letter is there; redriving everything brings back the bounced message
  // alone, and the acknowledged one stays acknowledged.
  auto now = admin.fetch("billing.dlq", 0, 0, 10, kWait);
  REQUIRE_MESSAGE(now.ok(), describe(now));
  std::vector<std::uint64_t> all;
  for (const auto& d : *now) all.push_back(d.offset);
  CHECK(all == std::vector<std::uint64_t>{letters[0].offset});
  auto redriven = admin.redrive("billing", all, kWait);
  REQUIRE_MESSAGE(redriven.ok(), describe(redriven));
  CHECK(redriven->redriven == std::vector<std::uint64_t>{letters[0].offset});
  REQUIRE(billing.wait_for(3, kWait));
  CHECK(billing.arrival(2).delivery.body == "bounced");
  CHECK_FALSE(billing.wait_for(4, kQuiet));
}

TEST_CASE("the txmq tool's forged dead letter is refused with the reason") {
  BrokerProcess broker;
  start(broker);
  const std::uint64_t acked = paid_and_acked(broker.address());

  std::string headers;
  for (const auto& h : forged_history("billing", "billing", acked)) headers += " -H " + h.name + "=" + h.value;
  const ToolRun forged = run_tool(broker.address(), "produce billing.dlq" + headers, "invoice 42 paid\n");
  CHECK(forged.exit_code == 1);
  CHECK_MESSAGE(contains(forged.output, "'billing.dlq' is a dead-letter topic; only the broker writes it"),
                forged.output);
  const ToolRun redrive = run_tool(broker.address(), "dlq redrive -g billing");
  CHECK_MESSAGE(contains(redrive.output, "0 dead letter(s)"), redrive.output);
}

TEST_CASE("a dead-letter topic is refused to plain, idempotent and transactional producers alike") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "jobs");
  // A genuine dead letter makes jobs.dlq exist: the refusal is by name, not by absence.
  {
    GroupConsumer workers(broker.address(), "jobs", "workers",
                          [](Consumer& c, const Delivery& d) { c.terminate(d, "bad"); });
    workers.require_subscribed();
    produce_one(broker.address(), "jobs", text("poison"));
    Admin admin(client_options(broker.address()));
    REQUIRE(wait_until([&] { auto r = admin.fetch("workers.dlq", 0, 0, 10, kWait); return r.ok() && r->size() == 1; },
                       kWait));
  }

  Producer plain(producer_options(broker.address()));
  check_forbidden(plain.send("workers.dlq", text("no history at all"), kWait), "'workers.dlq'");

  auto idempotent_options = producer_options(broker.address());
  idempotent_options.idempotent = true;
  Producer idempotent(idempotent_options);
  check_forbidden(idempotent.send("workers.dlq", text("again"), kWait), "'workers.dlq'");

  TransactionalProducer::Options txn_options;
  static_cast<ClientOptions&>(txn_options) = client_options(broker.address());
  txn_options.producer_group = "shop";
  TransactionalProducer transactional(txn_options,
                                      [](const TransactionCheck&) { return LocalTransactionState::kRollback; });
  check_forbidden(transactional.prepare("workers.dlq", text("half"), kWait), "'workers.dlq'");

  // Only the genuine letter is there.
  Admin admin(client_options(broker.address()));
  auto letters = admin.fetch("workers.dlq", 0, 0, 10, kWait);
  REQUIRE_MESSAGE(letters.ok(), describe(letters));
  CHECK(letters->size() == 1);
}

// -- reserved headers ----------------------------------------------------------------------

TEST_CASE("a txmq-* header is refused, naming it, and the connection and other clients carry on") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "orders");
  GroupConsumer shipping(broker.address(), "orders", "shipping", kAckAll);
  shipping.require_subscribed();
  Producer producer(producer_options(broker.address()));
  Producer other(producer_options(broker.address()));

  Message m = text("order 1");
  m.headers = {Header{"trace-id", "t-1"}, Header{"txmq-resolved-by", "operator"}};
  check_forbidden(producer.send("orders", m, kWait), "header 'txmq-resolved-by'");
  // Any case: a header that travels through HTTP loses its case.
  m.headers = {Header{"TXMQ-Group", "shipping"}};
  check_forbidden(producer.send("orders", m, kWait), "header 'TXMQ-Group'");

  TransactionalProducer::Options txn_options;
  static_cast<ClientOptions&>(txn_options) = client_options(broker.address());
  txn_options.producer_group = "shop";
  TransactionalProducer transactional(txn_options,
                                      [](const TransactionCheck&) { return LocalTransactionState::kRollback; });
  Message half = text("half");
  half.headers = {Header{"txmq-origin-topic", "orders"}};
  check_forbidden(transactional.prepare("orders", half, kWait), "header 'txmq-origin-topic'");

  // The same producer, another one and the consumer go on as before.
  Message fine = text("order 2");
  fine.headers = {Header{"trace-id", "t-2"}, Header{"txmq", "not the prefix"}};
  auto sent = producer.send("orders", fine, kWait);
  CHECK_MESSAGE(sent.ok(), describe(sent));
  auto sent_other = other.send("orders", text("order 3"), kWait);
  CHECK_MESSAGE(sent_other.ok(), describe(sent_other));
  REQUIRE(shipping.wait_for(2, kWait));
  CHECK_FALSE(shipping.wait_for(3, kQuiet));
  CHECK(shipping.arrival(0).delivery.body == "order 2");
  CHECK(shipping.arrival(1).delivery.body == "order 3");

  const ToolRun tool = run_tool(broker.address(), "produce orders -H txmq-group=shipping", "order 4\n");
  CHECK(tool.exit_code == 1);
  CHECK_MESSAGE(contains(tool.output, "header 'txmq-group' is reserved"), tool.output);
}

// -- creating, reading and deleting a dead-letter topic ------------------------------------

TEST_CASE("creating a dead-letter topic by hand is refused; reading and deleting one is allowed") {
  BrokerOptions options;
  options.config_toml = "[topics]\nauto_create = true\n";
  BrokerProcess broker(options);
  start(broker);
  Admin admin(client_options(broker.address()));
  check_forbidden(admin.create_topic("x.dlq", 1, kWait), "'x.dlq' is a dead-letter topic");
  // Nor by a produce that would auto-create it.
  Producer producer(producer_options(broker.address()));
  check_forbidden(producer.send("y.dlq", text("hello"), kWait), "'y.dlq'");
  for (const char* name : {"x.dlq", "y.dlq"}) {
    auto d = admin.describe_topic(name, kWait);
    REQUIRE_FALSE(d.ok());
    CHECK(d.error().code == ErrorCode::kUnknownTopic);
  }
  const ToolRun tool = run_tool(broker.address(), "topic create z.dlq");
  CHECK(tool.exit_code == 1);
  CHECK_MESSAGE(contains(tool.output, "'z.dlq' is a dead-letter topic"), tool.output);
  // ".dlq" alone names no group: an ordinary (if odd) topic name.
  auto odd = admin.create_topic(".dlq", 1, kWait);
  CHECK_MESSAGE(odd.ok(), describe(odd));

  // The broker's own dead-letter topic: consumed by a group, and deleted.
  create_topic(broker.address(), "x");
  GroupConsumer x(broker.address(), "x", "x", [](Consumer& c, const Delivery& d) { c.terminate(d, "no"); });
  x.require_subscribed();
  produce_one(broker.address(), "x", text("poison"));
  GroupConsumer alarms(broker.address(), "x.dlq", "alarms", kAckAll);
  REQUIRE(alarms.wait_for(1, kWait));
  CHECK(alarms.arrival(0).delivery.body == "poison");
  alarms.require_flushed();
  auto deleted = admin.delete_topic("x.dlq", kWait);
  CHECK_MESSAGE(deleted.ok(), describe(deleted));
}

// -- redrive and the broker's mark ---------------------------------------------------------

TEST_CASE("redrive refuses a letter without the broker's mark unless the operator trusts it") {
  // A store as a broker from before the mark left it: a letter in billing.dlq that names an
  // acknowledged message, stored without the mark (here written straight into the store).
  TempDir data("txmq-owned-unmarked");
  BrokerProcess broker(on_data_dir(data.path()));
  start(broker);
  const std::uint64_t acked = paid_and_acked(broker.address());
  REQUIRE(broker.terminate() == 0);
  Message old_letter = text("invoice 42 paid");
  old_letter.headers = forged_history("billing", "billing", acked);
  const std::uint64_t letter = append_unmarked(data.path(), "billing.dlq", {old_letter}).at(0);
  auto restarted = broker.restart();
  REQUIRE_MESSAGE(restarted.ok(), describe(restarted));
  GroupConsumer billing(broker.address(), "billing", "billing", kAckAll);
  billing.require_subscribed();
  Admin admin(client_options(broker.address()));

  auto refused = admin.redrive("billing", {letter}, kWait);
  REQUIRE_MESSAGE(refused.ok(), describe(refused));
  CHECK(refused->redriven.empty());
  CHECK(refused->failed == std::vector<std::uint64_t>{letter});
  CHECK(refused->unmarked == std::vector<std::uint64_t>{letter});
  const ToolRun tool = run_tool(broker.address(), "dlq redrive -g billing");
  CHECK(tool.exit_code == 1);
  CHECK_MESSAGE(contains(tool.output, "lacks the broker's mark"), tool.output);
  CHECK_MESSAGE(contains(tool.output, "--trust-unmarked"), tool.output);
  CHECK_FALSE(billing.wait_for(1, kQuiet));
  CHECK_MESSAGE(wait_until([&] { return contains(broker.log_contents(), "lack the broker's mark"); }, kWait),
                "the broker logs why they stayed");

  // The operator vouches for it: it moves, and is delivered to billing again.
  const ToolRun trusted = run_tool(broker.address(), "dlq redrive -g billing --trust-unmarked");
  CHECK_MESSAGE(trusted.exit_code == 0, trusted.output);
  REQUIRE(billing.wait_for(1, kWait));
  CHECK(billing.arrival(0).delivery.offset == acked);
}

TEST_CASE("a genuine dead letter carries the mark and redrives without trust") {
  BrokerProcess broker;
  start(broker);
  create_topic(broker.address(), "jobs");
  // Terminates the first delivery, acknowledges the redriven one.
  auto seen = std::make_shared<bool>(false);  // guarded by the GroupConsumer's lock
  GroupConsumer workers(broker.address(), "jobs", "workers", [seen](Consumer& c, const Delivery& d) {
    if (*seen) return c.ack(d);
    *seen = true;
    c.terminate(d, "bad");
  });
  workers.require_subscribed();
  const SendReceipt sent = produce_one(broker.address(), "jobs", text("poison"));
  Admin admin(client_options(broker.address()));
  std::vector<Delivery> letters;
  REQUIRE(wait_until(
      [&] {
        auto r = admin.fetch("workers.dlq", 0, 0, 10, kWait);
        if (r.ok()) letters = *r;
        return letters.size() == 1;
      },
      kWait));
  auto r = admin.redrive("workers", {letters[0].offset}, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->redriven == std::vector<std::uint64_t>{letters[0].offset});
  CHECK(r->unmarked.empty());
  REQUIRE(workers.wait_for(2, kWait));
  CHECK(workers.arrival(1).delivery.offset == sent.offset);
}

// Moved from dead_letter_test.cpp: clients can no longer put an ordinary message or another
// group's letter into a dead-letter topic, so they are written into the store as an older
// broker could have left them, and redriven with the operator's trust, which leaves only
// the checks this test is about.
TEST_CASE("a redrive of an offset that is not the group's dead letter is reported as failed") {
  TempDir data("txmq-owned-not-a-letter");
  BrokerProcess broker(on_data_dir(data.path()));
  start(broker);
  create_topic(broker.address(), "payments");
  std::uint64_t real = 0;
  std::uint64_t origin = 0;
  {
    GroupConsumer first(broker.address(), "payments", "ledger", 10,
                        [](Consumer& c, const Delivery& d) { c.terminate(d, "rejected"); });
    first.require_subscribed();
    origin = produce_one(broker.address(), "payments", text("pay-1")).offset;
    Admin admin(client_options(broker.address()));
    std::vector<Delivery> letters;
    REQUIRE(wait_until(
        [&] {
          auto r = admin.fetch("ledger.dlq", 0, 0, 10, kWait);
          if (r.ok()) letters = *r;
          return letters.size() == 1;
        },
        kWait));
    real = letters[0].offset;
    first.require_flushed();
  }
  REQUIRE(broker.terminate() == 0);

  // An ordinary message in the dead-letter topic, and a forged letter of another group.
  Message forged = text("pay-1");
  forged.headers = {Header{"txmq-origin-topic", "payments"}, Header{"txmq-origin-partition", "0"},
                    Header{"txmq-origin-offset", std::to_string(origin)}, Header{"txmq-group", "mailer"}};
  const auto written = append_unmarked(data.path(), "ledger.dlq", {text("not a letter"), forged});
  const std::uint64_t plain = written.at(0);
  const std::uint64_t other = written.at(1);
  constexpr std::uint64_t kNowhere = 999;
  auto restarted = broker.restart();
  REQUIRE_MESSAGE(restarted.ok(), describe(restarted));
  GroupConsumer a(broker.address(), "payments", "ledger", 10, kAckAll);
  a.require_subscribed();

  Admin admin(client_options(broker.address()));
  auto r = admin.redrive("ledger", {plain, real, other, kNowhere}, kWait, RedriveUnmarked::kTrust);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->redriven == std::vector<std::uint64_t>{real});
  std::vector<std::uint64_t> failed = r->failed;
  std::sort(failed.begin(), failed.end());
  CHECK(failed == std::vector<std::uint64_t>{plain, other, kNowhere});
  CHECK(r->unmarked.empty());
  REQUIRE(a.wait_for(1, kWait));
  CHECK(a.arrival(0).delivery.delivery_count == 1);
  CHECK(a.arrival(0).delivery.offset == origin);

  // Redriven once; the second time it is no longer there.
  auto again = admin.redrive("ledger", {real}, kWait);
  REQUIRE_MESSAGE(again.ok(), describe(again));
  CHECK(again->redriven.empty());
  CHECK(again->failed == std::vector<std::uint64_t>{real});
  // The failed ones stay where they were.
  auto left = admin.fetch("ledger.dlq", 0, 0, 10, kWait);
  REQUIRE_MESSAGE(left.ok(), describe(left));
  REQUIRE(left->size() == 2);
  CHECK((*left)[0].offset == plain);
  CHECK((*left)[1].offset == other);
}
