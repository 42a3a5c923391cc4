// Authorization against the real broker: each request of the README's "Permissions" table
// refused for a user without its permission (NotAuthorized, naming the user, the operation
// and the resource, and nothing applied) and served for one with it, through the C++
// client and through the txmq tool. Authentication itself is auth_test's.

#include <doctest/doctest.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/scram.h"
#include "common/users_file.h"
#include "tests/support/cli_run.h"
#include "tests/support/client_fixtures.h"

namespace txmq::test {
namespace {

namespace scram = common::scram;

// "admin" may do everything and sets the scene; "nobody" may do nothing; each other user
// holds exactly what its requests need.
constexpr const char* kRules = R"(
[[allow]]
users = ["admin"]
topics = ["*"]
operations = ["all"]
[[allow]]
users = ["admin"]
groups = ["*"]
operations = ["all"]
[[allow]]
users = ["admin"]
producer_groups = ["*"]
operations = ["all"]
[[allow]]
users = ["admin"]
cluster = true
operations = ["all"]

[[allow]]
users = ["producer"]
topics = ["orders"]
operations = ["produce"]

[[allow]]
users = ["topics"]
topics = ["new.*"]
operations = ["create", "delete", "describe"]

[[allow]]
users = ["consumer"]
topics = ["orders"]
operations = ["consume"]
[[allow]]
users = ["consumer"]
groups = ["billing"]
operations = ["consume"]

[[allow]]
users = ["configurer"]
groups = ["billing"]
operations = ["configure"]
[[allow]]
users = ["configurer"]
topics = ["orders"]
operations = ["configure"]

[[allow]]
users = ["viewer"]
topics = ["orders"]
operations = ["describe"]
[[allow]]
users = ["viewer"]
groups = ["billing"]
operations = ["describe"]
[[allow]]
users = ["viewer"]
producer_groups = ["orders-svc"]
operations = ["describe"]
[[allow]]
users = ["viewer"]
cluster = true
operations = ["describe"]

[[allow]]
users = ["dlq"]
groups = ["billing"]
operations = ["dead-letters"]

[[allow]]
users = ["txn"]
producer_groups = ["orders-svc"]
operations = ["transact"]
[[allow]]
users = ["txn"]
topics = ["orders"]
operations = ["produce"]

[[allow]]
users = ["resolver"]
producer_groups = ["orders-svc"]
operations = ["resolve"]
)";

const std::vector<std::string> kUsers = {"admin",  "nobody", "producer", "topics", "consumer", "configurer",
                                         "viewer", "dlq",    "txn",      "resolver"};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A broker with authentication on, the users above (password "<user>-pw") and kRules.
struct AclBroker {
  TempDir dir{"txmq-acl"};
  std::string users_file = dir.file("users");
  std::string acl_file = dir.file("acl.toml");
  BrokerProcess broker;

  AclBroker() : broker(options()) {
    common::UsersFile file;
    for (const auto& u : kUsers) REQUIRE(file.set(u, scram::derive(u + "-pw")).ok());
    REQUIRE(file.save(users_file).ok());
    std::ofstream(acl_file) << kRules;
    for (const auto& u : kUsers) std::ofstream(dir.file(u + ".password")) << u << "-pw\n";
    start(broker);
  }
  BrokerOptions options() const {
    BrokerOptions o;
    o.config_toml = "[auth]\nenabled = true\nusers_file = \"" + users_file + "\"\nacl_file = \"" + acl_file +
                    "\"\n[transactions]\ntimeout_ms = 600000\n";
    return o;
  }
  client::ClientOptions as(const std::string& user) const {
    client::ClientOptions o = client_options(broker.address());
    o.user = user;
    o.password = user + "-pw";
    o.first_connect_timeout = kWait;
    return o;
  }
  // The tool as `user`, its password from a file.
  CliRun cli(const std::string& user, std::vector<std::string> args, const std::string& input = {}) const {
    std::vector<std::string> all = {"--broker", broker.address(), "--user", user, "--password-file",
                                    dir.file(user + ".password")};
    all.insert(all.end(), args.begin(), args.end());
    return run_cli(all, input);
  }
};

// r failed with NotAuthorized and this message.
template <typename R>
void refused(const R& r, const std::string& message) {
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kNotAuthorized);
  CHECK(r.error().message == message);
}

