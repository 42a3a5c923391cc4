// TransactionalProducer: prepares half messages, ends them, and answers the broker's checks
// through the user's checker.

#include <algorithm>
#include <future>
#include <map>
#include <mutex>

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

}  // namespace

class TransactionalProducerImpl {
 public:
  TransactionalProducerImpl(TransactionalProducer::Options options, TransactionalProducer::Checker checker)
      : options_(std::move(options)),
        checker_(std::move(checker)),
        conn_(options_, Connection::Hooks{nullptr, [this](const wire::Frame& f) { on_push(f); }}) {
    conn_.start();
  }
  ~TransactionalProducerImpl() { conn_.stop(); }

  bool on_io_thread() const { return conn_.on_io_thread(); }

  void prepare_async(std::string_view topic, Message m, std::function<void(const Result<std::uint64_t>&)> done) {
    if (options_.producer_group.empty()) return done(Error(ErrorCode::kInvalidArgument, "no producer group"));
    bool post;
    {
      std::lock_guard lock(mu_);
      post = prepares_.empty() && ends_.empty();
      prepares_.push_back(QueuedPrepare{std::string(topic), std::move(m), std::move(done)});
    }
    if (post && !conn_.post([this] { pump(); })) fail_queued();
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
  struct QueuedPrepare {
    std::string topic;
    Message message;
    std::function<void(const Result<std::uint64_t>&)> done;
  };
  struct QueuedEnd {
    wire::TxnEnd end;
    std::function<void(const Result<TransactionResult>&)> done;
  };

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
    auto shared = std::make_shared<std::vector<std::function<void(const Result<std::uint64_t>&)>>>();
    shared->reserve(batch.size());
    for (auto& q : batch) shared->push_back(std::move(q.done));
    conn_.request(rid, common::frame_bytes(fbb), Connection::Clock::now() + options_.request_timeout,
                  [shared](Result<const wire::Frame*> r) {
                    const wire::PrepareOk* ok = r.ok() ? (*r)->body_as_PrepareOk() : nullptr;
                    const auto* ids = ok ? ok->transaction_ids() : nullptr;
                    for (std::size_t i = 0; i < shared->size(); ++i) {
                      if (!r.ok())
                        (*shared)[i](r.error());
                      else if (!ids || ids->size() != shared->size())
                        (*shared)[i](Error(ErrorCode::kInternal, "broker answered prepare with the wrong count"));
                      else
                        (*shared)[i](ids->Get(static_cast<flatbuffers::uoffset_t>(i)));
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
        [shared](Result<const wire::Frame*> r) {
          const wire::EndTransactionsOk* ok = r.ok() ? (*r)->body_as_EndTransactionsOk() : nullptr;
          const auto* results = ok ? ok->results() : nullptr;
          for (std::size_t i = 0; i < shared->size(); ++i) {
            auto& e = (*shared)[i];
            if (!e.done) continue;
            if (!r.ok()) {
              e.done(r.error());
            } else if (!results || results->size() != shared->size()) {
              e.done(Error(ErrorCode::kInternal, "broker answered end with the wrong count"));
            } else {
              const auto* res = results->Get(static_cast<flatbuffers::uoffset_t>(i));
              if (!res->found())
                e.done(Error(ErrorCode::kInvalidArgument, "no transaction " + std::to_string(res->transaction_id())));
              else
                e.done(TransactionResult{res->transaction_id(), to_state(res->state()), res->changed()});
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
    for (auto& p : prepares) p.done(Error(ErrorCode::kClosed));
    for (auto& e : ends)
      if (e.done) e.done(Error(ErrorCode::kClosed));
  }

  TransactionalProducer::Options options_;
  TransactionalProducer::Checker checker_;
  Connection conn_;
  std::mutex mu_;
  std::vector<QueuedPrepare> prepares_;  // guarded by mu_
  std::vector<QueuedEnd> ends_;          // guarded by mu_
  std::vector<QueuedPrepare> pumped_prepares_;  // I/O thread: the queue being sent
  std::vector<QueuedEnd> pumped_ends_;          // I/O thread: the queue being sent
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
  auto id = prepare(topic, std::move(message), timeout);
  if (!id) return id.error();
  LocalTransactionState local = LocalTransactionState::kUnknown;
  try {
    local = executor(*id);
  } catch (...) {
    local = LocalTransactionState::kUnknown;  // the check-back will find out what happened
  }
  if (local == LocalTransactionState::kUnknown) return TransactionResult{*id, TxnState::kPrepared, false};
  auto ended = end(*id, local, timeout);
  if (!ended) return TransactionResult{*id, TxnState::kPrepared, false};  // the check-back settles it
  return ended;
}

}  // namespace txmq::client
