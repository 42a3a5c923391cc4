// The give-up record: what the notifier produces to a subscription's gave_up_topic (by
// default "<group>.gave-up") when it stops trying a message, for an operator or the
// receiver's reconciliation job. A JSON object:
//   webhook_id, subscription, topic, group, partition, offset, endpoint,
//   reason ("max_attempts", "gone": the receiver answered 410, "url_invalid",
//   "url_not_allowed", "address_not_allowed"), detail (why, for the url and address reasons),
//   gave_up_at_ms, attempts: [{attempt, at_ms, duration_ms, outcome, status, error}],
//   history: [other broker-recorded events, e.g. "lease expired"],
//   message: {key, headers: {name: value}, body (when UTF-8), body_base64}
// A record that would not fit the broker's max_message_bytes is cut to fit (give_up_json),
// so that a give-up is always recorded; it then says "truncated": true, gives the original
// sizes and keeps the body's first bytes as message.body_base64 (message.body_bytes_kept).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "notifier/attempt_log.h"
#include "txmq/client.h"

namespace txmq::notifier {

struct GiveUp {
  std::string webhook_id;
  std::string subscription;
  std::string endpoint;
  std::string reason;
  std::string detail;  // why the URL or address was refused; "" otherwise
  std::uint64_t at_ms = 0;
  std::vector<AttemptRecord> attempts;  // every attempt, oldest first
  std::vector<std::string> other_history;
};

// The record, at most max_bytes long: cut as give_up.cpp's Cuts says when the whole would
// not fit. Only a max_bytes below about 600 bytes yields a longer (minimal) record.
// *truncated, when given, says whether anything was cut.
std::string give_up_json(const GiveUp& g, const client::Delivery& d, std::size_t max_bytes = SIZE_MAX,
                         bool* truncated = nullptr);

}  // namespace txmq::notifier
