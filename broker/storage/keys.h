#pragma once
// The encoders of LMDB keys (layout.h has the table of every key space). Every integer in
// a key is big-endian so that LMDB's byte order is the logical order: a cursor walks a
// partition's log from the oldest offset to the newest.

#include <array>
#include <cstdint>
#include <cstring>
#include <span>

#include "common/ids.h"

namespace txmq::broker::storage {

inline void put_be32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

inline void put_be64(std::uint8_t* p, std::uint64_t v) {
  put_be32(p, static_cast<std::uint32_t>(v >> 32));
  put_be32(p + 4, static_cast<std::uint32_t>(v));
}

inline std::uint32_t get_be32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | static_cast<std::uint32_t>(p[1]) << 16 |
         static_cast<std::uint32_t>(p[2]) << 8 | static_cast<std::uint32_t>(p[3]);
}

inline std::uint64_t get_be64(const std::uint8_t* p) {
  return static_cast<std::uint64_t>(get_be32(p)) << 32 | get_be32(p + 4);
}

using GroupId = StrongId<struct GroupIdTag, std::uint32_t>;  // interned consumer group name

// log: u32 topic, u32 partition, u64 offset
struct LogKey {
  static constexpr std::size_t kSize = 16;
  std::array<std::uint8_t, kSize> bytes;

  LogKey(TopicId t, PartitionId p, Offset o) {
    put_be32(bytes.data(), t.value());
    put_be32(bytes.data() + 4, p.value());
    put_be64(bytes.data() + 8, o.value());
  }
  static TopicId topic(const std::uint8_t* k) { return TopicId(get_be32(k)); }
  static PartitionId partition(const std::uint8_t* k) { return PartitionId(get_be32(k + 4)); }
  static Offset offset(const std::uint8_t* k) { return Offset(get_be64(k + 8)); }
};

// partitions: u32 topic, u32 partition; also the prefix of the partition's keys in log
struct PartitionKey {
  static constexpr std::size_t kSize = 8;
  std::array<std::uint8_t, kSize> bytes;

  PartitionKey(TopicId t, PartitionId p) {
    put_be32(bytes.data(), t.value());
    put_be32(bytes.data() + 4, p.value());
  }
};

// cursors: u32 group, u32 topic, u32 partition; also the prefix of the partition's keys in
// acked and pending
struct CursorKey {
  static constexpr std::size_t kSize = 12;
  std::array<std::uint8_t, kSize> bytes;

  CursorKey(GroupId g, TopicId t, PartitionId p) {
    put_be32(bytes.data(), g.value());
    put_be32(bytes.data() + 4, t.value());
    put_be32(bytes.data() + 8, p.value());
  }
};

// acked: u32 group, u32 topic, u32 partition, u64 offset
struct AckedKey {
  static constexpr std::size_t kSize = 20;
  std::array<std::uint8_t, kSize> bytes;

  AckedKey(GroupId g, TopicId t, PartitionId p, Offset o) {
    put_be32(bytes.data(), g.value());
    put_be32(bytes.data() + 4, t.value());
    put_be32(bytes.data() + 8, p.value());
    put_be64(bytes.data() + 12, o.value());
  }
  static Offset offset(const std::uint8_t* k) { return Offset(get_be64(k + 12)); }
};

// pending: the same key as acked
using PendingKey = AckedKey;

// delayed: u64 due ms, u64 sequence
struct DelayedKey {
  static constexpr std::size_t kSize = 16;
  std::array<std::uint8_t, kSize> bytes;

  DelayedKey(std::uint64_t due_ms, std::uint64_t seq) {
    put_be64(bytes.data(), due_ms);
    put_be64(bytes.data() + 8, seq);
  }
  static std::uint64_t due(const std::uint8_t* k) { return get_be64(k); }
};

}  // namespace txmq::broker::storage
