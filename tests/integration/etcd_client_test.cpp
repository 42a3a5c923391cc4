// etcd/client against a real etcd (tests/support's EtcdProcess): every call the cluster
// work uses, the gateway's traps (omitted defaults, base64, a lease that is gone), watches,
// endpoint rotation, and etcd killed or frozen under the client.
#include <doctest/doctest.h>

#include <uv.h>

#include <optional>
#include <string>

#include "etcd/client.h"
#include "tests/support/closed_port.h"
#include "tests/support/etcd_process.h"

using namespace std::chrono_literals;
using txmq::ErrorCode;
using txmq::Result;
using txmq::Status;
using txmq::etcd::Client;
using txmq::etcd::ClientOptions;
using txmq::etcd::Compare;
using txmq::etcd::Lease;
using txmq::etcd::Operation;
using txmq::etcd::Range;
using txmq::etcd::Txn;
using txmq::etcd::TxnResult;
using txmq::etcd::WatchEvent;
using txmq::test::EtcdProcess;

namespace {

// A libuv loop on the test's thread with a Client on it; run_until turns the loop until a
// condition holds or a deadline passes (a 5 ms timer keeps each turn short).
class Loop {
 public:
  explicit Loop(ClientOptions options) {
    uv_loop_init(&loop_);
    uv_timer_init(&loop_, &tick_);
    uv_timer_start(&tick_, [](uv_timer_t*) {}, 5, 5);
    client_ = std::make_unique<Client>(&loop_, std::move(options));
  }
  ~Loop() {
    bool closed = false;
    client_->close([&] { closed = true; });
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
    while (!closed || uv_loop_alive(&loop_)) uv_run(&loop_, UV_RUN_ONCE);
    client_.reset();
    CHECK(uv_loop_close(&loop_) == 0);
  }
  Client& client() { return *client_; }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      uv_run(&loop_, UV_RUN_ONCE);
    }
    return true;
  }

  // Runs one call to its answer.
  template <typename T, typename Start>
  Result<T> await(Start start, std::chrono::milliseconds timeout = 10s) {
    std::optional<Result<T>> out;
    start([&](Result<T> r) { out.emplace(std::move(r)); });
    REQUIRE_MESSAGE(run_until([&] { return out.has_value(); }, timeout), "no answer");
    return std::move(*out);
  }

 private:
  uv_loop_t loop_{};
  uv_timer_t tick_{};
  std::unique_ptr<Client> client_;
};

ClientOptions options_for(const EtcdProcess& etcd) {
  ClientOptions o;
  o.endpoints = {etcd.endpoint()};
  return o;
}

std::string describe(const Status& st) { return st.ok() ? "ok" : st.error().describe(); }
template <typename T>
std::string describe(const Result<T>& r) {
  return r.ok() ? "ok" : r.error().describe();
}

}  // namespace

TEST_CASE("puts and gets keep every byte, and a prefix get finds exactly its keys") {
  EtcdProcess etcd;
  REQUIRE_MESSAGE(etcd.start().ok(), "etcd");
  Loop loop(options_for(etcd));
  Client& c = loop.client();

  // Bytes the gateway's base64 must carry: NUL, 0xff, a newline, non-UTF-8.
  const std::string odd_key = std::string("/t/a\0\xff\n", 6);
  const std::string odd_value = std::string("\0\x80\xfe value", 9);
  auto put = loop.await<std::int64_t>([&](auto done) { c.put(odd_key, odd_value, 0, done); });
  REQUIRE_MESSAGE(put.ok(), describe(put));
  CHECK(*put > 0);
  REQUIRE(loop.await<std::int64_t>([&](auto done) { c.put("/t/b", "2", 0, done); }).ok());
  REQUIRE(loop.await<std::int64_t>([&](auto done) { c.put("/u", "not under /t/", 0, done); }).ok());

  auto one = loop.await<Range>([&](auto done) { c.get(odd_key, false, done); });
  REQUIRE_MESSAGE(one.ok(), describe(one));
  REQUIRE(one->kvs.size() == 1);
  CHECK(one->kvs[0].key == odd_key);
  CHECK(one->kvs[0].value == odd_value);
  CHECK(one->kvs[0].create_revision == *put);
  CHECK(one->kvs[0].version == 1);
  CHECK(one->revision >= *put);

  auto under = loop.await<Range>([&](auto done) { c.get("/t/", true, done); });
  REQUIRE(under.ok());
  REQUIRE(under->kvs.size() == 2);
  CHECK(under->kvs[0].key == odd_key);
  CHECK(under->kvs[1].key == "/t/b");

  // A key that does not exist: no kvs (the gateway omits the field), not an error.
  auto none = loop.await<Range>([&](auto done) { c.get("/missing", false, done); });
  REQUIRE(none.ok());
  CHECK(none->kvs.empty());
}

