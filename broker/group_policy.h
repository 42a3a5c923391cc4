#pragma once
// How a consumer group delivers and retries: its mode, lease length and retry schedule.
// A group's own policy wins; else its topic's default; else the broker's defaults below.

#include <chrono>
#include <functional>
#include <map>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "txmq_generated.h"

namespace txmq::broker {

struct RetrySchedule {
  std::uint32_t max_deliveries = 16;  // past it: dead letter
  // One delay per retry, the last repeating; RocketMQ's levels by default. When empty the
  // exponential fields apply.
  std::vector<std::uint64_t> delays_ms = {1000,   5000,   10000,  30000,  60000,   120000,
                                          180000, 240000, 300000, 360000, 420000,  480000,
                                          540000, 600000, 1200000, 1800000, 3600000, 7200000};
  std::uint64_t exponential_initial_ms = 1000;
  double exponential_factor = 2.0;
  std::uint64_t exponential_max_ms = 3600000;
  double jitter = 0.0;  // 0.2: each delay is varied by up to +-20%

  // The delay before the next delivery of a message that has been delivered `deliveries`
  // times and failed each time.
  std::uint64_t delay_ms(std::uint32_t deliveries, std::mt19937_64& rng) const;
};

struct GroupPolicy {
  wire::GroupMode mode = wire::GroupMode::Shared;
  std::chrono::milliseconds ack_wait{30000};
  RetrySchedule retry;
};

// What one ConfigureGroup or stored PolicyRecord says; absent fields defer to the next
// level.
struct PolicyOverride {
  std::optional<wire::GroupMode> mode;
  std::optional<std::chrono::milliseconds> ack_wait;
  std::optional<RetrySchedule> retry;

  void apply_to(GroupPolicy& policy) const;
  void merge(const PolicyOverride& newer);  // newer's present fields win
  std::vector<std::uint8_t> to_record() const;
  static std::optional<PolicyOverride> from_record(std::span<const std::uint8_t> bytes);
  static PolicyOverride from_wire(const wire::ConfigureGroup& req);
};

// Every stored override, keyed as the policies key space keys them (storage/layout.h): a
// topic's default for the groups that consume it, and a group's own, on every topic. A
// group's policy on a topic is the defaults, then the topic's override, then the group's.
// Loop thread (ConsumerGroups owns it).
class PolicyTable {
 public:
  static std::string topic_key(std::string_view topic) { return "t:" + std::string(topic); }
  static std::string group_key(std::string_view group) { return "g:" + std::string(group); }
  // The key an override applies to: the group's, or with no group the topic's default.
  static std::string key(std::string_view group, std::string_view topic) {
    return group.empty() ? topic_key(topic) : group_key(group);
  }

  GroupPolicy effective(std::string_view group, std::string_view topic) const;
  // The stored override under key, or an empty one.
  PolicyOverride at(std::string_view key) const;
  void set(std::string key, PolicyOverride policy) { by_key_[std::move(key)] = std::move(policy); }

 private:
  std::map<std::string, PolicyOverride, std::less<>> by_key_;
};

// Checks a schedule: kInvalidArgument text, or empty when valid.
std::string validate(const RetrySchedule& retry);

}  // namespace txmq::broker
