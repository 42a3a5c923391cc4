#pragma once
// The one path a committed append takes, whatever made it: a produce, a transaction's
// commit, a dead letter, a delayed message coming due. What follows an append (the
// partition's end moves, metrics count it, the topic's groups hear) is done there and
// nowhere else.

#include <cstddef>
#include <cstdint>
#include <span>

#include "broker/storage/store.h"
#include "common/ids.h"

namespace txmq::broker {

// Where one message entered a partition's log.
struct Appended {
  PartitionId partition;
  Offset offset;
};

class AppendSink {
 public:
  virtual ~AppendSink() = default;
  // messages were appended to topic and committed; bytes is their payload (key, headers,
  // body), 0 when not counted. A topic deleted meanwhile is ignored. Loop thread; no errors.
  virtual void appended(TopicId topic, std::span<const Appended> messages, std::size_t bytes) = 0;
  // Delayed messages were stored (committed); the earliest comes due at due_ms. Loop thread.
  virtual void delayed_stored(std::uint64_t due_ms) = 0;
  // A write created this topic as a side effect (a group's dead-letter topic, on its first
  // letter): known from now on. Nothing when it is known already. Loop thread.
  virtual void topic_created(const storage::TopicMeta& meta) = 0;
};

}  // namespace txmq::broker
