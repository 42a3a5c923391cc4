#pragma once
// Where a consumer group reads: a partition's messages and the group's durable cursor.
//
// StoreLogReader adapts the broker's storage::Store; unit tests use a fake. The calls and
// their results are Store's (see storage/store.h for each one's errors); the visitor is
// passed through by reference, so the adapter adds neither a copy nor an allocation.
// Concurrency: loop thread only, like the Store reads behind it.

#include <cstddef>
#include <functional>

#include "broker/storage/store.h"

namespace txmq::broker {

class LogReader {
 public:
  // The group's ack floor, delivered-up-to mark, acks above the floor and pending records
  // in one partition. kStorageError.
  virtual Result<storage::CursorState> load_cursor(storage::GroupId group, TopicId topic,
                                                   PartitionId partition) const = 0;
  // Calls visit for each stored message with offset >= from, in offset order, until it
  // returns false or `max` were visited; returns how many. An entry is valid only during
  // its visit. kStorageError.
  virtual Result<std::size_t> read_log(TopicId topic, PartitionId partition, Offset from, std::size_t max,
                                       const std::function<bool(const storage::LogEntry&)>& visit) const = 0;
  // Visits one message; kInvalidArgument when it is not stored (removed by retention).
  virtual Result<std::size_t> read_one(TopicId topic, PartitionId partition, Offset offset,
                                       const std::function<void(const storage::LogEntry&)>& visit) const = 0;

 protected:
  ~LogReader() = default;  // not owned through this interface
};

// The broker's reader: a view of its Store, cheap to make at each call.
class StoreLogReader final : public LogReader {
 public:
  explicit StoreLogReader(const storage::Store& store) : store_(store) {}

  Result<storage::CursorState> load_cursor(storage::GroupId group, TopicId topic,
                                           PartitionId partition) const override {
    return store_.load_cursor(group, topic, partition);
  }
  Result<std::size_t> read_log(TopicId topic, PartitionId partition, Offset from, std::size_t max,
                               const std::function<bool(const storage::LogEntry&)>& visit) const override {
    return store_.read_log(topic, partition, from, max, visit);
  }
  Result<std::size_t> read_one(TopicId topic, PartitionId partition, Offset offset,
                               const std::function<void(const storage::LogEntry&)>& visit) const override {
    return store_.read_one(topic, partition, offset, visit);
  }

 private:
  const storage::Store& store_;
};

}  // namespace txmq::broker