TEST_CASE("a compare-and-swap wins once; the loser sees failed and the holder, though etcd omits the field") {
  EtcdProcess etcd;
  REQUIRE(etcd.start().ok());
  Loop loop(options_for(etcd));
  Client& c = loop.client();

  auto campaign = [&](const std::string& who) {
    Txn t;
    t.compare = {Compare::absent("/leader")};
    t.success = {Operation::put("/leader", who), Operation::put("/state", "epoch of " + who)};
    t.failure = {Operation::get("/leader")};
    return loop.await<TxnResult>([&](auto done) { c.txn(t, done); });
  };
  auto first = campaign("b1");
  REQUIRE_MESSAGE(first.ok(), describe(first));
  CHECK(first->succeeded);
  CHECK(first->ranges.empty());
  auto second = campaign("b2");
  REQUIRE_MESSAGE(second.ok(), describe(second));
  CHECK_FALSE(second->succeeded);
  REQUIRE(second->ranges.size() == 1);
  REQUIRE(second->ranges[0].kvs.size() == 1);
  CHECK(second->ranges[0].kvs[0].value == "b1");
  // The winner's revision is the leader key's create revision: the epoch.
  CHECK(second->ranges[0].kvs[0].create_revision == first->revision);

  // A guarded write on the state key: only against its current mod revision.
  auto state = loop.await<Range>([&](auto done) { c.get("/state", false, done); });
  REQUIRE(state.ok());
  const std::int64_t at = state->kvs.at(0).mod_revision;
  Txn guarded;
  guarded.compare = {Compare::mod_revision("/state", at), Compare::value_is("/leader", "b1")};
  guarded.success = {Operation::put("/state", "shrunk")};
  auto ok = loop.await<TxnResult>([&](auto done) { c.txn(guarded, done); });
  REQUIRE(ok.ok());
  CHECK(ok->succeeded);
  auto stale = loop.await<TxnResult>([&](auto done) { c.txn(guarded, done); });
  REQUIRE(stale.ok());
  CHECK_FALSE(stale->succeeded);

  // Delete in a transaction.
  Txn resign;
  resign.compare = {Compare::value_is("/leader", "b1")};
  resign.success = {Operation::remove("/leader")};
  REQUIRE(loop.await<TxnResult>([&](auto done) { c.txn(resign, done); })->succeeded);
  CHECK(loop.await<Range>([&](auto done) { c.get("/leader", false, done); })->kvs.empty());
}

