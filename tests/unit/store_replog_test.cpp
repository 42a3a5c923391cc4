// broker/storage: the replication log. Changes made on one store, applied as records to
// another, leave the two with the same digest; records that do not fit are refused whole.

#include <doctest/doctest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "broker/storage/layout.h"
#include "broker/storage/redo.h"
#include "broker/storage/store.h"
#include "tests/support/store_fixtures.h"

using namespace txmq;
using namespace txmq::broker::storage;
using txmq::test::as_bytes;
using txmq::test::catch_up;
using txmq::test::check_same;
using txmq::test::digest;
using txmq::test::open_keeping_store;
using txmq::test::open_logging_store;
using txmq::test::TempDir;
using txmq::test::write;

namespace {

// Creates a topic in a transaction of its own.
TopicMeta create_topic(Store& store, const std::string& name, std::uint32_t partitions, std::uint64_t now_ms) {
  TopicMeta topic;
  write(store, [&](WriteTxn& txn) {
    auto t = txn.create_topic(name, partitions, now_ms);
    REQUIRE(t.ok());
    topic = *t;
  });
  return topic;
}

}  // namespace

TEST_CASE("a follower that applies the leader's records holds the leader's store, key space by key space") {
  TempDir dir_a, dir_b;
  auto leader = open_keeping_store(dir_a.path());
  auto follower = open_logging_store(dir_b.path());
  write(*leader, [](WriteTxn& txn) { REQUIRE(txn.begin_epoch(1, "a").ok()); });
  const TopicMeta topic = create_topic(*leader, "orders", 2, 1000);
  write(*leader, [&](WriteTxn& txn) {
    for (int i = 0; i < 50; ++i)
      REQUIRE(txn.append(topic.id, PartitionId(i % 2), 1000 + i, as_bytes("k"), {}, as_bytes("body " + std::to_string(i))).ok());
  });
  GroupId group;
  write(*leader, [&](WriteTxn& txn) {
    auto g = txn.intern_group("warehouse");
    REQUIRE(g.ok());
    group = *g;
    std::vector<Offset> acks{Offset(0), Offset(1), Offset(3)};
    REQUIRE(txn.ack(group, topic.id, PartitionId(0), acks).ok());
    REQUIRE(txn.put_pending(group, topic.id, PartitionId(0), Offset(2), OwnedPending{1, 5, 5, 99, {"nack"}}).ok());
  });
  // A nested transaction that is dropped leaves nothing in the record; one that commits does.
  write(*leader, [&](WriteTxn& txn) {
    {
      auto child = txn.nested();
      REQUIRE(child.ok());
      REQUIRE((*child)->create_topic("dropped", 1, 1).ok());
    }
    auto child = txn.nested();
    REQUIRE(child.ok());
    REQUIRE((*child)->create_topic("kept", 1, 1).ok());
    REQUIRE((*child)->commit().ok());
  });
  write(*leader, [&](WriteTxn& txn) {
    auto ids = txn.new_txn_ids(2, 5000);
    REQUIRE(ids.ok());
    for (TxnId id : *ids)
      REQUIRE(txn.prepare(id, topic.id, PartitionId(0), "orders-service", 5000, as_bytes("k"), {}, as_bytes("half"), 0, 9000).ok());
    REQUIRE(txn.schedule_check((*ids)[0], (*ids)[1], 9000).ok());
    REQUIRE(txn.end_txn((*ids)[0], true, "producer", 5001).ok());
  });
  catch_up(*leader, *follower);
  check_same(*leader, *follower);

  // Deleting a topic is one change for its whole log; a trim deletes message by message.
  write(*leader, [&](WriteTxn& txn) { REQUIRE(txn.trim(topic.id, PartitionId(1), 1010, UINT64_MAX, 100).ok()); });
  write(*leader, [&](WriteTxn& txn) { REQUIRE(txn.delete_topic("kept").ok()); });
  write(*leader, [&](WriteTxn& txn) { REQUIRE(txn.begin_epoch(2, "b").ok()); });
  catch_up(*leader, *follower);
  check_same(*leader, *follower);
  auto epochs = follower->epochs();
  REQUIRE(epochs.ok());
  REQUIRE(epochs->size() == 2);
  CHECK((*epochs)[1].epoch == 2);
  CHECK((*epochs)[1].leader == "b");
  CHECK((*epochs)[1].first_index == leader->log_position().last_index);

  // The follower's log survives a restart as it was.
  follower.reset();
  follower = open_logging_store(dir_b.path());
  check_same(*leader, *follower);
}

