#include "cli/durations.h"

#include <cctype>
#include <ctime>

namespace txmq::cli {

std::optional<Millis> parse_duration(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0) return std::nullopt;
  const long long n = std::stoll(s.substr(0, i));
  const std::string unit = s.substr(i);
  if (unit.empty() || unit == "ms") return Millis(n);
  if (unit == "s") return Millis(n * 1000);
  if (unit == "m") return Millis(n * 60'000);
  if (unit == "h") return Millis(n * 3'600'000);
  return std::nullopt;
}

std::string format_duration(Millis d) {
  auto ms = d.count();
  if (ms % 3'600'000 == 0 && ms) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0 && ms) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0 && ms) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string format_time_ms(std::uint64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

const CLI::Validator& duration_validator() {
  static const CLI::Validator validator(
      [](std::string& s) { return parse_duration(s) ? std::string() : "not a duration (250ms, 5s, 2m, 1h): " + s; },
      "DURATION");
  return validator;
}

}  // namespace txmq::cli