TEST_CASE("a lease keeps its keys while kept alive; a revoked one answers TTL 0 and its keys are gone") {
  EtcdProcess etcd;
  REQUIRE(etcd.start().ok());
  Loop loop(options_for(etcd));
  Client& c = loop.client();

  // etcd raises a TTL below its minimum (2 s with a 1 s election timeout).
  auto lease = loop.await<Lease>([&](auto done) { c.grant(1, done); });
  REQUIRE_MESSAGE(lease.ok(), describe(lease));
  CHECK(lease->id != 0);
  CHECK(lease->ttl_s >= 2);
  REQUIRE(loop.await<std::int64_t>([&](auto done) { c.put("/members/b1", "here", lease->id, done); }).ok());
  auto member = loop.await<Range>([&](auto done) { c.get("/members/b1", false, done); });
  REQUIRE(member.ok());
  CHECK(member->kvs.at(0).lease == lease->id);

  auto ttl = loop.await<std::int64_t>([&](auto done) { c.keep_alive(lease->id, done); });
  REQUIRE_MESSAGE(ttl.ok(), describe(ttl));
  CHECK(*ttl == lease->ttl_s);

  REQUIRE(loop.await<void>([&](auto done) { c.revoke(lease->id, done); }).ok());
  // The gateway answers a keep-alive of a lease it no longer has with no TTL and no error.
  auto gone = loop.await<std::int64_t>([&](auto done) { c.keep_alive(lease->id, done); });
  REQUIRE_MESSAGE(gone.ok(), describe(gone));
  CHECK(*gone == 0);
  CHECK(loop.await<Range>([&](auto done) { c.get("/members/b1", false, done); })->kvs.empty());
  // Revoking it again is not an error: it is gone, as wanted.
  auto again = loop.await<void>([&](auto done) { c.revoke(lease->id, done); });
  CHECK_MESSAGE(again.ok(), describe(again));

  // A lease left alone expires on its own, and takes its keys with it.
  auto short_lived = loop.await<Lease>([&](auto done) { c.grant(2, done); });
  REQUIRE(short_lived.ok());
  REQUIRE(loop.await<std::int64_t>([&](auto done) { c.put("/members/b2", "x", short_lived->id, done); }).ok());
  // Polled every 100 ms for up to 15 s: TTL 2 s, plus etcd's expiry scan.
  bool expired = false;
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (!expired && std::chrono::steady_clock::now() < deadline) {
    auto r = loop.await<Range>([&](auto done) { c.get("/members/b2", false, done); });
    REQUIRE(r.ok());
    expired = r->kvs.empty();
    if (!expired) loop.run_until([] { return false; }, 100ms);
  }
  CHECK(expired);
}

TEST_CASE("a watch sees puts and deletes under its prefix, from a past revision too, until cancelled") {
  EtcdProcess etcd;
  REQUIRE(etcd.start().ok());
  Loop loop(options_for(etcd));
  Client& c = loop.client();

  auto first = loop.await<std::int64_t>([&](auto done) { c.put("/w/a", "1", 0, done); });
  REQUIRE(first.ok());

  std::vector<WatchEvent> seen;
  std::int64_t last_revision = 0;
  std::optional<txmq::Error> ended;
  auto id = c.watch(
      "/w/", true, *first,
      [&](std::vector<WatchEvent> events, std::int64_t revision) {
        for (auto& e : events) seen.push_back(std::move(e));
        last_revision = revision;
      },
      [&](txmq::Error e) { ended = std::move(e); });
  // From a past revision: the put before the watch arrives first.
  REQUIRE(loop.run_until([&] { return seen.size() >= 1; }));
  CHECK(seen[0].type == WatchEvent::Type::kPut);
  CHECK(seen[0].kv.key == "/w/a");
  CHECK(seen[0].kv.value == "1");

  REQUIRE(loop.await<std::int64_t>([&](auto done) { c.put("/other", "x", 0, done); }).ok());
  REQUIRE(loop.await<std::int64_t>([&](auto done) { c.put("/w/b", "2", 0, done); }).ok());
  Txn del;
  del.success = {Operation::remove("/w/a")};
  auto deleted = loop.await<TxnResult>([&](auto done) { c.txn(del, done); });
  REQUIRE(deleted.ok());
  REQUIRE(loop.run_until([&] { return seen.size() >= 3; }));
  CHECK(seen[1].kv.key == "/w/b");
  CHECK(seen[2].type == WatchEvent::Type::kDelete);
  CHECK(seen[2].kv.key == "/w/a");
  CHECK(seen[2].kv.mod_revision == deleted->revision);
  CHECK(last_revision == deleted->revision);

  // Cancelled: nothing more arrives, and on_end does not run.
  c.cancel_watch(id);
  REQUIRE(loop.await<std::int64_t>([&](auto done) { c.put("/w/c", "3", 0, done); }).ok());
  // A second watch proves the put was seen by etcd's watchers before the first is judged.
  std::size_t second_seen = 0;
  c.watch("/w/", true, last_revision + 1, [&](std::vector<WatchEvent> e, std::int64_t) { second_seen += e.size(); },
          [](txmq::Error) {});
  REQUIRE(loop.run_until([&] { return second_seen >= 1; }));
  CHECK(seen.size() == 3);
  CHECK_FALSE(ended.has_value());
}

