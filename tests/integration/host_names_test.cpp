// Host names and IPv6 for every address (issue #17): the client library reaching the
// real broker by "localhost:PORT" and "[::1]:PORT", the broker listening on a name and on
// [::1], and what a client hears when a name does not resolve or nothing listens.
//
// Brokers listen on loopback only, port 0, with fresh data directories.

#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "common/address.h"
#include "tests/support/broker_process.h"
#include "tests/support/client_fixtures.h"
#include "tests/support/closed_port.h"
#include "txmq/client.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using txmq::ErrorCode;
using namespace txmq::client;  // the public API under test
using txmq::test::BrokerProcess;
using txmq::test::ClosedPort;
using txmq::test::client_options;
using txmq::test::describe;
using txmq::test::kWait;
using txmq::test::producer_options;
using txmq::test::start;

// Creates a topic through `address`, sends one message through it and reads it back: the
// broker serves a client that names it so.
void round_trip(const std::string& address) {
  CAPTURE(address);
  Admin admin(client_options(address));
  auto topic = admin.create_topic("named", 1, kWait);
  REQUIRE_MESSAGE(topic.ok(), describe(topic));
  Producer producer(producer_options(address));
  Message m;
  m.body = "by name";
  auto sent = producer.send("named", m, kWait);
  REQUIRE_MESSAGE(sent.ok(), describe(sent));
  auto got = admin.fetch("named", 0, 0, 10, kWait);
  REQUIRE_MESSAGE(got.ok(), describe(got));
  REQUIRE(got->size() == 1);
  CHECK(got->front().body == "by name");
}

ClientOptions failing_fast(const std::string& address) {
  ClientOptions o = client_options(address);
  o.first_connect_timeout = Millis(1000);
  return o;
}

}  // namespace

TEST_CASE("the client reaches a broker on 127.0.0.1 by the name localhost") {
  BrokerProcess broker;
  start(broker);
  round_trip("localhost:" + std::to_string(broker.port()));
}

TEST_CASE("the client reaches a broker on [::1] by [::1]:PORT") {
  txmq::test::BrokerOptions o;
  o.listen = "[::1]:0";
  BrokerProcess broker(o);
  start(broker);
  CHECK(broker.address() == "[::1]:" + std::to_string(broker.port()));
  round_trip("[::1]:" + std::to_string(broker.port()));
}

TEST_CASE("a broker listening on localhost:0 prints the real address it bound and serves there") {
  txmq::test::BrokerOptions o;
  o.listen = "localhost:0";
  o.metrics_listen = "localhost:0";
  BrokerProcess broker(o);
  start(broker);
  auto printed = txmq::common::parse_host_port(broker.address());
  REQUIRE_MESSAGE(printed.ok(), broker.address());
  CHECK(txmq::common::is_loopback_ip(printed->host));  // an address, not the name
  CHECK(printed->port != 0);
  auto metrics = txmq::common::parse_host_port(broker.metrics_address());
  REQUIRE_MESSAGE(metrics.ok(), broker.metrics_address());
  CHECK(txmq::common::is_loopback_ip(metrics->host));
  CHECK(metrics->port != 0);
  CHECK(broker.log_contents().find("not a loopback address") == std::string::npos);
  round_trip(broker.address());
}

TEST_CASE("a broker listening on [::1]:0 prints [::1] and its port, metrics too") {
  txmq::test::BrokerOptions o;
  o.listen = "[::1]:0";
  o.metrics_listen = "[::1]:0";
  BrokerProcess broker(o);
  start(broker);
  CHECK(broker.address().starts_with("[::1]:"));
  CHECK(broker.metrics_address().starts_with("[::1]:"));
  CHECK(broker.log_contents().find("not a loopback address") == std::string::npos);
}

TEST_CASE("a broker told to listen on a name that does not resolve exits naming it") {
  txmq::test::BrokerOptions o;
  o.listen = "no-such-host.invalid:0";
  o.start_timeout = kWait;
  BrokerProcess broker(o);
  auto st = broker.start();
  REQUIRE_FALSE(st.ok());
  CHECK_MESSAGE(broker.log_contents().find("broker.listen: cannot resolve 'no-such-host.invalid'") != std::string::npos,
                broker.log_contents());
}

TEST_CASE("a request to a name that does not resolve fails naming it, at once with first_connect_timeout") {
  const auto t0 = Clock::now();
  Admin admin(failing_fast("no-such-host.invalid:7411"));
  auto r = admin.list_topics(kWait);
  const auto took = Clock::now() - t0;
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kNotConnected);
  CHECK_MESSAGE(r.error().message.find("cannot resolve 'no-such-host.invalid'") != std::string::npos,
                r.error().message);
  CHECK(took < 2s);
}

TEST_CASE("without first_connect_timeout a name that does not resolve times out naming it") {
  Admin admin(client_options("no-such-host.invalid:7411"));
  auto r = admin.list_topics(Millis(500));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kTimeout);
  CHECK_MESSAGE(r.error().message.find("no-such-host.invalid") != std::string::npos, r.error().message);
}

TEST_CASE("with first_connect_timeout a refused connection fails requests at once, naming the address") {
  ClosedPort closed;
  const std::string address = "localhost:" + std::to_string(closed.port());
  const auto t0 = Clock::now();
  Admin admin(failing_fast(address));
  auto r = admin.list_topics(kWait);
  const auto took = Clock::now() - t0;
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kNotConnected);
  CAPTURE(r.error().message);
  CHECK(r.error().message.find("cannot connect to " + address) != std::string::npos);
  CHECK(r.error().message.find("refused") != std::string::npos);
  CHECK(took < 2s);
}

TEST_CASE("first_connect_timeout ends only the wait for the first connection: a later broker is reached") {
  // The connection keeps retrying in the background; once the broker is there, requests
  // go through as usual.
  BrokerProcess broker;
  start(broker);
  const std::string address = "localhost:" + std::to_string(broker.port());
  Admin admin(failing_fast(address));
  auto r = admin.list_topics(kWait);
  CHECK_MESSAGE(r.ok(), describe(r));
}
