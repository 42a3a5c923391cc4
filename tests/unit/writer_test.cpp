// broker/storage/writer: the storage writer thread and its completions on a uv loop run
// by the test thread.

#include "broker/storage/writer.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <algorithm>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/broker_process.h"

using namespace txmq;
using namespace txmq::broker::storage;
using txmq::test::TempDir;

namespace {

// An op made of two functions: the writer's behaviour does not depend on what an op
// writes. It counts as the kind it is given (a produce unless told).
class TestOp final : public WriteOp {
 public:
  TestOp(std::function<Status(WriteTxn&)> apply, std::function<void(const Status&)> complete,
         WriteOpKind kind = WriteOpKind::kProduce)
      : apply_(std::move(apply)), complete_(std::move(complete)), kind_(kind) {}
  WriteOpKind kind() const override { return kind_; }
  Status apply(WriteTxn& txn) override { return apply_(txn); }
  void complete(const Status& status) override { complete_(status); }

 private:
  std::function<Status(WriteTxn&)> apply_;
  std::function<void(const Status&)> complete_;
  WriteOpKind kind_;
};

std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// A loop, a store and a writer on them, torn down in the right order. The test thread is
// the loop thread.
struct WriterFixture {
  TempDir dir{"txmq-writer"};
  uv_loop_t loop;
  std::unique_ptr<Store> store;
  std::unique_ptr<StorageWriter> writer;
  std::thread::id loop_thread = std::this_thread::get_id();
  bool stopped = false;

  explicit WriterFixture(WriterOptions options = {}, std::uint64_t map_bytes = 256ull << 20,
                         WriterProbe* probe = nullptr) {
    REQUIRE(uv_loop_init(&loop) == 0);
    auto opened = Store::open(StoreOptions{dir.path(), map_bytes, options.sync});
    REQUIRE(opened.ok());
    store = std::move(*opened);
    writer = std::make_unique<StorageWriter>(&loop, *store, options);
    writer->set_probe(probe);
    writer->start();
  }

  ~WriterFixture() {
    writer.reset();
    store.reset();
  }

  // stop() and run the loop until the writer closed its handle; then the loop must close
  // cleanly.
  void stop_and_close() {
    writer->stop([this] { stopped = true; });
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(stopped);
    CHECK(uv_loop_close(&loop) == 0);
  }

  TopicId create_topic_now(std::string name, std::uint32_t partitions) {
    // Commits synchronously through the store, before any writer op touches the topic.
    auto txn = store->begin_write(nullptr);
    REQUIRE(txn.ok());
    auto meta = (*txn)->create_topic(name, partitions, 0);
    REQUIRE(meta.ok());
    REQUIRE((*txn)->commit().ok());
    return meta->id;
  }
};

// Records what happened to one op.
struct Outcome {
  std::uint64_t batch = ~0ull;  // commits() when apply ran: equal for ops of one batch
  int completions = 0;
  bool on_loop_thread = false;
  Status status;
};

// How many ops each batch held, in batch order, from the ops' recorded batch numbers
// (written on the writer thread, read once it has been joined).
std::vector<std::size_t> batch_sizes(const std::vector<const Outcome*>& outcomes) {
  std::map<std::uint64_t, std::size_t> sizes;
  for (const auto* o : outcomes) ++sizes[o->batch];
  std::vector<std::size_t> v;
  for (auto [batch, n] : sizes) v.push_back(n);
  return v;
}

std::unique_ptr<WriteOp> append_op(StorageWriter& writer, TopicId topic, std::string body, Outcome& out,
                                   std::thread::id loop_thread) {
  return std::make_unique<TestOp>(
      [&writer, &out, topic, body](WriteTxn& txn) -> Status {
        out.batch = writer.commits();
        auto o = txn.append(topic, PartitionId(0), 0, {}, {}, as_bytes(body));
        if (!o) return o.error();
        return {};
      },
      [&out, loop_thread](const Status& st) {
        ++out.completions;
        out.on_loop_thread = std::this_thread::get_id() == loop_thread;
        out.status = st;
      });
}

// Holds the writer thread inside one op's apply until released: everything submitted
// meanwhile waits in the queue and lands in the next batch together. No timing involved:
// the test waits until the writer is inside the gate, then submits, then releases.
class Gate {
 public:
  Outcome outcome;

