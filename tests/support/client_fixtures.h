// What the integration tests that drive the real broker through the C++ client share: how
// long they wait, and the set-up steps every one of them takes (client options, a started
// broker, a topic, messages sent, a group's configuration).
//
// Everything here REQUIREs on failure, so call it from the test's own thread.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <mutex>
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
template <>
struct StringMaker<txmq::client::TxnState> {
  static String convert(txmq::client::TxnState s) {
    switch (s) {
      case txmq::client::TxnState::kPrepared: return "kPrepared";
      case txmq::client::TxnState::kCommitted: return "kCommitted";
      case txmq::client::TxnState::kRolledBack: return "kRolledBack";
      case txmq::client::TxnState::kParked: return "kParked";
    }
    return "?";
  }
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

// The same with idempotence on; `brokers` may be a list (follow the leader).
inline client::Producer::Options idempotent_producer_options(const std::string& brokers) {
  auto o = producer_options(brokers);
  o.idempotent = true;
  return o;
}

// Options for a broker on a data directory that outlives it (a TempDir of the test), so
// that a restart or a second broker finds the same store; listening on `listen`.
inline BrokerOptions on_data_dir(const std::string& dir, const std::string& listen = "127.0.0.1:0") {
  BrokerOptions o;
  o.data_dir = dir;
  o.listen = listen;
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

// A message with this body (and key), for the broker to place.
inline client::Message text(std::string body, std::string key = {}) {
  client::Message m;
  m.body = std::move(body);
  m.key = std::move(key);
  return m;
}

// prefix0, prefix1, ..., prefix<n-1>.
inline std::vector<std::string> numbered(const std::string& prefix, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

// Sends one message and waits for its confirm; REQUIREs that it was confirmed.
inline client::SendReceipt produce_one(const std::string& address, const std::string& topic, client::Message m) {
  client::Producer producer(producer_options(address));
  auto r = producer.send(topic, std::move(m), kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  return *r;
}

// Sends each body with one producer, pipelined, and waits for every confirm; returns the
// receipts in send order. REQUIREs that every send was confirmed.
inline std::vector<client::SendReceipt> produce_all(const std::string& address, const std::string& topic,
                                                    const std::vector<std::string>& bodies) {
  // Declared before the producer, whose destructor may still run callbacks.
  std::mutex mu;
  std::vector<Result<client::SendReceipt>> results(bodies.size(), Error(ErrorCode::kInternal, "no callback"));
  client::Producer producer(producer_options(address));
  for (std::size_t i = 0; i < bodies.size(); ++i)
    producer.send_async(topic, text(bodies[i]), [&mu, &results, i](const Result<client::SendReceipt>& r) {
      std::lock_guard lock(mu);
      results[i] = r;
    });
  auto st = producer.flush(kWait);
  REQUIRE_MESSAGE(st.ok(), describe(st));
  std::lock_guard lock(mu);
  std::vector<client::SendReceipt> receipts;
  for (const auto& r : results) {
    REQUIRE_MESSAGE(r.ok(), describe(r));
    receipts.push_back(*r);
  }
  return receipts;
}

// Every body stored in partition 0 of a topic, in offset order.
inline std::vector<std::string> stored_bodies(const std::string& address, const std::string& topic) {
  client::Admin admin(client_options(address));
  std::vector<std::string> out;
  for (std::uint64_t offset = 0;;) {
    auto batch = admin.fetch(topic, 0, offset, 500, kWait);
    REQUIRE_MESSAGE(batch.ok(), describe(batch));
    if (batch->empty()) return out;
    for (const auto& d : *batch) {
      out.push_back(d.body);
      offset = d.offset + 1;
    }
  }
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
