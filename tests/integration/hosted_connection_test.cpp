// The client connection hosted on a loop its caller runs (a broker's replication fetcher
// uses it so): answers come on the caller's thread, and dispose() may be called from inside
// one of the connection's own callbacks, with more answers still buffered behind it, or
// while a connect is in flight. Each case runs the loop until it has nothing left, then
// closes it: uv_loop_close fails while any handle of the connection is still open, and
// ASan reports a callback that touched the connection after it was freed.

#include <doctest/doctest.h>
#include <uv.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client/src/connection.h"
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

  // Two requests in one write: their answers tend to arrive in one read, so the first
  // one's callback disposes the connection with the second still in the decoder.
  std::vector<ErrorCode> seen;  // kOk for an answer
  Connection* raw = conn.get();
  list_topics(*raw, [&](Result<const wire::Frame*> answer) {
    CHECK(std::this_thread::get_id() == thread);
    seen.push_back(answer ? ErrorCode::kOk : answer.error().code);
    Connection::dispose(std::move(conn));
  });
  // Never answered: the connection was disposed before this answer was handled.
  list_topics(*raw, [&](Result<const wire::Frame*> answer) {
    seen.push_back(answer ? ErrorCode::kOk : answer.error().code);
  });
  CHECK(run_out(loop) == 0);
  CHECK(seen == std::vector<ErrorCode>{ErrorCode::kOk, ErrorCode::kClosed});
}

TEST_CASE("a hosted connection disposed while it connects fails what waits and leaves nothing open") {
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
  // One turn of the loop: the connect is refused or still in flight; either way a request waits.
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