client::Message text_message(std::string body) {
  client::Message m;
  m.body = std::move(body);
  return m;
}

TEST_CASE("produce needs produce on the topic") {
  AclBroker b;
  client::Admin admin(b.as("admin"));
  REQUIRE(admin.create_topic("orders", 1, kWait).ok());
  client::Producer::Options no;
  static_cast<client::ClientOptions&>(no) = b.as("nobody");
  client::Producer nobody(no);
  refused(nobody.send("orders", text_message("x"), kWait), "user 'nobody' may not produce topic 'orders'");
  client::Producer::Options yes;
  static_cast<client::ClientOptions&>(yes) = b.as("producer");
  client::Producer producer(yes);
  auto sent = producer.send("orders", text_message("y"), kWait);
  REQUIRE_MESSAGE(sent.ok(), describe(sent));
  // Only the allowed message was stored, and the refusal was counted.
  auto stored = admin.fetch("orders", 0, 0, 10, kWait);
  REQUIRE(stored.ok());
  REQUIRE(stored->size() == 1);
  CHECK(stored->front().body == "y");
  CHECK(scrape_metric(b.broker, "txmq_request_errors_total{code=\"NotAuthorized\"}") >= 1);
}

TEST_CASE("creating, describing and deleting a topic need create, describe and delete on it") {
  AclBroker b;
  client::Admin nobody(b.as("nobody"));
  client::Admin topics(b.as("topics"));
  client::Admin admin(b.as("admin"));
  refused(nobody.create_topic("new.a", 1, kWait), "user 'nobody' may not create topic 'new.a'");
  CHECK(admin.describe_topic("new.a", kWait).error().code == ErrorCode::kUnknownTopic);  // not created
  refused(topics.create_topic("orders", 1, kWait), "user 'topics' may not create topic 'orders'");
  REQUIRE(topics.create_topic("new.a", 1, kWait).ok());
  refused(nobody.describe_topic("new.a", kWait), "user 'nobody' may not describe topic 'new.a'");
  CHECK(topics.describe_topic("new.a", kWait).ok());
  refused(nobody.delete_topic("new.a", kWait), "user 'nobody' may not delete topic 'new.a'");
  CHECK(admin.describe_topic("new.a", kWait).ok());  // still there
  CHECK(topics.delete_topic("new.a", kWait).ok());
  CHECK(admin.describe_topic("new.a", kWait).error().code == ErrorCode::kUnknownTopic);
}

TEST_CASE("listing topics shows only those the user may describe") {
  AclBroker b;
  client::Admin admin(b.as("admin"));
  REQUIRE(admin.create_topic("orders", 1, kWait).ok());
  REQUIRE(admin.create_topic("payments", 1, kWait).ok());
  auto all = admin.list_topics(kWait);
  REQUIRE(all.ok());
  CHECK(all->size() == 2);
  auto seen = client::Admin(b.as("viewer")).list_topics(kWait);
  REQUIRE(seen.ok());
  REQUIRE(seen->size() == 1);
  CHECK(seen->front().name == "orders");
  auto none = client::Admin(b.as("nobody")).list_topics(kWait);
  REQUIRE(none.ok());
  CHECK(none->empty());
}

