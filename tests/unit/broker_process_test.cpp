// tests/support/broker_process: the harness every integration test relies on. It runs
// the real broker binary, so ctest labels it "integration".

#include "tests/support/broker_process.h"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/version.h"

using namespace txmq;
using namespace std::chrono_literals;
using txmq::test::BrokerOptions;
using txmq::test::BrokerProcess;
using txmq::test::RawConnection;
using txmq::test::TempDir;

namespace {

void start(BrokerProcess& broker) {
  auto st = broker.start();
  REQUIRE_MESSAGE(st.ok(), test::describe(st));
}

flatbuffers::FlatBufferBuilder hello(std::uint64_t rid) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateHello(fbb, kProtocolVersion, fbb.CreateString("broker-process-test"));
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::Hello, body.Union()));
  return fbb;
}

flatbuffers::FlatBufferBuilder create_topic(std::uint64_t rid, const std::string& name) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateCreateTopic(fbb, fbb.CreateString(name), 1);
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::CreateTopic, body.Union()));
  return fbb;
}

flatbuffers::FlatBufferBuilder list_topics(std::uint64_t rid) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateListTopics(fbb);
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::ListTopics, body.Union()));
  return fbb;
}

RawConnection session(const BrokerProcess& broker) {
  auto conn = RawConnection::connect(broker.address());
  REQUIRE_MESSAGE(conn.ok(), conn.error().describe());
  REQUIRE(conn->send_frame(hello(1)).ok());
  auto ok = conn->read_frame(10s);
  REQUIRE_MESSAGE(ok.ok(), ok.error().describe());
  REQUIRE(ok->type() == wire::Body::HelloOk);
  return std::move(*conn);
}

std::vector<std::string> topic_names(RawConnection& conn, std::uint64_t rid) {
  REQUIRE(conn.send_frame(list_topics(rid)).ok());
  auto f = conn.read_frame(10s);
  REQUIRE_MESSAGE(f.ok(), f.error().describe());
  REQUIRE(f->type() == wire::Body::TopicList);
  std::vector<std::string> names;
  for (const auto* t : *f->frame().body_as_TopicList()->topics()) names.push_back(t->name()->str());
  return names;
}

// A stand-in "broker" that never prints anything and never exits on its own.
std::string silent_binary(const TempDir& dir) {
  std::string path = dir.file("silent.sh");
  std::ofstream(path) << "#!/bin/sh\nexec sleep 60\n";
  chmod(path.c_str(), 0755);
  return path;
}

}  // namespace

TEST_CASE("start records the protocol and metrics addresses the broker printed") {
  BrokerProcess broker;
  start(broker);
  CHECK(broker.running());
  CHECK(broker.port() != 0);
  CHECK(broker.address() == "127.0.0.1:" + std::to_string(broker.port()));
  CHECK(broker.metrics_port() != 0);
  CHECK(broker.metrics_address() == "127.0.0.1:" + std::to_string(broker.metrics_port()));
  auto lines = broker.stdout_lines();
  CHECK(std::find(lines.begin(), lines.end(), "listening on " + broker.address()) != lines.end());
}

TEST_CASE("an empty metrics_listen disables the metrics endpoint") {
  BrokerOptions options;
  options.metrics_listen = "";
  BrokerProcess broker(options);
  start(broker);
  CHECK(broker.metrics_address().empty());
  CHECK(broker.metrics_port() == 0);
}

TEST_CASE("the broker's stderr goes to the log file") {
  BrokerProcess broker;
  start(broker);
  CHECK(std::filesystem::exists(broker.log_path()));
  // The start-up line ("serving N topics from DIR") may follow "listening on".
  CHECK(test::wait_until([&] { return broker.log_contents().find(broker.data_dir()) != std::string::npos; }, 10s));
}

TEST_CASE("terminate stops the broker cleanly and returns its exit code 0") {
  BrokerProcess broker;
  start(broker);
  CHECK(broker.terminate() == 0);
  CHECK_FALSE(broker.running());
  CHECK(broker.terminate() == -1);  // nothing left to stop
}

TEST_CASE("kill9 stops the broker at once") {
  BrokerProcess broker;
  start(broker);
  broker.kill9();
  CHECK_FALSE(broker.running());
  auto conn = RawConnection::connect(broker.address(), 2s);
  REQUIRE_FALSE(conn.ok());
  CHECK(conn.error().code == ErrorCode::kConnectionLost);
}

TEST_CASE("restart after kill9 serves the same data directory on a new port") {
  BrokerProcess broker;
  start(broker);
  {
    RawConnection conn = session(broker);
    REQUIRE(conn.send_frame(create_topic(2, "survivor")).ok());
    auto f = conn.read_frame(10s);
    REQUIRE(f.ok());
    REQUIRE(f->type() == wire::Body::TopicInfo);
  }
  const std::string data_dir = broker.data_dir();
  broker.kill9();
  auto st = broker.restart();
  REQUIRE_MESSAGE(st.ok(), test::describe(st));
  CHECK(broker.data_dir() == data_dir);
  RawConnection conn = session(broker);
  CHECK(topic_names(conn, 2) == std::vector<std::string>{"survivor"});
}

TEST_CASE("restart of a running broker terminates it first") {
  BrokerProcess broker;
  start(broker);
  pid_t first = broker.pid();
  auto st = broker.restart();
  REQUIRE_MESSAGE(st.ok(), test::describe(st));
  CHECK(broker.pid() != first);
  CHECK(broker.running());
}

TEST_CASE("starting a running broker again is refused") {
  BrokerProcess broker;
  start(broker);
  auto st = broker.start();
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::kInvalidArgument);
  CHECK(broker.running());
}