  std::unique_ptr<WriteOp> op(StorageWriter& writer) {
    return std::make_unique<TestOp>(
        [this, &writer](WriteTxn&) -> Status {
          outcome.batch = writer.commits();
          entered_.set_value();
          released_.wait();
          return {};
        },
        [](const Status&) {});
  }
  // Submits the gate op and returns once the writer thread is blocked in it.
  void close(StorageWriter& writer) {
    writer.submit(op(writer));
    entered_future_.wait();
  }
  void open() { release_.set_value(); }

 private:
  std::promise<void> entered_;
  std::future<void> entered_future_ = entered_.get_future();
  std::promise<void> release_;
  std::shared_future<void> released_ = release_.get_future().share();
};

std::vector<std::string> log_bodies(const Store& store, TopicId topic) {
  std::vector<std::string> bodies;
  auto n = store.read_log(topic, PartitionId(0), Offset(0), 1000, [&](const LogEntry& e) {
    bodies.emplace_back(e.message->body()->begin(), e.message->body()->end());
    return true;
  });
  REQUIRE(n.ok());
  return bodies;
}

}  // namespace

TEST_CASE("every submitted op completes exactly once, on the loop thread, with ok") {
  WriterFixture f;
  TopicId topic = f.create_topic_now("orders", 1);
  constexpr int kOps = 200;
  std::vector<Outcome> outcomes(kOps);
  for (int i = 0; i < kOps; ++i) f.writer->submit(append_op(*f.writer, topic, std::to_string(i), outcomes[i], f.loop_thread));
  CHECK(f.writer->in_flight() == kOps);
  f.stop_and_close();
  CHECK(f.writer->in_flight() == 0);
  for (int i = 0; i < kOps; ++i) {
    CAPTURE(i);
    CHECK(outcomes[i].completions == 1);
    CHECK(outcomes[i].on_loop_thread);
    CHECK(outcomes[i].status.ok());
  }
  auto bodies = log_bodies(*f.store, topic);
  REQUIRE(bodies.size() == kOps);
  for (int i = 0; i < kOps; ++i) CHECK(bodies[i] == std::to_string(i));  // submission order
}

TEST_CASE("ops submitted together share commits (group commit)") {
  WriterFixture f;
  TopicId topic = f.create_topic_now("orders", 1);
  constexpr int kOps = 100;
  Gate gate;
  gate.close(*f.writer);
  std::vector<Outcome> outcomes(kOps);
  for (int i = 0; i < kOps; ++i) f.writer->submit(append_op(*f.writer, topic, "m", outcomes[i], f.loop_thread));
  gate.open();
  f.stop_and_close();
  // The gate's batch, then one for everything queued behind it.
  CHECK(f.writer->commits() == 2);
  std::vector<const Outcome*> all = {&gate.outcome};
  for (auto& o : outcomes) all.push_back(&o);
  CHECK(batch_sizes(all) == std::vector<std::size_t>{1, kOps});
  for (auto& o : outcomes) CHECK(o.status.ok());
}

