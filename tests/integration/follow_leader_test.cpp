// The client follows the leader: a list of brokers in ClientOptions::broker, and NotLeader
// refusals that send the connection to the leader they name. The follower here is a fake
// (FakeFollower below: it answers the hello, the cluster requests, and NotLeader to the
// rest), the leader the real broker, so that the redirect is tested on its own; the
// `txmq cluster` commands are run against both.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/frame.h"
#include "common/version.h"
#include "tests/support/broker_process.h"
#include "tests/support/cli_run.h"
#include "tests/support/client_fixtures.h"
#include "tests/support/closed_port.h"
#include "txmq_generated.h"

using namespace txmq;
using namespace txmq::test;
using client::Millis;

namespace {

// A broker that plays a follower on 127.0.0.1: it answers the hello, ClusterStatus (a
// follower's ClusterInfo naming `leader`) and GetDigest, and refuses every other request
// with NotLeader naming `leader` ("" names none). One thread serves every connection.
// Lifecycle: listens from construction to destruction.
class FakeFollower {
 public:
  explicit FakeFollower(std::string leader) : leader_(std::move(leader)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof(a);
    REQUIRE(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    address_ = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    REQUIRE(::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) == 0);
    thread_ = std::thread([this] { run(); });
  }
  FakeFollower(const FakeFollower&) = delete;
  FakeFollower& operator=(const FakeFollower&) = delete;
  ~FakeFollower() {
    stop_ = true;
    (void)!::write(wake_[1], "x", 1);
    thread_.join();
    for (auto& [fd, decoder] : clients_) ::close(fd);
    for (int fd : {listen_fd_, wake_[0], wake_[1]}) ::close(fd);
  }

  const std::string& address() const { return address_; }
  int refused() const { return refused_; }  // requests answered with NotLeader
  int hellos() const { return hellos_; }

 private:
  void run() {
    while (!stop_) {
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      for (auto& [fd, decoder] : clients_) fds.push_back({fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;
      if (fds[0].revents & POLLIN) {
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) clients_.emplace(fd, common::FrameDecoder(1u << 20));
      }
      for (std::size_t i = 2; i < fds.size(); ++i)
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) serve(fds[i].fd);
    }
  }

  void serve(int fd) {
    char buf[64 * 1024];
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    auto& decoder = clients_.at(fd);
    if (n > 0) decoder.append(buf, static_cast<std::size_t>(n));
    for (;;) {
      auto frame = n > 0 ? decoder.next() : Result<std::span<const std::uint8_t>>(std::span<const std::uint8_t>{});
      if (n <= 0 || !frame || frame->empty()) break;
      const wire::Frame* f = common::verify_frame(*frame);
      if (f) answer(fd, *f);
    }
    if (n <= 0) {
      ::close(fd);
      clients_.erase(fd);
    }
  }

  void answer(int fd, const wire::Frame& request) {
    flatbuffers::FlatBufferBuilder fbb;
    const std::uint64_t rid = request.request_id();
    wire::Body type;
    flatbuffers::Offset<void> body;
    switch (request.body_type()) {
      case wire::Body::Hello:
        ++hellos_;
        if (const auto* group = request.body_as_Hello()->producer_group(); group && group->size() > 0) {
          // As a real follower: check-backs come from the leader, so a producer group's
          // hello goes there.
          ++refused_;
          type = wire::Body::Error;
          body = not_leader(fbb);
          break;
        }
        type = wire::Body::HelloOk;
        body = wire::CreateHelloOk(fbb, kProtocolVersion, fbb.CreateString("fake"), 1u << 20, 1u << 20).Union();
        break;
      case wire::Body::ClusterStatus: {
        std::vector<flatbuffers::Offset<flatbuffers::String>> in_sync{fbb.CreateString("b1"), fbb.CreateString("b2")};
        type = wire::Body::ClusterInfo;
        body = wire::CreateClusterInfo(fbb, fbb.CreateString("b2"), fbb.CreateString("follower"), 3,
                                       fbb.CreateString("b1"), fbb.CreateString(leader_), fbb.CreateString("sync"), 2,
                                       5, 41, 40, fbb.CreateVector(in_sync), 0, fbb.CreateString(leader_))
                   .Union();
        break;
      }
      case wire::Body::GetDigest: {
        std::vector<flatbuffers::Offset<wire::KeySpaceDigest>> spaces{
            wire::CreateKeySpaceDigest(fbb, fbb.CreateString("messages"), 7, fbb.CreateString("ab12")),
            wire::CreateKeySpaceDigest(fbb, fbb.CreateString("meta"), 2, fbb.CreateString("cd34"))};
        type = wire::Body::Digest;
        body = wire::CreateDigest(fbb, 41, 3, fbb.CreateVector(spaces)).Union();
        break;
      }
      default:
        ++refused_;
        type = wire::Body::Error;
        body = not_leader(fbb);
    }
    fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, type, body));
    const auto bytes = common::frame_bytes(fbb);
    std::size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t w = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (w <= 0) return;
      off += static_cast<std::size_t>(w);
    }
  }

  flatbuffers::Offset<void> not_leader(flatbuffers::FlatBufferBuilder& fbb) const {
    return wire::CreateError(fbb, static_cast<std::uint16_t>(ErrorCode::kNotLeader),
                             fbb.CreateString("this broker is not the leader"),
                             leader_.empty() ? 0 : fbb.CreateString(leader_), 3)
        .Union();
  }

  std::string leader_;
  std::string address_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::atomic<int> refused_{0};
  std::atomic<int> hellos_{0};
  std::map<int, common::FrameDecoder> clients_;  // the serving thread's
  std::thread thread_;
};