TEST_CASE("a record out of order or that does not decode is refused and nothing of it is applied") {
  TempDir dir_a, dir_b;
  auto leader = open_keeping_store(dir_a.path());
  auto follower = open_logging_store(dir_b.path());
  write(*leader, [](WriteTxn& txn) { REQUIRE(txn.create_topic("a", 1, 1).ok()); });
  write(*leader, [](WriteTxn& txn) { REQUIRE(txn.create_topic("b", 1, 1).ok()); });
  auto records = leader->read_log_records(1, 1 << 20);
  REQUIRE(records.ok());
  REQUIRE(records->size() == 2);

  auto txn = follower->begin_write(nullptr);
  REQUIRE(txn.ok());
  auto skipped = (*txn)->apply_record(2, (*records)[1].bytes);
  CHECK(skipped.error().code == ErrorCode::kInvalidArgument);
  auto cut = (*records)[0].bytes;
  cut.resize(cut.size() - 3);
  CHECK((*txn)->apply_record(1, cut).error().code == ErrorCode::kStorageError);
  auto wrong_space = (*records)[0].bytes;
  wrong_space[kRedoHeaderBytes + 1] = static_cast<std::uint8_t>(kReplogSpace);
  CHECK((*txn)->apply_record(1, wrong_space).error().code == ErrorCode::kStorageError);
  REQUIRE((*txn)->commit().ok());
  auto topics = follower->load_topics();
  REQUIRE(topics.ok());
  CHECK(topics->empty());
  CHECK(follower->log_position().last_index == 0);
}

TEST_CASE("a transaction that applies records may write nothing of its own") {
  TempDir dir_a, dir_b;
  auto leader = open_keeping_store(dir_a.path());
  auto follower = open_logging_store(dir_b.path());
  write(*leader, [](WriteTxn& txn) { REQUIRE(txn.create_topic("a", 1, 1).ok()); });
  auto records = leader->read_log_records(1, 1 << 20);
  REQUIRE(records.ok());
  auto txn = follower->begin_write(nullptr);
  REQUIRE(txn.ok());
  REQUIRE((*txn)->create_topic("local", 1, 1).ok());
  CHECK((*txn)->apply_record(1, (*records)[0].bytes).error().code == ErrorCode::kInvalidArgument);
}

TEST_CASE("the log is trimmed past its size, never past what a follower still needs") {
  TempDir dir;
  auto store = open_logging_store(dir.path());
  store->set_log_retention(0, UINT64_MAX / 2);  // keep nothing more than the newest record
  store->set_log_keep_from(5);
  for (int i = 0; i < 10; ++i) write(*store, [&](WriteTxn& txn) { REQUIRE(txn.create_topic("t" + std::to_string(i), 1, 1).ok()); });
  auto first = store->first_log_index();
  REQUIRE(first.ok());
  CHECK(*first == 5);
  store->set_log_keep_from(UINT64_MAX);
  write(*store, [&](WriteTxn& txn) { REQUIRE(txn.create_topic("last", 1, 1).ok()); });
  first = store->first_log_index();
  REQUIRE(first.ok());
  CHECK(*first == 10);  // the newest before this commit stays; the commit adds 11
  CHECK(store->log_position().last_index == 11);
}

TEST_CASE("redo records: what is built is read back; a damaged one is refused before anything is visited") {
  RedoBuilder b;
  std::vector<std::uint8_t> big(300, 7);
  b.add(RedoKind::kPut, 1, as_bytes("key"), big);
  b.add(RedoKind::kDelete, 3, as_bytes("gone"));
  b.add(RedoKind::kDeletePrefix, 3, as_bytes("\x01"));
  auto record = b.record({7, 1234});
  auto header = redo_header(record);
  REQUIRE(header.ok());
  CHECK(header->epoch == 7);
  CHECK(header->time_ms == 1234);
  std::vector<RedoKind> kinds;
  REQUIRE(for_each_change(record, kKeySpaces.size(), [&](const RedoChange& c) {
            kinds.push_back(c.kind);
            if (c.kind == RedoKind::kPut) CHECK(c.value.size() == 300);
            return Status();
          }).ok());
  CHECK(kinds == std::vector<RedoKind>{RedoKind::kPut, RedoKind::kDelete, RedoKind::kDeletePrefix});
  // Every truncation of the record is refused whole, or is a shorter valid record.
  for (std::size_t n = 0; n < record.size(); ++n) {
    std::span<const std::uint8_t> cut(record.data(), n);
    int visited = 0;
    auto st = for_each_change(cut, kKeySpaces.size(), [&](const RedoChange&) {
      ++visited;
      return Status();
    });
    if (!st) CHECK(visited == 0);
  }
  auto unknown = record;
  unknown[kRedoHeaderBytes] = 9;
  CHECK_FALSE(for_each_change(unknown, kKeySpaces.size(), [](const RedoChange&) { return Status(); }).ok());
}