TEST_CASE("subscribing and settling need consume on the topic and on the group") {
  AclBroker b;
  client::Admin admin(b.as("admin"));
  REQUIRE(admin.create_topic("orders", 1, kWait).ok());
  client::Producer::Options po;
  static_cast<client::ClientOptions&>(po) = b.as("admin");
  REQUIRE(client::Producer(po).send("orders", text_message("m"), kWait).ok());

  auto consumer_as = [&](const std::string& user, const std::string& group) {
    client::Consumer::Options o;
    static_cast<client::ClientOptions&>(o) = b.as(user);
    o.topic = "orders";
    o.group = group;
    return o;
  };
  {
    client::Consumer nobody(consumer_as("nobody", "billing"), [](client::Consumer&, const client::Delivery&) {});
    refused(nobody.wait_subscribed(kWait), "user 'nobody' may not consume topic 'orders'");
  }
  {
    // The topic alone is not enough: the group is another user's.
    client::Consumer other(consumer_as("consumer", "audit"), [](client::Consumer&, const client::Delivery&) {});
    refused(other.wait_subscribed(kWait), "user 'consumer' may not consume group 'audit'");
  }
  std::mutex mu;
  std::vector<std::string> got;
  client::Consumer consumer(consumer_as("consumer", "billing"), [&](client::Consumer& c, const client::Delivery& d) {
    std::lock_guard lock(mu);
    got.push_back(d.body);
    c.ack(d);
  });
  REQUIRE(consumer.wait_subscribed(kWait).ok());
  CHECK(wait_until([&] { std::lock_guard lock(mu); return got.size() == 1; }, kWait));
  CHECK(consumer.flush_acks(kWait).ok());  // Settle: allowed
}

TEST_CASE("configuring a group needs configure on it; a topic's default, configure on the topic") {
  AclBroker b;
  client::Admin admin(b.as("admin"));
  REQUIRE(admin.create_topic("orders", 1, kWait).ok());
  client::GroupConfig config;
  config.ack_wait = client::Millis(7000);
  client::Admin nobody(b.as("nobody"));
  client::Admin configurer(b.as("configurer"));
  refused(nobody.configure_group("billing", "", config, kWait), "user 'nobody' may not configure group 'billing'");
  refused(configurer.configure_group("audit", "", config, kWait),
          "user 'configurer' may not configure group 'audit'");
  CHECK(configurer.configure_group("billing", "", config, kWait).ok());
  refused(nobody.configure_group("", "orders", config, kWait), "user 'nobody' may not configure topic 'orders'");
  CHECK(configurer.configure_group("", "orders", config, kWait).ok());
}

// A group "billing" on "orders" with one dead letter (terminated by admin's consumer).
void make_dead_letter(AclBroker& b) {
  client::Admin admin(b.as("admin"));
  REQUIRE(admin.create_topic("orders", 1, kWait).ok());
  client::Producer::Options po;
  static_cast<client::ClientOptions&>(po) = b.as("admin");
  REQUIRE(client::Producer(po).send("orders", text_message("doomed"), kWait).ok());
  client::Consumer::Options co;
  static_cast<client::ClientOptions&>(co) = b.as("admin");
  co.topic = "orders";
  co.group = "billing";
  client::Consumer consumer(co, [](client::Consumer& c, const client::Delivery& d) { c.terminate(d, "no"); });
  REQUIRE(wait_until(
      [&] {
        auto letters = admin.fetch("billing.dlq", 0, 0, 10, kWait);
        return letters.ok() && letters->size() == 1;
      },
      kWait));
}

TEST_CASE("describing groups shows only those the user may describe") {
  AclBroker b;
  make_dead_letter(b);
  client::Admin admin(b.as("admin"));
  client::Consumer::Options co;
  static_cast<client::ClientOptions&>(co) = b.as("admin");
  co.topic = "orders";
  co.group = "audit";
  client::Consumer audit(co, [](client::Consumer& c, const client::Delivery& d) { c.ack(d); });
  REQUIRE(audit.wait_subscribed(kWait).ok());
  auto all = admin.describe_groups("", kWait);
  REQUIRE(all.ok());
  CHECK(all->size() == 2);
  auto seen = client::Admin(b.as("viewer")).describe_groups("", kWait);
  REQUIRE(seen.ok());
  REQUIRE(seen->size() == 1);
  CHECK(seen->front().group == "billing");
  CHECK(client::Admin(b.as("viewer")).describe_groups("billing", kWait).ok());
  refused(client::Admin(b.as("viewer")).describe_groups("audit", kWait),
          "user 'viewer' may not describe group 'audit'");
  auto none = client::Admin(b.as("nobody")).describe_groups("", kWait);
  REQUIRE(none.ok());
  CHECK(none->empty());
}

