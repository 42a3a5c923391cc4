// broker/storage: snapshots. A store streamed chunk by chunk into an empty one leaves the
// two with the same digest and log position, and the copy applies the source's next
// records; an install cut off half way is seen on reopening and done again from scratch;
// the snapshot is the store as of its start, whatever is written meanwhile.

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "broker/storage/layout.h"
#include "broker/storage/store.h"
#include "tests/support/store_fixtures.h"

using namespace txmq;
using namespace txmq::broker::storage;
using txmq::test::as_bytes;
using txmq::test::check_same;
using txmq::test::open_keeping_store;
using txmq::test::TempDir;
using txmq::test::write;

namespace {

// Keeps its whole log: catch_up reads the records past a snapshot's index from it.
void check_ok(const Status& st) { REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st)); }

// A store with something in every replicated key space: topics, messages, groups, cursors,
// acks, pending and delayed messages, policies, transactions in each state and their
// checks, an idempotent producer, two epochs, the in-sync set.
TopicMeta fill(Store& store) {
  write(store, [](WriteTxn& txn) { check_ok(txn.begin_epoch(1, "a")); });
  TopicMeta topic;
  write(store, [&](WriteTxn& txn) {
    auto t = txn.create_topic("orders", 2, 1000);
    REQUIRE(t.ok());
    topic = *t;
  });
  // Bodies of different sizes, one larger than any chunk below.
  write(store, [&](WriteTxn& txn) {
    for (int i = 0; i < 200; ++i)
      REQUIRE(txn.append(topic.id, PartitionId(i % 2), 1000 + i, as_bytes("k"), {},
                         as_bytes(std::string(i == 7 ? 5000 : 10 + i % 50, 'x') + std::to_string(i)))
                  .ok());
  });
  write(store, [&](WriteTxn& txn) {
    auto g = txn.intern_group("warehouse");
    REQUIRE(g.ok());
    std::vector<Offset> acks{Offset(0), Offset(1), Offset(3)};
    REQUIRE(txn.ack(*g, topic.id, PartitionId(0), acks).ok());
    check_ok(txn.mark_delivered(*g, topic.id, PartitionId(0), Offset(10)));
    check_ok(txn.put_pending(*g, topic.id, PartitionId(0), Offset(2), OwnedPending{1, 5, 5, 99, {"nack"}}));
    check_ok(txn.put_delayed(50000, topic.id, PartitionId(1), 1000, as_bytes("k"), {}, as_bytes("later")));
    const std::uint8_t policy[] = {1, 2, 3};
    check_ok(txn.put_policy("g:warehouse", policy));
    check_ok(txn.put_meta("in_sync", "a,b"));
  });
  write(store, [&](WriteTxn& txn) {
    auto ids = txn.new_txn_ids(3, 5000);
    REQUIRE(ids.ok());
    for (TxnId id : *ids)
      REQUIRE(txn.prepare(id, topic.id, PartitionId(0), "orders-service", 5000, as_bytes("k"), {}, as_bytes("half"), 0,
                          9000)
                  .ok());
    check_ok(txn.schedule_check((*ids)[0], (*ids)[2], 9000));
    REQUIRE(txn.end_txn((*ids)[0], true, "producer", 5001).ok());
    check_ok(txn.checked((*ids)[1], 5, 0, true));  // parked
    std::vector<std::pair<PartitionId, Offset>> offsets{{PartitionId(0), Offset(1)}};
    check_ok(txn.record_producer_batch(ProducerId(42), Sequence(1), offsets, 5, 5000));
  });
  write(store, [](WriteTxn& txn) { check_ok(txn.begin_epoch(2, "b")); });
  return topic;
}

// Streams `snapshot` into `to` as a follower does: begin, one transaction per chunk,
// finish. Stops after `max_chunks` chunks (without finishing) when given. Returns the
// number of chunks installed.
std::size_t install(const Snapshot& snapshot, Store& to, std::size_t max_bytes,
                    std::size_t max_chunks = SIZE_MAX) {
  write(to, [](WriteTxn& txn) { check_ok(txn.begin_snapshot_install()); });
  std::uint8_t after_space = 0;
  std::vector<std::uint8_t> after_key;
  for (std::size_t chunks = 0;; ++chunks) {
    if (chunks == max_chunks) return chunks;
    auto part = snapshot.read(after_space, after_key, max_bytes);
    REQUIRE_MESSAGE(part.ok(), (part.ok() ? "" : part.error().describe()));
    REQUIRE((part->done || !part->entries.empty()));
    // A chunk holds max_bytes at most, but for one entry larger than that alone.
    if (part->entries.size() > 1) CHECK(part->bytes <= max_bytes);
    write(to, [&](WriteTxn& txn) { check_ok(txn.put_snapshot_entries(part->entries)); });
    if (!part->entries.empty()) {
      after_space = part->entries.back().space;
      after_key = part->entries.back().key;
    }
    if (part->done) {
      write(to, [&](WriteTxn& txn) {
        check_ok(txn.finish_snapshot_install(snapshot.position().last_index, snapshot.position().epoch));
      });
      return chunks + 1;
    }
  }
}

std::unique_ptr<Snapshot> open_snapshot(const Store& store) {
  auto snapshot = store.open_snapshot();
  REQUIRE_MESSAGE(snapshot.ok(), (snapshot.ok() ? "" : snapshot.error().describe()));
  return std::move(*snapshot);
}

