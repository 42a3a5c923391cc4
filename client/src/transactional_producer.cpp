// TransactionalProducer: prepares half messages, ends them, and answers the broker's checks
// through the user's checker.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "connection.h"
#include "wire_message.h"

namespace txmq::client {
namespace detail {
namespace {

wire::TxnAction to_action(LocalTransactionState s) {
  switch (s) {
    case LocalTransactionState::kCommit: return wire::TxnAction::Commit;
    case LocalTransactionState::kRollback: return wire::TxnAction::Rollback;
    default: return wire::TxnAction::Unknown;
  }
}

TxnState to_state(wire::TxnState s) {
  switch (s) {
    case wire::TxnState::Committed: return TxnState::kCommitted;
    case wire::TxnState::RolledBack: return TxnState::kRolledBack;
    case wire::TxnState::Parked: return TxnState::kParked;
    default: return TxnState::kPrepared;
  }
}

// Runs the local transaction; an exception is "unknown" (the check-back finds out what
// happened), and *why says what it was.
LocalTransactionState run_local(const TransactionalProducer::Executor& executor, std::uint64_t id, std::string* why) {
  try {
    LocalTransactionState s = executor(id);
    if (s == LocalTransactionState::kUnknown) *why = "the local transaction said unknown";
    return s;
  } catch (const std::exception& e) {
    *why = std::string("the local transaction threw: ") + e.what();
  } catch (...) {
    *why = "the local transaction threw a non-standard exception";
  }
  return LocalTransactionState::kUnknown;
}

// The worker threads of send_in_transaction_async: local transactions may block on the
// application's database, so they never run on the I/O thread.
// Lifecycle: threads start in the constructor; stop() lets running jobs finish, hands the
// jobs never started back, and joins. Concurrency: push() from any thread.
class WorkerPool {
 public:
  // Called with true on a worker, or with false by the owner for a job that never started.
  using Job = std::function<void(bool started)>;
  explicit WorkerPool(std::size_t threads) {
    for (std::size_t i = 0; i < std::max<std::size_t>(threads, 1); ++i) threads_.emplace_back([this] { run(); });
  }
  ~WorkerPool() { (void)stop(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // False once stopped (the job is not taken).
  bool push(Job job) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return false;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
  }

  // Returns the jobs that never started. Idempotent; not from a worker.
  std::deque<Job> stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    std::lock_guard lock(mu_);
    return std::move(jobs_);
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      Job job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job(true);
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;  // guarded by mu_: not started
  bool stopping_ = false;  // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace

class TransactionalProducerImpl {
 public:
  TransactionalProducerImpl(TransactionalProducer::Options options, TransactionalProducer::Checker checker)
      : options_(std::move(options)),
        checker_(std::move(checker)),
        conn_(options_, Connection::Hooks{nullptr, [this](const wire::Frame& f) { on_push(f); }}) {
    conn_.start();
  }
  // Workers first: a running local transaction finishes and its end is queued; one never
  // started is reported prepared. Then the connection, which fails what is in flight.
  ~TransactionalProducerImpl() {
    if (workers_)
      for (auto& job : workers_->stop()) job(false);
    conn_.stop();
    // Prepared, with the dispatch that would have handed them to the workers dropped.
    run_chunk(ready_, false);
  }

  void send_in_transaction_async(std::string_view topic, Message m, TransactionalProducer::Executor executor,
                                 TransactionalProducer::TransactionCallback done) {
    if (auto refused = take_room()) {
      if (!conn_.post([done = std::move(done), e = *refused] { done(e); })) done(Error(ErrorCode::kClosed));
      return;
    }
    pool();  // started here, on the caller's thread (see pool())
    // The transaction travels by value through the queues (prepare, ready, end): no
    // callback is wrapped around it and nothing is shared, so that it costs the client no
    // more than a prepare_async and an end_async.
    queue_prepare(QueuedPrepare{std::string(topic), std::move(m), nullptr, AsyncTxn{std::move(executor), std::move(done)}});
  }

  bool on_io_thread() const { return conn_.on_io_thread(); }

  void prepare_async(std::string_view topic, Message m, std::function<void(const Result<std::uint64_t>&)> done) {
    if (options_.producer_group.empty()) return done(Error(ErrorCode::kInvalidArgument, "no producer group"));
    queue_prepare(QueuedPrepare{std::string(topic), std::move(m), std::move(done), {}});
  }

  void end_async(std::uint64_t id, LocalTransactionState state, std::function<void(const Result<TransactionResult>&)> done,
                 bool by_operator = false) {
    bool post;
    {
      std::lock_guard lock(mu_);
      post = prepares_.empty() && ends_.empty();
      ends_.push_back(QueuedEnd{wire::TxnEnd(id, to_action(state)), std::move(done)});
      (void)by_operator;
    }
    if (post && !conn_.post([this] { pump(); })) fail_queued();
  }

 private:
  // A send_in_transaction_async call, from its prepare to its done.
  struct AsyncTxn {
    TransactionalProducer::Executor executor;
    TransactionalProducer::TransactionCallback done;
  };
  // A prepare waiting to go out: its answer goes to done (prepare_async) or, when
  // txn.executor is set, on to the workers (send_in_transaction_async).
  struct QueuedPrepare {
    std::string topic;
    Message message;
    std::function<void(const Result<std::uint64_t>&)> done;
    AsyncTxn txn;
  };
  // An end waiting to go out. done may be empty (a checker's answer). With releases_room,
  // done is a send_in_transaction_async's: it is called through finish(), and a failed
  // end is reported as the transaction left prepared.
  struct QueuedEnd {
    wire::TxnEnd end;
    std::function<void(const Result<TransactionResult>&)> done;
    bool releases_room = false;
  };
  struct Prepared {
    AsyncTxn txn;
    std::uint64_t transaction_id;
  };

  // Any thread: queues one prepare; the first one queued since the last pump posts it.
  void queue_prepare(QueuedPrepare prepare) {
    bool post;
    {
      std::lock_guard lock(mu_);
      post = prepares_.empty() && ends_.empty();
      prepares_.push_back(std::move(prepare));
    }
    if (post && !conn_.post([this] { pump(); })) fail_queued();
  }

  // I/O thread: a send_in_transaction_async's prepare was answered. The prepares answered
  // together are handed to the workers together, after this answer's callbacks: see
  // dispatch().
  void prepared(AsyncTxn txn, const Result<std::uint64_t>& id) {
    if (!id) return finish(txn.done, id.error());
    if (ready_.empty() && !conn_.post([this] { dispatch(); })) {
      return finish(txn.done, TransactionResult{*id, TxnState::kPrepared, false,
                                                "the producer closed before the local transaction ran"});
    }
    ready_.push_back(Prepared{std::move(txn), *id});
  }

  // I/O thread. Hands the prepared transactions to the workers in one chunk per worker at
  // most, so that each chunk's ends go out as one request, as the prepares came: one job
  // and one end request per transaction cost the broker and the I/O thread more than the
  // local transactions themselves.
  void dispatch() {
    std::vector<Prepared> ready;
    ready.swap(ready_);
    const std::size_t threads = std::max<std::size_t>(options_.executor_threads, 1);
    const std::size_t per_chunk = (ready.size() + threads - 1) / threads;
    for (std::size_t i = 0; i < ready.size(); i += per_chunk) {
      const auto from = ready.begin() + static_cast<std::ptrdiff_t>(i);
      const auto to = ready.begin() + static_cast<std::ptrdiff_t>(std::min(ready.size(), i + per_chunk));
      auto chunk = std::make_shared<std::vector<Prepared>>(std::make_move_iterator(from), std::make_move_iterator(to));
      auto work = [this, chunk](bool started) { run_chunk(*chunk, started); };
      if (!workers_->push(work)) work(false);
    }
  }

  // A worker (or, not started, the destructor): runs each local transaction, then queues
  // every end at once; those left prepared are reported on the I/O thread.
  void run_chunk(std::vector<Prepared>& chunk, bool started) {
    if (!started) {
      for (auto& p : chunk)
        finish(p.txn.done, TransactionResult{p.transaction_id, TxnState::kPrepared, false,
                                             "the producer closed before the local transaction ran"});
      return;
    }
    std::vector<QueuedEnd> ends;
    std::vector<std::pair<TransactionalProducer::TransactionCallback, TransactionResult>> left_prepared;
    ends.reserve(chunk.size());
    for (auto& p : chunk) {
      std::string why;
      const LocalTransactionState local = run_local(p.txn.executor, p.transaction_id, &why);
      if (local == LocalTransactionState::kUnknown) {
        left_prepared.emplace_back(std::move(p.txn.done),
                                   TransactionResult{p.transaction_id, TxnState::kPrepared, false, std::move(why)});
        continue;
      }
      ends.push_back(QueuedEnd{wire::TxnEnd(p.transaction_id, to_action(local)), std::move(p.txn.done), true});
    }
    if (!left_prepared.empty()) {
      auto shared = std::make_shared<decltype(left_prepared)>(std::move(left_prepared));
      auto report = [this, shared] {
        for (auto& [done, r] : *shared) finish(done, r);
      };
      if (!conn_.post(report)) report();
    }
    if (!ends.empty()) queue_ends(std::move(ends));
  }

  // Any thread: queues ends as end_async does, under one lock.
  void queue_ends(std::vector<QueuedEnd> ends) {
    bool post;
    {
      std::lock_guard lock(mu_);
      post = prepares_.empty() && ends_.empty();
      for (auto& e : ends) ends_.push_back(std::move(e));
    }
    if (post && !conn_.post([this] { pump(); })) fail_queued();
  }

  // Takes room for one transaction, waiting up to max_block (not on the I/O thread, which
  // alone frees room). An error when none came. The count is an atomic so that taking and
  // giving back room costs no lock and no wake-up while there is room; the lock and the
  // condition are only for a caller that waits.
  std::optional<Error> take_room() {
    const std::size_t max = std::max<std::size_t>(options_.max_in_flight_transactions, 1);
    auto try_take = [&] {
      std::size_t n = txns_in_flight_.load();
      while (n < max)
        if (txns_in_flight_.compare_exchange_weak(n, n + 1)) return true;
      return false;
    };
    if (try_take()) return std::nullopt;
    if (conn_.on_io_thread())
      return Error(ErrorCode::kInvalidArgument, "send_in_transaction_async called from the I/O thread with " +
                                                    std::to_string(txns_in_flight_.load()) +
                                                    " transactions in flight (max_in_flight_transactions): it "
                                                    "cannot wait there for room");
    std::unique_lock lock(room_mu_);
    // Counted before the room is looked at again, so that finish() either sees a waiter
    // or frees room this look sees (both are sequentially consistent).
    ++room_waiters_;
    const bool took = room_cv_.wait_for(lock, options_.max_block, try_take);
    --room_waiters_;
    if (took) return std::nullopt;
    return Error(ErrorCode::kTimeout, "no room for the transaction within " +
                                          std::to_string(options_.max_block.count()) + " ms: " +
                                          std::to_string(txns_in_flight_.load()) +
                                          " in flight (max_in_flight_transactions = " + std::to_string(max) + ")");
  }

  // The room goes back before done runs, so that done may begin the next transaction.
  void finish(TransactionalProducer::TransactionCallback& done, const Result<TransactionResult>& r) {
    txns_in_flight_.fetch_sub(1);
    if (room_waiters_.load() > 0) {
      // Taking the lock orders this wake-up after the waiter's look at the room.
      { std::lock_guard lock(room_mu_); }
      room_cv_.notify_all();
    }
    done(r);
  }

  // Started by the first send_in_transaction_async, on the caller's thread, so that the
  // destructor (which the caller must not race with its own calls) sees it.
  WorkerPool& pool() {
    std::call_once(workers_once_, [this] { workers_ = std::make_unique<WorkerPool>(options_.executor_threads); });
    return *workers_;
  }


  // I/O thread: everything queued goes out, prepares as one request per topic, ends as one.
  // The queues are swapped with the I/O thread's own pair, which keep their capacity: with
  // thousands queued per pass, growing fresh vectors every pass (allocations, moves, page
  // faults) cost about as much as building the requests.
  void pump() {
    {
      std::lock_guard lock(mu_);
      pumped_prepares_.swap(prepares_);
      pumped_ends_.swap(ends_);
    }
    auto& prepares = pumped_prepares_;
    const bool one_topic = std::all_of(prepares.begin(), prepares.end(),
                                       [&](const QueuedPrepare& p) { return p.topic == prepares.front().topic; });
    if (one_topic) {
      if (!prepares.empty()) send_prepare(prepares.front().topic, prepares);
    } else {
      std::map<std::string, std::vector<QueuedPrepare>> by_topic;
      for (auto& p : prepares) by_topic[p.topic].push_back(std::move(p));
      for (auto& [topic, batch] : by_topic) send_prepare(topic, batch);
    }
    prepares.clear();
    if (!pumped_ends_.empty()) send_ends(pumped_ends_);
    pumped_ends_.clear();
  }

  // Sends batch as one request; takes the callbacks out of it (the rest is left to clear).
  void send_prepare(const std::string& topic, std::vector<QueuedPrepare>& batch) {
    auto& fbb = conn_.builder();
    fbb.Clear();
    std::vector<flatbuffers::Offset<wire::Message>> msgs;
    msgs.reserve(batch.size());
    for (const auto& q : batch) msgs.push_back(build_message(fbb, q.message));
    auto req = wire::CreatePrepare(fbb, fbb.CreateString(topic), fbb.CreateString(options_.producer_group),
                                   fbb.CreateVector(msgs), static_cast<std::uint64_t>(options_.check_after.count()));
    const std::uint64_t rid = conn_.next_request_id();
    fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::Prepare, req.Union()));
    // Each answer goes to its prepare_async callback or, for an async transaction, on to
    // prepared().
    struct Waiter {
      std::function<void(const Result<std::uint64_t>&)> done;
      AsyncTxn txn;
    };
    auto shared = std::make_shared<std::vector<Waiter>>();
    shared->reserve(batch.size());
    for (auto& q : batch) shared->push_back(Waiter{std::move(q.done), std::move(q.txn)});
    conn_.request(rid, common::frame_bytes(fbb), Connection::Clock::now() + options_.request_timeout,
                  [this, shared](Result<const wire::Frame*> r) {
                    const wire::PrepareOk* ok = r.ok() ? (*r)->body_as_PrepareOk() : nullptr;
                    const auto* ids = ok ? ok->transaction_ids() : nullptr;
                    for (std::size_t i = 0; i < shared->size(); ++i) {
                      Result<std::uint64_t> id = Error(ErrorCode::kInternal, "broker answered prepare with the wrong count");
                      if (!r.ok())
                        id = r.error();
                      else if (ids && ids->size() == shared->size())
                        id = ids->Get(static_cast<flatbuffers::uoffset_t>(i));
                      auto& w = (*shared)[i];
                      if (w.txn.executor)
                        prepared(std::move(w.txn), id);
                      else
                        w.done(id);
                    }
                  });
  }

