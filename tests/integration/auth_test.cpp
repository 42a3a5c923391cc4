// Authentication against the real broker: SCRAM-SHA-256 in the hello through the C++
// client, client certificates as identities, anonymous access, SIGHUP reloads, the failure
// delay and metric, raw peers that break the exchange, and the audit trail of operator
// actions. What each user may do is acl_test's; here a rule file allows what the cases need.

#include <doctest/doctest.h>

#include <signal.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/frame.h"
#include "common/scram.h"
#include "common/users_file.h"
#include "common/version.h"
#include "tests/support/client_fixtures.h"
#include "tests/support/test_certs.h"

namespace txmq::test {
namespace {

using Clock = std::chrono::steady_clock;
namespace scram = common::scram;

// Everything the users below may need, and nothing for "nobody".
constexpr const char* kRules = R"(
[[allow]]
users = ["orders", "ops", "warehouse", "anonymous"]
topics = ["*"]
operations = ["all"]
[[allow]]
users = ["orders", "ops", "warehouse", "anonymous"]
groups = ["*"]
operations = ["all"]
[[allow]]
users = ["ops"]
producer_groups = ["*"]
operations = ["all"]
[[allow]]
users = ["orders"]
producer_groups = ["orders"]
operations = ["transact"]
[[allow]]
users = ["orders", "ops", "warehouse", "anonymous"]
cluster = true
operations = ["describe"]
)";

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

// A broker with [auth] on: users orders/orders-pw and ops/ops-pw in its users file; with
// tls, TLS too, client certificates optional (and then the user's identity).
struct AuthBroker {
  TempDir dir{"txmq-auth"};
  TestCerts certs = make_test_certs(dir.path());
  std::string users_file = dir.file("users");
  std::string acl_file = dir.file("acl.toml");
  std::string audit_file = dir.file("audit.log");
  BrokerProcess broker;

  explicit AuthBroker(const std::string& extra_toml = "", bool tls = false) : broker(options(extra_toml, tls)) {
    common::UsersFile file;
    REQUIRE(file.set("orders", scram::derive("orders-pw")).ok());
    REQUIRE(file.set("ops", scram::derive("ops-pw")).ok());
    REQUIRE(file.save(users_file).ok());
    write_file(acl_file, kRules);
    start(broker);
  }
  BrokerOptions options(const std::string& extra, bool tls) const {
    BrokerOptions o;
    o.config_toml = "[auth]\nenabled = true\nusers_file = \"" + users_file + "\"\nacl_file = \"" + acl_file +
                    "\"\nfailure_delay_ms = 300\n" + extra + "[audit]\nfile = \"" + audit_file + "\"\n";
    if (tls)
      o.config_toml += "[tls]\nenabled = true\ncert_file = \"" + certs.server_cert + "\"\nkey_file = \"" +
                       certs.server_key + "\"\nca_file = \"" + certs.ca_cert + "\"\nclient_auth = \"optional\"\n";
    return o;
  }
  client::ClientOptions as(const std::string& user, const std::string& password) const {
    client::ClientOptions o = client_options(broker.address());
    o.user = user;
    o.password = password;
    o.request_timeout = kWait;
    o.first_connect_timeout = kWait;
    return o;
  }
  std::string audit() const { return read_file(audit_file); }
};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST_CASE("a user with the right password is served; a wrong password and an unknown user get one error") {
  AuthBroker b;
  client::Admin good(b.as("orders", "orders-pw"));
  auto created = good.create_topic("orders", 1, kWait);
  REQUIRE_MESSAGE(created.ok(), describe(created));

  // The unknown user first: the broker logs one failure a second, the first in full.
  client::Admin unknown(b.as("mallory", "orders-pw"));
  auto unknown_refused = unknown.list_topics(kWait);
  REQUIRE_FALSE(unknown_refused.ok());
  CHECK(unknown_refused.error().code == ErrorCode::kAuthenticationFailed);

  const auto started = Clock::now();
  client::Admin wrong(b.as("orders", "not-the-password"));
  auto refused = wrong.list_topics(kWait);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::kAuthenticationFailed);
  // The failure is held back: a guesser gets one try per delay per connection.
  CHECK(ms_between(started, Clock::now()) >= client::Millis(300));
  // Nothing tells an unknown user from a wrong password.
  CHECK(unknown_refused.error().message == refused.error().message);
  CHECK(scrape_metric(b.broker, "txmq_authentication_failures_total{reason=\"credentials\"}") >= 2);
  CHECK(scrape_metric(b.broker, "txmq_authentications_total{mechanism=\"scram\"}") >= 1);
  // The password is in no log line, and the log says why for the operator.
  const std::string log = b.broker.log_contents();
  CHECK_FALSE(contains(log, "not-the-password"));
  CHECK(contains(log, "no such user"));
}