TEST_CASE("an op whose apply fails does not affect the others in its batch") {
  WriterFixture f;
  TopicId topic = f.create_topic_now("orders", 1);
  Gate gate;
  gate.close(*f.writer);
  Outcome before, failing, after;
  f.writer->submit(append_op(*f.writer, topic, "before", before, f.loop_thread));
  f.writer->submit(std::make_unique<TestOp>(
      [&f, &failing, topic](WriteTxn& txn) -> Status {
        failing.batch = f.writer->commits();
        // Writes, then fails: its writes must be rolled back alone.
        auto o = txn.append(topic, PartitionId(0), 0, {}, {}, as_bytes("failing"));
        if (!o) return o.error();
        return Error(ErrorCode::kInvalidArgument, "refused on purpose");
      },
      [&failing](const Status& st) {
        ++failing.completions;
        failing.status = st;
      }));
  f.writer->submit(append_op(*f.writer, topic, "after", after, f.loop_thread));
  gate.open();
  f.stop_and_close();

  CHECK(before.status.ok());
  CHECK(after.status.ok());
  REQUIRE(failing.completions == 1);
  REQUIRE_FALSE(failing.status.ok());
  CHECK(failing.status.error().code == ErrorCode::kInvalidArgument);
  CHECK(failing.status.error().message == "refused on purpose");
  CHECK(log_bodies(*f.store, topic) == std::vector<std::string>{"before", "after"});
  // The gate alone, then the three in one transaction.
  CHECK(batch_sizes({&gate.outcome, &before, &failing, &after}) == std::vector<std::size_t>{1, 3});
}

TEST_CASE("committed ops are counted by kind in txmq_storage_write_ops_total; a failed op is not") {
  metrics::Registry registry;
  WriterProbe probe(registry);
  WriterFixture f({}, 256ull << 20, &probe);
  TopicId topic = f.create_topic_now("orders", 1);
  Outcome first, second;
  f.writer->submit(append_op(*f.writer, topic, "first", first, f.loop_thread));
  f.writer->submit(append_op(*f.writer, topic, "second", second, f.loop_thread));
  Status created, refused;
  f.writer->submit(std::make_unique<TestOp>(
      [](WriteTxn& txn) -> Status {
        auto meta = txn.create_topic("payments", 1, 0);
        return meta ? Status{} : Status(meta.error());
      },
      [&created](const Status& st) { created = st; }, WriteOpKind::kCreateTopic));
  f.writer->submit(std::make_unique<TestOp>(
      [](WriteTxn&) -> Status { return Error(ErrorCode::kInvalidArgument, "refused on purpose"); },
      [&refused](const Status& st) { refused = st; }, WriteOpKind::kRedrive));
  f.stop_and_close();
  REQUIRE(first.status.ok());
  REQUIRE(second.status.ok());
  REQUIRE(created.ok());
  REQUIRE_FALSE(refused.ok());

  const std::string page = registry.render();
  auto sample = [&page](std::string_view op) {
    const std::string series = "txmq_storage_write_ops_total{op=\"" + std::string(op) + "\"} ";
    const auto at = page.find(series);
    if (at == std::string::npos) return std::string("absent");
    const auto value = at + series.size();
    return page.substr(value, page.find('\n', value) - value);
  };
  CHECK(sample("produce") == "2");
  CHECK(sample("create_topic") == "1");
  CHECK(sample("redrive") == "0");  // its apply failed: nothing committed
  // Every kind has its series before its first op.
  for (WriteOpKind kind : kAllWriteOpKinds) {
    CAPTURE(name(kind));
    CHECK(sample(name(kind)) != "absent");
  }
}

TEST_CASE("every write op kind has a name of its own") {
  std::set<std::string_view> names;
  for (WriteOpKind kind : kAllWriteOpKinds) {
    CAPTURE(static_cast<int>(kind));
    CHECK_FALSE(name(kind).empty());
    CHECK(names.insert(name(kind)).second);
  }
  CHECK(names.size() == kWriteOpKinds);
  CHECK(name(WriteOpKind::kProduce) == "produce");
  CHECK(name(WriteOpKind::kCreateTopic) == "create_topic");
}

TEST_CASE("stop completes every submitted op before on_stopped, then the loop closes") {
  WriterFixture f;
  TopicId topic = f.create_topic_now("orders", 1);
  constexpr int kOps = 50;
  std::vector<Outcome> outcomes(kOps);
  for (int i = 0; i < kOps; ++i) f.writer->submit(append_op(*f.writer, topic, "m", outcomes[i], f.loop_thread));
  int completed_at_stop = -1;
  f.writer->stop([&] {
    completed_at_stop = 0;
    for (auto& o : outcomes) completed_at_stop += o.completions;
  });
  CHECK(uv_run(&f.loop, UV_RUN_DEFAULT) == 0);
  CHECK(completed_at_stop == kOps);
  CHECK(uv_loop_close(&f.loop) == 0);
}

