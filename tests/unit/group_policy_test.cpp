// broker/group_policy: retry delays, validation, and how overrides layer and persist.

#include "broker/group_policy.h"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

using namespace txmq;
using namespace txmq::broker;

namespace {

std::vector<std::uint64_t> delays(const RetrySchedule& r, std::uint32_t upto) {
  std::mt19937_64 rng(1);
  std::vector<std::uint64_t> out;
  for (std::uint32_t d = 1; d <= upto; ++d) out.push_back(r.delay_ms(d, rng));
  return out;
}

RetrySchedule exponential(std::uint64_t initial, double factor, std::uint64_t max) {
  RetrySchedule r;
  r.delays_ms.clear();
  r.exponential_initial_ms = initial;
  r.exponential_factor = factor;
  r.exponential_max_ms = max;
  return r;
}

// A ConfigureGroup request as a client sends it.
struct ConfigureRequest {
  flatbuffers::FlatBufferBuilder fbb;
  const wire::ConfigureGroup* req = nullptr;
};

void build(ConfigureRequest& out, std::optional<wire::GroupMode> mode, std::uint64_t ack_wait_ms,
           std::function<flatbuffers::Offset<wire::RetryPolicy>(flatbuffers::FlatBufferBuilder&)> retry) {
  auto r = retry ? retry(out.fbb) : flatbuffers::Offset<wire::RetryPolicy>();
  out.fbb.Finish(wire::CreateConfigureGroup(out.fbb, out.fbb.CreateString("g"), out.fbb.CreateString("t"),
                                            mode.value_or(wire::GroupMode::Shared), mode.has_value(), ack_wait_ms, r));
  out.req = flatbuffers::GetRoot<wire::ConfigureGroup>(out.fbb.GetBufferPointer());
}

}  // namespace

// --- Delays ---------------------------------------------------------------------------

TEST_CASE("the default schedule is RocketMQ's levels, the last repeating") {
  RetrySchedule r;
  CHECK(r.max_deliveries == 16);
  auto d = delays(r, 20);
  CHECK(d[0] == 1000);
  CHECK(d[1] == 5000);
  CHECK(d[17] == 7200000);
  CHECK(d[18] == 7200000);
  CHECK(d[19] == 7200000);
}

TEST_CASE("the n-th failure waits the n-th delay") {
  RetrySchedule r;
  r.delays_ms = {10, 20, 30};
  CHECK(delays(r, 5) == std::vector<std::uint64_t>{10, 20, 30, 30, 30});
  std::mt19937_64 rng(1);
  CHECK(r.delay_ms(0, rng) == 10);  // a redriven message (no deliveries yet) waits the first
}

TEST_CASE("an exponential schedule multiplies up to its maximum") {
  CHECK(delays(exponential(100, 2.0, 1000), 6) == std::vector<std::uint64_t>{100, 200, 400, 800, 1000, 1000});
  CHECK(delays(exponential(50, 1.0, 1000), 3) == std::vector<std::uint64_t>{50, 50, 50});
}

