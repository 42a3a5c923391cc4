// broker/storage/store_txn: transactions kept by state and check-backs scheduled by span,
// driven directly (no writer thread).

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "broker/storage/store.h"
#include "tests/support/broker_process.h"
#include "txmq_generated.h"

using namespace txmq;
using namespace txmq::broker::storage;
using txmq::test::TempDir;

namespace {

constexpr std::uint64_t kTestMapBytes = 256ull << 20;
constexpr std::uint64_t kNow = 1'000'000;
constexpr std::uint64_t kDue = kNow + 6000;
constexpr auto kPrepared = TxnState::kPrepared;
constexpr auto kCommitted = TxnState::kCommitted;
constexpr auto kRolledBack = TxnState::kRolledBack;
constexpr auto kParked = TxnState::kParked;

std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// A store with topic "orders" (one partition).
struct Fixture {
  TempDir dir{"txmq-store-txn"};
  std::unique_ptr<Store> store;
  TopicId topic;

  Fixture() {
    auto s = Store::open(StoreOptions{dir.path(), kTestMapBytes, SyncMode::kDurable});
    REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().describe()));
    store = std::move(*s);
    write([&](WriteTxn& txn) {
      auto meta = txn.create_topic("orders", 1, kNow);
      REQUIRE(meta.ok());
      topic = meta->id;
    });
  }

  template <typename F>
  void write(F&& f) {
    auto txn = store->begin_write(nullptr);
    REQUIRE(txn.ok());
    f(**txn);
    auto st = (*txn)->commit();
    REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  }

  // Prepares n transactions as one batch, as PrepareOp does, with their first check at kDue.
  std::vector<TxnId> prepare(std::size_t n, std::uint64_t now = kNow) {
    std::vector<TxnId> out;
    write([&](WriteTxn& txn) {
      auto ids = txn.new_txn_ids(n, now);
      REQUIRE(ids.ok());
      for (auto id : *ids) {
        auto r = txn.prepare(id, topic, PartitionId(0), "orders-service", now, as_bytes("k"), {},
                             as_bytes("body " + std::to_string(id.value())), 0, kDue);
        REQUIRE(r.ok());
        out.push_back(id);
      }
      REQUIRE(txn.schedule_check(out.front(), out.back(), kDue).ok());
    });
    return out;
  }

  TxnEndResult end(TxnId id, bool commit, std::uint64_t now = kNow + 10) {
    TxnEndResult out;
    write([&](WriteTxn& txn) {
      auto r = txn.end_txn(id, commit, "producer", now);
      REQUIRE(r.ok());
      out = *r;
    });
    return out;
  }

  DueChecks due(std::uint64_t now, std::size_t max = 1000,
                std::optional<std::pair<TxnId, std::uint64_t>> after = std::nullopt) {
    auto d = store->due_checks(now, max, after);
    REQUIRE(d.ok());
    return *d;
  }

  std::vector<TxnId> due_ids(std::uint64_t now) {
    std::vector<TxnId> out;
    for (auto [id, when] : due(now).due) out.push_back(id);
    return out;
  }
};

}  // namespace

TEST_CASE("a commit removes the half message, appends it and is remembered; a second end changes nothing") {
  Fixture f;
  auto ids = f.prepare(1);
  CHECK(f.store->txn_counts().prepared == 1);
  auto first = f.end(ids[0], true);
  CHECK(first.changed);
  CHECK(first.state == kCommitted);
  REQUIRE(first.appended.has_value());
  CHECK(first.appended->value() == 0);
  CHECK(f.store->txn_counts().prepared == 0);
  auto t = f.store->read_txn(ids[0]);
  REQUIRE(t.ok());
  REQUIRE(t->has_value());
  CHECK((*t)->state == kCommitted);
  CHECK_FALSE((*t)->message.has_value());
  CHECK((*t)->producer_group == "orders-service");
  auto again = f.end(ids[0], false);
  CHECK(again.found);
  CHECK_FALSE(again.changed);
  CHECK(again.state == kCommitted);
}

TEST_CASE("ended transactions leave their span; the span with none prepared is reported empty and dropped") {
  Fixture f;
  auto ids = f.prepare(3);
  CHECK(f.due_ids(kDue - 1).empty());  // not due yet
  CHECK(f.due_ids(kDue) == ids);
  f.end(ids[1], true);
  CHECK(f.due_ids(kDue) == std::vector<TxnId>{ids[0], ids[2]});
  f.end(ids[0], false);
  f.end(ids[2], true);
  auto d = f.due(kDue);
  CHECK(d.due.empty());
  REQUIRE(d.empty.size() == 1);
  CHECK(d.empty[0].first_id == ids.front());
  CHECK(d.empty[0].last_id == ids.back());
  f.write([&](WriteTxn& txn) { REQUIRE(txn.drop_check_span(d.empty[0]).ok()); });
  auto next = f.store->next_check_ms();
  REQUIRE(next.ok());
  CHECK_FALSE(next->has_value());
}

