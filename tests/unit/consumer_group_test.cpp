// broker/consumer_group: dispatch, leases, windows, retries, ordered mode and
// dead-letter decisions, driven through a fake log and fake sinks, with time as a number.

#include "broker/consumer_group.h"

#include <doctest/doctest.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

using namespace txmq;
using namespace txmq::broker;

namespace {

// One delivery as a sink received it, decoded from its frame.
struct Delivered {
  std::uint32_t partition;
  std::uint64_t offset;
  std::uint32_t count;               // delivery_count
  std::vector<std::string> history;  // reasons of earlier failures
  std::string body;
};

class FakeSink final : public DeliverySink {
 public:
  bool open() const override { return open_; }
  bool writable() const override { return writable_; }
  void send(std::span<const std::uint8_t> frame) override {
    flatbuffers::Verifier verifier(frame.data(), frame.size());
    REQUIRE(wire::VerifySizePrefixedFrameBuffer(verifier));
    const auto* d = wire::GetSizePrefixedFrame(frame.data())->body_as_Delivery();
    REQUIRE(d != nullptr);
    Delivered out{d->partition(), d->offset(), d->delivery_count(), {},
                  d->body() ? std::string(d->body()->begin(), d->body()->end()) : std::string()};
    if (d->history())
      for (const auto* s : *d->history()) out.history.push_back(s->str());
    got.push_back(std::move(out));
  }

  // Offsets received since the last take(), in order.
  std::vector<std::uint64_t> take() {
    std::vector<std::uint64_t> out;
    for (const auto& d : got) out.push_back(d.offset);
    got.clear();
    return out;
  }

  std::vector<Delivered> got;
  bool open_ = true;
  bool writable_ = true;
};

// A topic's log in memory. Messages are stored as the broker stores them (StoredMessage
// flatbuffers), so the group reads them exactly as it reads the Store.
class FakeLog final : public LogReader {
 public:
  Result<storage::CursorState> load_cursor(storage::GroupId, TopicId, PartitionId partition) const override {
    auto it = cursors.find(partition.value());
    return it == cursors.end() ? storage::CursorState{} : it->second;
  }
  Result<std::size_t> read_log(TopicId, PartitionId partition, Offset from, std::size_t max,
                               const std::function<bool(const storage::LogEntry&)>& visit) const override {
    ++reads;
    std::size_t n = 0;
    for (auto it = messages.lower_bound({partition.value(), from.value()});
         it != messages.end() && it->first.first == partition.value() && n < max; ++it) {
      ++n;
      if (!visit(entry(it))) break;
    }
    return n;
  }
  Result<std::size_t> read_one(TopicId, PartitionId partition, Offset offset,
                               const std::function<void(const storage::LogEntry&)>& visit) const override {
    auto it = messages.find({partition.value(), offset.value()});
    if (it == messages.end()) return Error(ErrorCode::kInvalidArgument, "not stored");
    visit(entry(it));
    return std::size_t{1};
  }

  void put(std::uint32_t partition, std::uint64_t offset, std::string_view body) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(storage::CreateStoredMessage(fbb, 1000 + offset, 0, 0,
                                            fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(body.data()),
                                                             body.size())));
    messages[{partition, offset}] = fbb.Release();
  }
  void remove(std::uint32_t partition, std::uint64_t offset) { messages.erase({partition, offset}); }

  std::map<std::uint32_t, storage::CursorState> cursors;  // by partition; absent: empty
  mutable int reads = 0;

 private:
  using Messages = std::map<std::pair<std::uint32_t, std::uint64_t>, flatbuffers::DetachedBuffer>;
  static storage::LogEntry entry(Messages::const_iterator it) {
    return {Offset(it->first.second), flatbuffers::GetRoot<storage::StoredMessage>(it->second.data())};
  }
  Messages messages;
};

GroupPolicy test_policy(wire::GroupMode mode = wire::GroupMode::Shared) {
  GroupPolicy policy;
  policy.mode = mode;
  policy.ack_wait = std::chrono::milliseconds(1000);
  policy.retry.max_deliveries = 3;
  policy.retry.delays_ms = {100, 200, 400};
  return policy;
}

