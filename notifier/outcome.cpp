#include "notifier/outcome.h"

#include <algorithm>
#include <charconv>
#include <ctime>

namespace txmq::notifier {

std::string_view outcome_name(Outcome o) {
  switch (o) {
    case Outcome::kSuccess: return "success";
    case Outcome::kWrongBody: return "wrong_body";
    case Outcome::kServerError: return "server_error";
    case Outcome::kThrottled: return "throttled";
    case Outcome::kClientError: return "client_error";
    case Outcome::kGone: return "gone";
    case Outcome::kTimeout: return "timeout";
    case Outcome::kConnectionError: return "connection_error";
  }
  return "unknown";
}

Outcome classify(const http::HttpResponse& r, const SubscriptionConfig& config) {
  if (r.status == 0) return r.timed_out ? Outcome::kTimeout : Outcome::kConnectionError;
  if (r.status >= 200 && r.status < 300) {
    if (config.success_body.empty()) return Outcome::kSuccess;
    // Gateway-style receivers answer "success" in the body; trailing newlines are tolerated.
    std::string_view body = r.body;
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.remove_suffix(1);
    return body == config.success_body ? Outcome::kSuccess : Outcome::kWrongBody;
  }
  if (r.status == 410) return Outcome::kGone;
  if (r.status == 408 || r.status == 429) return Outcome::kThrottled;
  if (r.status >= 500) return Outcome::kServerError;
  return Outcome::kClientError;
}

bool endpoint_failure(Outcome o) {
  return o == Outcome::kServerError || o == Outcome::kThrottled || o == Outcome::kTimeout ||
         o == Outcome::kConnectionError;
}

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value, std::int64_t now_s) {
  if (value.empty()) return std::nullopt;
  std::uint64_t seconds = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (ec == std::errc() && end == value.data() + value.size())
    return std::chrono::milliseconds(std::min<std::uint64_t>(seconds, 365ull * 86400) * 1000);
  // An HTTP date: "Wed, 21 Oct 2015 07:28:00 GMT".
  std::tm tm{};
  const std::string text(value);
  if (!strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm)) return std::nullopt;
  const std::int64_t at = timegm(&tm);
  return std::chrono::milliseconds(std::max<std::int64_t>(0, at - now_s) * 1000);
}

std::chrono::milliseconds retry_delay(const SubscriptionConfig& config, std::uint32_t attempt,
                                      std::optional<std::chrono::milliseconds> retry_after, std::mt19937_64& rng) {
  const std::size_t i = std::min<std::size_t>(attempt == 0 ? 0 : attempt - 1, config.schedule.size() - 1);
  double ms = static_cast<double>(config.schedule[i].count());
  if (config.jitter > 0) ms *= std::uniform_real_distribution<double>(1 - config.jitter, 1 + config.jitter)(rng);
  auto delay = std::chrono::milliseconds(static_cast<std::int64_t>(ms));
  // Retry-After only ever lengthens the wait, and only up to the bound: a receiver must not
  // be able to park a message for a year, nor make us hammer it sooner than the schedule.
  if (retry_after) delay = std::max(delay, std::min(*retry_after, config.max_retry_after));
  return delay;
}

}  // namespace txmq::notifier