TEST_CASE("a check takes its transaction out of the span: the others stay due, it moves to its next check") {
  Fixture f;
  auto ids = f.prepare(3);
  const std::uint64_t later = kDue + 5000;
  f.write([&](WriteTxn& txn) { REQUIRE(txn.checked(ids[1], 1, later, false).ok()); });
  CHECK(f.due_ids(kDue) == std::vector<TxnId>{ids[0], ids[2]});
  CHECK(f.due_ids(later) == std::vector<TxnId>{ids[0], ids[2], ids[1]});  // earliest due first
  auto t = f.store->read_txn(ids[1]);
  REQUIRE(t.ok());
  CHECK((*t)->checks == 1);
  CHECK((*t)->next_check_ms == later);
  // A drop of a span that still holds a prepared transaction is refused.
  f.write([&](WriteTxn& txn) { REQUIRE(txn.drop_check_span(CheckSpan{kDue, ids[0], ids[2]}).ok()); });
  CHECK(f.due_ids(kDue) == std::vector<TxnId>{ids[0], ids[2]});
}

TEST_CASE("parking takes the transaction out of its span and keeps its half message") {
  Fixture f;
  auto ids = f.prepare(2);
  f.write([&](WriteTxn& txn) { REQUIRE(txn.checked(ids[0], 15, 0, true).ok()); });
  CHECK(f.due_ids(kDue) == std::vector<TxnId>{ids[1]});
  auto counts = f.store->txn_counts();
  CHECK(counts.prepared == 1);
  CHECK(counts.parked == 1);
  auto parked = f.store->list_txns(kParked, 10);
  REQUIRE(parked.ok());
  REQUIRE(parked->size() == 1);
  CHECK((*parked)[0].id == ids[0]);
  auto t = f.store->read_txn(ids[0]);
  REQUIRE(t.ok());
  CHECK((*t)->state == kParked);
  REQUIRE((*t)->message.has_value());
  CHECK((*t)->message->body == "body " + std::to_string(ids[0].value()));
  // An operator's end of a parked transaction commits it.
  auto ended = f.end(ids[0], true);
  CHECK(ended.changed);
  CHECK(f.store->txn_counts().parked == 0);
}

TEST_CASE("due checks come in pages that resume where the last one stopped") {
  Fixture f;
  auto a = f.prepare(3);
  auto b = f.prepare(2);
  std::vector<TxnId> seen;
  std::optional<std::pair<TxnId, std::uint64_t>> after;
  for (int pages = 0; pages < 10; ++pages) {
    auto d = f.due(kDue, 2, after);
    for (auto [id, when] : d.due) seen.push_back(id);
    if (!d.resume) break;
    after = d.resume;
  }
  std::vector<TxnId> all = a;
  all.insert(all.end(), b.begin(), b.end());
  CHECK(seen == all);
}

TEST_CASE("pruning deletes transactions ended before the cut-off and keeps the rest") {
  Fixture f;
  auto ids = f.prepare(3);
  f.end(ids[0], true, kNow + 100);
  f.end(ids[1], false, kNow + 5000);  // created before the cut-off, ended after it
  f.end(ids[2], true, kNow + 100);
  std::size_t pruned = 0;
  f.write([&](WriteTxn& txn) {
    auto n = txn.prune_ended(kNow + 1000, 100);
    REQUIRE(n.ok());
    pruned = *n;
  });
  CHECK(pruned == 2);
  auto gone = f.store->read_txn(ids[0]);
  REQUIRE(gone.ok());
  CHECK_FALSE(gone->has_value());
  auto kept = f.store->read_txn(ids[1]);
  REQUIRE(kept.ok());
  REQUIRE(kept->has_value());
  CHECK((*kept)->state == kRolledBack);
}

TEST_CASE("listing all states gives the newest first across prepared, parked and ended") {
  Fixture f;
  auto ids = f.prepare(3);
  f.end(ids[0], true);
  f.write([&](WriteTxn& txn) { REQUIRE(txn.checked(ids[1], 15, 0, true).ok()); });
  auto all = f.store->list_txns(std::nullopt, 10);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 3);
  CHECK((*all)[0].id == ids[2]);
  CHECK((*all)[0].state == kPrepared);
  CHECK((*all)[1].id == ids[1]);
  CHECK((*all)[1].state == kParked);
  CHECK((*all)[2].id == ids[0]);
  CHECK((*all)[2].state == kCommitted);
  auto two = f.store->list_txns(std::nullopt, 2);
  REQUIRE(two.ok());
  CHECK(two->size() == 2);
}

