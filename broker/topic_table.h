#pragma once
// The loop thread's view of the topics: their metadata and where each partition's
// committed log ends. Storage is the truth; this is loaded at start-up and kept current by
// the completions of create, delete and append operations.
// Concurrency: loop thread only.

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "broker/broker_probe.h"
#include "broker/storage/store.h"

namespace txmq::broker {

struct PartitionState {
  Offset first;  // oldest stored offset
  Offset next;   // end of the committed log: offsets below are readable
};

struct Topic {
  storage::TopicMeta meta;
  std::vector<PartitionState> partitions;
  std::uint32_t round_robin = 0;  // next partition for messages without a key
  std::uint64_t messages_produced = 0;
  std::uint64_t bytes_produced = 0;
  TopicSeries series;  // metrics; null when metrics are off
};

// The partition a key maps to: FNV-1a (64-bit) of the key bytes modulo the partition
// count. Stable across versions: clients may compute it too.
PartitionId partition_for_key(std::span<const std::uint8_t> key, std::uint32_t partitions);

class TopicTable {
 public:
  // Loads every topic and its partition bounds. kStorageError.
  Status load(const storage::Store& store);

  Topic* find(std::string_view name);
  Topic* find(TopicId id);
  Topic& add(storage::TopicMeta meta);
  void remove(std::string_view name);
  std::size_t size() const { return by_name_.size(); }
  const std::map<std::string, std::unique_ptr<Topic>, std::less<>>& all() const { return by_name_; }

  // The partition for a message: explicit when requested (-1 means none), by key hash
  // when it has a key, else round robin.
  static Result<PartitionId> pick_partition(Topic& topic, int requested,
                                            std::span<const std::uint8_t> key);

 private:
  std::map<std::string, std::unique_ptr<Topic>, std::less<>> by_name_;
};

}  // namespace txmq::broker
