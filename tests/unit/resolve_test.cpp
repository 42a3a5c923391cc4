// common/resolve: host names to addresses on a libuv loop.

#include "common/resolve.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using txmq::ErrorCode;
using txmq::Result;
using txmq::common::Addresses;
using txmq::common::HostPort;

namespace {

// Runs one asynchronous resolution to its end; the loop must close cleanly afterwards.
Result<Addresses> resolve_on_a_loop(const HostPort& hp) {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  int calls = 0;
  Result<Addresses> out = txmq::Error(ErrorCode::kInternal, "no callback");
  txmq::common::resolve_async(&loop, hp, [&](Result<Addresses> r) {
    ++calls;
    out = std::move(r);
  });
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(calls == 1);
  CHECK(uv_loop_close(&loop) == 0);
  return out;
}

// The error's message for doctest, or "ok" (a message is built even when the check passes).
std::string why(const Result<Addresses>& r) { return r.ok() ? "ok" : r.error().message; }

std::vector<std::string> texts(const Addresses& addresses) {
  std::vector<std::string> out;
  for (const auto& a : addresses) out.push_back(txmq::common::address_text(a));
  return out;
}

}  // namespace

TEST_CASE("localhost resolves to loopback addresses with the port") {
  auto r = resolve_on_a_loop({"localhost", 7411});
  REQUIRE_MESSAGE(r.ok(), why(r));
  REQUIRE_FALSE(r->empty());
  for (const auto& a : *r) {
    auto hp = txmq::common::host_port_of(a);
    CAPTURE(hp.to_string());
    CHECK(txmq::common::is_loopback_ip(hp.host));
    CHECK(hp.port == 7411);
  }
}

TEST_CASE("an IP literal resolves to itself, IPv6 included") {
  auto v6 = resolve_on_a_loop({"::1", 0});
  REQUIRE_MESSAGE(v6.ok(), why(v6));
  CHECK(texts(*v6) == std::vector<std::string>{"[::1]:0"});
  auto v4 = resolve_on_a_loop({"127.0.0.1", 65535});
  REQUIRE_MESSAGE(v4.ok(), why(v4));
  CHECK(texts(*v4) == std::vector<std::string>{"127.0.0.1:65535"});
}

TEST_CASE("a name that does not resolve fails naming it and saying why") {
  auto r = resolve_on_a_loop({"no-such-host.invalid", 7411});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kNotConnected);
  CHECK(r.error().retryable());
  CAPTURE(r.error().message);
  CHECK(r.error().message.find("cannot resolve 'no-such-host.invalid': ") == 0);
  CHECK(r.error().message.size() > std::string("cannot resolve 'no-such-host.invalid': ").size());
}

TEST_CASE("a cancelled resolution never calls back and the loop closes cleanly") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  int calls = 0;
  auto* r = txmq::common::resolve_async(&loop, {"localhost", 1}, [&](Result<Addresses>) { ++calls; });
  txmq::common::cancel_resolve(r);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(calls == 0);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("resolve_now answers on the calling thread") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  auto ok = txmq::common::resolve_now(&loop, {"::1", 80});
  REQUIRE_MESSAGE(ok.ok(), why(ok));
  CHECK(texts(*ok) == std::vector<std::string>{"[::1]:80"});
  auto bad = txmq::common::resolve_now(&loop, {"no-such-host.invalid", 80});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("no-such-host.invalid") != std::string::npos);
  CHECK(uv_loop_close(&loop) == 0);
}