// Applies every record of `from` past `to`'s log, in one transaction: there must be some,
// and the first must be the one right after `to`'s log.
void catch_up(const Store& from, Store& to) {
  const std::uint64_t next = to.log_position().last_index + 1;
  const auto records = txmq::test::catch_up(from, to);
  REQUIRE(!records.empty());
  CHECK(records.front().index == next);
}

}  // namespace

TEST_CASE("a store streamed in small chunks into an empty one holds the same state and applies the next records") {
  TempDir dir_a, dir_b;
  auto leader = open_keeping_store(dir_a.path());
  auto follower = open_keeping_store(dir_b.path());
  const TopicMeta topic = fill(*leader);
  // The follower had a store of its own: the install replaces all of it.
  write(*follower, [](WriteTxn& txn) { REQUIRE(txn.create_topic("stale", 1, 1).ok()); });

  {
    auto snapshot = open_snapshot(*leader);
    CHECK(snapshot->position().last_index == leader->log_position().last_index);
    CHECK(snapshot->position().epoch == 2);
    CHECK(install(*snapshot, *follower, 1024) > 5);
  }
  check_same(*leader, *follower);
  auto pending = follower->snapshot_pending();
  REQUIRE(pending.ok());
  CHECK(!*pending);
  // Its own log is empty: it begins after the snapshot's index.
  auto first = follower->first_log_index();
  REQUIRE(first.ok());
  CHECK(*first == 0);

  // The leader's next records apply on the copy, across a restart of the copy too.
  write(*leader, [&](WriteTxn& txn) {
    REQUIRE(txn.append(topic.id, PartitionId(0), 9000, as_bytes("k"), {}, as_bytes("after")).ok());
  });
  follower.reset();
  follower = open_keeping_store(dir_b.path());
  CHECK(follower->log_position().last_index + 1 == leader->log_position().last_index);
  catch_up(*leader, *follower);
  write(*leader, [&](WriteTxn& txn) { REQUIRE(txn.delete_topic("orders").ok()); });
  catch_up(*leader, *follower);
  check_same(*leader, *follower);
}

TEST_CASE("an install cut off half way is seen after a restart and a new one completes it equal") {
  TempDir dir_a, dir_b;
  auto leader = open_keeping_store(dir_a.path());
  auto follower = open_keeping_store(dir_b.path());
  fill(*leader);
  {
    auto snapshot = open_snapshot(*leader);
    CHECK(install(*snapshot, *follower, 1024, 3) == 3);
  }
  follower.reset();
  follower = open_keeping_store(dir_b.path());
  auto pending = follower->snapshot_pending();
  REQUIRE(pending.ok());
  CHECK(*pending);
  CHECK(follower->log_position().last_index == 0);
  // Finishing what was not all installed is refused only by the caller knowing it: the
  // broker never finishes a cut-off install, it begins a new one.
  {
    auto snapshot = open_snapshot(*leader);
    install(*snapshot, *follower, 2048);
  }
  pending = follower->snapshot_pending();
  REQUIRE(pending.ok());
  CHECK(!*pending);
  check_same(*leader, *follower);
  // Without an install begun, finish is refused.
  auto txn = follower->begin_write(nullptr);
  REQUIRE(txn.ok());
  CHECK((*txn)->finish_snapshot_install(1, 2).error().code == ErrorCode::kInvalidArgument);
}

TEST_CASE("a snapshot is the store as of its start while the store is written meanwhile") {
  TempDir dir_a, dir_b, dir_c;
  auto leader = open_keeping_store(dir_a.path());
  auto follower = open_keeping_store(dir_b.path());
  auto reference = open_keeping_store(dir_c.path());
  const TopicMeta topic = fill(*leader);
  auto snapshot = open_snapshot(*leader);
  // What the snapshot must hold: a copy made before anything more is written.
  install(*snapshot, *reference, 1 << 20);
  const std::uint64_t at = leader->log_position().last_index;

  write(*leader, [&](WriteTxn& txn) {
    for (int i = 0; i < 20; ++i)
      REQUIRE(txn.append(topic.id, PartitionId(1), 7000 + i, as_bytes("k"), {}, as_bytes("during")).ok());
  });
  write(*leader, [&](WriteTxn& txn) { REQUIRE(txn.create_topic("newer", 1, 7000).ok()); });
  CHECK(snapshot->position().last_index == at);
  install(*snapshot, *follower, 512);
  snapshot.reset();
  check_same(*reference, *follower);
  // And the follower then catches up from the log.
  catch_up(*leader, *follower);
  check_same(*leader, *follower);
}

TEST_CASE("an install refuses entries a snapshot never carries") {
  TempDir dir;
  auto store = open_keeping_store(dir.path());
  auto txn = store->begin_write(nullptr);
  REQUIRE(txn.ok());
  check_ok((*txn)->begin_snapshot_install());
  std::vector<SnapshotEntry> log_entry{{static_cast<std::uint8_t>(kReplogSpace), {0, 0, 0, 0, 0, 0, 0, 1}, {1}}};
  CHECK((*txn)->put_snapshot_entries(log_entry).error().code == ErrorCode::kInvalidArgument);
  std::vector<SnapshotEntry> marker{{0, {'f', 'o', 'r', 'm', 'a', 't'}, {0, 0, 0, 9}}};
  CHECK((*txn)->put_snapshot_entries(marker).error().code == ErrorCode::kInvalidArgument);
  std::vector<SnapshotEntry> past{{200, {1}, {1}}};
  CHECK((*txn)->put_snapshot_entries(past).error().code == ErrorCode::kInvalidArgument);
}
