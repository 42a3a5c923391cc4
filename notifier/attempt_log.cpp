#include "notifier/attempt_log.h"

#include <charconv>
#include <string_view>

namespace txmq::notifier {
namespace {

template <typename T>
bool number(std::string_view text, T& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::string format_attempt(const AttemptRecord& a) {
  std::string out = "attempt=" + std::to_string(a.attempt) + " at_ms=" + std::to_string(a.at_ms) +
                    " duration_ms=" + std::to_string(a.duration_ms) + " outcome=" + a.outcome;
  if (a.status != 0) out += " status=" + std::to_string(a.status);
  // The error goes last: it is free text and runs to the end of the line.
  if (!a.error.empty()) out += " error=" + a.error;
  return out;
}

std::optional<AttemptRecord> parse_attempt(const std::string& entry) {
  if (!entry.starts_with("attempt=")) return std::nullopt;
  AttemptRecord a;
  std::string_view rest = entry;
  while (!rest.empty()) {
    const auto eq = rest.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    const std::string_view key = rest.substr(0, eq);
    rest.remove_prefix(eq + 1);
    if (key == "error") {
      a.error = std::string(rest);
      break;
    }
    const auto space = rest.find(' ');
    const std::string_view value = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
    bool ok = true;
    if (key == "attempt") ok = number(value, a.attempt);
    else if (key == "at_ms") ok = number(value, a.at_ms);
    else if (key == "duration_ms") ok = number(value, a.duration_ms);
    else if (key == "status") ok = number(value, a.status);
    else if (key == "outcome") a.outcome = std::string(value);
    if (!ok) return std::nullopt;
  }
  return a;
}

std::string format_deferral(std::uint32_t count, const std::string& reason) {
  return "deferred=" + std::to_string(count) + " reason=" + reason;
}

std::uint32_t deferrals(const std::vector<std::string>& history) {
  for (auto it = history.rbegin(); it != history.rend(); ++it) {
    if (!it->starts_with("deferred=")) continue;
    std::string_view v(*it);
    v.remove_prefix(9);
    v = v.substr(0, v.find(' '));
    std::uint32_t n = 0;
    if (number(v, n)) return n;
  }
  return 0;
}

}  // namespace txmq::notifier
