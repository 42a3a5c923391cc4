// Heartbeats against the real broker: the interval a hello asks for and what HelloOk
// grants, the broker's Heartbeat frames, the close of a peer silent for three intervals
// (and of no peer that asked for none), and the client library dropping a broker that was
// stopped (SIGSTOP: its socket stays open, nothing answers) long before its requests'
// deadlines.

#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <optional>
#include <string>

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

// The broker's shortest interval, lowered so that three of them pass quickly.
constexpr auto kMinInterval = 100ms;

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

}  // namespace

TEST_CASE("a client that asked for heartbeats is sent them, and is closed after three silent intervals") {
  BrokerProcess broker(broker_options());
  txmq::test::start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = txmq::test::connect(broker);
  REQUIRE(hello(conn, 200) == 200);
  const auto answered = std::chrono::steady_clock::now();
  // Nothing else is sent to it, so heartbeats come, one an interval; it answers none, so
  // after three intervals (not before) the broker takes it for gone.
  int heartbeats = 0;
  std::optional<txmq::test::ReceivedFrame> last;
  for (int i = 0; i < 50 && !last; ++i) {
    auto f = conn.read_frame(txmq::test::kWait);
    REQUIRE_MESSAGE(f.ok(), f.error().describe());
    if (f->type() == wire::Body::Heartbeat && f->request_id() == 0)
      ++heartbeats;
    else
      last = std::move(*f);
  }
  REQUIRE(last);
  INFO("then " << txmq::test::describe(*last));
  CHECK(last->error_code() == ErrorCode::kTimeout);
  CHECK(std::chrono::steady_clock::now() - answered >= 3 * 200ms);
  CHECK(heartbeats >= 2);
  txmq::test::expect_closed(conn);
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

  // Ten of the broker's heartbeats, each answered with one: ten intervals, over three times
  // the limit of silence, and the connection stays open.
  flatbuffers::FlatBufferBuilder beat;
  beat.FinishSizePrefixed(wire::CreateFrame(beat, 0, wire::Body::Heartbeat, wire::CreateHeartbeat(beat).Union()));
  for (int i = 0; i < 10; ++i) {
    txmq::test::expect_frame(beating, wire::Body::Heartbeat, 0);
    txmq::test::send(beating, beat);
  }
  txmq::test::send(beating, txmq::test::list_topics(2));
  txmq::test::expect_frame(beating, wire::Body::TopicList, 2);
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
  options.heartbeat_interval = txmq::client::Millis(200);
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
  CHECK_MESSAGE(listed.error().message.find("heartbeats every 200 ms") != std::string::npos,
                listed.error().describe());
  CHECK(waited < 10s);  // three intervals and a little; the request's own deadline is 60 s

  // Once the broker runs again the client reconnects by itself.
  CHECK(txmq::test::wait_until([&] { return admin.list_topics(txmq::client::Millis(10'000)).ok(); }, 30s));
}