// A topic, its log, and one group on it, loaded and ready for consumers.
struct Fixture {
  explicit Fixture(std::uint32_t partitions = 1, GroupPolicy policy = test_policy(), std::uint64_t messages = 0)
      : Fixture(partitions, std::move(policy), messages, {}) {}
  Fixture(std::uint32_t partitions, GroupPolicy policy, std::uint64_t messages,
          std::map<std::uint32_t, storage::CursorState> cursors) {
    topic.meta = storage::TopicMeta{TopicId(7), "orders", partitions, 0};
    topic.partitions.resize(partitions);
    log.cursors = std::move(cursors);
    for (std::uint32_t p = 0; p < partitions; ++p)
      for (std::uint64_t o = 0; o < messages; ++o) append(p);
    group = std::make_unique<ConsumerGroup>("workers", storage::GroupId(3), topic, std::move(policy), 1);
    REQUIRE(group->load(log).ok());
  }

  // Appends one message to a partition, as a committed produce does.
  void append(std::uint32_t p) {
    const std::uint64_t o = topic.partitions[p].next.value();
    log.put(p, o, "m" + std::to_string(p) + "-" + std::to_string(o));
    topic.partitions[p].next = Offset(o + 1);
  }

  std::vector<std::pair<PartitionId, Offset>> dispatch(std::uint64_t now_ms) {
    return group->dispatch(log, fbb, now_ms);
  }

  SettleBatch settle(const FakeSink& sink, std::uint64_t offset, wire::SettleVerb verb, std::uint64_t now_ms,
                     std::string_view reason = {}, std::uint64_t delay_ms = 0, std::uint32_t partition = 0) {
    SettleBatch batch;
    REQUIRE(group->settle(sink, PartitionId(partition), Offset(offset), verb, delay_ms, reason, now_ms, batch).ok());
    return batch;
  }

  Topic topic;
  FakeLog log;
  flatbuffers::FlatBufferBuilder fbb;
  std::unique_ptr<ConsumerGroup> group;
};

using Offsets = std::vector<std::uint64_t>;
constexpr auto kAck = wire::SettleVerb::Ack;
constexpr auto kNack = wire::SettleVerb::Nack;
constexpr auto kTerminate = wire::SettleVerb::Terminate;
constexpr auto kInProgress = wire::SettleVerb::InProgress;

}  // namespace

// --- Windows -------------------------------------------------------------------------

TEST_CASE("a consumer never holds more unacknowledged deliveries than its window") {
  Fixture f(1, test_policy(), 10);
  FakeSink sink;
  f.group->add_consumer(sink, 3);
  f.dispatch(0);
  CHECK(sink.take() == Offsets{0, 1, 2});
  f.dispatch(0);  // still full
  CHECK(sink.take().empty());

  (void)f.settle(sink, 1, kAck, 10);
  f.dispatch(10);
  CHECK(sink.take() == Offsets{3});
  CHECK(f.group->find_consumer(&sink)->in_flight == 3);
  CHECK(f.group->in_flight() == 3);
}

TEST_CASE("the window counts deliveries over every partition") {
  Fixture f(3, test_policy(), 4);
  FakeSink sink;
  f.group->add_consumer(sink, 5);
  f.dispatch(0);
  CHECK(sink.got.size() == 5);
  CHECK(f.group->in_flight() == 5);
}

TEST_CASE("a window of 0 pauses a consumer and a larger one resumes it") {
  Fixture f(1, test_policy(), 4);
  FakeSink sink;
  f.group->add_consumer(sink, 0);
  f.dispatch(0);
  CHECK(sink.take().empty());
  f.group->add_consumer(sink, 2);
  CHECK(f.group->consumers() == 1);
  f.dispatch(0);
  CHECK(sink.take() == Offsets{0, 1});
}

TEST_CASE("a sink that is not writable gets nothing until it is") {
  Fixture f(1, test_policy(), 4);
  FakeSink sink;
  sink.writable_ = false;
  f.group->add_consumer(sink, 10);
  f.dispatch(0);
  CHECK(sink.take().empty());
  sink.writable_ = true;
  f.dispatch(0);
  CHECK(sink.take() == Offsets{0, 1, 2, 3});
}

TEST_CASE("consumers with room share the messages in turn") {
  Fixture f(1, test_policy(), 4);
  FakeSink a, b;
  f.group->add_consumer(a, 2);
  f.group->add_consumer(b, 2);
  f.dispatch(0);
  CHECK(a.got.size() == 2);
  CHECK(b.got.size() == 2);
  CHECK(a.take() != b.take());
}