TEST_CASE("a hello without credentials is refused unless anonymous access is allowed") {
  {
    AuthBroker b;
    client::ClientOptions o = b.as("", "");
    client::Admin none(o);
    auto r = none.list_topics(kWait);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kAuthenticationFailed);
    CHECK(contains(r.error().message, "requires authentication"));
  }
  {
    AuthBroker b("allow_anonymous = true\n");
    client::Admin anon(b.as("", ""));
    auto created = anon.create_topic("scratch", 1, kWait);
    REQUIRE_MESSAGE(created.ok(), describe(created));
    CHECK(wait_until([&] { return contains(b.audit(), "\"user\":\"anonymous\""); }, kWait));
  }
}

TEST_CASE("a client with credentials refuses a broker that does not authenticate") {
  BrokerProcess plain;
  start(plain);
  client::ClientOptions o = client_options(plain.address());
  o.user = "orders";
  o.password = "orders-pw";
  o.first_connect_timeout = kWait;
  client::Admin admin(o);
  auto r = admin.list_topics(kWait);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kAuthenticationFailed);
  CHECK(contains(r.error().message, "could be anyone"));
}

TEST_CASE("a verified client certificate names its user; expired and untrusted ones are refused") {
  AuthBroker b("", true);
  auto with_cert = [&](const std::string& cert, const std::string& key) {
    client::ClientOptions o = b.as("", "");
    o.tls.enabled = true;
    o.tls.ca_file = b.certs.ca_cert;
    o.tls.cert_file = cert;
    o.tls.key_file = key;
    o.first_connect_timeout = client::Millis(3000);
    return o;
  };
  client::Admin warehouse(with_cert(b.certs.warehouse_cert, b.certs.warehouse_key));
  auto created = warehouse.create_topic("stock", 1, kWait);
  REQUIRE_MESSAGE(created.ok(), describe(created));
  CHECK(wait_until([&] { return contains(b.audit(), "\"user\":\"warehouse\""); }, kWait));
  CHECK(scrape_metric(b.broker, "txmq_authentications_total{mechanism=\"certificate\"}") >= 1);

  client::Admin expired(with_cert(b.certs.expired_client_cert, b.certs.expired_client_key));
  auto r = expired.list_topics(client::Millis(3000));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kNotConnected);
  client::Admin stranger(with_cert(b.certs.other_client_cert, b.certs.other_client_key));
  auto r2 = stranger.list_topics(client::Millis(3000));
  REQUIRE_FALSE(r2.ok());
  CHECK(r2.error().code == ErrorCode::kNotConnected);
  // A TLS client without a certificate and without a password is no one.
  client::Admin nobody(with_cert("", ""));
  auto r3 = nobody.list_topics(client::Millis(3000));
  REQUIRE_FALSE(r3.ok());
  CHECK(r3.error().code == ErrorCode::kAuthenticationFailed);
}

