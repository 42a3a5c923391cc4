#include "notifier/give_up.h"

#include <algorithm>

#include "common/json.h"
#include "common/utf8.h"
#include "notifier/signature.h"

namespace txmq::notifier {

using common::json_string;

namespace {

// What a give-up record leaves out to fit the broker's max_message_bytes, from the least to
// the most: the body's text copy and the body's tail, then the message's key and headers,
// then long details (history, attempt errors, most of the endpoint), then the attempt list.
struct Cuts {
  bool truncated = false;  // anything at all left out
  std::size_t body_kept = SIZE_MAX;  // leading body bytes kept (as base64)
  bool key_and_headers = true;
  bool details = true;
  bool attempts = true;
};

// An endpoint kept in a record cut for details: enough to recognise it.
constexpr std::size_t kCutEndpointBytes = 256;

std::string render(const GiveUp& g, const client::Delivery& d, const Cuts& cuts) {
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
  field("endpoint", json_string(cuts.details ? g.endpoint : std::string_view(g.endpoint).substr(0, kCutEndpointBytes)));
  field("reason", json_string(g.reason));
  if (!g.detail.empty()) field("detail", json_string(cuts.details ? g.detail : g.detail.substr(0, kCutEndpointBytes)));
  field("gave_up_at_ms", std::to_string(g.at_ms));
  if (cuts.attempts) {
    std::string attempts = "[";
    for (const auto& a : g.attempts) {
      if (attempts.size() > 1) attempts += ",";
      attempts += "{\"attempt\":" + std::to_string(a.attempt) + ",\"at_ms\":" + std::to_string(a.at_ms) +
                  ",\"duration_ms\":" + std::to_string(a.duration_ms) + ",\"outcome\":" + json_string(a.outcome) +
                  ",\"status\":" + std::to_string(a.status) +
                  ",\"error\":" + json_string(cuts.details ? a.error : std::string()) + "}";
    }
    field("attempts", attempts + "]");
  } else {
    field("attempt_count", std::to_string(g.attempts.size()));
  }
  std::string history = "[";
  if (cuts.details)
    for (const auto& h : g.other_history) history += (history.size() > 1 ? "," : "") + json_string(h);
  field("history", history + "]");
  std::string message = "{";
  if (cuts.key_and_headers) {
    std::string headers = "{";
    for (const auto& h : d.headers)
      headers += (headers.size() > 1 ? "," : "") + json_string(h.name) + ":" + json_string(h.value);
    message += "\"key\":" + json_string(d.key) + ",\"headers\":" + headers + "},";
  }
  if (!cuts.truncated) {
    if (common::valid_utf8(d.body)) message += "\"body\":" + json_string(d.body) + ",";
    message += "\"body_base64\":" + json_string(base64_encode(d.body)) + "}";
  } else {
    const std::string_view kept = std::string_view(d.body).substr(0, cuts.body_kept);
    std::size_t header_bytes = 0;
    for (const auto& h : d.headers) header_bytes += h.name.size() + h.value.size();
    message += "\"body_base64\":" + json_string(base64_encode(kept)) +
               ",\"body_bytes_kept\":" + std::to_string(kept.size()) + "}";
    field("truncated", "true");
    field("original", "{\"key_bytes\":" + std::to_string(d.key.size()) +
                          ",\"header_bytes\":" + std::to_string(header_bytes) +
                          ",\"body_bytes\":" + std::to_string(d.body.size()) + "}");
  }
  field("message", message);
  return j + "}";
}

}  // namespace

std::string give_up_json(const GiveUp& g, const client::Delivery& d, std::size_t max_bytes, bool* truncated) {
  Cuts cuts;
  std::string record = render(g, d, cuts);
  if (truncated) *truncated = record.size() > max_bytes;
  if (record.size() <= max_bytes) return record;
  cuts.truncated = true;
  auto cut_further = [&](int level) {
    if (level >= 1) cuts.key_and_headers = false;
    if (level >= 2) cuts.details = false;
    if (level >= 3) cuts.attempts = false;
  };
  for (int level = 0; level <= 3; ++level) {
    cut_further(level);
    cuts.body_kept = 0;
    record = render(g, d, cuts);
    if (record.size() > max_bytes && level < 3) continue;
    if (record.size() >= max_bytes) return record;
    // Base64 writes 4 bytes per 3: keep as many whole groups of 3 body bytes as fit.
    cuts.body_kept = std::min(d.body.size(), (max_bytes - record.size()) / 4 * 3);
    std::string with_body = render(g, d, cuts);
    // The kept count's own digits can push it over by a few bytes: back off a group.
    while (with_body.size() > max_bytes && cuts.body_kept > 0) {
      cuts.body_kept -= std::min<std::size_t>(cuts.body_kept, 3);
      with_body = render(g, d, cuts);
    }
    return with_body;
  }
  return record;
}

}  // namespace txmq::notifier
