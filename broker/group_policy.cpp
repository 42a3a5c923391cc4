#include "broker/group_policy.h"

#include <algorithm>
#include <cmath>

#include "storage_generated.h"

namespace txmq::broker {

std::uint64_t RetrySchedule::delay_ms(std::uint32_t deliveries, std::mt19937_64& rng) const {
  double base;
  if (!delays_ms.empty()) {
    std::size_t i = std::min<std::size_t>(deliveries == 0 ? 0 : deliveries - 1, delays_ms.size() - 1);
    base = static_cast<double>(delays_ms[i]);
  } else {
    double exp = static_cast<double>(exponential_initial_ms) *
                 std::pow(exponential_factor, static_cast<double>(deliveries == 0 ? 0 : deliveries - 1));
    base = std::min(exp, static_cast<double>(exponential_max_ms));
  }
  if (jitter > 0) base *= std::uniform_real_distribution<double>(1 - jitter, 1 + jitter)(rng);
  return static_cast<std::uint64_t>(std::max(0.0, base));
}

std::string validate(const RetrySchedule& r) {
  if (r.max_deliveries == 0) return "max_deliveries must be at least 1";
  if (r.jitter < 0 || r.jitter >= 1) return "jitter must be in [0, 1)";
  if (r.delays_ms.empty()) {
    if (r.exponential_factor < 1) return "the exponential factor must be at least 1";
    if (r.exponential_max_ms < r.exponential_initial_ms) return "the exponential maximum is below its initial delay";
  }
  if (r.delays_ms.size() > 64) return "at most 64 delays";
  return {};
}

void PolicyOverride::apply_to(GroupPolicy& policy) const {
  if (mode) policy.mode = *mode;
  if (ack_wait) policy.ack_wait = *ack_wait;
  if (retry) policy.retry = *retry;
}

GroupPolicy PolicyTable::effective(std::string_view group, std::string_view topic) const {
  GroupPolicy policy;
  if (auto it = by_key_.find(topic_key(topic)); it != by_key_.end()) it->second.apply_to(policy);
  if (auto it = by_key_.find(group_key(group)); it != by_key_.end()) it->second.apply_to(policy);
  return policy;
}

PolicyOverride PolicyTable::at(std::string_view key) const {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? PolicyOverride{} : it->second;
}

void PolicyOverride::merge(const PolicyOverride& newer) {
  if (newer.mode) mode = newer.mode;
  if (newer.ack_wait) ack_wait = newer.ack_wait;
  if (newer.retry) retry = newer.retry;
}

std::vector<std::uint8_t> PolicyOverride::to_record() const {
  flatbuffers::FlatBufferBuilder fbb(256);
  RetrySchedule r = retry.value_or(RetrySchedule{});
  auto delays = fbb.CreateVector(r.delays_ms);
  fbb.Finish(storage::CreatePolicyRecord(fbb, static_cast<std::uint8_t>(mode.value_or(wire::GroupMode::Shared)),
                                         mode.has_value(),
                                         ack_wait ? static_cast<std::uint64_t>(ack_wait->count()) : 0,
                                         r.max_deliveries, delays, r.exponential_initial_ms, r.exponential_factor,
                                         r.exponential_max_ms, r.jitter, retry.has_value()));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::optional<PolicyOverride> PolicyOverride::from_record(std::span<const std::uint8_t> bytes) {
  std::vector<std::uint64_t> aligned((bytes.size() + 7) / 8);
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<std::uint8_t*>(aligned.data()));
  const auto* data = reinterpret_cast<const std::uint8_t*>(aligned.data());
  flatbuffers::Verifier verifier(data, bytes.size());
  if (!verifier.VerifyBuffer<storage::PolicyRecord>(nullptr)) return std::nullopt;
  const auto* rec = flatbuffers::GetRoot<storage::PolicyRecord>(data);
  PolicyOverride out;
  if (rec->has_mode()) out.mode = static_cast<wire::GroupMode>(rec->mode());
  if (rec->ack_wait_ms()) out.ack_wait = std::chrono::milliseconds(rec->ack_wait_ms());
  if (rec->has_retry()) {
    RetrySchedule r;
    r.max_deliveries = rec->max_deliveries();
    r.delays_ms.clear();
    if (rec->delays_ms()) r.delays_ms.assign(rec->delays_ms()->begin(), rec->delays_ms()->end());
    r.exponential_initial_ms = rec->exponential_initial_ms();
    r.exponential_factor = rec->exponential_factor();
    r.exponential_max_ms = rec->exponential_max_ms();
    r.jitter = rec->jitter();
    out.retry = r;
  }
  return out;
}

PolicyOverride PolicyOverride::from_wire(const wire::ConfigureGroup& req) {
  PolicyOverride out;
  if (req.set_mode()) out.mode = req.mode();
  if (req.ack_wait_ms()) out.ack_wait = std::chrono::milliseconds(req.ack_wait_ms());
  if (const auto* w = req.retry()) {
    RetrySchedule r;
    r.max_deliveries = w->max_deliveries();  // 0 is refused by validate()
    if (w->delays_ms() && w->delays_ms()->size() > 0) {
      r.delays_ms.assign(w->delays_ms()->begin(), w->delays_ms()->end());
    } else if (w->exponential_initial_ms()) {
      r.delays_ms.clear();
      r.exponential_initial_ms = w->exponential_initial_ms();
      r.exponential_factor = w->exponential_factor() > 0 ? w->exponential_factor() : 2.0;
      r.exponential_max_ms = w->exponential_max_ms() ? w->exponential_max_ms() : r.exponential_max_ms;
    }
    r.jitter = w->jitter();
    out.retry = r;
  }
  return out;
}

}  // namespace txmq::broker