struct Leader {
  Leader() {
    start(broker);
    create_topic(broker.address(), "orders");
  }
  BrokerProcess broker;
};

}  // namespace

TEST_CASE("an idempotent producer pointed at a follower alone has its send confirmed by the leader, once") {
  Leader leader;
  FakeFollower follower(leader.broker.address());
  client::Producer producer(idempotent_producer_options(follower.address()));
  auto r = producer.send("orders", text("first"), kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(follower.refused() >= 1);
  auto again = producer.send("orders", text("second"), kWait);
  REQUIRE_MESSAGE(again.ok(), describe(again));
  CHECK(again->offset == r->offset + 1);
  CHECK(stored_bodies(leader.broker.address(), "orders") == std::vector<std::string>{"first", "second"});
}

TEST_CASE("a producer given follower,leader has its sends confirmed through the leader") {
  Leader leader;
  FakeFollower follower(leader.broker.address());
  client::Producer producer(idempotent_producer_options(follower.address() + "," + leader.broker.address()));
  for (int i = 0; i < 3; ++i) {
    auto r = producer.send("orders", text("m" + std::to_string(i)), kWait);
    REQUIRE_MESSAGE(r.ok(), describe(r));
  }
  CHECK(stored_bodies(leader.broker.address(), "orders") == std::vector<std::string>{"m0", "m1", "m2"});
}

TEST_CASE("a send that may not be resent fails with the follower's retryable NotLeader; the next one reaches the leader") {
  Leader leader;
  FakeFollower follower(leader.broker.address());
  client::Producer producer(producer_options(follower.address()));
  auto refused = producer.send("orders", text("refused"), kWait);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::kNotLeader);
  CHECK(refused.error().retryable());
  CHECK(refused.error().leader == leader.broker.address());
  auto r = producer.send("orders", text("accepted"), kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(stored_bodies(leader.broker.address(), "orders") == std::vector<std::string>{"accepted"});
}

TEST_CASE("a follower that names no leader is passed over for the next broker of the list") {
  Leader leader;
  FakeFollower follower("");
  client::Producer producer(idempotent_producer_options(follower.address() + "," + leader.broker.address()));
  auto r = producer.send("orders", text("through"), kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(follower.refused() >= 1);
  CHECK(stored_bodies(leader.broker.address(), "orders") == std::vector<std::string>{"through"});
}

TEST_CASE("a consumer pointed at a follower subscribes at the leader and receives") {
  Leader leader;
  produce_one(leader.broker.address(), "orders", text("to consume"));
  FakeFollower follower(leader.broker.address());
  std::mutex mu;
  std::vector<std::string> got;
  client::Consumer::Options o;
  static_cast<client::ClientOptions&>(o) = client_options(follower.address());
  o.topic = "orders";
  o.group = "g";
  client::Consumer consumer(o, [&](client::Consumer& c, const client::Delivery& d) {
    std::lock_guard lock(mu);
    got.push_back(d.body);
    c.ack(d);
  });
  auto st = consumer.wait_subscribed(kWait);
  REQUIRE_MESSAGE(st.ok(), describe(st));
  CHECK(follower.refused() >= 1);
  CHECK(wait_until([&] { std::lock_guard lock(mu); return got.size() == 1; }, kWait));
  st = consumer.flush_acks(kWait);
  CHECK_MESSAGE(st.ok(), describe(st));
}

TEST_CASE("a transactional producer pointed at a follower is sent to the leader by its hello, and commits there") {
  Leader leader;
  FakeFollower follower(leader.broker.address());
  client::TransactionalProducer::Options o;
  static_cast<client::ClientOptions&>(o) = client_options(follower.address());
  o.producer_group = "payments";
  // A redirect is no failure to connect: what waits for the leader is not failed fast.
  o.first_connect_timeout = kWait;
  client::TransactionalProducer producer(o, [](const client::TransactionCheck&) {
    return client::LocalTransactionState::kCommit;
  });
  auto r = producer.send_in_transaction(
      "orders", text("paid"), [](std::uint64_t) { return client::LocalTransactionState::kCommit; }, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->state == client::TxnState::kCommitted);
  CHECK(follower.hellos() >= 1);
  CHECK(follower.refused() == follower.hellos());  // nothing but the hello reached it
  CHECK(stored_bodies(leader.broker.address(), "orders") == std::vector<std::string>{"paid"});
}

TEST_CASE("a connection that fails moves on to the next broker of the list") {
  Leader leader;
  ClosedPort closed;
  client::Admin admin(client_options("127.0.0.1:" + std::to_string(closed.port()) + "," + leader.broker.address()));
  auto r = admin.list_topics(kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
}

TEST_CASE("when every broker of the list refuses, the error names each") {
  ClosedPort a, b;
  const std::string first = "127.0.0.1:" + std::to_string(a.port());
  const std::string second = "127.0.0.1:" + std::to_string(b.port());
  auto o = client_options(first + "," + second);
  o.first_connect_timeout = Millis(1000);
  client::Admin admin(o);
  auto r = admin.list_topics(kWait);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kNotConnected);
  CAPTURE(r.error().message);
  CHECK(r.error().message.find(first + ": ") != std::string::npos);
  CHECK(r.error().message.find(second + ": ") != std::string::npos);
}

TEST_CASE("the cluster requests are answered by the follower they were sent to, never redirected") {
  Leader leader;
  FakeFollower follower(leader.broker.address());
  client::Admin admin(client_options(follower.address()));
  auto status = admin.cluster_status(kWait);
  REQUIRE_MESSAGE(status.ok(), describe(status));
  CHECK(status->role == "follower");
  CHECK(status->id == "b2");
  CHECK(status->leader_address == leader.broker.address());
  CHECK(status->in_sync == std::vector<std::string>{"b1", "b2"});
  auto digest = admin.digest(kWait);
  REQUIRE_MESSAGE(digest.ok(), describe(digest));
  CHECK(digest->last_index == 41);
  REQUIRE(digest->key_spaces.size() == 2);
  CHECK(digest->key_spaces[0].key_space == "messages");
  CHECK(digest->key_spaces[0].sha256 == "ab12");
  CHECK(follower.refused() == 0);
}

TEST_CASE("txmq cluster status and digest print the follower's view, as a table and as JSON") {
  Leader leader;
  FakeFollower follower(leader.broker.address());
  auto table = run_cli({"--broker", follower.address(), "cluster", "status"});
  CHECK_MESSAGE(table.exit_code == 0, table.err);
  CHECK(table.out.find("role            follower") != std::string::npos);
  CHECK(table.out.find("commit_index    40") != std::string::npos);
  CHECK(table.out.find("in_sync         b1,b2") != std::string::npos);
  CHECK(table.out.find("b1 at " + leader.broker.address()) != std::string::npos);
  auto json = run_cli({"--broker", follower.address(), "cluster", "status", "--json"});
  CHECK_MESSAGE(json.exit_code == 0, json.err);
  CHECK(json.out.find("\"role\":\"follower\"") != std::string::npos);
  CHECK(json.out.find("\"in_sync\":[\"b1\",\"b2\"]") != std::string::npos);
  auto digest = run_cli({"--broker", follower.address(), "cluster", "digest"});
  CHECK_MESSAGE(digest.exit_code == 0, digest.err);
  CHECK(digest.out.find("last_index 41") != std::string::npos);
  CHECK(digest.out.find("messages") != std::string::npos);
  CHECK(digest.out.find("ab12") != std::string::npos);
  auto digest_json = run_cli({"--broker", follower.address(), "cluster", "digest", "--json"});
  CHECK_MESSAGE(digest_json.exit_code == 0, digest_json.err);
  CHECK(digest_json.out.find("{\"key_space\":\"meta\",\"entries\":2,\"sha256\":\"cd34\"}") != std::string::npos);
}

TEST_CASE("txmq cluster without a command, or with an unknown flag, is bad usage, reaching no broker") {
  // Bad usage exits as every command's does: 2, never 0 nor 1 (a broker's error).
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"cluster"}, {"cluster", "promote", "--clean"}, {"cluster", "status", "extra"}}) {
    CAPTURE(args.back());
    auto r = run_cli(args);
    CHECK(r.exit_code == 2);
    CHECK_FALSE(r.err.empty());
  }
}
