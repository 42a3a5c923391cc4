#include <doctest/doctest.h>

#include "notifier/attempt_log.h"
#include "notifier/breaker.h"
#include "notifier/outcome.h"

using namespace txmq::notifier;
using std::chrono::milliseconds;

TEST_CASE("an attempt entry reads back as written, error text included") {
  AttemptRecord a{3, 1764000000000, 15000, "timeout", 0, "Operation timed out after 15000 ms = x"};
  auto back = parse_attempt(format_attempt(a));
  REQUIRE(back.has_value());
  CHECK(back->attempt == 3);
  CHECK(back->at_ms == 1764000000000);
  CHECK(back->duration_ms == 15000);
  CHECK(back->outcome == "timeout");
  CHECK(back->status == 0);
  CHECK(back->error == a.error);
  AttemptRecord b{1, 5, 2, "server_error", 503, ""};
  CHECK(parse_attempt(format_attempt(b))->status == 503);
  CHECK_FALSE(parse_attempt("lease expired").has_value());
}

TEST_CASE("deferrals are counted from the last deferral entry") {
  CHECK(deferrals({}) == 0);
  CHECK(deferrals({"attempt=1 at_ms=1 duration_ms=1 outcome=timeout", format_deferral(1, "circuit_open"),
                   "lease expired", format_deferral(2, "stopping"), "attempt=2 at_ms=2 duration_ms=1 outcome=gone"}) ==
        2);
}

TEST_CASE("responses are classified as the issue's outcomes") {
  SubscriptionConfig c;
  auto with = [](long status) {
    txmq::http::HttpResponse r;
    r.status = status;
    return r;
  };
  CHECK(classify(with(200), c) == Outcome::kSuccess);
  CHECK(classify(with(204), c) == Outcome::kSuccess);
  CHECK(classify(with(500), c) == Outcome::kServerError);
  CHECK(classify(with(429), c) == Outcome::kThrottled);
  CHECK(classify(with(408), c) == Outcome::kThrottled);
  CHECK(classify(with(404), c) == Outcome::kClientError);
  CHECK(classify(with(302), c) == Outcome::kClientError);  // redirects are not followed
  CHECK(classify(with(410), c) == Outcome::kGone);
  txmq::http::HttpResponse timeout;
  timeout.timed_out = true;
  CHECK(classify(timeout, c) == Outcome::kTimeout);
  CHECK(classify(txmq::http::HttpResponse{}, c) == Outcome::kConnectionError);
  c.success_body = "success";
  auto body = with(200);
  body.body = "success\r\n";
  CHECK(classify(body, c) == Outcome::kSuccess);
  body.body = "fail";
  CHECK(classify(body, c) == Outcome::kWrongBody);
  CHECK(endpoint_failure(Outcome::kTimeout));
  CHECK_FALSE(endpoint_failure(Outcome::kClientError));
}

TEST_CASE("the schedule gives the delay per attempt, its last entry repeating, within the jitter") {
  SubscriptionConfig c;
  c.schedule = {milliseconds(100), milliseconds(1000)};
  c.jitter = 0;
  std::mt19937_64 rng(1);
  CHECK(retry_delay(c, 1, std::nullopt, rng) == milliseconds(100));
  CHECK(retry_delay(c, 2, std::nullopt, rng) == milliseconds(1000));
  CHECK(retry_delay(c, 9, std::nullopt, rng) == milliseconds(1000));
  c.jitter = 0.2;
  for (int i = 0; i < 100; ++i) {
    auto d = retry_delay(c, 2, std::nullopt, rng);
    CHECK(d >= milliseconds(800));
    CHECK(d <= milliseconds(1200));
  }
}

TEST_CASE("Retry-After lengthens a delay up to the bound, never shortens it") {
  SubscriptionConfig c;
  c.schedule = {milliseconds(5000)};
  c.jitter = 0;
  c.max_retry_after = milliseconds(60000);
  std::mt19937_64 rng(1);
  CHECK(retry_delay(c, 1, milliseconds(1000), rng) == milliseconds(5000));
  CHECK(retry_delay(c, 1, milliseconds(30000), rng) == milliseconds(30000));
  CHECK(retry_delay(c, 1, milliseconds(999999), rng) == milliseconds(60000));
  CHECK(parse_retry_after("120", 0) == milliseconds(120000));
  CHECK(parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40) == milliseconds(60000));
  CHECK_FALSE(parse_retry_after("soon", 0).has_value());
  CHECK_FALSE(parse_retry_after("", 0).has_value());
}

TEST_CASE("the breaker opens after a run of failures, lets one probe through, and closes on its success") {
  CircuitBreaker b(3, 1000);
  CHECK(b.allow(0));
  CHECK_FALSE(b.on_failure(0));
  CHECK_FALSE(b.on_success());  // a success resets the run
  CHECK_FALSE(b.on_failure(1));
  CHECK_FALSE(b.on_failure(2));
  CHECK(b.on_failure(3));
  CHECK(b.state() == CircuitBreaker::State::kOpen);
  CHECK_FALSE(b.allow(500));
  CHECK(b.allow(1003));  // the probe
  CHECK(b.state() == CircuitBreaker::State::kHalfOpen);
  CHECK_FALSE(b.allow(1004));  // one at a time
  CHECK(b.on_failure(1100));   // the probe failed: open again
  CHECK_FALSE(b.allow(2000));
  CHECK(b.allow(2100));
  CHECK(b.on_success());
  CHECK(b.state() == CircuitBreaker::State::kClosed);
  CHECK(b.allow(2101));
  CHECK(b.allow(2101));
}
