// Heartbeats against the real broker: the interval a hello asks for and what HelloOk
// grants, the broker's Heartbeat frames, the close of a peer silent for three intervals
// (and of no peer that asked for none), and the client library dropping a broker that was
// stopped (SIGSTOP: its socket stays open, nothing answers) long before its requests'
// deadlines.

#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/raw_frames.h"
#include "tests/support/raw_session.h"
#include "txmq/client.h"
#include "txmq_generated.h"

namespace {

using namespace std::chrono_literals;
using txmq::ErrorCode;
using txmq::test::BrokerProcess;
using txmq::test::RawConnection;
using txmq::test::scrape_metric;
namespace wire = txmq::wire;

// The broker's shortest interval (its default and lowest allowed).
constexpr auto kMinInterval = 500ms;

BrokerProcess::Options broker_options() {
  BrokerProcess::Options o;
  o.config_toml = "[limits]\nheartbeat_min_interval_ms = " + std::to_string(kMinInterval.count()) + "\n";
  return o;
}

flatbuffers::FlatBufferBuilder hello_with_heartbeat(std::uint64_t rid, std::uint32_t heartbeat_ms) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateHello(fbb, txmq::kProtocolVersion, fbb.CreateString("heartbeat-test"), 0, 0, 0, heartbeat_ms);
  return txmq::test::finish(std::move(fbb), rid, wire::Body::Hello, body.Union());
}

// Says hello asking for heartbeat_ms; returns the interval HelloOk grants.
std::uint32_t hello(RawConnection& conn, std::uint32_t heartbeat_ms) {
  txmq::test::send(conn, hello_with_heartbeat(1, heartbeat_ms));
  auto ok = txmq::test::expect_frame(conn, wire::Body::HelloOk, 1);
  return ok.frame().body_as_HelloOk()->heartbeat_ms();
}

flatbuffers::FlatBufferBuilder heartbeat() {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, 0, wire::Body::Heartbeat, wire::CreateHeartbeat(fbb).Union()));
  return fbb;
}

// The next frame that is not a heartbeat, answering each heartbeat that comes first with
// one (a live client); counts them in `heartbeats` when given.
txmq::test::ReceivedFrame next_frame(RawConnection& conn, int* heartbeats = nullptr) {
  for (int i = 0;; ++i) {
    auto f = conn.read_frame(txmq::test::kWait);
    REQUIRE_MESSAGE(f.ok(), f.error().describe());
    if (f->type() != wire::Body::Heartbeat) return std::move(*f);
    REQUIRE_MESSAGE(i < 100, "only heartbeats came");
    if (heartbeats) ++*heartbeats;
    txmq::test::send(conn, heartbeat());
  }
}

}  // namespace

TEST_CASE("a client that asked for heartbeats is sent them, and is closed after three silent intervals") {
  BrokerProcess broker(broker_options());
  txmq::test::start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = txmq::test::connect(broker);
  // Before the hello: the broker's clock for silence starts after it read the hello.
  const auto asked = std::chrono::steady_clock::now();
  REQUIRE(hello(conn, 600) == 600);
  // Nothing else is sent to it, so heartbeats come, one an interval; it answers none, so
  // after three intervals (not before) the broker takes it for gone and closes it.
  int heartbeats = 0;
  std::optional<txmq::Error> ended;
  for (int i = 0; i < 50 && !ended; ++i) {
    auto f = conn.read_frame(txmq::test::kWait);
    if (!f) {
      ended = f.error();
      break;
    }
    INFO("got " << txmq::test::describe(*f));
    CHECK(f->type() == wire::Body::Heartbeat);
    CHECK(f->request_id() == 0);
    ++heartbeats;
  }
  REQUIRE(ended);
  CHECK_MESSAGE(ended->code == ErrorCode::kConnectionLost, ended->describe());  // closed, not a timeout of ours
  CHECK(std::chrono::steady_clock::now() - asked >= 3 * 600ms);
  CHECK(heartbeats >= 1);
  CHECK(scrape_metric(broker, "txmq_connections_closed_total{reason=\"heartbeat_timeout\"}") == 1);
  txmq::test::check_broker_serves(broker);
}

TEST_CASE("a heartbeat from the client keeps it open; one that asked for none is never closed for silence") {
  BrokerProcess broker(broker_options());
  txmq::test::start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection beating = txmq::test::connect(broker);
  // Below the broker's minimum: raised to it, so a client cannot have heartbeats sent as
  // fast as it likes.
  REQUIRE(hello(beating, 10) == kMinInterval.count());
  RawConnection quiet = txmq::test::connect(broker);
  REQUIRE(hello(quiet, 0) == 0);

  // Six of the broker's heartbeats, each answered with one: six intervals, twice the limit
  // of silence, and the connection stays open.
  for (int i = 0; i < 6; ++i) {
    txmq::test::expect_frame(beating, wire::Body::Heartbeat, 0);
    txmq::test::send(beating, heartbeat());
  }
  txmq::test::send(beating, txmq::test::list_topics(2));
  auto listed = next_frame(beating);
  CHECK(listed.type() == wire::Body::TopicList);
  CHECK(listed.request_id() == 2);
  // The quiet one was silent all that while, and was sent no heartbeat.
  txmq::test::send(quiet, txmq::test::list_topics(2));
  txmq::test::expect_frame(quiet, wire::Body::TopicList, 2);
  // No sample (-1) until a connection is closed for it.
  CHECK(scrape_metric(broker, "txmq_connections_closed_total{reason=\"heartbeat_timeout\"}") < 1);
}