TEST_CASE("a watch's own callback may cancel it, and a watch ends when etcd is killed") {
  EtcdProcess etcd;
  REQUIRE(etcd.start().ok());
  Loop loop(options_for(etcd));
  Client& c = loop.client();

  int calls = 0;
  Client::WatchId self = 0;
  self = c.watch("/k", false, 0, [&](std::vector<WatchEvent>, std::int64_t) {
    ++calls;
    c.cancel_watch(self);
  }, [](txmq::Error) { FAIL("a cancelled watch's on_end ran"); });
  std::optional<txmq::Error> ended;
  c.watch("/k", false, 0, [](std::vector<WatchEvent>, std::int64_t) {}, [&](txmq::Error e) { ended = std::move(e); });
  // The watches are created asynchronously: put (every 50 ms, for up to 10 s) until the
  // first one has seen a put.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (calls == 0 && std::chrono::steady_clock::now() < deadline) {
    REQUIRE(loop.await<std::int64_t>([&](auto done) { c.put("/k", "v", 0, done); }).ok());
    loop.run_until([&] { return calls > 0; }, 50ms);
  }
  REQUIRE(calls == 1);
  REQUIRE(loop.await<std::int64_t>([&](auto done) { c.put("/k", "again", 0, done); }).ok());
  REQUIRE(loop.await<std::int64_t>([&](auto done) { c.put("/k", "and again", 0, done); }).ok());
  CHECK(calls == 1);

  etcd.kill9();
  REQUIRE(loop.run_until([&] { return ended.has_value(); }));
  CHECK(ended->message.find(etcd.endpoint()) != std::string::npos);
  // With etcd gone, a call fails fast and says nothing was done.
  auto refused = loop.await<std::int64_t>([&](auto done) { c.put("/k", "v", 0, done); });
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::kNotConnected);
}

TEST_CASE("calls move past an endpoint that refuses connections, and time out on a frozen etcd") {
  EtcdProcess etcd;
  REQUIRE(etcd.start().ok());
  txmq::test::ClosedPort closed;
  ClientOptions o;
  o.endpoints = {"http://127.0.0.1:" + std::to_string(closed.port()), etcd.endpoint()};
  o.timeout = 500ms;
  Loop loop(o);
  Client& c = loop.client();

  auto put = loop.await<std::int64_t>([&](auto done) { c.put("/e", "1", 0, done); });
  REQUIRE_MESSAGE(put.ok(), describe(put));
  CHECK(c.endpoint() == etcd.endpoint());

  REQUIRE(etcd.stop());
  const auto started = std::chrono::steady_clock::now();
  auto frozen = loop.await<std::int64_t>([&](auto done) { c.put("/e", "2", 0, done); });
  const auto took = std::chrono::steady_clock::now() - started;
  REQUIRE_FALSE(frozen.ok());
  // Sent and unanswered: it may have been done, so it is not resent elsewhere.
  CHECK(frozen.error().code == ErrorCode::kTimeout);
  CHECK(took < 5s);
  etcd.resume();
  // The next call goes to the next endpoint (the refusing one), then back to etcd.
  auto after = loop.await<std::int64_t>([&](auto done) { c.put("/e", "3", 0, done); });
  CHECK_MESSAGE(after.ok(), describe(after));
  CHECK(c.endpoint() == etcd.endpoint());
}

TEST_CASE("a request etcd refuses as too large gets a clear error, and the client carries on") {
  EtcdProcess etcd;
  REQUIRE(etcd.start().ok());
  Loop loop(options_for(etcd));
  Client& c = loop.client();
  // Over the gateway's 2 MiB limit for one message (etcd's own is 1.5 MiB).
  auto huge = loop.await<std::int64_t>([&](auto done) { c.put("/big", std::string(2 * 1024 * 1024, 'x'), 0, done); });
  REQUIRE_FALSE(huge.ok());
  CHECK_MESSAGE(huge.error().message.find("larger than max") != std::string::npos, huge.error().message);
  auto small = loop.await<std::int64_t>([&](auto done) { c.put("/small", "x", 0, done); });
  CHECK_MESSAGE(small.ok(), describe(small));
}
