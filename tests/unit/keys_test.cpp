// broker/storage/keys: big-endian keys whose byte order is their logical order.

#include "broker/storage/keys.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <vector>

using namespace txmq;
using namespace txmq::broker::storage;

namespace {

template <typename Key>
bool bytes_less(const Key& a, const Key& b) {
  return std::memcmp(a.bytes.data(), b.bytes.data(), Key::kSize) < 0;
}

}  // namespace

TEST_CASE("log keys of one partition sort by offset as bytes") {
  const std::vector<std::uint64_t> offsets = {0, 1, 255, 256, 65535, 65536, 1ull << 32, 1ull << 40,
                                              ~0ull};
  for (std::size_t i = 0; i + 1 < offsets.size(); ++i) {
    CAPTURE(offsets[i]);
    LogKey a(TopicId(3), PartitionId(1), Offset(offsets[i]));
    LogKey b(TopicId(3), PartitionId(1), Offset(offsets[i + 1]));
    CHECK(bytes_less(a, b));
    CHECK_FALSE(bytes_less(b, a));
  }
}

TEST_CASE("log keys sort by topic, then partition, then offset") {
  // A later topic or partition sorts after every offset of an earlier one, so a cursor
  // walking one partition's prefix never strays into another.
  LogKey t1_last(TopicId(1), PartitionId(0xFFFFFFFF), Offset(~0ull));
  LogKey t2_first(TopicId(2), PartitionId(0), Offset(0));
  CHECK(bytes_less(t1_last, t2_first));
  LogKey p0_last(TopicId(1), PartitionId(0), Offset(~0ull));
  LogKey p1_first(TopicId(1), PartitionId(1), Offset(0));
  CHECK(bytes_less(p0_last, p1_first));
  LogKey t256(TopicId(256), PartitionId(0), Offset(0));
  LogKey t255(TopicId(255), PartitionId(0), Offset(0));
  CHECK(bytes_less(t255, t256));
}

TEST_CASE("a log key round-trips its topic, partition and offset") {
  LogKey k(TopicId(0x01020304), PartitionId(0xA0B0C0D0), Offset(0x1122334455667788ull));
  CHECK(LogKey::topic(k.bytes.data()) == TopicId(0x01020304));
  CHECK(LogKey::partition(k.bytes.data()) == PartitionId(0xA0B0C0D0));
  CHECK(LogKey::offset(k.bytes.data()) == Offset(0x1122334455667788ull));
  // Big-endian: the most significant byte comes first.
  CHECK(k.bytes[0] == 0x01);
  CHECK(k.bytes[8] == 0x11);
  CHECK(k.bytes[15] == 0x88);
}

TEST_CASE("a partition key is the prefix of its log keys") {
  PartitionKey pk(TopicId(7), PartitionId(2));
  LogKey lk(TopicId(7), PartitionId(2), Offset(99));
  CHECK(std::memcmp(pk.bytes.data(), lk.bytes.data(), PartitionKey::kSize) == 0);
}

TEST_CASE("a cursor key is the prefix of its acked keys, which sort by offset") {
  CursorKey ck(GroupId(5), TopicId(7), PartitionId(2));
  AckedKey a(GroupId(5), TopicId(7), PartitionId(2), Offset(255));
  AckedKey b(GroupId(5), TopicId(7), PartitionId(2), Offset(256));
  CHECK(std::memcmp(ck.bytes.data(), a.bytes.data(), CursorKey::kSize) == 0);
  CHECK(bytes_less(a, b));
  CHECK(AckedKey::offset(b.bytes.data()) == Offset(256));
}

TEST_CASE("put_be32/get_be32 and put_be64/get_be64 round-trip") {
  std::uint8_t buf[8];
  for (std::uint32_t v : {0u, 1u, 0x80u, 0xFFu, 0x100u, 0xDEADBEEFu, 0xFFFFFFFFu}) {
    put_be32(buf, v);
    CHECK(get_be32(buf) == v);
  }
  for (std::uint64_t v : {0ull, 1ull, 0xFFull, 0x100ull, 1ull << 40, 0x8000000000000000ull, ~0ull}) {
    put_be64(buf, v);
    CHECK(get_be64(buf) == v);
  }
}