  // Sends ends as one request; takes them out of the vector (which is left to clear).
  void send_ends(std::vector<QueuedEnd>& ends, bool by_operator = false) {
    auto& fbb = conn_.builder();
    fbb.Clear();
    std::vector<wire::TxnEnd> items;
    items.reserve(ends.size());
    for (const auto& e : ends) items.push_back(e.end);
    auto req = wire::CreateEndTransactions(fbb, fbb.CreateVectorOfStructs(items), by_operator);
    const std::uint64_t rid = conn_.next_request_id();
    fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::EndTransactions, req.Union()));
    auto shared = std::make_shared<std::vector<QueuedEnd>>(std::make_move_iterator(ends.begin()),
                                                           std::make_move_iterator(ends.end()));
    // Ending is idempotent on the broker, so an end whose connection dropped is sent again.
    conn_.request(
        rid, common::frame_bytes(fbb), Connection::Clock::now() + options_.request_timeout,
        [this, shared](Result<const wire::Frame*> r) {
          const wire::EndTransactionsOk* ok = r.ok() ? (*r)->body_as_EndTransactionsOk() : nullptr;
          const auto* results = ok ? ok->results() : nullptr;
          for (std::size_t i = 0; i < shared->size(); ++i) {
            auto& e = (*shared)[i];
            if (!e.done) continue;
            Result<TransactionResult> result = Error(ErrorCode::kInternal, "broker answered end with the wrong count");
            if (!r.ok()) {
              result = r.error();
            } else if (results && results->size() == shared->size()) {
              const auto* res = results->Get(static_cast<flatbuffers::uoffset_t>(i));
              if (!res->found())
                result = Error(ErrorCode::kInvalidArgument, "no transaction " + std::to_string(res->transaction_id()));
              else
                result = TransactionResult{res->transaction_id(), to_state(res->state()), res->changed(), {}};
            }
            if (!e.releases_room) {
              e.done(result);
            } else if (result) {
              finish(e.done, result);
            } else {
              finish(e.done, TransactionResult{e.end.transaction_id(), TxnState::kPrepared, false,
                                               "end failed: " + result.error().describe()});
            }
          }
        },
        /*resend=*/true);
  }