TEST_CASE("settled entries are skipped without using the window") {
  // Acked above the floor and pending offsets come from the durable cursor.
  storage::CursorState cursor;
  cursor.acked_above = {Offset(0), Offset(1), Offset(3)};
  Fixture f(1, test_policy(), 6, {{0, cursor}});
  FakeSink sink;
  f.group->add_consumer(sink, 2);
  f.dispatch(0);
  CHECK(sink.take() == Offsets{2, 4});
}

// --- Leases --------------------------------------------------------------------------

TEST_CASE("a lease that runs out fails the delivery and the message comes again") {
  Fixture f(1, test_policy(), 1);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  f.dispatch(0);
  REQUIRE(sink.take() == Offsets{0});
  CHECK(f.group->next_wakeup(0) == 1000);  // ack_wait

  CHECK(f.group->expire_leases(999).empty());
  auto failures = f.group->expire_leases(1000);
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].offset == Offset(0));
  CHECK_FALSE(failures[0].dead_letter);
  CHECK(failures[0].record.delivery_count == 1);
  CHECK(failures[0].record.due_ms == 1100);  // the first retry delay
  CHECK(failures[0].record.reasons == std::vector<std::string>{"lease expired"});
  CHECK(f.group->in_flight() == 0);
  CHECK(f.group->pending() == 1);

  f.dispatch(1099);  // not before its retry time
  CHECK(sink.take().empty());
  CHECK(f.group->next_wakeup(1099) == 1100);
  f.dispatch(1100);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].offset == 0);
  CHECK(sink.got[0].count == 2);
  CHECK(sink.got[0].history == std::vector<std::string>{"lease expired"});
  CHECK(f.group->redelivered == 1);
}

TEST_CASE("in progress restarts the lease from now") {
  Fixture f(1, test_policy(), 1);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  f.dispatch(0);
  (void)f.settle(sink, 0, kInProgress, 900);
  CHECK(f.group->next_wakeup(900) == 1900);
  CHECK(f.group->expire_leases(1000).empty());
  CHECK(f.group->expire_leases(1900).size() == 1);
}

TEST_CASE("a message whose lease ran out with one consumer goes to another first") {
  Fixture f(1, test_policy(), 1);
  FakeSink a, b;
  f.group->add_consumer(a, 1);
  f.dispatch(0);
  REQUIRE(a.take() == Offsets{0});
  f.group->add_consumer(b, 1);
  (void)f.group->expire_leases(1000);
  f.dispatch(1100);  // a comes first in turn, but it let the lease run out
  CHECK(a.take().empty());
  CHECK(b.take() == Offsets{0});
}

TEST_CASE("an ack after the lease ran out still counts") {
  Fixture f(1, test_policy(), 2);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  f.dispatch(0);
  REQUIRE(sink.take() == Offsets{0});
  (void)f.group->expire_leases(1000);
  SettleBatch batch = f.settle(sink, 0, kAck, 1050);
  CHECK(batch.acks[PartitionId(0)] == std::vector<Offset>{Offset(0)});
  CHECK(batch.clear.size() == 1);  // its pending record goes
  CHECK(f.group->pending() == 0);
  f.dispatch(5000);
  CHECK(sink.take() == Offsets{1});
}

TEST_CASE("a consumer that goes away fails its deliveries for others at once") {
  Fixture f(1, test_policy(), 2);
  FakeSink a, b;
  f.group->add_consumer(a, 2);
  f.dispatch(0);
  REQUIRE(a.take() == Offsets{0, 1});
  auto failures = f.group->remove_consumer(&a, 10);
  REQUIRE(failures.size() == 2);
  CHECK(failures[0].record.due_ms == 10);  // no delay
  CHECK(failures[0].record.reasons == std::vector<std::string>{"consumer disconnected"});
  CHECK_FALSE(f.group->find_consumer(&a));
  f.group->add_consumer(b, 2);
  f.dispatch(10);
  CHECK(b.take() == Offsets{0, 1});
}

// --- Retries -------------------------------------------------------------------------

TEST_CASE("due retries go out before fresh messages, earliest due first") {
  Fixture f(1, test_policy(), 4);
  FakeSink sink;
  f.group->add_consumer(sink, 2);
  f.dispatch(0);
  REQUIRE(sink.take() == Offsets{0, 1});
  (void)f.settle(sink, 0, kNack, 0, "slow", 500);
  (void)f.settle(sink, 1, kNack, 0, "slow", 300);
  f.dispatch(0);  // neither is due: fresh ones fill the window
  CHECK(sink.take() == Offsets{2, 3});
  (void)f.settle(sink, 2, kAck, 600);
  (void)f.settle(sink, 3, kAck, 600);
  f.append(0);
  f.dispatch(600);
  CHECK(sink.take() == Offsets{1, 0});
  (void)f.settle(sink, 1, kAck, 600);
  f.dispatch(600);
  CHECK(sink.take() == Offsets{4});
}

