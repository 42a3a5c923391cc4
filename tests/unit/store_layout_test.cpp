// broker/storage/layout.h: a store written byte by byte from the layout table, with raw
// LMDB and none of the store's own encoders, opens with Store and reads back as written.
// So a store written by an older binary of this layout opens with this one, and a change
// to a key or a value that forgets to bump kLayoutVersion fails here.

#include <doctest/doctest.h>
#include <lmdb.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "broker/storage/store.h"
#include "storage_generated.h"
#include "tests/support/broker_process.h"

using namespace txmq;
using namespace txmq::broker::storage;
using txmq::test::TempDir;

namespace {

using Bytes = std::vector<std::uint8_t>;

// Big-endian, spelled out here rather than taken from keys.h.
Bytes be(std::uint64_t v, int size) {
  Bytes out;
  for (int shift = (size - 1) * 8; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
  return out;
}
Bytes u32(std::uint64_t v) { return be(v, 4); }
Bytes u64(std::uint64_t v) { return be(v, 8); }
Bytes str(std::string_view s) { return Bytes(s.begin(), s.end()); }
Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
Bytes finished(flatbuffers::FlatBufferBuilder& fbb) {
  return Bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

constexpr std::uint32_t kTopic = 7, kGroup = 3;
constexpr std::uint64_t kOpenId = (5ull << 20) | 11, kParkedId = (6ull << 20) | 12, kEndedId = (4ull << 20) | 10;
constexpr std::uint64_t kProducer = 0xABCDEF;

// The one message of the log.
Bytes stored_message(std::uint64_t timestamp_ms) {
  flatbuffers::FlatBufferBuilder fbb;
  auto header = CreateStoredHeader(fbb, fbb.CreateString("trace"), fbb.CreateVector(str("t-1")));
  auto headers = fbb.CreateVector(std::vector{header});
  fbb.Finish(CreateStoredMessage(fbb, timestamp_ms, fbb.CreateVector(str("k-1")), headers,
                                 fbb.CreateVector(str("hello"))));
  return finished(fbb);
}

// A HalfRecord: 52 fixed bytes, then group, key, headers (name length, value length, name,
// value), body.
Bytes half_record(std::uint8_t state, std::uint32_t checks, std::uint64_t next_check_ms) {
  return cat({{state, 0}, be(2, 2), u32(kTopic), u32(0), u32(checks), u64(1000), u64(next_check_ms), u64(0),
              u32(1), u32(4), u32(1), str("pg"), str("k"), u32(1), u32(1), str("h"), str("v"), str("body")});
}

// An EndedRecord: 48 fixed bytes, then the resolution and the producer group.
Bytes ended_record() {
  return cat({{1, 8, 0, 0}, u32(kTopic), u32(0), u32(2), u64(5), u64(900), u64(950), u64(0), str("producer"),
              str("pg")});
}

void put(MDB_txn* txn, const char* space, const Bytes& key, const Bytes& value) {
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, space, MDB_CREATE, &dbi) == 0);
  MDB_val k{key.size(), const_cast<std::uint8_t*>(key.data())};
  MDB_val v{value.size(), const_cast<std::uint8_t*>(value.data())};
  REQUIRE(mdb_put(txn, dbi, &k, &v, 0) == 0);
}

void write_meta_and_topics(MDB_txn* txn) {
  put(txn, "meta", str("format"), u32(2));
  put(txn, "meta", str("next_topic_id"), u32(8));
  put(txn, "meta", str("next_group_id"), u32(4));
  put(txn, "meta", str("next_delayed_seq"), u32(2));
  put(txn, "meta", str("next_txn_id"), u32(7));
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(CreateTopicRecord(fbb, kTopic, fbb.CreateString("orders"), 1, 500, 0, 0));
  put(txn, "topics", str("orders"), finished(fbb));
  put(txn, "groups", str("workers"), u32(kGroup));
  put(txn, "policies", str("g:workers"), str("policy bytes"));
}

void write_log_and_cursors(MDB_txn* txn) {
  const Bytes message = stored_message(1000);
  put(txn, "partitions", cat({u32(kTopic), u32(0)}), cat({u64(6), u64(message.size())}));
  put(txn, "log", cat({u32(kTopic), u32(0), u64(5)}), message);
  put(txn, "cursors", cat({u32(kGroup), u32(kTopic), u32(0)}), cat({u64(2), u64(6)}));
  put(txn, "acked", cat({u32(kGroup), u32(kTopic), u32(0), u64(4)}), {});
  flatbuffers::FlatBufferBuilder fbb;
  auto reasons = fbb.CreateVector(std::vector{fbb.CreateString("slow")});
  fbb.Finish(CreatePendingRecord(fbb, 2, 100, 200, 3000, reasons));
  put(txn, "pending", cat({u32(kGroup), u32(kTopic), u32(0), u64(3)}), finished(fbb));
  fbb.Clear();
  auto header = CreateStoredHeader(fbb, fbb.CreateString("trace"), fbb.CreateVector(str("t-1")));
  auto headers = fbb.CreateVector(std::vector{header});
  auto later = CreateStoredMessage(fbb, 1500, fbb.CreateVector(str("k-1")), headers, fbb.CreateVector(str("later")));
  fbb.Finish(CreateDelayedRecord(fbb, kTopic, 0, later));
  put(txn, "delayed", cat({u64(5000), u64(1)}), finished(fbb));
}

void write_transactions(MDB_txn* txn) {
  put(txn, "txn_open", u64(kOpenId), half_record(0, 0, 2000));
  put(txn, "txn_parked", u64(kParkedId), half_record(3, 5, 0));
  put(txn, "txn_ended", u64(kEndedId), ended_record());
  put(txn, "txn_checks", cat({u64(2000), u64(kOpenId)}), u64(kOpenId));
  flatbuffers::FlatBufferBuilder fbb;
  auto batch = CreateProducerBatch(fbb, fbb.CreateVector(std::vector<std::uint32_t>{0}),
                                   fbb.CreateVector(std::vector<std::uint64_t>{5}));
  fbb.Finish(CreateProducerRecord(fbb, fbb.CreateVector(std::vector<std::uint64_t>{9}),
                                  fbb.CreateVector(std::vector{batch}), 1000));
  put(txn, "producers", u64(kProducer), finished(fbb));
}

// Every key space of the table, each with what it holds in this fixture.
void write_fixture(const std::string& dir) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  mdb_env_set_maxdbs(env, 16);
  REQUIRE(mdb_env_open(env, dir.c_str(), 0, 0640) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  write_meta_and_topics(txn);
  write_log_and_cursors(txn);
  write_transactions(txn);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

std::unique_ptr<Store> open_fixture(const TempDir& tmp) {
  write_fixture(tmp.path());
  auto store = Store::open(StoreOptions{tmp.path(), 64ull << 20, SyncMode::kDurable});
  REQUIRE_MESSAGE(store.ok(), (store.ok() ? "" : store.error().message));
  CHECK_FALSE((*store)->created());
  return std::move(*store);
}

std::string text(const flatbuffers::Vector<std::uint8_t>* v) {
  return v ? std::string(reinterpret_cast<const char*>(v->data()), v->size()) : "";
}

}  // namespace

TEST_CASE("a store written from the layout table reads back its topics, groups and policies") {
  TempDir tmp("txmq-store-layout");
  auto store = open_fixture(tmp);
  auto topics = store->load_topics();
  REQUIRE(topics.ok());
  REQUIRE(topics->size() == 1);
  CHECK((*topics)[0].id == TopicId(kTopic));
  CHECK((*topics)[0].name == "orders");
  CHECK((*topics)[0].created_at_ms == 500);
  auto groups = store->load_groups();
  REQUIRE(groups.ok());
  REQUIRE(groups->size() == 1);
  CHECK((*groups)[0] == std::pair(std::string("workers"), GroupId(kGroup)));
  auto policies = store->load_policies();
  REQUIRE(policies.ok());
  REQUIRE(policies->size() == 1);
  CHECK((*policies)[0].first == "g:workers");
  CHECK((*policies)[0].second == str("policy bytes"));
}

TEST_CASE("a store written from the layout table reads back its log and cursors") {
  TempDir tmp("txmq-store-layout");
  auto store = open_fixture(tmp);
  auto bounds = store->partition_bounds(TopicId(kTopic), PartitionId(0));
  REQUIRE(bounds.ok());
  CHECK(bounds->first == Offset(5));
  CHECK(bounds->next == Offset(6));
  std::string seen;
  auto n = store->read_one(TopicId(kTopic), PartitionId(0), Offset(5), [&](const LogEntry& e) {
    seen = std::to_string(e.message->timestamp_ms()) + " " + text(e.message->key()) + " " +
           e.message->headers()->Get(0)->name()->str() + "=" + text(e.message->headers()->Get(0)->value()) + " " +
           text(e.message->body());
  });
  REQUIRE(n.ok());
  CHECK(seen == "1000 k-1 trace=t-1 hello");
  auto cursor = store->load_cursor(GroupId(kGroup), TopicId(kTopic), PartitionId(0));
  REQUIRE(cursor.ok());
  CHECK(cursor->ack_floor == Offset(2));
  CHECK(cursor->delivered_upto == Offset(6));
  CHECK(cursor->acked_above == std::set<Offset>{Offset(4)});
  REQUIRE(cursor->pending.count(Offset(3)) == 1);
  CHECK(cursor->pending[Offset(3)].delivery_count == DeliveryCount(2));
  CHECK(cursor->pending[Offset(3)].due_ms == 3000);
  CHECK(cursor->pending[Offset(3)].reasons == std::vector<std::string>{"slow"});
  auto topics = store->group_topics(GroupId(kGroup));
  REQUIRE(topics.ok());
  CHECK(*topics == std::vector<TopicId>{TopicId(kTopic)});
  auto delayed = store->next_delayed_ms();
  REQUIRE(delayed.ok());
  CHECK(*delayed == std::optional<std::uint64_t>(5000));
}

TEST_CASE("a store written from the layout table reads back its transactions and producers") {
  TempDir tmp("txmq-store-layout");
  auto store = open_fixture(tmp);
  auto open = store->read_txn(TxnId(kOpenId));
  REQUIRE(open.ok());
  REQUIRE(open->has_value());
  CHECK(static_cast<int>((*open)->state) == 0);
  CHECK((*open)->producer_group == "pg");
  CHECK((*open)->next_check_ms == 2000);
  REQUIRE((*open)->message.has_value());
  CHECK((*open)->message->key == "k");
  CHECK((*open)->message->headers == std::vector<std::pair<std::string, std::string>>{{"h", "v"}});
  CHECK((*open)->message->body == "body");
  auto parked = store->read_txn(TxnId(kParkedId));
  REQUIRE(parked.ok());
  REQUIRE(parked->has_value());
  CHECK(static_cast<int>((*parked)->state) == 3);
  CHECK((*parked)->checks == 5);
  auto ended = store->read_txn(TxnId(kEndedId));
  REQUIRE(ended.ok());
  REQUIRE(ended->has_value());
  CHECK(static_cast<int>((*ended)->state) == 1);
  CHECK((*ended)->resolution == "producer");
  CHECK((*ended)->producer_group == "pg");
  CHECK((*ended)->offset == Offset(5));
  CHECK((*ended)->ended_ms == 950);
  auto due = store->due_checks(2000, 10);
  REQUIRE(due.ok());
  CHECK(due->due == std::vector<std::pair<TxnId, std::uint64_t>>{{TxnId(kOpenId), 2000}});
  CHECK(store->txn_counts().prepared == 1);
  CHECK(store->txn_counts().parked == 1);
  CHECK(store->producer_count() == 1);
}

TEST_CASE("a transaction record whose state byte no layout writes is a damaged record of its key space") {
  TempDir tmp("txmq-store-layout");
  write_fixture(tmp.path());
  {
    // A parked state in txn_ended, and a state no version ever wrote in txn_open.
    MDB_env* env = nullptr;
    REQUIRE(mdb_env_create(&env) == 0);
    mdb_env_set_maxdbs(env, 16);
    REQUIRE(mdb_env_open(env, tmp.path().c_str(), 0, 0640) == 0);
    MDB_txn* txn = nullptr;
    REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
    put(txn, "txn_open", u64(kOpenId), half_record(9, 0, 2000));
    Bytes ended = ended_record();
    ended[0] = 3;
    put(txn, "txn_ended", u64(kEndedId), ended);
    REQUIRE(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
  }
  auto store = Store::open(StoreOptions{tmp.path(), 64ull << 20, SyncMode::kDurable});
  REQUIRE(store.ok());
  auto open = (*store)->read_txn(TxnId(kOpenId));
  REQUIRE_FALSE(open.ok());
  CHECK(open.error().code == ErrorCode::kStorageError);
  CHECK(open.error().message.find("'txn_open'") != std::string::npos);
  auto ended = (*store)->read_txn(TxnId(kEndedId));
  REQUIRE_FALSE(ended.ok());
  CHECK(ended.error().message.find("'txn_ended'") != std::string::npos);
  auto parked = (*store)->read_txn(TxnId(kParkedId));  // its neighbours' damage is theirs alone
  REQUIRE(parked.ok());
  CHECK(parked->has_value());
}

TEST_CASE("writes to a store written from the layout table go on from its counters") {
  TempDir tmp("txmq-store-layout");
  auto store = open_fixture(tmp);
  auto txn = store->begin_write(nullptr);
  REQUIRE(txn.ok());
  auto batch = (*txn)->producer_batch(ProducerId(kProducer), Sequence(9));
  REQUIRE(batch.ok());
  CHECK(*batch == std::optional(std::vector<std::pair<PartitionId, Offset>>{{PartitionId(0), Offset(5)}}));
  auto topic = (*txn)->create_topic("payments", 1, 600);
  REQUIRE(topic.ok());
  CHECK(topic->id == TopicId(8));
  auto group = (*txn)->intern_group("auditors");
  REQUIRE(group.ok());
  CHECK(*group == GroupId(4));
  auto ids = (*txn)->new_txn_ids(1, 0);
  REQUIRE(ids.ok());
  CHECK(*ids == std::vector<TxnId>{TxnId(7ull << 20)});
  auto offset = (*txn)->append(TopicId(kTopic), PartitionId(0), 1100, {}, {}, {});
  REQUIRE(offset.ok());
  CHECK(*offset == Offset(6));
  auto released = (*txn)->release_delayed(5000, 10);
  REQUIRE(released.ok());
  REQUIRE(released->size() == 1);
  CHECK((*released)[0].second == std::pair(PartitionId(0), Offset(7)));
  auto message = (*txn)->read_message(TopicId(kTopic), PartitionId(0), Offset(7));
  REQUIRE(message.ok());
  CHECK(message->body == "later");
  auto floor = (*txn)->ack(GroupId(kGroup), TopicId(kTopic), PartitionId(0), std::vector{Offset(2), Offset(3)});
  REQUIRE(floor.ok());
  CHECK(*floor == Offset(5));  // 2, 3 now and 4 before: up to the log's first offset
  REQUIRE((*txn)->commit().ok());
}