  // I/O thread: the broker asks about a transaction; the checker answers, and the answer
  // goes back as an end (unknown keeps it prepared: the broker asks again later).
  void on_push(const wire::Frame& frame) {
    if (frame.body_type() != wire::Body::CheckTransaction || !checker_) return;
    const auto* c = frame.body_as_CheckTransaction();
    TransactionCheck check;
    check.transaction_id = c->transaction_id();
    check.topic = c->topic() ? c->topic()->str() : "";
    check.producer_group = c->producer_group() ? c->producer_group()->str() : "";
    check.checks = c->checks();
    check.message.key = owned_bytes(c->key());
    check.message.body = owned_bytes(c->body());
    if (c->headers())
      for (const auto* h : *c->headers())
        check.message.headers.push_back(Header{h->name() ? h->name()->str() : "", owned_bytes(h->value())});
    LocalTransactionState answer = LocalTransactionState::kUnknown;
    try {
      answer = checker_(check);
    } catch (...) {
      answer = LocalTransactionState::kUnknown;  // documented: a throwing checker means "ask again"
    }
    std::vector<QueuedEnd> end;
    end.push_back(QueuedEnd{wire::TxnEnd(check.transaction_id, to_action(answer)), nullptr});
    send_ends(end);
  }

  void fail_queued() {
    std::vector<QueuedPrepare> prepares;
    std::vector<QueuedEnd> ends;
    {
      std::lock_guard lock(mu_);
      prepares.swap(prepares_);
      ends.swap(ends_);
    }
    for (auto& p : prepares) {
      if (p.txn.executor)
        finish(p.txn.done, Error(ErrorCode::kClosed));
      else
        p.done(Error(ErrorCode::kClosed));
    }
    for (auto& e : ends) {
      if (!e.done) continue;
      if (e.releases_room)
        finish(e.done, TransactionResult{e.end.transaction_id(), TxnState::kPrepared, false,
                                         "end failed: " + Error(ErrorCode::kClosed).describe()});
      else
        e.done(Error(ErrorCode::kClosed));
    }
  }

