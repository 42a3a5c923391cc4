#pragma once
// Writing a failed delivery: a PendingRecord for a retry, or the move to the group's
// dead-letter topic. Both run on the writer thread, inside the transaction of the op that
// carries them, so a dead letter is appended and its origin acknowledged atomically.
//
// The dead-letter topic of group G is the ordinary topic "G.dlq" (one partition, created on
// first use). A dead letter keeps the origin's key, headers and body, and adds its history:
//   txmq-origin-topic, txmq-origin-partition, txmq-origin-offset,
//   txmq-origin-message-id ("topic/partition/offset"), txmq-origin-timestamp-ms,
//   txmq-group, txmq-delivery-count, txmq-first-delivery-ms, txmq-last-delivery-ms,
//   txmq-dead-lettered-ms, and one txmq-reason per nack or terminate reason, oldest first.
//
// Redrive trusts those headers (they say which acknowledged message to deliver again), so
// the broker alone writes them: clients may neither produce to a dead-letter topic nor set
// a txmq-* header (broker/names.h), and each dead letter is stored with a mark no client
// message carries (StoredMessage.dead_letter). Redrive moves a letter without the mark (one
// stored by a broker from before the mark, or by a bug) only when the operator vouches for
// it (trust_unmarked).

#include <optional>
#include <string>

#include "broker/consumer_group.h"
#include "broker/storage/store.h"

namespace txmq::broker {

std::string dead_letter_topic(std::string_view group);

// Where a failure happened.
struct FailureOrigin {
  std::string group;
  storage::GroupId group_id;
  std::string topic;
  TopicId topic_id;
};

// The reasons a PendingRecord keeps after a failure: the older ones, then the newer, the
// last kMaxReasons of them (the same bound as the in-memory FailureReasons).
std::vector<std::string> merge_reasons(std::vector<std::string> older, const std::vector<std::string>& newer);

// The txmq-* headers a dead letter gets (listed at the top of this file), in that order:
// its origin, its delivery history as `record` holds it, and one txmq-reason per reason.
// origin_timestamp_ms is the origin message's.
std::vector<std::pair<std::string, std::string>> dead_letter_headers(const FailureOrigin& origin, PartitionId partition,
                                                                     Offset offset, const storage::OwnedPending& record,
                                                                     std::uint64_t origin_timestamp_ms,
                                                                     std::uint64_t now_ms);

// Where a dead letter came from, read back from its headers for a redrive.
struct LetterOrigin {
  std::string group;
  std::string topic;
  PartitionId partition;
  Offset offset;
  std::vector<std::string> reasons;  // its txmq-reason headers, oldest first
};
// nullopt when a header is missing or a number does not parse: not a dead letter.
std::optional<LetterOrigin> letter_origin(const storage::OwnedMessage& letter);

// Persists one failure. A dead letter's origin must also be acknowledged in the same
// transaction (the caller adds it to its acks). For a dead letter, `dlq` returns the dead-letter topic's metadata
// and `dlq_offset` where the message went (nullopt when the origin message was already
// gone, removed by retention: then it is only acknowledged).
Status write_failure(storage::WriteTxn& txn, const FailureOrigin& origin, const Failure& failure,
                     std::uint64_t now_ms, std::optional<storage::TopicMeta>& dlq, std::optional<Offset>& dlq_offset);

// Moves one dead letter of `group` (offset in the group's dead-letter topic) back to its
// origin for this group only: a PendingRecord with no deliveries, due now; the dead letter
// is deleted. kForbidden when the letter lacks the broker's mark and trust_unmarked is
// false; kInvalidArgument when it is not a dead letter of the group or its origin message
// is gone; kUnknownTopic when its origin topic is gone.
struct Redriven {
  TopicId topic;
  PartitionId partition;
  Offset offset;
};
Result<Redriven> redrive_one(storage::WriteTxn& txn, const std::string& group, storage::GroupId group_id,
                             TopicId dlq_topic, Offset dlq_offset, std::uint64_t now_ms, bool trust_unmarked = false);

}  // namespace txmq::broker