TEST_CASE("each retry waits the schedule's next delay, the last one repeating") {
  GroupPolicy policy = test_policy();
  policy.retry.max_deliveries = 10;
  Fixture f(1, policy, 1);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  std::vector<std::uint64_t> waits;
  std::uint64_t now = 0;
  for (int i = 0; i < 4; ++i) {
    f.dispatch(now);
    REQUIRE(sink.take() == Offsets{0});
    SettleBatch batch = f.settle(sink, 0, kNack, now);
    REQUIRE(batch.failures.size() == 1);
    waits.push_back(batch.failures[0].record.due_ms - now);
    CHECK(batch.failures[0].record.delivery_count == static_cast<std::uint32_t>(i + 1));
    now = batch.failures[0].record.due_ms;
  }
  CHECK(waits == std::vector<std::uint64_t>{100, 200, 400, 400});
}

TEST_CASE("a nack's own delay wins over the schedule") {
  Fixture f(1, test_policy(), 1);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  f.dispatch(0);
  SettleBatch batch = f.settle(sink, 0, kNack, 50, "later", 7000);
  REQUIRE(batch.failures.size() == 1);
  CHECK(batch.failures[0].record.due_ms == 7050);
  CHECK(f.group->next_wakeup(50) == 7050);
}

TEST_CASE("a retry carries the reasons of the earlier failures, oldest first") {
  GroupPolicy policy = test_policy();
  policy.retry.max_deliveries = 5;
  Fixture f(1, policy, 1);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  f.dispatch(0);
  (void)f.settle(sink, 0, kNack, 0, "first", 1);
  f.dispatch(1);
  (void)f.settle(sink, 0, kNack, 1, "second", 1);
  f.dispatch(2);
  REQUIRE(sink.got.size() == 3);
  CHECK(sink.got[0].history.empty());
  CHECK(sink.got[1].history == std::vector<std::string>{"first"});
  CHECK(sink.got[2].history == std::vector<std::string>{"first", "second"});
  CHECK(sink.got[2].count == 3);
}

TEST_CASE("the history keeps the last kMaxReasons reasons, each cut to kMaxReasonBytes") {
  GroupPolicy policy = test_policy();
  policy.retry.max_deliveries = 1000;
  Fixture f(1, policy, 1);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  const std::size_t failures = kMaxReasons + 3;
  for (std::size_t i = 0; i < failures; ++i) {
    f.dispatch(i);
    sink.got.clear();
    std::string reason = i == failures - 1 ? std::string(kMaxReasonBytes + 10, 'x') : "r" + std::to_string(i);
    SettleBatch batch = f.settle(sink, 0, kNack, i, reason, 1);
    REQUIRE(batch.failures.size() == 1);
    CHECK(batch.failures[0].record.reasons.back().size() <= kMaxReasonBytes);
  }
  f.dispatch(failures);
  REQUIRE(sink.got.size() == 1);
  const auto& history = sink.got[0].history;
  REQUIRE(history.size() == kMaxReasons);
  CHECK(history.front() == "r3");
  CHECK(history.back() == std::string(kMaxReasonBytes, 'x'));
}

TEST_CASE("a message removed by retention while it waited is not retried") {
  Fixture f(1, test_policy(), 2);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  f.dispatch(0);
  REQUIRE(sink.take() == Offsets{0});
  (void)f.settle(sink, 0, kNack, 0, "", 10);
  f.log.remove(0, 0);
  f.dispatch(10);  // the retry finds nothing; the window goes to the next message
  CHECK(sink.take() == Offsets{1});
  CHECK(f.group->pending() == 0);
}

// --- Dead-lettering decisions ---------------------------------------------------------

TEST_CASE("the failure of the last allowed delivery is a dead letter") {
  Fixture f(1, test_policy(), 1);  // max_deliveries 3
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  std::uint64_t now = 0;
  std::vector<bool> dead;
  for (int i = 0; i < 3; ++i) {
    f.dispatch(now);
    REQUIRE(sink.take() == Offsets{0});
    SettleBatch batch = f.settle(sink, 0, kNack, now, "no");
    REQUIRE(batch.failures.size() == 1);
    dead.push_back(batch.failures[0].dead_letter);
    now = batch.failures[0].record.due_ms;
  }
  CHECK(dead == std::vector<bool>{false, false, true});
  CHECK(f.group->dead_lettered == 1);
  CHECK(f.group->pending() == 0);
  f.dispatch(now + 100000);  // never delivered to this group again
  CHECK(sink.take().empty());
  CHECK(f.group->lag() == 0);  // the dead-letter write acknowledges it
}

