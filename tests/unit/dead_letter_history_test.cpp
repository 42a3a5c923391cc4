// broker/dead_letter: what a failure leaves behind. The reasons a PendingRecord keeps, the
// headers a dead letter carries, and the way back (redrive), first as pure functions, then
// written through a real store (driven directly, no writer thread).

#include "broker/dead_letter.h"

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"

using namespace txmq;
using namespace txmq::broker;
using txmq::test::TempDir;

namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::vector<std::string> numbered(std::size_t from, std::size_t to) {
  std::vector<std::string> out;
  for (std::size_t i = from; i < to; ++i) out.push_back("r" + std::to_string(i));
  return out;
}

const FailureOrigin kOrigin{"workers", storage::GroupId(1), "orders", TopicId(1)};

storage::OwnedPending record(std::uint32_t count, std::uint64_t first_ms, std::uint64_t last_ms,
                             std::vector<std::string> reasons) {
  storage::OwnedPending r;
  r.delivery_count = count;
  r.first_delivery_ms = first_ms;
  r.last_delivery_ms = last_ms;
  r.reasons = std::move(reasons);
  return r;
}

// A store with topic "orders" (two partitions) and group "workers", as kOrigin names them.
struct StoreFixture {
  StoreFixture() {
    auto opened = storage::Store::open(storage::StoreOptions{dir.path(), 256ull << 20, storage::SyncMode::kDurable});
    REQUIRE(opened.ok());
    store = std::move(*opened);
    auto txn = begin();
    auto topic = txn->create_topic("orders", 2, 1);
    REQUIRE(topic.ok());
    auto group = txn->intern_group("workers");
    REQUIRE(group.ok());
    origin = FailureOrigin{"workers", *group, "orders", topic->id};
    commit(*txn);
  }

  std::unique_ptr<storage::WriteTxn> begin() {
    auto txn = store->begin_write(nullptr);
    REQUIRE(txn.ok());
    return std::move(*txn);
  }
  static void commit(storage::WriteTxn& txn) { REQUIRE(txn.commit().ok()); }

  Offset append(PartitionId p, std::string_view key, const Headers& headers, std::string_view body) {
    std::vector<storage::HeaderView> views;
    for (const auto& [n, v] : headers) views.emplace_back(n, as_bytes(v));
    auto txn = begin();
    auto o = txn->append(origin.topic_id, p, 555, as_bytes(key), views, as_bytes(body));
    REQUIRE(o.ok());
    commit(*txn);
    return *o;
  }

  // Writes one failure in its own transaction; the dead letter's offset, if one was written.
  std::optional<Offset> write(const Failure& failure, std::uint64_t now_ms) {
    auto txn = begin();
    std::optional<storage::TopicMeta> dlq;
    std::optional<Offset> dlq_offset;
    auto st = write_failure(*txn, origin, failure, now_ms, dlq, dlq_offset);
    REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
    if (dlq_offset) {
      REQUIRE(dlq.has_value());
      CHECK(dlq->name == "workers.dlq");
      dlq_id = dlq->id;
    }
    commit(*txn);
    return dlq_offset;
  }

  std::optional<storage::OwnedPending> pending(PartitionId p, Offset o) {
    auto txn = begin();
    auto r = txn->get_pending(origin.group_id, origin.topic_id, p, o);
    REQUIRE(r.ok());
    return *r;
  }

  Result<storage::OwnedMessage> read(TopicId topic, Offset o, PartitionId p = PartitionId(0)) {
    auto txn = begin();
    return txn->read_message(topic, p, o);
  }

  TempDir dir{"txmq-dead-letter"};
  std::unique_ptr<storage::Store> store;
  FailureOrigin origin;
  TopicId dlq_id;
};

Failure failure(PartitionId p, Offset o, bool dead_letter, bool had_record, storage::OwnedPending r) {
  return Failure{p, o, dead_letter, std::move(r), had_record};
}

Headers txmq_headers(const Headers& headers) {
  Headers out;
  for (const auto& h : headers)
    if (h.first.rfind("txmq-", 0) == 0) out.push_back(h);
  return out;
}

}  // namespace

// --- Reasons --------------------------------------------------------------------------

TEST_CASE("merged reasons are the older ones, then the newer") {
  CHECK(merge_reasons({"a", "b"}, {"c"}) == std::vector<std::string>{"a", "b", "c"});
  CHECK(merge_reasons({}, {"c"}) == std::vector<std::string>{"c"});
  CHECK(merge_reasons({"a"}, {}) == std::vector<std::string>{"a"});
}

TEST_CASE("merged reasons keep only the last kMaxReasons") {
  auto merged = merge_reasons(numbered(0, kMaxReasons), numbered(kMaxReasons, kMaxReasons + 2));
  REQUIRE(merged.size() == kMaxReasons);
  CHECK(merged.front() == "r2");
  CHECK(merged.back() == "r" + std::to_string(kMaxReasons + 1));
  CHECK(merge_reasons(numbered(0, kMaxReasons - 1), {"x"}).size() == kMaxReasons);
}

