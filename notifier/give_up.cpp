#include "notifier/give_up.h"

#include <cstdio>

#include "common/utf8.h"
#include "notifier/signature.h"

namespace txmq::notifier {

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size();) {
    const char c = s[i];
    const std::size_t n = common::utf8_length(s, i);
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
  if (common::valid_utf8(d.body)) message += ",\"body\":" + json_string(d.body);
  message += ",\"body_base64\":" + json_string(base64_encode(d.body)) + "}";
  field("message", message);
  return j + "}";
}

}  // namespace txmq::notifier