namespace {

// One write of every kind a broker makes, each its own record: the store's digest after
// each one, by the record's index.
std::map<std::uint64_t, std::vector<KeySpaceDigest>> write_every_kind(Store& store, std::uint64_t first_epoch) {
  std::map<std::uint64_t, std::vector<KeySpaceDigest>> at;
  auto step = [&](const std::function<void(WriteTxn&)>& fn) {
    write(store, fn);
    at[store.log_position().last_index] = digest(store);
  };
  TopicMeta topic;
  step([&](WriteTxn& txn) {
    auto t = txn.create_topic("orders-" + std::to_string(first_epoch), 2, 1000);
    REQUIRE(t.ok());
    topic = *t;
  });
  step([&](WriteTxn& txn) {
    for (int i = 0; i < 20; ++i)
      REQUIRE(txn.append(topic.id, PartitionId(i % 2), 1000 + i, as_bytes("k"), {}, as_bytes("body " + std::to_string(i))).ok());
  });
  GroupId group;
  step([&](WriteTxn& txn) {
    auto g = txn.intern_group("warehouse");
    REQUIRE(g.ok());
    group = *g;
    std::vector<Offset> acks{Offset(0), Offset(1), Offset(3)};
    REQUIRE(txn.ack(group, topic.id, PartitionId(0), acks).ok());
    REQUIRE(txn.put_pending(group, topic.id, PartitionId(0), Offset(2), OwnedPending{1, 5, 5, 99, {"nack"}}).ok());
  });
  step([&](WriteTxn& txn) {
    std::vector<Offset> acks{Offset(2)};  // the floor moves: acked entries go
    REQUIRE(txn.ack(group, topic.id, PartitionId(0), acks).ok());
  });
  step([&](WriteTxn& txn) {
    auto ids = txn.new_txn_ids(2, 5000);
    REQUIRE(ids.ok());
    for (TxnId id : *ids)
      REQUIRE(txn.prepare(id, topic.id, PartitionId(0), "orders-service", 5000, as_bytes("k"), {}, as_bytes("half"), 0, 9000).ok());
    REQUIRE(txn.schedule_check((*ids)[0], (*ids)[1], 9000).ok());
    REQUIRE(txn.end_txn((*ids)[0], true, "producer", 5001).ok());
  });
  step([&](WriteTxn& txn) { REQUIRE(txn.trim(topic.id, PartitionId(1), 1010, UINT64_MAX, 100).ok()); });
  step([&](WriteTxn& txn) {
    REQUIRE(txn.create_topic("doomed-" + std::to_string(first_epoch), 1, 1).ok());
    // The same key changed twice in one record: undone last change first.
    auto doomed = txn.create_topic("doomed-too-" + std::to_string(first_epoch), 1, 1);
    REQUIRE(doomed.ok());
    REQUIRE(txn.append(doomed->id, PartitionId(0), 1, {}, {}, as_bytes("a")).ok());
    REQUIRE(txn.append(doomed->id, PartitionId(0), 2, {}, {}, as_bytes("b")).ok());
  });
  step([&](WriteTxn& txn) { REQUIRE(txn.delete_topic("doomed-too-" + std::to_string(first_epoch)).ok()); });
  step([&](WriteTxn& txn) { REQUIRE(txn.begin_epoch(first_epoch + 1, "b").ok()); });
  step([&](WriteTxn& txn) { REQUIRE(txn.append(topic.id, PartitionId(0), 3000, {}, {}, as_bytes("after")).ok()); });
  return at;
}

void check_digest(const Store& store, const std::vector<KeySpaceDigest>& expected) {
  auto now = digest(store);
  REQUIRE(now.size() == expected.size());
  for (std::size_t i = 0; i < now.size(); ++i) {
    INFO("key space " << now[i].key_space);
    CHECK(now[i].entries == expected[i].entries);
    CHECK(now[i].sha256 == expected[i].sha256);
  }
}

Truncation truncate(Store& store, std::uint64_t from) {
  Truncation out;
  write(store, [&](WriteTxn& txn) {
    auto t = txn.truncate_log(from);
    REQUIRE_MESSAGE(t.ok(), (t.ok() ? "" : t.error().describe()));
    out = *t;
  });
  return out;
}

}  // namespace