TEST_CASE("SIGHUP reloads the users file: a new user logs in, a removed one no longer does") {
  AuthBroker b;
  client::Admin before(b.as("carol", "carol-pw"));
  REQUIRE_FALSE(before.list_topics(kWait).ok());

  auto file = common::UsersFile::load(b.users_file);
  REQUIRE(file.ok());
  REQUIRE(file->set("carol", scram::derive("carol-pw")).ok());
  REQUIRE(file->remove("orders"));
  REQUIRE(file->save(b.users_file).ok());
  REQUIRE(kill(b.broker.pid(), SIGHUP) == 0);
  CHECK(wait_until([&] { return scrape_metric(b.broker, "txmq_auth_reloads_total{result=\"ok\"}") >= 1; }, kWait));
  client::Admin carol(b.as("carol", "carol-pw"));
  auto listed = carol.list_topics(kWait);
  CHECK_MESSAGE(listed.ok(), describe(listed));
  client::Admin orders(b.as("orders", "orders-pw"));
  auto gone = orders.list_topics(kWait);
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.error().code == ErrorCode::kAuthenticationFailed);
  CHECK(contains(b.audit(), "\"action\":\"user.add\",\"resource\":\"carol\""));
  CHECK(contains(b.audit(), "\"action\":\"user.remove\",\"resource\":\"orders\""));

  // A damaged file is refused and what was in force stays.
  write_file(b.users_file, "carol:SCRAM-SHA-256$garbage\n");
  REQUIRE(kill(b.broker.pid(), SIGHUP) == 0);
  CHECK(wait_until([&] { return scrape_metric(b.broker, "txmq_auth_reloads_total{result=\"error\"}") >= 1; }, kWait));
  client::Admin still(b.as("carol", "carol-pw"));
  auto kept = still.list_topics(kWait);
  CHECK_MESSAGE(kept.ok(), describe(kept));
  CHECK(contains(b.broker.log_contents(), "the users and rules in force stay"));
}

TEST_CASE("a broker whose users or rules file does not load does not start") {
  TempDir dir("txmq-auth-bad");
  BrokerOptions o;
  o.config_toml = "[auth]\nenabled = true\nusers_file = \"" + dir.file("missing") + "\"\nacl_file = \"" +
                  dir.file("missing.toml") + "\"\n";
  BrokerProcess broker(o);
  auto st = broker.start();
  REQUIRE_FALSE(st.ok());
  CHECK(contains(st.error().message, "auth.users_file"));
}

// Raw frames, for what the client never sends.
std::vector<std::uint8_t> frame(flatbuffers::FlatBufferBuilder& fbb, std::uint64_t rid, wire::Body type,
                                flatbuffers::Offset<void> body) {
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, type, body));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::vector<std::uint8_t> scram_hello(std::uint64_t rid, std::string_view client_first) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateHello(
      fbb, kProtocolVersion, fbb.CreateString("raw"), 0, fbb.CreateString(std::string(scram::kMechanism)),
      fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(client_first.data()), client_first.size()));
  return frame(fbb, rid, wire::Body::Hello, body.Union());
}

std::vector<std::uint8_t> auth_response(std::uint64_t rid, std::string_view data) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateAuthResponse(
      fbb, fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
  return frame(fbb, rid, wire::Body::AuthResponse, body.Union());
}

