#pragma once
// The names txmq itself puts on messages and topics, spelled once for the broker, the
// client library, the tool, the notifier and the examples. They are published (users filter
// and alert on them), so a name here changes only with a release note.
//
// Installed with the client's headers (as txmq/common/well_known.h), so it includes nothing
// of the project's.

#include <string>
#include <string_view>

namespace txmq {

// Every header whose name starts with this is txmq's own. The broker drops them from a
// message it dead-letters again (a redriven letter's old history) before adding new ones,
// and refuses a produce that carries one: the broker trusts them, so only it sets them.
inline constexpr char kReservedHeaderPrefix[] = "txmq-";

// Whether a header name is txmq's own: starts with kReservedHeaderPrefix, in any case (a
// header that travels on through HTTP, as the notifier's do, loses its case).
inline bool is_reserved_header(std::string_view name) {
  constexpr std::string_view prefix = kReservedHeaderPrefix;
  if (name.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    const char c = name[i] >= 'A' && name[i] <= 'Z' ? static_cast<char>(name[i] - 'A' + 'a') : name[i];
    if (c != prefix[i]) return false;
  }
  return true;
}

// --- Headers the broker adds to a dead letter (one copy of the message, moved to the
// group's dead-letter topic after its last allowed delivery or a terminate) ---------------

// Where the message came from: its topic, partition and offset, and the three together as
// "topic/partition/offset", the id a person quotes.
inline constexpr char kOriginTopicHeader[] = "txmq-origin-topic";
inline constexpr char kOriginPartitionHeader[] = "txmq-origin-partition";
inline constexpr char kOriginOffsetHeader[] = "txmq-origin-offset";
inline constexpr char kOriginMessageIdHeader[] = "txmq-origin-message-id";
// When the original was stored (ms since the epoch).
inline constexpr char kOriginTimestampHeader[] = "txmq-origin-timestamp-ms";
// The consumer group that gave up on it; redrive moves a letter back for this group only.
inline constexpr char kGroupHeader[] = "txmq-group";
// How many times the group delivered it.
inline constexpr char kDeliveryCountHeader[] = "txmq-delivery-count";
// When the group first and last delivered it, and when it was dead-lettered (ms).
inline constexpr char kFirstDeliveryHeader[] = "txmq-first-delivery-ms";
inline constexpr char kLastDeliveryHeader[] = "txmq-last-delivery-ms";
inline constexpr char kDeadLetteredHeader[] = "txmq-dead-lettered-ms";
// One per reason a consumer gave with nack or terminate, oldest first (repeated header).
inline constexpr char kReasonHeader[] = "txmq-reason";

// --- Header the broker adds to a transactional message --------------------------------

// Present on a message whose transaction a person committed (`txmq txn commit`) rather
// than its producer or a check-back: "operator", or "operator:<user>" when the broker
// authenticated the operator.
inline constexpr char kResolvedByHeader[] = "txmq-resolved-by";
// The header's value, and the resolution `txmq txn list` shows, for an operator's end.
inline constexpr char kResolvedByOperator[] = "operator";

// --- HTTP headers txmq-notifier sends with each callback ------------------------------

// The topic the message was consumed from.
inline constexpr char kNotifierTopicHeader[] = "txmq-topic";
// Which attempt this request is, from 1 (a receiver that saw the webhook-id before may
// log it as a duplicate).
inline constexpr char kNotifierAttemptHeader[] = "txmq-attempt";

// --- Topic names ----------------------------------------------------------------------

// A consumer group's dead-letter topic: a one-partition topic the broker creates on the
// group's first dead letter. Clients may read and delete it, never write it: the broker
// refuses a produce to it and its creation by hand.
inline constexpr char kDeadLetterTopicSuffix[] = ".dlq";
inline std::string dead_letter_topic(std::string_view group) {
  return std::string(group) + kDeadLetterTopicSuffix;
}
// Whether a topic name is some group's dead-letter topic ("<group>.dlq", group not empty).
inline bool is_dead_letter_topic(std::string_view topic) {
  constexpr std::string_view suffix = kDeadLetterTopicSuffix;
  return topic.size() > suffix.size() && topic.ends_with(suffix);
}

// Where a txmq-notifier subscription records the messages it gave up on, unless its
// configuration names another topic.
inline constexpr char kGaveUpTopicSuffix[] = ".gave-up";
inline std::string gave_up_topic(std::string_view notifier_group) {
  return std::string(notifier_group) + kGaveUpTopicSuffix;
}

}  // namespace txmq