// --- Headers --------------------------------------------------------------------------

TEST_CASE("a dead letter's headers name its origin and its history, reasons oldest first") {
  auto headers = dead_letter_headers(kOrigin, PartitionId(1), Offset(42), record(3, 100, 900, {"timeout", "bad"}),
                                     77, 1000);
  CHECK(headers == Headers{
                       {"txmq-origin-topic", "orders"},
                       {"txmq-origin-partition", "1"},
                       {"txmq-origin-offset", "42"},
                       {"txmq-origin-message-id", "orders/1/42"},
                       {"txmq-origin-timestamp-ms", "77"},
                       {"txmq-group", "workers"},
                       {"txmq-delivery-count", "3"},
                       {"txmq-first-delivery-ms", "100"},
                       {"txmq-last-delivery-ms", "900"},
                       {"txmq-dead-lettered-ms", "1000"},
                       {"txmq-reason", "timeout"},
                       {"txmq-reason", "bad"},
                   });
}

TEST_CASE("a dead letter's headers read back as its origin") {
  storage::OwnedMessage letter;
  letter.headers = {{"trace", "t1"}};
  for (auto& h : dead_letter_headers(kOrigin, PartitionId(1), Offset(42), record(2, 1, 2, {"a", "b"}), 3, 4))
    letter.headers.push_back(h);
  auto origin = letter_origin(letter);
  REQUIRE(origin.has_value());
  CHECK(origin->group == "workers");
  CHECK(origin->topic == "orders");
  CHECK(origin->partition == PartitionId(1));
  CHECK(origin->offset == Offset(42));
  CHECK(origin->reasons == std::vector<std::string>{"a", "b"});
}

TEST_CASE("a message without a whole origin is not a dead letter") {
  auto full = dead_letter_headers(kOrigin, PartitionId(0), Offset(5), record(1, 1, 1, {}), 1, 1);
  for (std::string missing : {"txmq-group", "txmq-origin-topic", "txmq-origin-partition", "txmq-origin-offset"}) {
    CAPTURE(missing);
    storage::OwnedMessage letter;
    for (const auto& h : full)
      if (h.first != missing) letter.headers.push_back(h);
    CHECK_FALSE(letter_origin(letter).has_value());
  }
  for (std::string bad : {"", "x", "5x", "-1", "99999999999999999999"}) {
    CAPTURE(bad);
    storage::OwnedMessage letter;
    for (auto h : full) {
      if (h.first == "txmq-origin-offset") h.second = bad;
      letter.headers.push_back(h);
    }
    CHECK_FALSE(letter_origin(letter).has_value());
  }
}

// --- Written through the store ----------------------------------------------------------

TEST_CASE("a retry's record keeps the first delivery time and every reason so far") {
  StoreFixture s;
  const Offset o = s.append(PartitionId(1), "k", {}, "body");
  CHECK_FALSE(s.write(failure(PartitionId(1), o, false, false, record(1, 10, 20, {"first"})), 20));
  auto r = s.pending(PartitionId(1), o);
  REQUIRE(r.has_value());
  CHECK(r->delivery_count == 1);
  CHECK(r->first_delivery_ms == 10);
  CHECK(r->reasons == std::vector<std::string>{"first"});

  // The group's second failure knows only its own reason; the record adds the older ones.
  CHECK_FALSE(s.write(failure(PartitionId(1), o, false, true, record(2, 30, 40, {"second"})), 40));
  r = s.pending(PartitionId(1), o);
  REQUIRE(r.has_value());
  CHECK(r->delivery_count == 2);
  CHECK(r->first_delivery_ms == 10);
  CHECK(r->last_delivery_ms == 40);
  CHECK(r->reasons == std::vector<std::string>{"first", "second"});
}

TEST_CASE("a dead letter keeps its message, replaces old history, and clears the record") {
  StoreFixture s;
  const Offset o = s.append(PartitionId(1), "key-1", {{"trace", "t1"}, {"txmq-reason", "stale"}}, "payload");
  (void)s.write(failure(PartitionId(1), o, false, false, record(1, 10, 20, {"first"})), 20);
  auto at = s.write(failure(PartitionId(1), o, true, true, record(2, 30, 40, {"last"})), 50);
  REQUIRE(at.has_value());
  CHECK_FALSE(s.pending(PartitionId(1), o).has_value());

  auto letter = s.read(s.dlq_id, *at);
  REQUIRE(letter.ok());
  CHECK(letter->key == "key-1");
  CHECK(letter->body == "payload");
  CHECK(letter->headers.front() == std::pair<std::string, std::string>{"trace", "t1"});
  CHECK(txmq_headers(letter->headers) ==
        dead_letter_headers(s.origin, PartitionId(1), o, record(2, 10, 40, {"first", "last"}), 555, 50));
}