TEST_CASE("jitter varies each delay within its bounds") {
  RetrySchedule r;
  r.delays_ms = {1000};
  r.jitter = 0.2;
  std::mt19937_64 rng(42);
  std::uint64_t lo = UINT64_MAX, hi = 0;
  for (int i = 0; i < 1000; ++i) {
    std::uint64_t d = r.delay_ms(1, rng);
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  CHECK(lo >= 800);
  CHECK(hi <= 1200);
  CHECK(hi - lo > 200);  // it does vary
}

// --- Validation -----------------------------------------------------------------------

TEST_CASE("the default schedule is valid") { CHECK(validate(RetrySchedule{}).empty()); }

TEST_CASE("validate refuses schedules that cannot work") {
  RetrySchedule r;
  r.max_deliveries = 0;
  CHECK(validate(r) == "max_deliveries must be at least 1");

  r = RetrySchedule{};
  r.jitter = 1.0;
  CHECK(validate(r) == "jitter must be in [0, 1)");
  r.jitter = -0.1;
  CHECK(validate(r) == "jitter must be in [0, 1)");
  r.jitter = 0.99;
  CHECK(validate(r).empty());

  CHECK(validate(exponential(100, 0.5, 1000)) == "the exponential factor must be at least 1");
  CHECK(validate(exponential(100, 2.0, 99)) == "the exponential maximum is below its initial delay");
  CHECK(validate(exponential(100, 1.0, 100)).empty());

  r = RetrySchedule{};
  r.delays_ms.assign(64, 1);
  CHECK(validate(r).empty());
  r.delays_ms.assign(65, 1);
  CHECK(validate(r) == "at most 64 delays");
}

TEST_CASE("the exponential fields are not checked while delays are listed") {
  RetrySchedule r;
  r.exponential_factor = 0.5;
  CHECK(validate(r).empty());
}

// --- Layering -------------------------------------------------------------------------

TEST_CASE("an empty override leaves the defaults") {
  GroupPolicy policy;
  PolicyOverride{}.apply_to(policy);
  CHECK(policy.mode == wire::GroupMode::Shared);
  CHECK(policy.ack_wait == std::chrono::milliseconds(30000));
  CHECK(policy.retry.max_deliveries == 16);
}

TEST_CASE("a group's override wins over its topic's, field by field") {
  PolicyOverride topic_default;
  topic_default.mode = wire::GroupMode::Ordered;
  topic_default.ack_wait = std::chrono::milliseconds(5000);
  PolicyOverride group_own;
  group_own.ack_wait = std::chrono::milliseconds(2000);
  RetrySchedule retry;
  retry.max_deliveries = 4;
  group_own.retry = retry;
  PolicyTable table;
  // Set in the other order than they apply: the layering is by kind, not by arrival.
  table.set(PolicyTable::key("billing", "orders"), group_own);
  table.set(PolicyTable::key("", "orders"), topic_default);

  GroupPolicy policy = table.effective("billing", "orders");
  CHECK(policy.mode == wire::GroupMode::Ordered);  // only the topic set it
  CHECK(policy.ack_wait == std::chrono::milliseconds(2000));
  CHECK(policy.retry.max_deliveries == 4);

  // Another group on the topic gets the topic's default only; the group elsewhere, its own.
  GroupPolicy other = table.effective("audit", "orders");
  CHECK(other.mode == wire::GroupMode::Ordered);
  CHECK(other.ack_wait == std::chrono::milliseconds(5000));
  CHECK(other.retry.max_deliveries == 16);
  GroupPolicy elsewhere = table.effective("billing", "refunds");
  CHECK(elsewhere.mode == wire::GroupMode::Shared);
  CHECK(elsewhere.ack_wait == std::chrono::milliseconds(2000));
}

TEST_CASE("a group and a topic of the same name keep separate overrides") {
  PolicyTable table;
  PolicyOverride as_topic;
  as_topic.ack_wait = std::chrono::milliseconds(1000);
  table.set(PolicyTable::key("", "orders"), as_topic);
  CHECK(PolicyTable::key("orders", "x") != PolicyTable::key("", "orders"));
  CHECK_FALSE(table.at(PolicyTable::key("orders", "x")).ack_wait.has_value());
  CHECK(table.effective("orders", "x").ack_wait == std::chrono::milliseconds(30000));
}

TEST_CASE("merging keeps older fields the newer change does not set") {
  PolicyOverride stored;
  stored.mode = wire::GroupMode::Ordered;
  stored.ack_wait = std::chrono::milliseconds(5000);
  PolicyOverride change;
  change.ack_wait = std::chrono::milliseconds(100);
  stored.merge(change);
  CHECK(stored.mode == wire::GroupMode::Ordered);
  CHECK(stored.ack_wait == std::chrono::milliseconds(100));
  CHECK_FALSE(stored.retry.has_value());

  PolicyOverride mode_back;
  mode_back.mode = wire::GroupMode::Shared;
  stored.merge(mode_back);
  CHECK(stored.mode == wire::GroupMode::Shared);
  CHECK(stored.ack_wait == std::chrono::milliseconds(100));
}

// --- Records and requests -------------------------------------------------------------

TEST_CASE("an override survives its record, absent fields included") {
  PolicyOverride in;
  in.mode = wire::GroupMode::Ordered;
  in.retry = exponential(250, 3.0, 9000);
  in.retry->max_deliveries = 7;
  in.retry->jitter = 0.25;
  auto bytes = in.to_record();
  auto out = PolicyOverride::from_record(bytes);
  REQUIRE(out.has_value());
  CHECK(out->mode == wire::GroupMode::Ordered);
  CHECK_FALSE(out->ack_wait.has_value());
  REQUIRE(out->retry.has_value());
  CHECK(out->retry->max_deliveries == 7);
  CHECK(out->retry->delays_ms.empty());
  CHECK(out->retry->exponential_initial_ms == 250);
  CHECK(out->retry->exponential_factor == 3.0);
  CHECK(out->retry->exponential_max_ms == 9000);
  CHECK(out->retry->jitter == 0.25);

  PolicyOverride only_wait;
  only_wait.ack_wait = std::chrono::milliseconds(1234);
  auto back = PolicyOverride::from_record(only_wait.to_record());
  REQUIRE(back.has_value());
  CHECK_FALSE(back->mode.has_value());
  CHECK(back->ack_wait == std::chrono::milliseconds(1234));
  CHECK_FALSE(back->retry.has_value());
}

TEST_CASE("a listed schedule survives its record") {
  PolicyOverride in;
  RetrySchedule r;
  r.delays_ms = {5, 6, 7};
  in.retry = r;
  auto out = PolicyOverride::from_record(in.to_record());
  REQUIRE(out.has_value());
  REQUIRE(out->retry.has_value());
  CHECK(out->retry->delays_ms == std::vector<std::uint64_t>{5, 6, 7});
}

TEST_CASE("a damaged record is refused") {
  std::vector<std::uint8_t> junk = {1, 2, 3};
  CHECK_FALSE(PolicyOverride::from_record(junk).has_value());
  PolicyOverride in;
  in.mode = wire::GroupMode::Ordered;
  auto bytes = in.to_record();
  bytes.resize(bytes.size() / 2);
  CHECK_FALSE(PolicyOverride::from_record(bytes).has_value());
}

TEST_CASE("a request sets only what it names") {
  ConfigureRequest r;
  build(r, std::nullopt, 0, nullptr);
  PolicyOverride none = PolicyOverride::from_wire(*r.req);
  CHECK_FALSE(none.mode.has_value());
  CHECK_FALSE(none.ack_wait.has_value());
  CHECK_FALSE(none.retry.has_value());

  ConfigureRequest m;
  build(m, wire::GroupMode::Ordered, 700, nullptr);
  PolicyOverride some = PolicyOverride::from_wire(*m.req);
  CHECK(some.mode == wire::GroupMode::Ordered);
  CHECK(some.ack_wait == std::chrono::milliseconds(700));
  CHECK_FALSE(some.retry.has_value());
}

TEST_CASE("a request's retry is a list of delays, else exponential with defaults for what it leaves out") {
  ConfigureRequest listed;
  build(listed, std::nullopt, 0, [](flatbuffers::FlatBufferBuilder& fbb) {
    return wire::CreateRetryPolicy(fbb, 5, fbb.CreateVector(std::vector<std::uint64_t>{1, 2}), 100, 3.0, 900, 0.1);
  });
  PolicyOverride a = PolicyOverride::from_wire(*listed.req);
  REQUIRE(a.retry.has_value());
  CHECK(a.retry->max_deliveries == 5);
  CHECK(a.retry->delays_ms == std::vector<std::uint64_t>{1, 2});
  CHECK(a.retry->jitter == 0.1);

  ConfigureRequest exp;
  build(exp, std::nullopt, 0, [](flatbuffers::FlatBufferBuilder& fbb) {
    return wire::CreateRetryPolicy(fbb, 3, 0, 100, 0.0, 0, 0.0);
  });
  PolicyOverride b = PolicyOverride::from_wire(*exp.req);
  REQUIRE(b.retry.has_value());
  CHECK(b.retry->delays_ms.empty());
  CHECK(b.retry->exponential_initial_ms == 100);
  CHECK(b.retry->exponential_factor == 2.0);        // 0: the default factor
  CHECK(b.retry->exponential_max_ms == 3600000);    // 0: the default maximum
  CHECK(validate(*b.retry).empty());

  ConfigureRequest zero;
  build(zero, std::nullopt, 0, [](flatbuffers::FlatBufferBuilder& fbb) {
    return wire::CreateRetryPolicy(fbb, 0);
  });
  PolicyOverride c = PolicyOverride::from_wire(*zero.req);
  REQUIRE(c.retry.has_value());
  CHECK(c.retry->delays_ms == RetrySchedule{}.delays_ms);  // neither given: the default levels
  CHECK_FALSE(validate(*c.retry).empty());                 // and max_deliveries 0 is refused
}