TEST_CASE("a writer stopped with nothing submitted closes cleanly") {
  WriterFixture f;
  f.stop_and_close();
  CHECK(f.writer->commits() == 0);
}

TEST_CASE("ops submitted from a completion land in a later batch") {
  // A produce answered from a completion may trigger more writes (e.g. an ack); the
  // writer must take them even while it is finishing the batch that completed.
  WriterFixture f;
  TopicId topic = f.create_topic_now("orders", 1);
  Outcome first, second;
  bool chained = false;
  f.writer->submit(std::make_unique<TestOp>(
      [topic](WriteTxn& txn) -> Status {
        auto o = txn.append(topic, PartitionId(0), 0, {}, {}, as_bytes("first"));
        return o ? Status{} : Status(o.error());
      },
      [&](const Status& st) {
        first.status = st;
        ++first.completions;
        f.writer->submit(append_op(*f.writer, topic, "second", second, f.loop_thread));
        chained = true;
        f.writer->stop([&] { f.stopped = true; });
      }));
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(chained);
  CHECK(f.stopped);
  CHECK(second.completions == 1);
  CHECK(second.status.ok());
  CHECK(uv_loop_close(&f.loop) == 0);
  CHECK(log_bodies(*f.store, topic) == std::vector<std::string>{"first", "second"});
}

TEST_CASE("the relaxed sync mode completes every op too") {
  WriterOptions options;
  options.sync = SyncMode::kRelaxed;
  options.relaxed_sync_interval = std::chrono::milliseconds(5);
  WriterFixture f(options);
  TopicId topic = f.create_topic_now("orders", 1);
  std::vector<Outcome> outcomes(20);
  for (auto& o : outcomes) f.writer->submit(append_op(*f.writer, topic, "m", o, f.loop_thread));
  f.stop_and_close();
  for (auto& o : outcomes) {
    CHECK(o.completions == 1);
    CHECK(o.status.ok());
  }
  CHECK(log_bodies(*f.store, topic).size() == 20);
}

TEST_CASE("a batch is capped at max_batch_bytes") {
  // Ops report their payload size; with a cap of 1 byte each op gets its own commit.
  struct SizedOp final : WriteOp {
    StorageWriter& writer;
    Outcome& out;
    SizedOp(StorageWriter& w, Outcome& o) : writer(w), out(o) {}
    WriteOpKind kind() const override { return WriteOpKind::kProduce; }
    Status apply(WriteTxn&) override {
      out.batch = writer.commits();
      return {};
    }
    void complete(const Status&) override { ++out.completions; }
    std::size_t bytes() const override { return 10; }
  };
  WriterOptions options;
  options.max_batch_bytes = 1;
  WriterFixture f(options);
  Gate gate;
  gate.close(*f.writer);
  std::vector<Outcome> outcomes(5);
  for (auto& o : outcomes) f.writer->submit(std::make_unique<SizedOp>(*f.writer, o));
  gate.open();
  f.stop_and_close();
  std::vector<const Outcome*> all;
  for (auto& o : outcomes) {
    CHECK(o.completions == 1);
    all.push_back(&o);
  }
  CHECK(batch_sizes(all) == std::vector<std::size_t>(5, 1));
  CHECK(f.writer->commits() == 6);
}