TEST_CASE("truncation undoes the log's newest records exactly, on the store that wrote them and on a follower") {
  TempDir dir_a, dir_b;
  auto leader = open_keeping_store(dir_a.path());
  auto follower = open_keeping_store(dir_b.path());
  write(*leader, [](WriteTxn& txn) { REQUIRE(txn.begin_epoch(1, "a").ok()); });
  const std::uint64_t base = leader->log_position().last_index;
  const auto base_digest = digest(*leader);
  auto at = write_every_kind(*leader, 1);
  catch_up(*leader, *follower);
  check_same(*leader, *follower);
  REQUIRE(leader->log_position().epoch == 2);

  // Newest first, one record at a time, then the rest at once: each step leaves the
  // store as it was when the record before was the newest.
  for (Store* store : {leader.get(), follower.get()}) {
    auto it = at.rbegin();
    for (int i = 0; i < 3; ++i, ++it) {
      const std::uint64_t index = it->first;
      Truncation t = truncate(*store, index);
      CHECK(t.undone);
      CHECK(t.first == index);
      CHECK(t.last == index);
      CHECK(store->log_position().last_index == index - 1);
      check_digest(*store, std::next(it)->second);
    }
    CHECK(store->log_position().epoch == 1);  // the epoch begun in a truncated record is gone
    Truncation t = truncate(*store, base + 1);
    CHECK(t.undone);
    CHECK(t.count() == at.size() - 3);
    CHECK(store->log_position().last_index == base);
    check_digest(*store, base_digest);
    // Past the end: nothing to do.
    CHECK(truncate(*store, base + 1).count() == 0);
  }
  check_same(*leader, *follower);

  // After a truncation the log goes on from there: another leader's records apply.
  TempDir dir_c;
  auto other = open_keeping_store(dir_c.path());
  catch_up(*leader, *other);
  write_every_kind(*other, 7);
  catch_up(*other, *follower);
  check_same(*other, *follower);
  // The truncation survived a restart.
  leader.reset();
  leader = open_logging_store(dir_a.path());
  CHECK(leader->log_position().last_index == base);
  check_digest(*leader, base_digest);
}

TEST_CASE("a record whose undo image is gone is not truncated, nor any record with it") {
  TempDir dir;
  auto store = open_keeping_store(dir.path());
  write(*store, [](WriteTxn& txn) { REQUIRE(txn.begin_epoch(1, "a").ok()); });
  auto at = write_every_kind(*store, 1);
  const std::uint64_t last = store->log_position().last_index;
  const auto before = digest(*store);
  // The commit index passed the first half: their images are trimmed as commits go by.
  const std::uint64_t committed = at.begin()->first + 3;
  store->set_undo_keep_from(committed + 1);
  write_every_kind(*store, 5);
  Truncation t = truncate(*store, committed);
  CHECK_FALSE(t.undone);
  CHECK(t.missing == committed);
  CHECK(store->log_position().last_index > last);
  // Above the commit index the images are kept.
  t = truncate(*store, last + 1);
  CHECK(t.undone);
  CHECK(store->log_position().last_index == last);
  check_digest(*store, before);
}

TEST_CASE("a store without logging keeps no undo images") {
  TempDir dir;
  auto store = open_logging_store(dir.path());
  store->set_logging(false);
  write_every_kind(*store, 1);
  // No record; its epoch began past a base, since the store held state by then.
  CHECK(store->log_position().last_index == 1);
  auto first = store->first_log_index();
  REQUIRE(first.ok());
  CHECK(*first == 0);
  // Nothing to undo with: the base cannot be truncated.
  Truncation t = truncate(*store, 1);
  CHECK_FALSE(t.undone);
  CHECK(t.missing == 1);
}

