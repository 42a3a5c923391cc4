// broker/storage: opening a store, and check_store. A store that has committed is never
// reopened as a new empty one: a missing key space or layout marker is refused.

#include <doctest/doctest.h>
#include <lmdb.h>

#include <array>
#include <filesystem>
#include <memory>
#include <string>

#include "broker/storage/keys.h"
#include "broker/storage/store.h"
#include "broker/storage/store_check.h"
#include "tests/support/broker_process.h"

using namespace txmq;
using namespace txmq::broker::storage;
using txmq::test::TempDir;

namespace {

Result<std::unique_ptr<Store>> open_at(const std::string& dir, SyncMode sync = SyncMode::kDurable) {
  return Store::open(StoreOptions{dir, 64ull << 20, sync});
}

// A store with one topic "orders" of one partition holding one message.
void make_store(const std::string& dir, SyncMode sync = SyncMode::kDurable) {
  auto store = open_at(dir, sync);
  REQUIRE_MESSAGE(store.ok(), test::describe(store.ok() ? Status() : Status(store.error())));
  CHECK((*store)->created());
  auto txn = (*store)->begin_write(nullptr);
  REQUIRE(txn.ok());
  auto topic = (*txn)->create_topic("orders", 1, 1000);
  REQUIRE(topic.ok());
  const std::string body = "order-1";
  auto appended = (*txn)->append(topic->id, PartitionId(0), 1000, {}, {},
                                 {reinterpret_cast<const std::uint8_t*>(body.data()), body.size()});
  REQUIRE(appended.ok());
  REQUIRE((*txn)->commit().ok());
}

// Runs fn inside one raw LMDB write transaction on dir's environment, committed after.
template <typename Fn>
void edit_raw(const std::string& dir, Fn&& fn) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  mdb_env_set_maxdbs(env, 16);
  mdb_env_set_mapsize(env, 256ull << 20);
  REQUIRE(mdb_env_open(env, dir.c_str(), 0, 0640) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  fn(txn);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

std::string error_of(const Result<std::unique_ptr<Store>>& r) { return r.ok() ? "" : r.error().message; }

}  // namespace

TEST_CASE("a new directory becomes a store, and reopening it finds what was committed") {
  TempDir tmp("txmq-store-open");
  const std::string dir = tmp.file("a/b");  // two levels that do not exist yet
  make_store(dir);
  auto store = open_at(dir);
  REQUIRE(store.ok());
  CHECK_FALSE((*store)->created());
  auto topics = (*store)->load_topics();
  REQUIRE(topics.ok());
  REQUIRE(topics->size() == 1);
  CHECK((*topics)[0].name == "orders");
  auto report = check_store(dir);
  REQUIRE(report.ok());
  CHECK_MESSAGE(report->ok(), report->describe());
}

TEST_CASE("relaxed mode opens and reopens the same store") {
  TempDir tmp("txmq-store-open");
  make_store(tmp.path(), SyncMode::kRelaxed);
  auto store = open_at(tmp.path(), SyncMode::kRelaxed);
  REQUIRE(store.ok());
  auto bounds = (*store)->partition_bounds(TopicId(1), PartitionId(0));
  REQUIRE(bounds.ok());
  CHECK(bounds->next.value() == 1);
}

TEST_CASE("an environment that never committed is opened as a new store") {
  // A crash between LMDB creating data.mdb and the store's first commit: nothing was ever
  // confirmed from it.
  TempDir tmp("txmq-store-open");
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_open(env, tmp.path().c_str(), 0, 0640) == 0);
  mdb_env_close(env);
  auto store = open_at(tmp.path());
  REQUIRE_MESSAGE(store.ok(), error_of(store));
  CHECK((*store)->created());
}

TEST_CASE("a store whose layout marker is gone is refused, not opened empty") {
  TempDir tmp("txmq-store-open");
  make_store(tmp.path());
  edit_raw(tmp.path(), [](MDB_txn* txn) {
    MDB_dbi meta;
    REQUIRE(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
    MDB_val k{6, const_cast<char*>("format")};
    REQUIRE(mdb_del(txn, meta, &k, nullptr) == 0);
  });
  auto store = open_at(tmp.path());
  REQUIRE_FALSE(store.ok());
  CHECK(store.error().code == ErrorCode::kStorageError);
  CHECK(store.error().message.find("is damaged: its layout marker is missing") != std::string::npos);
  CHECK(store.error().message.find("--check-store") != std::string::npos);
  auto report = check_store(tmp.path());
  REQUIRE(report.ok());
  CHECK_FALSE(report->ok());
}

TEST_CASE("a store whose key space is gone is refused, and the refusal changes nothing") {
  TempDir tmp("txmq-store-open");
  make_store(tmp.path());
  edit_raw(tmp.path(), [](MDB_txn* txn) {
    MDB_dbi topics;
    REQUIRE(mdb_dbi_open(txn, "topics", 0, &topics) == 0);
    REQUIRE(mdb_drop(txn, topics, 1) == 0);  // 1: delete it from the catalog
  });
  for (int attempt = 0; attempt < 2; ++attempt) {  // the first refusal created nothing
    auto store = open_at(tmp.path());
    REQUIRE_FALSE(store.ok());
    CHECK(store.error().message.find("its key space 'topics' is missing") != std::string::npos);
  }
  auto report = check_store(tmp.path());
  REQUIRE(report.ok());
  CHECK_FALSE(report->ok());
  CHECK(report->describe().find("key space 'topics'") != std::string::npos);
}

TEST_CASE("check_store finds a message past its partition's next offset") {
  TempDir tmp("txmq-store-open");
  make_store(tmp.path());
  edit_raw(tmp.path(), [](MDB_txn* txn) {
    MDB_dbi log;
    REQUIRE(mdb_dbi_open(txn, "log", 0, &log) == 0);
    // Copy offset 0's record to offset 5: the partition's next offset is 1.
    LogKey at0(TopicId(1), PartitionId(0), Offset(0)), at5(TopicId(1), PartitionId(0), Offset(5));
    MDB_val k0{at0.bytes.size(), at0.bytes.data()}, v;
    REQUIRE(mdb_get(txn, log, &k0, &v) == 0);
    std::string copy(static_cast<const char*>(v.mv_data), v.mv_size);
    MDB_val k5{at5.bytes.size(), at5.bytes.data()}, v5{copy.size(), copy.data()};
    REQUIRE(mdb_put(txn, log, &k5, &v5, 0) == 0);
  });
  auto report = check_store(tmp.path());
  REQUIRE(report.ok());
  CHECK_FALSE(report->ok());
  CHECK(report->describe().find("1 stored messages at or past their partition's next offset") != std::string::npos);
}

TEST_CASE("check_store on a directory without a store is an error, and creates nothing") {
  TempDir tmp("txmq-store-open");
  auto report = check_store(tmp.path());
  REQUIRE_FALSE(report.ok());
  CHECK(report.error().message.find("no store in") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(tmp.file("data.mdb")));
}
