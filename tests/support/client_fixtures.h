// What the integration tests that drive the real broker through the C++ client share: how
// long they wait, and the set-up steps every one of them takes (client options, a started
// broker, a topic, a group's configuration).
//
// Everything here REQUIREs on failure, so call it from the test's own thread.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/broker_process.h"
#include "txmq/client.h"

namespace doctest {
template <>
struct StringMaker<txmq::ErrorCode> {
  static String convert(txmq::ErrorCode code) { return String(std::string(txmq::code_name(code)).c_str()); }
};
}  // namespace doctest

namespace txmq::test {

// How long a test waits for something that must happen. Generous: Debug+ASan on 2 cores.
inline constexpr client::Millis kWait{10'000};
// How long a test watches for something that must not happen.
inline constexpr client::Millis kQuiet{300};
// The broker times in whole wall-clock milliseconds, the test in steady nanoseconds: a
// redelivery may look this much early without being early.
inline constexpr client::Millis kEarly{5};

template <typename T>
std::string describe(const Result<T>& r) {
  return r.ok() ? "ok" : r.error().describe();
}

inline client::Millis ms_between(std::chrono::steady_clock::time_point from,
                                 std::chrono::steady_clock::time_point to) {
  return std::chrono::duration_cast<client::Millis>(to - from);
}

// Wall-clock milliseconds since the epoch, the clock of the txmq-*-ms headers.
inline std::uint64_t wall_ms() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<client::Millis>(std::chrono::system_clock::now().time_since_epoch()).count());
}

// Quick reconnects, so that tests which restart the broker do not wait on back-off.
inline client::ClientOptions client_options(const std::string& address) {
  client::ClientOptions o;
  o.broker = address;
  o.client_name = "integration-test";
  o.request_timeout = kWait;
  o.reconnect_initial = client::Millis(20);
  o.reconnect_max = client::Millis(200);
  return o;
}

inline client::Producer::Options producer_options(const std::string& address) {
  client::Producer::Options o;
  static_cast<client::ClientOptions&>(o) = client_options(address);
  return o;
}

inline void start(BrokerProcess& broker) {
  auto st = broker.start();
  REQUIRE_MESSAGE(st.ok(), describe(st));
}

inline void create_topic(const std::string& address, const std::string& name, client::TopicOptions options) {
  client::Admin admin(client_options(address));
  auto r = admin.create_topic(name, options, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
}

inline void create_topic(const std::string& address, const std::string& name, std::uint32_t partitions = 1) {
  client::Admin admin(client_options(address));
  auto r = admin.create_topic(name, partitions, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
}

inline client::RetrySchedule schedule(std::vector<client::Millis> delays, std::uint32_t max_deliveries = 16) {
  client::RetrySchedule r;
  r.delays = std::move(delays);
  r.max_deliveries = max_deliveries;
  return r;
}

inline client::GroupInfo configure(const std::string& address, const std::string& group,
                                   const client::GroupConfig& config) {
  client::Admin admin(client_options(address));
  auto r = admin.configure_group(group, "", config, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  return *r;
}

// The group's description on one topic; nullopt when the broker does not list it.
inline std::optional<client::GroupInfo> group_on(client::Admin& admin, const std::string& group,
                                                 const std::string& topic) {
  auto r = admin.describe_groups(group, kWait);
  if (!r.ok()) return std::nullopt;
  for (const auto& g : *r)
    if (g.group == group && g.topic == topic) return g;
  return std::nullopt;
}

}  // namespace txmq::test
