// The attempt history of one message, kept by the broker rather than by the notifier: each
// failed attempt is the reason of the nack that schedules the next one, and every delivery
// brings the reasons so far (Delivery::history). A notifier that crashes and restarts, or a
// second notifier of the same group, reads the same history and counts on from it.
//
// Entries the notifier writes, one line each:
//   attempt=3 at_ms=1764000000000 duration_ms=12 outcome=server_error status=503
//   attempt=4 at_ms=1764000005000 duration_ms=15000 outcome=timeout error=Operation timed out
//   deferred=2 reason=circuit open
// "deferred=N" counts deliveries that were handed back unsent (breaker open, endpoint busy,
// notifier stopping): they are not attempts. The broker adds "lease expired" and "consumer
// disconnected" when a notifier vanished holding the message; those were possibly attempts
// and count as such.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace txmq::notifier {

struct AttemptRecord {
  std::uint32_t attempt = 0;
  std::uint64_t at_ms = 0;        // when the request started
  std::uint64_t duration_ms = 0;  // until the response or the error
  std::string outcome;            // outcome_name()
  long status = 0;                // 0: no response
  std::string error;              // when no response
};

std::string format_attempt(const AttemptRecord& a);
std::optional<AttemptRecord> parse_attempt(const std::string& entry);
std::string format_deferral(std::uint32_t count, const std::string& reason);

// How many of the deliveries so far were deferrals: the count of the last deferral entry.
std::uint32_t deferrals(const std::vector<std::string>& history);

}  // namespace txmq::notifier
