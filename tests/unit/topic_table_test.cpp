// broker/topic_table: partition choice and the loop's view of the topics.

#include "broker/topic_table.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tests/support/broker_process.h"

using namespace txmq;
using namespace txmq::broker;

namespace {

std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

Topic make_topic(std::uint32_t partitions) {
  Topic t;
  t.meta = storage::TopicMeta{TopicId(1), "orders", partitions, 0};
  t.partitions.resize(partitions);
  return t;
}

}  // namespace

TEST_CASE("the same key always maps to the same partition") {
  for (std::string key : {"order-1", "order-2", "", "a much longer key with spaces"}) {
    CAPTURE(key);
    PartitionId first = partition_for_key(as_bytes(key), 16);
    for (int i = 0; i < 10; ++i) CHECK(partition_for_key(as_bytes(key), 16) == first);
    CHECK(first.value() < 16);
  }
}

TEST_CASE("partition_for_key is FNV-1a 64 modulo the partition count") {
  // Pinned values: clients may compute the partition themselves, so the hash must never
  // change. FNV-1a("a") = 0xaf63dc4c8601ec8c, FNV-1a("") = the offset basis.
  CHECK(partition_for_key(as_bytes("a"), 1000) == PartitionId(0xaf63dc4c8601ec8cull % 1000));
  CHECK(partition_for_key(as_bytes(""), 1000) == PartitionId(14695981039346656037ull % 1000));
  CHECK(partition_for_key(as_bytes("order-42"), 8) == PartitionId(4));
}

TEST_CASE("partition_for_key spreads keys over every partition") {
  constexpr std::uint32_t kPartitions = 8;
  constexpr int kKeys = 8000;
  std::vector<int> counts(kPartitions);
  for (int i = 0; i < kKeys; ++i) {
    std::string key = "customer-" + std::to_string(i);
    ++counts[partition_for_key(as_bytes(key), kPartitions).value()];
  }
  for (std::uint32_t p = 0; p < kPartitions; ++p) {
    CAPTURE(p);
    // 1000 expected per partition; a fair hash stays well within +-20 %.
    CHECK(counts[p] > 800);
    CHECK(counts[p] < 1200);
  }
}

TEST_CASE("with one partition every key maps to partition 0") {
  for (std::string key : {"x", "y", "zzz"}) CHECK(partition_for_key(as_bytes(key), 1) == PartitionId(0));
}

TEST_CASE("pick_partition honours an explicit partition") {
  Topic t = make_topic(4);
  auto p = TopicTable::pick_partition(t, 2, {});
  REQUIRE(p.ok());
  CHECK(*p == PartitionId(2));
}

TEST_CASE("pick_partition prefers an explicit partition over the key") {
  Topic t = make_topic(4);
  PartitionId by_key = partition_for_key(as_bytes("k"), 4);
  int other = static_cast<int>((by_key.value() + 1) % 4);
  auto p = TopicTable::pick_partition(t, other, as_bytes("k"));
  REQUIRE(p.ok());
  CHECK(p->value() == static_cast<std::uint32_t>(other));
}

TEST_CASE("pick_partition refuses a partition out of range with UnknownPartition") {
  Topic t = make_topic(4);
  for (int requested : {4, 5, 1 << 30}) {
    CAPTURE(requested);
    auto p = TopicTable::pick_partition(t, requested, {});
    REQUIRE_FALSE(p.ok());
    CHECK(p.error().code == ErrorCode::kUnknownPartition);
    CHECK(p.error().message.find("orders") != std::string::npos);
  }
}

TEST_CASE("pick_partition hashes the key when no partition is requested") {
  Topic t = make_topic(4);
  auto p = TopicTable::pick_partition(t, -1, as_bytes("order-42"));
  REQUIRE(p.ok());
  CHECK(*p == partition_for_key(as_bytes("order-42"), 4));
  CHECK(t.round_robin == 0);  // keyed messages do not move the round robin
}

TEST_CASE("pick_partition goes round robin for messages without key or partition") {
  Topic t = make_topic(3);
  std::vector<std::uint32_t> got;
  for (int i = 0; i < 7; ++i) {
    auto p = TopicTable::pick_partition(t, -1, {});
    REQUIRE(p.ok());
    got.push_back(p->value());
  }
  CHECK(got == std::vector<std::uint32_t>{0, 1, 2, 0, 1, 2, 0});
}

TEST_CASE("a topic table finds topics by name and by id, and forgets removed ones") {
  TopicTable table;
  table.add(storage::TopicMeta{TopicId(7), "orders", 2, 0});
  table.add(storage::TopicMeta{TopicId(9), "payments", 1, 0});
  CHECK(table.size() == 2);
  REQUIRE(table.find("orders") != nullptr);
  CHECK(table.find("orders")->partitions.size() == 2);
  CHECK(table.find(TopicId(9)) == table.find("payments"));
  CHECK(table.find("nope") == nullptr);
  table.remove("orders");
  CHECK(table.find("orders") == nullptr);
  CHECK(table.find(TopicId(7)) == nullptr);
  CHECK(table.size() == 1);
}

TEST_CASE("a topic table loads every topic and its partition bounds from the store") {
  test::TempDir dir("txmq-topics");
  auto opened = storage::Store::open(storage::StoreOptions{dir.path(), 64ull << 20, storage::SyncMode::kDurable});
  REQUIRE(opened.ok());
  auto& store = **opened;
  TopicId id;
  {
    auto txn = store.begin_write(nullptr);
    REQUIRE(txn.ok());
    auto meta = (*txn)->create_topic("orders", 2, 0);
    REQUIRE(meta.ok());
    id = meta->id;
    for (int i = 0; i < 3; ++i)
      REQUIRE((*txn)->append(id, PartitionId(1), 0, {}, {}, as_bytes("x")).ok());
    REQUIRE((*txn)->commit().ok());
  }
  TopicTable table;
  REQUIRE(table.load(store).ok());
  Topic* t = table.find("orders");
  REQUIRE(t != nullptr);
  CHECK(t->meta.id == id);
  REQUIRE(t->partitions.size() == 2);
  CHECK(t->partitions[0].next == Offset(0));
  CHECK(t->partitions[1].first == Offset(0));
  CHECK(t->partitions[1].next == Offset(3));
}