TEST_CASE("after StorageFull only the refused ops are tried again: one that committed beside them is not") {
  WriterFixture f({}, 1ull << 20);
  TopicId topic = f.create_topic_now("orders", 1);
  Gate gate;
  gate.close(*f.writer);
  Outcome small, huge;
  int small_applies = 0, huge_applies = 0;
  f.writer->submit(std::make_unique<TestOp>(
      [&small_applies, topic](WriteTxn& txn) -> Status {
        ++small_applies;
        auto o = txn.append(topic, PartitionId(0), 0, {}, {}, as_bytes("small"));
        if (!o) return o.error();
        return {};
      },
      [&small](const Status& st) {
        ++small.completions;
        small.status = st;
      }));
  // More than the 1 MiB store holds: refused on every try.
  f.writer->submit(std::make_unique<TestOp>(
      [&huge_applies, topic](WriteTxn& txn) -> Status {
        ++huge_applies;
        const std::string body(1000, 'b');
        for (int i = 0; i < 5000; ++i) {
          auto o = txn.append(topic, PartitionId(0), 0, {}, {}, as_bytes(body));
          if (!o) return o.error();
        }
        return {};
      },
      [&huge](const Status& st) {
        ++huge.completions;
        huge.status = st;
      }));
  gate.open();
  f.stop_and_close();
  CHECK(small.status.ok());
  CHECK(small.completions == 1);
  REQUIRE_FALSE(huge.status.ok());
  CHECK(huge.status.error().code == ErrorCode::kStorageFull);
  CHECK(huge.completions == 1);
  // Both on the fast path, both nested (the small one commits); then the huge one alone,
  // fast and nested again.
  CHECK(small_applies == 2);
  CHECK(huge_applies == 4);
  CHECK(log_bodies(*f.store, topic) == std::vector<std::string>{"small"});
}

TEST_CASE("a store the writer filled to storage.max_size deletes a topic and takes the next append at once") {
  const std::uint64_t max = 1ull << 20;
  WriterFixture f({}, max);
  TopicId filler = f.create_topic_now("filler", 2);
  TopicId other = f.create_topic_now("other", 1);
  // Runs one op through the writer and the loop; returns its status.
  auto run = [&f](std::function<Status(WriteTxn&)> apply) {
    bool done = false;
    Status result;
    f.writer->submit(std::make_unique<TestOp>(std::move(apply), [&](const Status& st) {
      result = st;
      done = true;
    }));
    while (!done) uv_run(&f.loop, UV_RUN_ONCE);
    return result;
  };
  // Batches of 16 messages of 16..6000 bytes over both topics, until one is refused; then
  // single small ones until refused too: full to the limit's last page.
  std::mt19937 rng(4);
  std::uniform_int_distribution<std::size_t> size(16, 6000);
  Status st;
  for (int round = 0; round < 1000 && st; ++round) {
    std::vector<std::string> bodies;
    for (int i = 0; i < 16; ++i) bodies.emplace_back(size(rng), static_cast<char>('a' + i));
    st = run([&, bodies](WriteTxn& txn) -> Status {
      for (std::size_t i = 0; i < bodies.size(); ++i) {
        auto o = txn.append(i % 3 ? filler : other, PartitionId(i % 3 == 1 ? 1u : 0u), 0, {}, {}, as_bytes(bodies[i]));
        if (!o) return o.error();
      }
      return {};
    });
  }
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::kStorageFull);
  while ((st = run([&](WriteTxn& txn) -> Status {
            auto o = txn.append(filler, PartitionId(1), 0, {}, {}, as_bytes("small"));
            return o ? Status{} : Status(o.error());
          })))
    continue;
  const auto full = f.store->usage();
  CHECK(full.used_bytes <= max);
  const auto other_before = log_bodies(*f.store, other);

  st = run([](WriteTxn& txn) { return txn.delete_topic("filler"); });
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  st = run([&](WriteTxn& txn) -> Status {
    auto o = txn.append(other, PartitionId(0), 0, {}, {}, as_bytes("after the delete"));
    return o ? Status{} : Status(o.error());
  });
  CHECK_MESSAGE(st.ok(), txmq::test::describe(st));
  CHECK(f.store->usage().used_bytes < full.used_bytes);
  auto other_after = log_bodies(*f.store, other);
  REQUIRE(other_after.size() == other_before.size() + 1);
  CHECK(std::equal(other_before.begin(), other_before.end(), other_after.begin()));
  f.stop_and_close();
}