TEST_CASE("a lease that runs out on the last allowed delivery is a dead letter too") {
  GroupPolicy policy = test_policy();
  policy.retry.max_deliveries = 1;
  Fixture f(1, policy, 1);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  f.dispatch(0);
  auto failures = f.group->expire_leases(1000);
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].dead_letter);
  CHECK(failures[0].record.reasons == std::vector<std::string>{"lease expired"});
}

TEST_CASE("terminate dead-letters at once, whatever the count") {
  Fixture f(1, test_policy(), 1);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  f.dispatch(2);
  SettleBatch batch = f.settle(sink, 0, kTerminate, 5, "poison");
  REQUIRE(batch.failures.size() == 1);
  CHECK(batch.failures[0].dead_letter);
  CHECK(batch.failures[0].record.delivery_count == 1);
  CHECK(batch.failures[0].record.first_delivery_ms == 2);
  CHECK(batch.failures[0].record.last_delivery_ms == 5);
  CHECK(batch.failures[0].record.reasons == std::vector<std::string>{"poison"});
  CHECK_FALSE(batch.failures[0].had_record);
}

TEST_CASE("a failure of a message that failed before says so, for its record's history") {
  Fixture f(1, test_policy(), 1);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  f.dispatch(10);
  SettleBatch first = f.settle(sink, 0, kNack, 10, "a", 1);
  f.dispatch(11);
  SettleBatch second = f.settle(sink, 0, kTerminate, 12, "b");
  CHECK_FALSE(first.failures.at(0).had_record);
  CHECK(second.failures.at(0).had_record);
  CHECK(second.failures.at(0).record.first_delivery_ms == 10);  // of the first delivery
  CHECK(second.failures.at(0).record.delivery_count == 2);
}

TEST_CASE("a redriven dead letter is delivered again with a fresh count") {
  Fixture f(1, test_policy(), 1);
  FakeSink sink;
  f.group->add_consumer(sink, 1);
  f.dispatch(0);
  (void)f.settle(sink, 0, kTerminate, 0, "poison");
  sink.got.clear();
  f.group->reopen(PartitionId(0), Offset(0), 500);
  f.dispatch(500);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].offset == 0);
  CHECK(sink.got[0].count == 1);
}

// --- Verdicts that name nothing the consumer holds --------------------------------------

TEST_CASE("a nack from a consumer that does not hold the message is ignored") {
  Fixture f(1, test_policy(), 1);
  FakeSink a, b;
  f.group->add_consumer(a, 1);
  f.group->add_consumer(b, 1);
  f.dispatch(0);
  FakeSink& holder = a.got.empty() ? b : a;
  FakeSink& other = a.got.empty() ? a : b;
  SettleBatch batch = f.settle(other, 0, kNack, 0);
  CHECK(batch.ignored == 1);
  CHECK(batch.failures.empty());
  CHECK(f.settle(holder, 0, kAck, 0).ignored == 0);
  CHECK(f.settle(holder, 0, kAck, 0).ignored == 1);  // twice: already acknowledged
}

TEST_CASE("a verdict on a partition the topic does not have is refused") {
  Fixture f(2, test_policy(), 1);
  FakeSink sink;
  SettleBatch batch;
  auto st = f.group->settle(sink, PartitionId(2), Offset(0), kAck, 0, {}, 0, batch);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::kInvalidArgument);
}

// --- Ordered mode --------------------------------------------------------------------

TEST_CASE("ordered: a partition has one delivery in flight, whatever the window") {
  Fixture f(1, test_policy(wire::GroupMode::Ordered), 3);
  FakeSink sink;
  f.group->add_consumer(sink, 10);
  f.dispatch(0);
  CHECK(sink.take() == Offsets{0});
  f.dispatch(0);
  CHECK(sink.take().empty());
  (void)f.settle(sink, 0, kAck, 0);
  f.dispatch(0);
  CHECK(sink.take() == Offsets{1});
}