TEST_CASE("raw peers: a broken exchange gets one error and is closed; other clients carry on") {
  AuthBroker b;
  client::Admin good(b.as("ops", "ops-pw"));
  REQUIRE(good.create_topic("steady", 1, kWait).ok());

  SUBCASE("an AuthResponse without a Hello") {
    auto conn = RawConnection::connect(b.broker.address());
    REQUIRE(conn.ok());
    REQUIRE(conn->send_bytes(auth_response(1, "c=biws,r=x,p=AAAA")).ok());
    auto answer = conn->read_frame(kWait);
    REQUIRE(answer.ok());
    CHECK(answer->error_code() == ErrorCode::kInvalidArgument);
  }
  SUBCASE("garbage for a client-first message, pipelined with a request") {
    auto conn = RawConnection::connect(b.broker.address());
    REQUIRE(conn.ok());
    auto bytes = scram_hello(1, std::string(5000, ','));
    auto more = auth_response(2, "junk");
    bytes.insert(bytes.end(), more.begin(), more.end());
    REQUIRE(conn->send_bytes(bytes).ok());
    auto answer = conn->read_frame(kWait);
    REQUIRE(answer.ok());
    CHECK(answer->error_code() == ErrorCode::kAuthenticationFailed);
  }
  SUBCASE("a forged proof, sent a byte at a time") {
    auto conn = RawConnection::connect(b.broker.address());
    REQUIRE(conn.ok());
    scram::ClientExchange client("ops", "wrong");
    for (std::uint8_t byte : scram_hello(1, client.first_message())) REQUIRE(conn->send_bytes({&byte, 1}).ok());
    auto challenge = conn->read_frame(kWait);
    REQUIRE(challenge.ok());
    REQUIRE(challenge->type() == wire::Body::AuthChallenge);
    const auto* data = challenge->frame().body_as_AuthChallenge()->data();
    auto final_message = client.final_message(std::string_view(reinterpret_cast<const char*>(data->data()), data->size()));
    REQUIRE(final_message.ok());
    for (std::uint8_t byte : auth_response(1, *final_message)) REQUIRE(conn->send_bytes({&byte, 1}).ok());
    auto answer = conn->read_frame(kWait);
    REQUIRE(answer.ok());
    CHECK(answer->error_code() == ErrorCode::kAuthenticationFailed);
  }
  auto still = good.list_topics(kWait);
  CHECK_MESSAGE(still.ok(), describe(still));
}

TEST_CASE("the audit trail holds operator actions with the user and the outcome") {
  AuthBroker b;
  client::Admin ops(b.as("ops", "ops-pw"));
  REQUIRE(ops.create_topic("billing", 1, kWait).ok());
  auto again = ops.create_topic("billing", 1, kWait);
  REQUIRE_FALSE(again.ok());
  client::GroupConfig config;
  config.ack_wait = client::Millis(5000);
  REQUIRE(ops.configure_group("billing-svc", "billing", config, kWait).ok());
  REQUIRE(ops.delete_topic("billing", kWait).ok());
  CHECK(wait_until([&] { return contains(b.audit(), "topic.delete"); }, kWait));
  const std::string audit = b.audit();
  CHECK(contains(audit, "\"user\":\"ops\",\"peer\":\"127.0.0.1:"));
  CHECK(contains(audit, "\"action\":\"topic.create\",\"resource\":\"topic:billing\",\"outcome\":\"ok\""));
  CHECK(contains(audit, "\"action\":\"topic.create\",\"resource\":\"topic:billing\",\"outcome\":\"TopicExists"));
  CHECK(contains(audit, "\"action\":\"group.configure\",\"resource\":\"group:billing-svc topic:billing\""));
  CHECK(contains(audit, "\"action\":\"topic.delete\",\"resource\":\"topic:billing\",\"outcome\":\"ok\""));
}

TEST_CASE("an operator's commit names the operator in txmq-resolved-by") {
  AuthBroker b("[transactions]\ntimeout_ms = 600000\n");
  client::Admin ops(b.as("ops", "ops-pw"));
  REQUIRE(ops.create_topic("orders", 1, kWait).ok());
  client::TransactionalProducer::Options po;
  static_cast<client::ClientOptions&>(po) = b.as("orders", "orders-pw");
  po.producer_group = "orders";
  client::TransactionalProducer producer(
      po, [](const client::TransactionCheck&) { return client::LocalTransactionState::kUnknown; });
  client::Message m;
  m.body = "order 1";
  auto prepared = producer.prepare("orders", m, kWait);
  REQUIRE_MESSAGE(prepared.ok(), describe(prepared));
  auto ended = ops.end_transaction(*prepared, true, kWait);
  REQUIRE_MESSAGE(ended.ok(), describe(ended));
  auto fetched = ops.fetch("orders", 0, 0, 10, kWait);
  REQUIRE(fetched.ok());
  REQUIRE(fetched->size() == 1);
  std::string resolved_by;
  for (const auto& h : fetched->front().headers)
    if (h.name == "txmq-resolved-by") resolved_by = h.value;
  CHECK(resolved_by == "operator:ops");
  CHECK(wait_until([&] { return contains(b.audit(), "\"action\":\"transactions.end\""); }, kWait));
}

}  // namespace
}  // namespace txmq::test
