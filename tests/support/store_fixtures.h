// What the unit tests of replication's storage side share (store_replog_test,
// store_snapshot_test): a store that logs its changes as a leader's does, one committed
// transaction at a time, a follower's catch-up from another store's log, and the check
// that two stores hold the same.
//
// Everything here REQUIREs or CHECKs on failure, so call it from the test's own thread.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "broker/storage/store.h"
#include "tests/support/broker_process.h"

namespace txmq::test {

inline std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// A durable store in dir that logs its changes. Its log retention is the store's default.
inline std::unique_ptr<broker::storage::Store> open_logging_store(const std::string& dir) {
  using namespace broker::storage;
  auto store = Store::open(StoreOptions{dir, 256ull << 20, SyncMode::kDurable});
  REQUIRE_MESSAGE(store.ok(), (store.ok() ? "" : store.error().describe()));
  (*store)->set_logging(true);  // as replication turns it on
  return std::move(*store);
}

// As open_logging_store, keeping its whole log (by default a store keeps only its newest
// record): what a test that reads or truncates old records needs.
inline std::unique_ptr<broker::storage::Store> open_keeping_store(const std::string& dir) {
  auto store = open_logging_store(dir);
  store->set_log_retention(1ull << 30, UINT64_MAX / 2);
  return store;
}

// Runs fn in one committed top-level transaction.
inline void write(broker::storage::Store& store, const std::function<void(broker::storage::WriteTxn&)>& fn) {
  auto txn = store.begin_write(nullptr);
  REQUIRE(txn.ok());
  fn(**txn);
  auto st = (*txn)->commit();
  REQUIRE_MESSAGE(st.ok(), describe(st));
}

// Applies every record of `from` that `to` does not have yet, in one transaction, and
// returns them.
inline std::vector<broker::storage::LogRecord> catch_up(const broker::storage::Store& from,
                                                        broker::storage::Store& to) {
  using broker::storage::Store;
  auto records = from.read_log_records(to.log_position().last_index + 1, 1 << 30, Store::RecordForm::kExpanded);
  REQUIRE(records.ok());
  write(to, [&](broker::storage::WriteTxn& txn) {
    for (const auto& r : *records) {
      auto st = txn.apply_record(r.index, r.bytes);
      REQUIRE_MESSAGE(st.ok(), describe(st));
    }
  });
  return std::move(*records);
}

inline std::vector<broker::storage::KeySpaceDigest> digest(const broker::storage::Store& store) {
  auto d = store.digest();
  REQUIRE(d.ok());
  return *d;
}

// The same entries in every key space, and logs that end at the same index and epoch.
inline void check_same(const broker::storage::Store& a, const broker::storage::Store& b) {
  auto da = digest(a), db = digest(b);
  REQUIRE(da.size() == db.size());
  for (std::size_t i = 0; i < da.size(); ++i) {
    INFO("key space " << da[i].key_space);
    CHECK(da[i].entries == db[i].entries);
    CHECK(da[i].sha256 == db[i].sha256);
  }
  CHECK(a.log_position().last_index == b.log_position().last_index);
  CHECK(a.log_position().epoch == b.log_position().epoch);
}

}  // namespace txmq::test