  TransactionalProducer::Options options_;
  TransactionalProducer::Checker checker_;
  Connection conn_;
  std::mutex mu_;
  std::vector<QueuedPrepare> prepares_;  // guarded by mu_
  std::vector<QueuedEnd> ends_;          // guarded by mu_
  std::vector<QueuedPrepare> pumped_prepares_;  // I/O thread: the queue being sent
  std::vector<QueuedEnd> pumped_ends_;          // I/O thread: the queue being sent
  std::vector<Prepared> ready_;                 // I/O thread: prepared, not yet handed to the workers
  std::once_flag workers_once_;                 // the workers start with the first async transaction
  std::unique_ptr<WorkerPool> workers_;
  // send_in_transaction_async calls not yet done, and callers waiting for room among them.
  std::atomic<std::size_t> txns_in_flight_{0};
  std::atomic<std::size_t> room_waiters_{0};
  std::mutex room_mu_;  // with room_cv_, only for a caller waiting for room
  std::condition_variable room_cv_;
};

}  // namespace detail

namespace {

template <typename T, typename Start>
Result<T> wait_for(Start start, Millis timeout) {
  auto promise = std::make_shared<std::promise<Result<T>>>();
  auto future = promise->get_future();
  start([promise](const Result<T>& r) { promise->set_value(r); });
  // The request's own deadline answers first; the margin only guards a stuck I/O thread.
  if (future.wait_for(timeout + Millis(1000)) != std::future_status::ready) return Error(ErrorCode::kTimeout);
  return future.get();
}

}  // namespace