TEST_CASE("ordered: a failed message holds its partition until it is resolved") {
  Fixture f(1, test_policy(wire::GroupMode::Ordered), 3);
  FakeSink sink;
  f.group->add_consumer(sink, 10);
  f.dispatch(0);
  REQUIRE(sink.take() == Offsets{0});
  (void)f.settle(sink, 0, kNack, 0, "again", 100);
  f.dispatch(50);  // the head waits for its retry; nothing after it goes
  CHECK(sink.take().empty());
  f.dispatch(100);
  CHECK(sink.take() == Offsets{0});
  (void)f.settle(sink, 0, kTerminate, 100, "poison");  // dead-lettered: resolved
  f.dispatch(100);
  CHECK(sink.take() == Offsets{1});
}

TEST_CASE("ordered: a lease that runs out holds the partition for the retry") {
  Fixture f(1, test_policy(wire::GroupMode::Ordered), 2);
  FakeSink sink;
  f.group->add_consumer(sink, 10);
  f.dispatch(0);
  REQUIRE(sink.take() == Offsets{0});
  (void)f.group->expire_leases(1000);
  f.dispatch(1000);
  CHECK(sink.take().empty());
  f.dispatch(1100);
  CHECK(sink.take() == Offsets{0});
}

TEST_CASE("ordered: each partition belongs to one consumer") {
  Fixture f(2, test_policy(wire::GroupMode::Ordered), 3);
  FakeSink a, b;
  f.group->add_consumer(a, 10);
  f.group->add_consumer(b, 10);
  for (int round = 0; round < 3; ++round) {
    f.dispatch(0);
    for (FakeSink* s : {&a, &b}) {
      for (const auto& d : s->got) (void)f.settle(*s, d.offset, kAck, 0, {}, 0, d.partition);
    }
  }
  std::vector<std::uint32_t> a_parts, b_parts;
  for (const auto& d : a.got) a_parts.push_back(d.partition);
  for (const auto& d : b.got) b_parts.push_back(d.partition);
  CHECK(a_parts == std::vector<std::uint32_t>{0, 0, 0});
  CHECK(b_parts == std::vector<std::uint32_t>{1, 1, 1});
  std::vector<std::uint64_t> a_offsets;
  for (const auto& d : a.got) a_offsets.push_back(d.offset);
  CHECK(a_offsets == Offsets{0, 1, 2});
}

// --- State from storage ---------------------------------------------------------------

TEST_CASE("loading resumes from the durable cursor") {
  storage::CursorState cursor;
  cursor.ack_floor = Offset(2);
  cursor.delivered_upto = Offset(4);
  cursor.pending[Offset(5)] = storage::PendingState{DeliveryCount(2), 300, {"before restart"}};
  Fixture f(1, test_policy(), 7, {{0, cursor}});
  FakeSink sink;
  f.group->add_consumer(sink, 10);
  f.dispatch(0);
  REQUIRE(sink.got.size() == 4);
  // Below the delivered-up-to mark a message was delivered before: this is its second.
  CHECK(sink.got[0].offset == 2);
  CHECK(sink.got[0].count == 2);
  CHECK(sink.got[1].offset == 3);
  CHECK(sink.got[1].count == 2);
  CHECK(sink.got[2].offset == 4);
  CHECK(sink.got[2].count == 1);
  CHECK(sink.got[3].offset == 6);  // 5 waits for its due time
  sink.got.clear();
  f.dispatch(300);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].offset == 5);
  CHECK(sink.got[0].count == 3);
  CHECK(sink.got[0].history == std::vector<std::string>{"before restart"});
}

TEST_CASE("dispatch reports each raised delivered-up-to mark once") {
  Fixture f(2, test_policy(), 3);
  FakeSink sink;
  f.group->add_consumer(sink, 4);
  auto marks = f.dispatch(0);
  std::uint64_t total = 0;
  for (auto [p, upto] : marks) total += upto.value();
  CHECK(total == 4);
  CHECK(f.dispatch(0).empty());
}

TEST_CASE("lag counts what is neither acknowledged nor dead-lettered") {
  Fixture f(1, test_policy(), 5);
  FakeSink sink;
  f.group->add_consumer(sink, 5);
  f.dispatch(0);
  CHECK(f.group->lag() == 5);
  (void)f.settle(sink, 0, kAck, 0);
  (void)f.settle(sink, 1, kAck, 0);
  (void)f.settle(sink, 3, kTerminate, 0);
  CHECK(f.group->lag() == 2);
  f.group->set_ack_floor(PartitionId(0), Offset(2));  // the acks of 0 and 1 committed
  CHECK(f.group->lag() == 2);
}
