// What one HTTP attempt came to, and when to try again.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "notifier/config.h"
#include "http/http_client.h"

namespace txmq::notifier {

enum class Outcome {
  kSuccess,          // 2xx (and the expected body, when one is configured)
  kWrongBody,        // 2xx without the expected body: retried
  kServerError,      // 5xx: retried
  kThrottled,        // 408, 429: retried, Retry-After honoured
  kClientError,      // another 4xx (or 1xx, 3xx): retried, counted apart
  kGone,             // 410: the receiver says never again; given up at once
  kTimeout,          // no answer within the request timeout: retried
  kConnectionError,  // refused, reset, DNS...: retried
};

// The label of the outcome in metrics and in the attempt history.
std::string_view outcome_name(Outcome o);

Outcome classify(const http::HttpResponse& response, const SubscriptionConfig& config);

// Whether the outcome counts against the endpoint (opens its breaker): the endpoint is
// down or overloaded, rather than refusing this one message.
bool endpoint_failure(Outcome o);

// Retry-After as seconds ("120") or an HTTP date; nullopt when absent or unreadable.
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value, std::int64_t now_s);

// The delay before the attempt after `attempt` (1-based): the schedule's entry for it with
// jitter, stretched to a Retry-After when that asks for longer, up to max_retry_after.
std::chrono::milliseconds retry_delay(const SubscriptionConfig& config, std::uint32_t attempt,
                                      std::optional<std::chrono::milliseconds> retry_after, std::mt19937_64& rng);

}  // namespace txmq::notifier