TEST_CASE("many ends in one write transaction, in any order and among other writes, each end their own") {
  // The writer keeps one cursor per key space for a whole batch; ends that jump about,
  // prepares, a park (which writes txn_open without that cursor) and a repeated end in the
  // same LMDB transaction must each still find their own record. 600 half messages fill
  // several pages, so the cursor moves across pages, and deletes merge and rebalance them.
  Fixture f;
  auto ids = f.prepare(600);
  std::vector<TxnId> order = ids;
  for (std::size_t i = 0; i < order.size(); ++i) std::swap(order[i], order[(i * 7919) % order.size()]);
  const TxnId parked = order[300];
  std::vector<TxnId> later;
  f.write([&](WriteTxn& txn) {
    for (std::size_t i = 0; i < order.size(); ++i) {
      const TxnId id = order[i];
      if (id == parked) {
        REQUIRE(txn.checked(id, 15, 0, true).ok());
        continue;
      }
      auto r = txn.end_txn(id, id.value() % 3 != 0, "producer", kNow + 10);
      REQUIRE(r.ok());
      CHECK(r->changed);
      if (i == 100) {  // fresh ones go at the end while the cursor is elsewhere
        auto fresh = txn.new_txn_ids(50, kNow + 10);
        REQUIRE(fresh.ok());
        for (auto fid : *fresh) {
          REQUIRE(txn.prepare(fid, f.topic, PartitionId(0), "orders-service", kNow + 10, as_bytes("k"), {},
                              as_bytes("late"), 0, kDue)
                      .ok());
          later.push_back(fid);
        }
      }
      if (i == 200) {  // a repeated end in the same transaction changes nothing
        auto again = txn.end_txn(order[0], order[0].value() % 3 == 0, "producer", kNow + 10);
        REQUIRE(again.ok());
        CHECK_FALSE(again->changed);
        CHECK(again->state == (order[0].value() % 3 != 0 ? kCommitted : kRolledBack));
      }
    }
  });
  CHECK(f.store->txn_counts().prepared == later.size());
  CHECK(f.store->txn_counts().parked == 1);
  for (auto id : ids) {
    auto t = f.store->read_txn(id);
    REQUIRE(t.ok());
    REQUIRE(t->has_value());
    CHECK((*t)->state == (id == parked ? kParked : id.value() % 3 != 0 ? kCommitted : kRolledBack));
  }
  for (auto id : later) {
    auto t = f.store->read_txn(id);
    REQUIRE(t.ok());
    REQUIRE(t->has_value());
    CHECK((*t)->state == kPrepared);
  }
}

TEST_CASE("idempotent producers silent past the cut-off are forgotten, a slice of the table at a time") {
  Fixture f;
  const std::vector<std::pair<PartitionId, Offset>> batch{{PartitionId(0), Offset(7)}};
  // Ten producers that last wrote at kNow, one that wrote later.
  f.write([&](WriteTxn& txn) {
    for (std::uint64_t p = 1; p <= 10; ++p) REQUIRE(txn.record_producer_batch(ProducerId(p * 1000), Sequence(1), batch, 64, kNow).ok());
    REQUIRE(txn.record_producer_batch(ProducerId(99), Sequence(1), batch, 64, kNow + 5000).ok());
  });
  CHECK(f.store->producer_count() == 11);

  // Four at a time; the position carries from call to call and comes back to 0 at the end.
  ProducerId resume;
  std::size_t forgotten = 0, calls = 0;
  do {
    f.write([&](WriteTxn& txn) {
      auto n = txn.prune_producers(kNow + 1, kNow + 6000, &resume, 4);
      REQUIRE(n.ok());
      CHECK(*n <= 4);
      forgotten += *n;
    });
  } while (resume != ProducerId() && ++calls < 10);
  CHECK(resume == ProducerId());
  CHECK(forgotten == 10);
  CHECK(f.store->producer_count() == 1);

  f.write([&](WriteTxn& txn) {
    // The silent one's resend is new to the broker now; the recent one is still recognised.
    auto old = txn.producer_batch(ProducerId(3000), Sequence(1));
    REQUIRE(old.ok());
    CHECK_FALSE(old->has_value());
    auto recent = txn.producer_batch(ProducerId(99), Sequence(1));
    REQUIRE(recent.ok());
    REQUIRE(recent->has_value());
    CHECK((**recent)[0].second == Offset(7));
  });
}

TEST_CASE("a producer record from before records had a time is given one at the next prune, not dropped") {
  Fixture f;
  const std::vector<std::pair<PartitionId, Offset>> batch{{PartitionId(0), Offset(3)}};
  // A time of 0 is what a record written before the field existed reads as.
  f.write([&](WriteTxn& txn) { REQUIRE(txn.record_producer_batch(ProducerId(77), Sequence(1), batch, 64, 0).ok()); });
  ProducerId resume;
  f.write([&](WriteTxn& txn) {
    auto n = txn.prune_producers(kNow, kNow, &resume, 100);
    REQUIRE(n.ok());
    CHECK(*n == 0);
  });
  CHECK(f.store->producer_count() == 1);
  f.write([&](WriteTxn& txn) {
    auto seen = txn.producer_batch(ProducerId(77), Sequence(1));
    REQUIRE(seen.ok());
    CHECK(seen->has_value());
    // Stamped kNow: forgotten once the cut-off passes that.
    auto n = txn.prune_producers(kNow + 1, kNow + 1, &resume, 100);
    REQUIRE(n.ok());
    CHECK(*n == 1);
  });
  CHECK(f.store->producer_count() == 0);
}
