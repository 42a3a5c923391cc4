#include "notifier/give_up.h"

#include <cstdio>

#include "notifier/signature.h"

namespace txmq::notifier {
namespace {

// Length of the UTF-8 sequence starting at s[i], or 0 when it is not valid UTF-8.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n;
  std::uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F;
  else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F;
  else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07;
  else return 0;
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
  static constexpr std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
  return n;
}

}  // namespace

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size();) {
    const char c = s[i];
    const std::size_t n = utf8_length(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
    ++i;
  }
  return out + "\"";
}

std::string give_up_json(const GiveUp& g, const client::Delivery& d) {
  std::string j = "{";
  auto field = [&](std::string_view name, const std::string& value) {
    if (j.size() > 1) j += ",";
    j += json_string(name) + ":" + value;
  };
  field("webhook_id", json_string(g.webhook_id));
  field("subscription", json_string(g.subscription));
  field("topic", json_string(d.topic));
  field("group", json_string(d.group));
  field("partition", std::to_string(d.partition));
  field("offset", std::to_string(d.offset));
  field("endpoint", json_string(g.endpoint));
  field("reason", json_string(g.reason));
  field("gave_up_at_ms", std::to_string(g.at_ms));
  std::string attempts = "[";
  for (const auto& a : g.attempts) {
    if (attempts.size() > 1) attempts += ",";
    attempts += "{\"attempt\":" + std::to_string(a.attempt) + ",\"at_ms\":" + std::to_string(a.at_ms) +
                ",\"duration_ms\":" + std::to_string(a.duration_ms) + ",\"outcome\":" + json_string(a.outcome) +
                ",\"status\":" + std::to_string(a.status) + ",\"error\":" + json_string(a.error) + "}";
  }
  field("attempts", attempts + "]");
  std::string history = "[";
  for (const auto& h : g.other_history) history += (history.size() > 1 ? "," : "") + json_string(h);
  field("history", history + "]");
  std::string headers = "{";
  for (const auto& h : d.headers)
    headers += (headers.size() > 1 ? "," : "") + json_string(h.name) + ":" + json_string(h.value);
  headers += "}";
  std::string message = "{\"key\":" + json_string(d.key) + ",\"headers\":" + headers;
  if (valid_utf8(d.body)) message += ",\"body\":" + json_string(d.body);
  message += ",\"body_base64\":" + json_string(base64_encode(d.body)) + "}";
  field("message", message);
  return j + "}";
}

}  // namespace txmq::notifier