TEST_CASE("the extra config TOML reaches the broker") {
  BrokerOptions options;
  options.config_toml = "[limits]\nmax_message_bytes = 2048\n";
  BrokerProcess broker(options);
  start(broker);
  auto conn = RawConnection::connect(broker.address());
  REQUIRE(conn.ok());
  REQUIRE(conn->send_frame(hello(1)).ok());
  auto f = conn->read_frame(10s);
  REQUIRE(f.ok());
  REQUIRE(f->type() == wire::Body::HelloOk);
  CHECK(f->frame().body_as_HelloOk()->max_message_bytes() == 2048);
}

TEST_CASE("extra args reach the broker") {
  BrokerOptions options;
  options.args = {"--log-level", "debug"};
  BrokerProcess broker(options);
  start(broker);
  session(broker);  // a connection is logged at debug level only
  CHECK(test::wait_until([&] { return broker.log_contents().find("[debug]") != std::string::npos; }, 10s));
}

TEST_CASE("a broker that exits before listening fails start with its log") {
  BrokerOptions options;
  options.config_toml = "[storage]\nsync = \"bogus\"\n";
  BrokerProcess broker(options);
  auto st = broker.start();
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::kInternal);
  CHECK(st.error().message.find("exit status 2") != std::string::npos);
  CHECK(st.error().message.find("storage.sync") != std::string::npos);  // from the log
  CHECK_FALSE(broker.running());
}

TEST_CASE("a binary that cannot be executed fails start") {
  BrokerOptions options;
  options.binary = "/nonexistent/txmq-broker";
  BrokerProcess broker(options);
  auto st = broker.start();
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::kInternal);
  CHECK(st.error().message.find("execve failed") != std::string::npos);
}

TEST_CASE("a broker that never prints its address fails start with Timeout and is killed") {
  TempDir scripts("txmq-silent");
  BrokerOptions options;
  options.binary = silent_binary(scripts);
  options.start_timeout = 300ms;
  BrokerProcess broker(options);
  auto st = broker.start();
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::kTimeout);
  CHECK_FALSE(broker.running());
}

TEST_CASE("environment variables reach the broker") {
  // The stand-in prints an environment variable in the broker's "listening on" format.
  TempDir scripts("txmq-env");
  std::string path = scripts.file("env.sh");
  std::ofstream(path) << "#!/bin/sh\necho \"listening on 127.0.0.1:$FAKE_PORT\"\nexec sleep 60\n";
  chmod(path.c_str(), 0755);
  BrokerOptions options;
  options.binary = path;
  options.env = {{"FAKE_PORT", "4242"}};
  BrokerProcess broker(options);
  start(broker);
  CHECK(broker.port() == 4242);
  broker.kill9();
}

TEST_CASE("the temp area is removed with the BrokerProcess unless kept") {
  std::string removed, kept;
  {
    BrokerProcess broker;
    start(broker);
    removed = broker.data_dir();
  }
  CHECK_FALSE(std::filesystem::exists(removed));
  {
    BrokerOptions options;
    options.keep = true;
    BrokerProcess broker(options);
    start(broker);
    kept = broker.log_path();
  }
  CHECK(std::filesystem::exists(kept));
  std::filesystem::remove_all(std::filesystem::path(kept).parent_path());
}

TEST_CASE("a data directory given in the options is used and not removed") {
  TempDir dir("txmq-own-data");
  std::string data = dir.file("data");
  {
    BrokerOptions options;
    options.data_dir = data;
    BrokerProcess broker(options);
    start(broker);
    CHECK(broker.data_dir() == data);
  }
  CHECK(std::filesystem::exists(data + "/data.mdb"));
}

TEST_CASE("read_frame times out when nothing arrives, keeping the connection") {
  BrokerProcess broker;
  start(broker);
  auto conn = RawConnection::connect(broker.address());
  REQUIRE(conn.ok());
  auto f = conn->read_frame(100ms);
  REQUIRE_FALSE(f.ok());
  CHECK(f.error().code == ErrorCode::kTimeout);
  CHECK(conn->is_open());
  CHECK_FALSE(conn->wait_closed(100ms));
}

TEST_CASE("wait_closed sees the broker go away") {
  BrokerProcess broker;
  start(broker);
  RawConnection conn = session(broker);
  broker.kill9();
  CHECK(conn.wait_closed(5s));
  auto f = conn.read_frame(1s);
  REQUIRE_FALSE(f.ok());
  CHECK(f.error().code == ErrorCode::kConnectionLost);
}

TEST_CASE("connect refuses a bad address") {
  auto conn = RawConnection::connect("not-an-ip:80");
  REQUIRE_FALSE(conn.ok());
  CHECK(conn.error().code == ErrorCode::kInvalidArgument);
}

TEST_CASE("wait_until returns true once the predicate holds and false at the deadline") {
  int calls = 0;
  CHECK(test::wait_until([&] { return ++calls >= 3; }, 5s, 1ms));
  CHECK(calls == 3);
  auto started = std::chrono::steady_clock::now();
  CHECK_FALSE(test::wait_until([] { return false; }, 50ms));
  CHECK(std::chrono::steady_clock::now() - started >= 50ms);
}

TEST_CASE("a TempDir is removed on destruction, and a moved one only once") {
  std::string path;
  {
    TempDir a("txmq-tempdir");
    path = a.path();
    std::ofstream(a.file("f")) << "x";
    TempDir b(std::move(a));
    CHECK(a.path().empty());
    CHECK(b.path() == path);
    CHECK(std::filesystem::exists(path + "/f"));
  }
  CHECK_FALSE(std::filesystem::exists(path));
}