TEST_CASE("a dead letter whose message retention removed is only acknowledged") {
  StoreFixture s;
  const Offset o = s.append(PartitionId(0), "", {}, "gone soon");
  {
    auto txn = s.begin();
    REQUIRE(txn->delete_message(s.origin.topic_id, PartitionId(0), o).ok());
    StoreFixture::commit(*txn);
  }
  CHECK_FALSE(s.write(failure(PartitionId(0), o, true, false, record(1, 1, 2, {})), 3));
}

TEST_CASE("redrive puts the origin back for the group with its reasons, and removes the letter") {
  StoreFixture s;
  const Offset o = s.append(PartitionId(1), "k", {}, "body");
  auto at = s.write(failure(PartitionId(1), o, true, false, record(4, 1, 2, {"a", "b"})), 3);
  REQUIRE(at.has_value());

  auto txn = s.begin();
  auto redriven = redrive_one(*txn, "workers", s.origin.group_id, s.dlq_id, *at, 900);
  REQUIRE(redriven.ok());
  StoreFixture::commit(*txn);
  CHECK(redriven->topic == s.origin.topic_id);
  CHECK(redriven->partition == PartitionId(1));
  CHECK(redriven->offset == o);
  auto r = s.pending(PartitionId(1), o);
  REQUIRE(r.has_value());
  CHECK(r->delivery_count == 0);
  CHECK(r->due_ms == 900);
  CHECK(r->reasons == std::vector<std::string>{"a", "b", "redriven"});
  CHECK_FALSE(s.read(s.dlq_id, *at).ok());
}

TEST_CASE("redrive refuses another group's letter and one whose origin is gone") {
  StoreFixture s;
  const Offset o = s.append(PartitionId(0), "", {}, "body");
  auto at = s.write(failure(PartitionId(0), o, true, false, record(1, 1, 2, {})), 3);
  REQUIRE(at.has_value());

  auto txn = s.begin();
  auto other = redrive_one(*txn, "others", storage::GroupId(99), s.dlq_id, *at, 4);
  REQUIRE_FALSE(other.ok());
  CHECK(other.error().code == ErrorCode::kInvalidArgument);

  REQUIRE(txn->delete_message(s.origin.topic_id, PartitionId(0), o).ok());
  auto gone = redrive_one(*txn, "workers", s.origin.group_id, s.dlq_id, *at, 4);
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.error().code == ErrorCode::kInvalidArgument);
}

TEST_CASE("a dead letter the broker writes carries its mark; an appended message does not") {
  StoreFixture s;
  const Offset o = s.append(PartitionId(0), "", {}, "body");
  auto origin = s.read(s.origin.topic_id, o);
  REQUIRE(origin.ok());
  CHECK_FALSE(origin->dead_letter);
  auto at = s.write(failure(PartitionId(0), o, true, false, record(1, 1, 2, {})), 3);
  REQUIRE(at.has_value());
  auto letter = s.read(s.dlq_id, *at);
  REQUIRE(letter.ok());
  CHECK(letter->dead_letter);
}

TEST_CASE("redrive refuses a letter without the mark, and moves it when the operator trusts it") {
  StoreFixture s;
  const Offset o = s.append(PartitionId(1), "", {}, "acknowledged long ago");
  // A genuine letter first, so that the dead-letter topic exists; then one with the same
  // history appended as a client's message (or an older broker's letter) would be.
  auto genuine = s.write(failure(PartitionId(1), o, true, false, record(1, 1, 2, {"r"})), 3);
  REQUIRE(genuine.has_value());
  Offset unmarked;
  {
    auto txn = s.begin();
    auto letter = txn->read_message(s.dlq_id, PartitionId(0), *genuine);
    REQUIRE(letter.ok());
    std::vector<storage::HeaderView> views;
    for (const auto& [n, v] : letter->headers) views.emplace_back(n, as_bytes(v));
    auto appended = txn->append(s.dlq_id, PartitionId(0), 4, {}, views, as_bytes(letter->body));
    REQUIRE(appended.ok());
    unmarked = *appended;
    StoreFixture::commit(*txn);
  }

  auto txn = s.begin();
  auto refused = redrive_one(*txn, "workers", s.origin.group_id, s.dlq_id, unmarked, 5);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::kForbidden);
  CHECK(refused.error().message.find("lacks the broker's mark") != std::string::npos);
  CHECK(txn->read_message(s.dlq_id, PartitionId(0), unmarked).ok());  // still there

  auto trusted = redrive_one(*txn, "workers", s.origin.group_id, s.dlq_id, unmarked, 5, true);
  REQUIRE(trusted.ok());
  CHECK(trusted->offset == o);
}