TEST_CASE("a message is kept once: its record refers to it, and a follower is sent its bytes") {
  TempDir dir_a, dir_b, dir_c;
  auto leader = open_keeping_store(dir_a.path());
  write(*leader, [](WriteTxn& txn) { REQUIRE(txn.begin_epoch(1, "a").ok()); });
  const TopicMeta topic = create_topic(*leader, "short-lived", 1, 1000);
  const std::string body(4000, 'm');
  write(*leader, [&](WriteTxn& txn) { REQUIRE(txn.append(topic.id, PartitionId(0), 1, {}, {}, as_bytes(body)).ok()); });
  const std::uint64_t put_at = leader->log_position().last_index;
  const auto with_message = digest(*leader);
  auto stored = leader->read_log_records(put_at, 1 << 20);
  REQUIRE(stored.ok());
  CHECK(stored->front().bytes.size() < 200);  // the message's bytes are not in the log twice
  auto sent = leader->read_log_records(put_at, 1 << 20, Store::RecordForm::kExpanded);
  REQUIRE(sent.ok());
  CHECK(sent->front().bytes.size() > body.size());

  // Deleted again by a later record not yet committed: still sent, from the undo image.
  write(*leader, [&](WriteTxn& txn) { REQUIRE(txn.delete_topic("short-lived").ok()); });
  auto follower = open_logging_store(dir_b.path());
  auto records = leader->read_log_records(1, 1 << 30, Store::RecordForm::kExpanded);
  REQUIRE(records.ok());
  write(*follower, [&](WriteTxn& txn) {
    for (const auto& r : *records)
      if (r.index <= put_at) REQUIRE(txn.apply_record(r.index, r.bytes).ok());
  });
  check_digest(*follower, with_message);
  catch_up(*leader, *follower);
  check_same(*leader, *follower);

  // Once the deletion is committed the message may be left out: the follower ends the same.
  leader->set_undo_keep_from(leader->log_position().last_index + 1);
  write(*leader, [&](WriteTxn& txn) { REQUIRE(txn.create_topic("after", 1, 1).ok()); });
  auto late = open_logging_store(dir_c.path());
  catch_up(*leader, *late);
  check_same(*leader, *late);
}

TEST_CASE("the writer's tick is no replicated change: no record, and no digest moves") {
  TempDir dir;
  auto store = open_logging_store(dir.path());
  write(*store, [](WriteTxn& txn) { REQUIRE(txn.begin_epoch(1, "a").ok()); });
  const auto before = digest(*store);
  const std::uint64_t last = store->log_position().last_index;
  write(*store, [](WriteTxn& txn) { REQUIRE(txn.touch().ok()); });
  write(*store, [](WriteTxn& txn) { REQUIRE(txn.touch().ok()); });
  CHECK(store->log_position().last_index == last);
  check_digest(*store, before);
}

TEST_CASE("a compacted record keeps each key's last change only, in order, unless it deletes a prefix") {
  RedoBuilder b;
  b.add(RedoKind::kPut, 2, as_bytes("partition"), as_bytes("next 1"));
  b.add(RedoKind::kPutRef, 3, as_bytes("message 0"));
  b.add(RedoKind::kPut, 2, as_bytes("partition"), as_bytes("next 2"));
  b.add(RedoKind::kPutRef, 3, as_bytes("message 1"));
  b.add(RedoKind::kPut, 7, as_bytes("pending"), as_bytes("lease"));
  b.add(RedoKind::kDelete, 7, as_bytes("pending"));
  b.add(RedoKind::kPut, 5, as_bytes("partition"), as_bytes("another space, another key"));
  auto record = b.compacted_record({3, 4}, kKeySpaces.size());
  std::vector<std::string> seen;
  REQUIRE(for_each_change(record, kKeySpaces.size(), [&](const RedoChange& c) -> Status {
            seen.push_back(std::to_string(static_cast<int>(c.kind)) + " " + std::to_string(c.space) + " " +
                           std::string(c.key.begin(), c.key.end()) + "=" + std::string(c.value.begin(), c.value.end()));
            return {};
          }).ok());
  CHECK(seen == std::vector<std::string>{"4 3 message 0=", "1 2 partition=next 2", "4 3 message 1=", "2 7 pending=",
                                         "1 5 partition=another space, another key"});
  auto header = redo_header(record);
  REQUIRE(header.ok());
  CHECK(header->epoch == 3);
  CHECK(header->time_ms == 4);

  // An undo image keeps each key's first change: applied last first, it ends the key as
  // the record found it. A delete is kept without a look at the others (in an image it
  // is mostly the inverse of a new message): applied before the key's first change, it
  // changes nothing of where the key ends.
  seen.clear();
  REQUIRE(for_each_change(b.compacted_record({3, 4}, kKeySpaces.size(), RedoBuilder::Keep::kFirst),
                          kKeySpaces.size(), [&](const RedoChange& c) -> Status {
                            seen.push_back(std::to_string(c.space) + " " + std::string(c.key.begin(), c.key.end()) + "=" +
                                           std::string(c.value.begin(), c.value.end()));
                            return {};
                          })
              .ok());
  CHECK(seen == std::vector<std::string>{"2 partition=next 1", "3 message 0=", "3 message 1=", "7 pending=lease",
                                         "7 pending=", "5 partition=another space, another key"});

  b.add(RedoKind::kDeletePrefix, 3, as_bytes("message"));
  CHECK(b.compacted_record({3, 4}, kKeySpaces.size()) == b.record({3, 4}));
}