TEST_CASE("fetching needs consume on the topic; a dead-letter topic, dead-letters on its group") {
  AclBroker b;
  make_dead_letter(b);
  client::Admin nobody(b.as("nobody"));
  client::Admin consumer(b.as("consumer"));
  client::Admin dlq(b.as("dlq"));
  refused(nobody.fetch("orders", 0, 0, 10, kWait), "user 'nobody' may not consume topic 'orders'");
  CHECK(consumer.fetch("orders", 0, 0, 10, kWait).ok());
  refused(nobody.fetch("billing.dlq", 0, 0, 10, kWait), "user 'nobody' may not dead-letters group 'billing'");
  // consume on the origin topic does not reach the group's dead letters.
  refused(consumer.fetch("billing.dlq", 0, 0, 10, kWait), "user 'consumer' may not dead-letters group 'billing'");
  auto letters = dlq.fetch("billing.dlq", 0, 0, 10, kWait);
  REQUIRE(letters.ok());
  CHECK(letters->size() == 1);
}

TEST_CASE("redrive needs dead-letters on the group") {
  AclBroker b;
  make_dead_letter(b);
  client::Admin admin(b.as("admin"));
  refused(client::Admin(b.as("nobody")).redrive("billing", {0}, kWait),
          "user 'nobody' may not dead-letters group 'billing'");
  CHECK(admin.fetch("billing.dlq", 0, 0, 10, kWait)->size() == 1);  // still there
  auto moved = client::Admin(b.as("dlq")).redrive("billing", {0}, kWait);
  REQUIRE_MESSAGE(moved.ok(), describe(moved));
  CHECK(moved->redriven == std::vector<std::uint64_t>{0});
}

client::TransactionalProducer::Options txn_options(const AclBroker& b, const std::string& user) {
  client::TransactionalProducer::Options o;
  static_cast<client::ClientOptions&>(o) = b.as(user);
  o.producer_group = "orders-svc";
  return o;
}

client::LocalTransactionState unknown(const client::TransactionCheck&) {
  return client::LocalTransactionState::kUnknown;
}

TEST_CASE("a transactional producer needs transact on its producer group and produce on the topic") {
  AclBroker b;
  client::Admin admin(b.as("admin"));
  REQUIRE(admin.create_topic("orders", 1, kWait).ok());
  REQUIRE(admin.create_topic("payments", 1, kWait).ok());
  {
    // The hello itself names the group: refused before any Prepare.
    client::TransactionalProducer nobody(txn_options(b, "nobody"), unknown);
    auto r = nobody.prepare("orders", text_message("x"), kWait);
    REQUIRE_FALSE(r.ok());
    CHECK(contains(r.error().message, "may not transact producer-group 'orders-svc'"));
  }
  client::TransactionalProducer producer(txn_options(b, "txn"), unknown);
  refused(producer.prepare("payments", text_message("x"), kWait), "user 'txn' may not produce topic 'payments'");
  auto prepared = producer.prepare("orders", text_message("order 1"), kWait);
  REQUIRE_MESSAGE(prepared.ok(), describe(prepared));
  auto ended = producer.end(*prepared, client::LocalTransactionState::kCommit, kWait);
  REQUIRE_MESSAGE(ended.ok(), describe(ended));
  CHECK(ended->state == client::TxnState::kCommitted);
}

TEST_CASE("an operator's end needs resolve on the producer group, and a refused one changes nothing") {
  AclBroker b;
  client::Admin admin(b.as("admin"));
  REQUIRE(admin.create_topic("orders", 1, kWait).ok());
  client::TransactionalProducer producer(txn_options(b, "txn"), unknown);
  auto prepared = producer.prepare("orders", text_message("order 1"), kWait);
  REQUIRE(prepared.ok());
  refused(client::Admin(b.as("nobody")).end_transaction(*prepared, true, kWait),
          "user 'nobody' may not resolve producer-group 'orders-svc'");
  // transact is the producer's, not an operator's.
  refused(client::Admin(b.as("txn")).end_transaction(*prepared, true, kWait),
          "user 'txn' may not resolve producer-group 'orders-svc'");
  auto still = admin.show_transaction(*prepared, kWait);
  REQUIRE(still.ok());
  CHECK(still->state == client::TxnState::kPrepared);
  auto ended = client::Admin(b.as("resolver")).end_transaction(*prepared, false, kWait);
  REQUIRE_MESSAGE(ended.ok(), describe(ended));
  CHECK(ended->state == client::TxnState::kRolledBack);
}

