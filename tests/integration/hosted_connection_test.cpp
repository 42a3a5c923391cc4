// The client connection hosted on a loop its caller runs (a broker's replication fetcher
// uses it so): answers come on the caller's thread, and dispose() may be called from inside
// one of the connection's own callbacks, with more answers still buffered behind it, or
// while a connect is in flight. Each case runs the loop until it has nothing left, then
// closes it: uv_loop_close fails while any handle of the connection is still open, and
// ASan reports a callback that touched the connection after it was freed.

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client/src/connection.h"
#include "common/frame.h"
#include "common/version.h"
#include "tests/support/broker_process.h"
#include "tests/support/client_fixtures.h"
#include "tests/support/closed_port.h"
#include "txmq_generated.h"

namespace {

using txmq::ErrorCode;
using txmq::Result;
using txmq::client::detail::Connection;
using txmq::test::BrokerProcess;
using txmq::test::client_options;
using txmq::test::kWait;
using txmq::test::start;
namespace wire = txmq::wire;

// A ListTopics request on `conn`; cb gets its answer or its error.
void list_topics(Connection& conn, Connection::ResponseFn cb) {
  auto& fbb = conn.builder();
  fbb.Clear();
  const std::uint64_t rid = conn.next_request_id();
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::ListTopics, wire::CreateListTopics(fbb).Union()));
  conn.request(rid, {fbb.GetBufferPointer(), fbb.GetSize()}, Connection::Clock::now() + kWait, std::move(cb));
}

// Runs the loop until nothing is left on it (every request's deadline is kWait, so this
// ends), then closes it: 0 when the connection left no handle behind.
int run_out(uv_loop_t& loop) {
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop);
}

}  // namespace

TEST_CASE("a hosted connection answers on the loop's thread and is disposed from inside an answer") {
  BrokerProcess broker;
  start(broker);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  auto conn = std::make_unique<Connection>(client_options(broker.address()), Connection::Hooks{}, &loop);
  conn->start();
  const auto thread = std::this_thread::get_id();
  std::vector<ErrorCode> seen;  // kOk for an answer
  Connection* raw = conn.get();
  list_topics(*raw, [&](Result<const wire::Frame*> answer) {
    CHECK(std::this_thread::get_id() == thread);
    seen.push_back(answer ? ErrorCode::kOk : answer.error().code);
    Connection::dispose(std::move(conn));
  });
  // Still pending when the first answer disposes the connection: it fails with kClosed.
  list_topics(*raw, [&](Result<const wire::Frame*> answer) {
    seen.push_back(answer ? ErrorCode::kOk : answer.error().code);
  });
  CHECK(run_out(loop) == 0);
  CHECK(seen == std::vector<ErrorCode>{ErrorCode::kOk, ErrorCode::kClosed});
}

TEST_CASE("a hosted connection disposed by an answer drops the answers read with it, unhandled") {
  // A peer that answers the hello, then both requests in one write: the second answer is
  // in the connection's decoder when the first one's callback disposes it.
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(::listen(listener, 1) == 0);
  socklen_t len = sizeof(a);
  REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  std::thread peer([listener] {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    txmq::common::FrameDecoder decoder(1u << 20);
    std::vector<std::uint64_t> rids;  // of the frames read: the hello, then two requests
    char buf[4096];
    std::vector<std::uint8_t> out;
    auto answer = [&out](std::uint64_t rid, bool hello) {
      flatbuffers::FlatBufferBuilder fbb;
      auto body = hello ? wire::CreateHelloOk(fbb, txmq::kProtocolVersion, fbb.CreateString("fake"), 1u << 20, 1u << 20)
                              .Union()
                        : wire::CreateTopicList(fbb).Union();
      fbb.FinishSizePrefixed(
          wire::CreateFrame(fbb, rid, hello ? wire::Body::HelloOk : wire::Body::TopicList, body));
      out.insert(out.end(), fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    };
    while (rids.size() < 3) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      decoder.append(buf, static_cast<std::size_t>(n));
      for (auto f = decoder.next(); f && !f->empty(); f = decoder.next()) {
        const wire::Frame* frame = txmq::common::verify_frame(*f);
        if (!frame) continue;
        rids.push_back(frame->request_id());
        if (rids.size() == 1) {  // the hello: answered alone
          answer(rids[0], true);
          (void)!::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
          out.clear();
        }
      }
    }
    if (rids.size() == 3) {
      answer(rids[1], false);
      answer(rids[2], false);
      (void)!::send(fd, out.data(), out.size(), MSG_NOSIGNAL);  // one write, both answers
    }
    char rest[256];
    while (::read(fd, rest, sizeof(rest)) > 0) {
    }
    ::close(fd);
  });

  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  auto conn = std::make_unique<Connection>(client_options("127.0.0.1:" + std::to_string(ntohs(a.sin_port))),
                                           Connection::Hooks{}, &loop);
  conn->start();
  std::vector<ErrorCode> seen;
  Connection* raw = conn.get();
  list_topics(*raw, [&](Result<const wire::Frame*> answer) {
    seen.push_back(answer ? ErrorCode::kOk : answer.error().code);
    Connection::dispose(std::move(conn));
  });
  list_topics(*raw, [&](Result<const wire::Frame*> answer) {
    seen.push_back(answer ? ErrorCode::kOk : answer.error().code);
  });
  CHECK(run_out(loop) == 0);
  peer.join();
  ::close(listener);
  // The second answer was received but not handled: its request failed with kClosed.
  CHECK(seen == std::vector<ErrorCode>{ErrorCode::kOk, ErrorCode::kClosed});
}

TEST_CASE("a hosted connection disposed right after start fails what waits and leaves nothing open") {
  txmq::test::ClosedPort port;
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  auto options = client_options("127.0.0.1:" + std::to_string(port.port()));
  auto conn = std::make_unique<Connection>(options, Connection::Hooks{}, &loop);
  conn->start();
  std::vector<ErrorCode> failed;
  list_topics(*conn, [&](Result<const wire::Frame*> answer) {
    failed.push_back(answer ? ErrorCode::kOk : answer.error().code);
  });
  // One turn of the loop: resolving, connecting or refused; in each a request waits.
  uv_run(&loop, UV_RUN_NOWAIT);
  Connection::dispose(std::move(conn));
  CHECK(failed == std::vector<ErrorCode>{ErrorCode::kClosed});
  CHECK(run_out(loop) == 0);
}

TEST_CASE("a hosted connection that never started is disposed at once") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  auto conn = std::make_unique<Connection>(client_options("127.0.0.1:1"), Connection::Hooks{}, &loop);
  Connection::dispose(std::move(conn));
  CHECK(run_out(loop) == 0);
}