TransactionalProducer::TransactionalProducer(Options options, Checker checker)
    : impl_(std::make_unique<detail::TransactionalProducerImpl>(std::move(options), std::move(checker))) {}
TransactionalProducer::~TransactionalProducer() = default;

void TransactionalProducer::prepare_async(std::string_view topic, Message message,
                                          std::function<void(const Result<std::uint64_t>&)> done) {
  impl_->prepare_async(topic, std::move(message), std::move(done));
}

void TransactionalProducer::end_async(std::uint64_t id, LocalTransactionState state,
                                      std::function<void(const Result<TransactionResult>&)> done) {
  impl_->end_async(id, state, std::move(done));
}

Result<std::uint64_t> TransactionalProducer::prepare(std::string_view topic, Message message, Millis timeout) {
  if (impl_->on_io_thread()) return Error(ErrorCode::kInvalidArgument, "prepare called from the I/O thread");
  return wait_for<std::uint64_t>(
      [&](auto done) { impl_->prepare_async(topic, std::move(message), std::move(done)); }, timeout);
}

Result<TransactionResult> TransactionalProducer::end(std::uint64_t id, LocalTransactionState state, Millis timeout) {
  if (impl_->on_io_thread()) return Error(ErrorCode::kInvalidArgument, "end called from the I/O thread");
  return wait_for<TransactionResult>([&](auto done) { impl_->end_async(id, state, std::move(done)); }, timeout);
}

Result<TransactionResult> TransactionalProducer::send_in_transaction(std::string_view topic, Message message,
                                                                     const Executor& executor, Millis timeout) {
  if (impl_->on_io_thread())
    return Error(ErrorCode::kInvalidArgument, "send_in_transaction called from the producer's own I/O thread");
  auto id = prepare(topic, std::move(message), timeout);
  if (!id) return id.error();
  std::string why;
  const LocalTransactionState local = detail::run_local(executor, *id, &why);
  if (local == LocalTransactionState::kUnknown) return TransactionResult{*id, TxnState::kPrepared, false, why};
  auto ended = end(*id, local, timeout);
  // The check-back settles it.
  if (!ended) return TransactionResult{*id, TxnState::kPrepared, false, "end failed: " + ended.error().describe()};
  return ended;
}

void TransactionalProducer::send_in_transaction_async(std::string_view topic, Message message, Executor executor,
                                                      TransactionCallback done) {
  impl_->send_in_transaction_async(topic, std::move(message), std::move(executor), std::move(done));
}

}  // namespace txmq::client