TEST_CASE("listing transactions shows only those of producer groups the user may describe") {
  AclBroker b;
  client::Admin admin(b.as("admin"));
  REQUIRE(admin.create_topic("orders", 1, kWait).ok());
  client::TransactionalProducer producer(txn_options(b, "txn"), unknown);
  auto mine = producer.prepare("orders", text_message("order 1"), kWait);
  REQUIRE(mine.ok());
  client::TransactionalProducer::Options other_options = txn_options(b, "admin");
  other_options.producer_group = "payments-svc";
  client::TransactionalProducer other(other_options, unknown);
  auto theirs = other.prepare("orders", text_message("payment 1"), kWait);
  REQUIRE(theirs.ok());
  CHECK(admin.list_transactions(std::nullopt, 100, kWait)->size() == 2);
  auto seen = client::Admin(b.as("viewer")).list_transactions(std::nullopt, 100, kWait);
  REQUIRE(seen.ok());
  REQUIRE(seen->size() == 1);
  CHECK(seen->front().transaction_id == *mine);
  CHECK(client::Admin(b.as("viewer")).show_transaction(*mine, kWait).ok());
  refused(client::Admin(b.as("viewer")).show_transaction(*theirs, kWait),
          "user 'viewer' may not describe producer-group 'payments-svc'");
  auto none = client::Admin(b.as("nobody")).list_transactions(std::nullopt, 100, kWait);
  REQUIRE(none.ok());
  CHECK(none->empty());
}

TEST_CASE("stats need describe on the cluster") {
  AclBroker b;
  refused(client::Admin(b.as("nobody")).stats(kWait), "user 'nobody' may not describe the cluster");
  CHECK(client::Admin(b.as("viewer")).stats(kWait).ok());
}

TEST_CASE("the tool: produce, topic create, redrive and transaction resolve are refused without permission") {
  AclBroker b;
  make_dead_letter(b);

  auto produced = b.cli("nobody", {"produce", "orders"}, "x\n");
  CHECK(produced.exit_code != 0);
  CHECK(contains(produced.err, "NotAuthorized: user 'nobody' may not produce topic 'orders'"));
  produced = b.cli("producer", {"produce", "orders"}, "y\n");
  CHECK_MESSAGE(produced.exit_code == 0, produced.err);

  auto created = b.cli("nobody", {"topic", "create", "new.b"});
  CHECK(created.exit_code != 0);
  CHECK(contains(created.err, "NotAuthorized: user 'nobody' may not create topic 'new.b'"));
  created = b.cli("topics", {"topic", "create", "new.b"});
  CHECK_MESSAGE(created.exit_code == 0, created.err);

  auto redriven = b.cli("nobody", {"dlq", "redrive", "--group", "billing"});
  CHECK(redriven.exit_code != 0);
  CHECK(contains(redriven.err, "NotAuthorized: user 'nobody' may not dead-letters group 'billing'"));
  redriven = b.cli("dlq", {"dlq", "redrive", "--group", "billing"});
  CHECK_MESSAGE(redriven.exit_code == 0, redriven.err);

  client::TransactionalProducer producer(txn_options(b, "txn"), unknown);
  auto prepared = producer.prepare("orders", text_message("order 1"), kWait);
  REQUIRE(prepared.ok());
  const std::string id = std::to_string(*prepared);
  auto resolved = b.cli("nobody", {"txn", "commit", id});
  CHECK(resolved.exit_code != 0);
  CHECK(contains(resolved.err, "NotAuthorized: user 'nobody' may not resolve producer-group 'orders-svc'"));
  resolved = b.cli("resolver", {"txn", "commit", id});
  CHECK_MESSAGE(resolved.exit_code == 0, resolved.err);
  auto state = client::Admin(b.as("admin")).show_transaction(*prepared, kWait);
  REQUIRE(state.ok());
  CHECK(state->state == client::TxnState::kCommitted);
}

}  // namespace
}  // namespace txmq::test