TEST_CASE("a batch of messages carries its partition's record once, and truncates back to the record before") {
  TempDir dir_a, dir_b;
  auto leader = open_keeping_store(dir_a.path());
  auto follower = open_keeping_store(dir_b.path());
  write(*leader, [](WriteTxn& txn) { REQUIRE(txn.begin_epoch(1, "a").ok()); });
  const TopicMeta topic = create_topic(*leader, "orders", 2, 1000);
  write(*leader, [&](WriteTxn& txn) { REQUIRE(txn.append(topic.id, PartitionId(0), 1, {}, {}, as_bytes("m0")).ok()); });
  const auto before = digest(*leader);
  catch_up(*leader, *follower);
  // Partition 0, 1, 0, 0: a put_over of partition 0 after partition 1's is rewritten in
  // place too, as nothing else changed the key space between.
  write(*leader, [&](WriteTxn& txn) {
    for (std::uint32_t p : {0u, 1u, 0u, 0u}) REQUIRE(txn.append(topic.id, PartitionId(p), 2, {}, {}, as_bytes("m")).ok());
  });
  auto records = leader->read_log_records(leader->log_position().last_index, 1 << 20);
  REQUIRE(records.ok());
  std::map<std::string, int> kinds;
  REQUIRE(for_each_change(records->front().bytes, kKeySpaces.size(), [&](const RedoChange& c) -> Status {
            ++kinds[std::to_string(static_cast<int>(c.kind)) + " " + std::string(kKeySpaces[c.space])];
            return {};
          }).ok());
  CHECK(kinds == std::map<std::string, int>{{"1 partitions", 2}, {"4 log", 4}});
  catch_up(*leader, *follower);
  check_same(*leader, *follower);
  for (Store* store : {leader.get(), follower.get()}) {
    Truncation t = truncate(*store, store->log_position().last_index);
    CHECK(t.undone);
    check_digest(*store, before);
  }
}

TEST_CASE("a store that ran without replication starts its log past a base: its state is in no record") {
  TempDir dir;
  auto store = open_logging_store(dir.path());
  store->set_logging(false);
  write(*store, [](WriteTxn& txn) { REQUIRE(txn.create_topic("older", 1, 1).ok()); });
  CHECK(store->log_position().last_index == 0);
  store->set_logging(true);
  write(*store, [](WriteTxn& txn) { REQUIRE(txn.begin_epoch(1, "a").ok()); });
  // Index 1 is the base: a follower that asks for it is sent a snapshot.
  CHECK(store->log_position().last_index == 2);
  auto first = store->first_log_index();
  REQUIRE(first.ok());
  CHECK(*first == 2);
  auto epochs = store->epochs();
  REQUIRE(epochs.ok());
  CHECK(epochs->front().first_index == 2);
  // Reopened, the log goes on from there.
  store.reset();
  store = open_logging_store(dir.path());
  CHECK(store->log_position().last_index == 2);

  // A store that never held anything starts its log at 1.
  TempDir fresh_dir;
  auto fresh = open_logging_store(fresh_dir.path());
  write(*fresh, [](WriteTxn& txn) { REQUIRE(txn.begin_epoch(1, "a").ok()); });
  CHECK(fresh->log_position().last_index == 1);
}