TEST_CASE("the client library drops a stopped broker after three heartbeat intervals, not at its request deadline") {
  BrokerProcess broker(broker_options());
  txmq::test::start(broker);
  INFO("broker log:\n" << broker.log_contents());
  txmq::client::ClientOptions options;
  options.broker = broker.address();
  options.heartbeat_interval = txmq::client::Millis(500);
  options.request_timeout = txmq::client::Millis(60'000);
  txmq::client::Admin admin(options);
  REQUIRE(admin.list_topics(txmq::client::Millis(10'000)).ok());

  // Stopped, the broker's socket stays open and the kernel still takes what is sent: only
  // the missing heartbeats tell.
  REQUIRE(::kill(broker.pid(), SIGSTOP) == 0);
  const auto stopped = std::chrono::steady_clock::now();
  auto listed = admin.list_topics(txmq::client::Millis(60'000));
  const auto waited = std::chrono::steady_clock::now() - stopped;
  REQUIRE(::kill(broker.pid(), SIGCONT) == 0);
  REQUIRE_FALSE(listed.ok());
  CHECK(listed.error().code == ErrorCode::kConnectionLost);
  CHECK_MESSAGE(listed.error().message.find("heartbeats every 500 ms") != std::string::npos,
                listed.error().describe());
  CHECK(waited < 10s);  // three intervals and a little; the request's own deadline is 60 s

  // Once the broker runs again the client reconnects by itself.
  CHECK(txmq::test::wait_until([&] { return admin.list_topics(txmq::client::Millis(10'000)).ok(); }, 30s));
}

TEST_CASE("a consumer gone silent loses its deliveries to a live one within seconds, long before their lease") {
  BrokerProcess broker(broker_options());
  txmq::test::start(broker);
  INFO("broker log:\n" << broker.log_contents());
  txmq::client::ClientOptions options;
  options.broker = broker.address();
  txmq::client::Admin admin(options);
  REQUIRE(admin.create_topic("orders", 1, txmq::client::Millis(10'000)).ok());
  txmq::client::GroupConfig lease;
  lease.ack_wait = txmq::client::Millis(120'000);  // only a closed connection frees a delivery in time
  REQUIRE(admin.configure_group("shop", "orders", lease, txmq::client::Millis(10'000)).ok());

  // A raw consumer that asks for heartbeats and answers them until it has the one
  // message, then says nothing more.
  RawConnection silent = txmq::test::connect(broker);
  REQUIRE(hello(silent, 500) == 500);
  {
    flatbuffers::FlatBufferBuilder fbb;
    auto body = wire::CreateSubscribe(fbb, fbb.CreateString("orders"), fbb.CreateString("shop"), 10);
    txmq::test::send(silent, txmq::test::finish(std::move(fbb), 2, wire::Body::Subscribe, body.Union()));
  }
  auto subscribed = next_frame(silent);
  REQUIRE(subscribed.type() == wire::Body::Ok);
  txmq::test::send(silent, txmq::test::produce(3, "orders", {"order-1"}));
  bool produced = false, delivered = false;
  for (int i = 0; i < 2; ++i) {
    auto f = next_frame(silent);
    produced = produced || (f.type() == wire::Body::ProduceOk && f.request_id() == 3);
    delivered = delivered || f.type() == wire::Body::Delivery;
  }
  REQUIRE(produced);
  REQUIRE(delivered);

  // A live consumer of the same group: the message is under the silent one's lease.
  std::mutex mu;
  std::vector<std::uint32_t> counts;  // delivery_count of each delivery it got
  txmq::client::Consumer::Options co;
  static_cast<txmq::client::ClientOptions&>(co) = options;
  co.topic = "orders";
  co.group = "shop";
  const auto silent_from = std::chrono::steady_clock::now();
  txmq::client::Consumer live(co, [&](txmq::client::Consumer& c, const txmq::client::Delivery& d) {
    std::lock_guard lock(mu);
    counts.push_back(d.delivery_count);
    c.ack(d);
  });
  const bool got = txmq::test::wait_until(
      [&] {
        std::lock_guard lock(mu);
        return !counts.empty();
      },
      30s);
  const auto took = std::chrono::steady_clock::now() - silent_from;
  REQUIRE(got);
  std::lock_guard lock(mu);
  CHECK(counts == std::vector<std::uint32_t>{2});  // the second delivery of the one message
  CHECK(took < 10s);                               // three 500 ms intervals and a little, not 120 s
  CHECK(scrape_metric(broker, "txmq_connections_closed_total{reason=\"heartbeat_timeout\"}") == 1);
}

TEST_CASE("a client flooding heartbeats is read and ignored: nothing answers them, others are served") {
  BrokerProcess broker(broker_options());
  txmq::test::start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection flood = txmq::test::connect(broker);
  REQUIRE(hello(flood, 1000) == 1000);
  const auto one = txmq::test::bytes_of(heartbeat());
  txmq::test::Bytes many;
  for (int i = 0; i < 100'000; ++i) many.insert(many.end(), one.begin(), one.end());
  auto sent = flood.send_bytes(many, 30s);
  REQUIRE_MESSAGE(sent.ok(), txmq::test::describe(sent));
  txmq::test::check_broker_serves(broker);
  // Behind the flood on its own connection, a request is answered; none of the 100,000
  // heartbeats was (at most the broker's own heartbeats came first).
  txmq::test::send(flood, txmq::test::list_topics(7));
  int heartbeats = 0;
  for (;;) {
    auto f = flood.read_frame(txmq::test::kWait);
    REQUIRE_MESSAGE(f.ok(), f.error().describe());
    if (f->type() != wire::Body::Heartbeat) {
      CHECK(f->type() == wire::Body::TopicList);
      CHECK(f->request_id() == 7);
      break;
    }
    REQUIRE(++heartbeats < 20);  // one a second at most while the flood was read
    txmq::test::send(flood, heartbeat());
  }
}
