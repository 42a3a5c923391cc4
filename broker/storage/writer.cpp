#include "broker/storage/writer.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace txmq::broker::storage {
namespace {

// The writer's own op: a commit of one tiny record (the commit_ticks counter), made when
// ops refused for room need some commit to move LMDB's page reuse on (commit_batch). It
// changes no state anyone reads.
class TickOp final : public WriteOp {
 public:
  WriteOpKind kind() const override { return WriteOpKind::kTick; }
  Status apply(WriteTxn& txn) override { return txn.touch(); }
  void complete(const Status&) override {}
};

}  // namespace

StorageWriter::StorageWriter(uv_loop_t* loop, Store& store, WriterOptions options)
    : loop_(loop), store_(store), options_(options) {
  async_.data = this;
}

StorageWriter::~StorageWriter() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
}

void StorageWriter::start() {
  uv_async_init(loop_, &async_, &StorageWriter::on_async);
  thread_ = std::thread([this] { run(); });
}

void StorageWriter::submit(std::unique_ptr<WriteOp> op) {
  ++in_flight_;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(op));
  }
  cv_.notify_one();
}

void StorageWriter::stop(std::function<void()> on_stopped) {
  on_stopped_ = std::move(on_stopped);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  // The thread posts once more after its last batch; on_async sees thread_exited_ and
  // closes the handle.
}

void StorageWriter::run() {
  using Clock = std::chrono::steady_clock;
  std::vector<std::unique_ptr<WriteOp>> batch;
  std::vector<std::unique_ptr<WriteOp>> carry;  // what the batch cap left for next time
  bool unsynced = false;
  auto last_sync = Clock::now();
  for (;;) {
    {
      std::unique_lock lock(mu_);
      auto ready = [&] { return !queue_.empty() || !carry.empty() || stopping_; };
      if (options_.sync == SyncMode::kRelaxed && unsynced)
        cv_.wait_until(lock, last_sync + options_.relaxed_sync_interval, ready);
      else
        cv_.wait(lock, ready);
      if (queue_.empty() && carry.empty() && stopping_) break;
      batch.swap(carry);
      std::size_t bytes = 0;
      for (auto& op : batch) bytes += op->bytes();
      std::size_t taken = 0;
      for (; taken < queue_.size() && (bytes < options_.max_batch_bytes || batch.empty()); ++taken) {
        bytes += queue_[taken]->bytes();
        batch.push_back(std::move(queue_[taken]));
      }
      queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(taken));
    }
    if (!batch.empty()) {
      commit_batch(batch);
      unsynced = true;
      uv_async_send(&async_);
    }
    if (options_.sync == SyncMode::kRelaxed && unsynced &&
        Clock::now() - last_sync >= options_.relaxed_sync_interval) {
      if (auto st = store_.sync(); !st) spdlog::error("storage sync failed: {}", st.error().describe());
      unsynced = false;
      last_sync = Clock::now();
    }
  }
  if (options_.sync == SyncMode::kRelaxed) (void)store_.sync();
  {
    std::lock_guard lock(mu_);
    thread_exited_ = true;
  }
  uv_async_send(&async_);
}

void StorageWriter::commit_batch(std::vector<std::unique_ptr<WriteOp>>& batch) {
  auto started = std::chrono::steady_clock::now();
  std::size_t bytes = 0;
  for (auto& op : batch) bytes += op->bytes();

  std::vector<Status> statuses;
  bool committed = apply_batch(batch, statuses);
  // LMDB reuses the pages a commit freed only from the commit after the next one (it keeps
  // the previous snapshot whole), so right after a topic is deleted or trimmed on a full
  // store a write still finds no room. The ops refused for room get one more try after a
  // commit has moved that on: this batch's own, or else a tiny one. Only those: an op whose
  // nested transaction committed must not be applied twice.
  std::vector<std::size_t> refused;
  for (std::size_t i = 0; i < statuses.size(); ++i)
    if (!statuses[i] && statuses[i].error().code == ErrorCode::kStorageFull) refused.push_back(i);
  if (!refused.empty() && (committed || commit_tick())) {
    std::vector<std::unique_ptr<WriteOp>> again;
    for (std::size_t i : refused) again.push_back(std::move(batch[i]));
    std::vector<Status> again_statuses;
    committed = apply_batch(again, again_statuses) || committed;
    for (std::size_t j = 0; j < refused.size(); ++j) {
      batch[refused[j]] = std::move(again[j]);
      statuses[refused[j]] = std::move(again_statuses[j]);
    }
  }

  std::vector<Done> results;
  results.reserve(batch.size());
  // This thread is the only writer: the log's end is this batch's last record.
  const std::uint64_t index = store_.log_position().last_index;
  for (std::size_t i = 0; i < batch.size(); ++i)
    results.push_back(Done{std::move(batch[i]), std::move(statuses[i]), index});
  batch.clear();
  commits_.fetch_add(1, std::memory_order_relaxed);
  if (probe_) {
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
    probe_->on_commit(results.size(), bytes, took.count(), committed);
    // An op's status is ok only once its changes committed (apply_batch overwrites the
    // oks of a transaction whose commit failed).
    for (const Done& r : results)
      if (r.status) probe_->on_committed(r.op->kind());
  }
  std::lock_guard lock(mu_);
  for (auto& r : results) done_.push_back(std::move(r));
}

bool StorageWriter::apply_batch(std::vector<std::unique_ptr<WriteOp>>& batch, std::vector<Status>& statuses) {
  statuses.assign(batch.size(), Status{});
  // Fast path: every op straight into one transaction. Nested transactions cost a search
  // of the parent's dirty pages on every page they touch, so they are kept for the rare
  // batch in which some op fails: then the whole transaction is dropped and the batch is
  // applied again with one nested transaction per op, so the failure stays with its op.
  // Ops are written to be applied twice (each apply starts from scratch).
  // storage.max_size is applied here, op by op (check_room): an op that took the store
  // past its limit fails like any other, alone, and the reserve beyond the limit stays for
  // the deletes and verdicts that need it (Store's comment).
  auto apply_one = [](WriteOp& op, WriteTxn& txn) {
    txn.begin_op();
    Status st = op.apply(txn);
    return st ? txn.check_room() : st;
  };
  Status fast_path;  // ok while the fast path holds
  if (auto txn = store_.begin_write(nullptr); !txn) {
    fast_path = txn.error();
  } else {
    for (auto& op : batch) {
      if (fast_path = apply_one(*op, **txn); !fast_path) break;
    }
    if (fast_path) {
      Status st = (*txn)->commit();
      if (!st) spdlog::error("storage commit failed: {}", st.error().describe());
      statuses.assign(batch.size(), st);
      return st.ok();
    }
  }
  auto parent = store_.begin_write(nullptr);
  if (!parent) {
    statuses.assign(batch.size(), parent.error());
    return false;
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (auto child = store_.begin_write(parent->get()); !child) {
      statuses[i] = child.error();
    } else if (statuses[i] = apply_one(*batch[i], **child); statuses[i]) {
      statuses[i] = (*child)->commit();
    }
  }
  if (auto st = (*parent)->commit(); !st) {
    spdlog::error("storage commit failed: {}", st.error().describe());
    for (auto& status : statuses)
      if (status) status = st;
    return false;
  }
  return true;
}

bool StorageWriter::commit_tick() {
  auto txn = store_.begin_write(nullptr);
  if (!txn) return false;
  // Not apply_batch: the tick must not be held to storage.max_size (check_room), since the
  // store is full when it is needed.
  TickOp tick;
  Status st = tick.apply(**txn);
  if (st) st = (*txn)->commit();
  if (!st) spdlog::debug("storage full; a tick commit did not go through either: {}", st.error().describe());
  if (st && probe_) probe_->on_committed(tick.kind());
  return st.ok();
}

void StorageWriter::finish(Done& done) {
  --in_flight_;
  done.op->complete(done.status);
}

void StorageWriter::set_commit_gate(bool on) {
  gate_ = on;
  if (!on) release(UINT64_MAX);
}

void StorageWriter::release(std::uint64_t commit_index) {
  released_ = std::max(released_, commit_index);
  while (!held_.empty() && (held_.front().index <= released_ || !gate_)) {
    Done d = std::move(held_.front());
    held_.pop_front();
    finish(d);
  }
}

void StorageWriter::on_async(uv_async_t* handle) {
  static_cast<StorageWriter*>(handle->data)->drain_done();
}

void StorageWriter::drain_done() {
  // uv_async_send coalesces wake-ups, so take everything that is done, not one batch.
  std::vector<Done> done;
  bool exited;
  {
    std::lock_guard lock(mu_);
    done.swap(done_);
    exited = thread_exited_;
  }
  // Completions first: without the gate (async replication) a client's confirm does not
  // wait for the followers' held fetches to be answered. With it, on_committed may release
  // what was just held.
  for (auto& d : done) {
    if (gate_ && d.op->gated() && (d.index > released_ || !held_.empty()))
      held_.push_back(std::move(d));
    else
      finish(d);
  }
  if (on_committed_ && !done.empty()) on_committed_(done.back().index);
  if (exited && thread_.joinable()) {
    // Nothing will release them now: their changes are on this disk, not known to be on
    // the replicas', so they are not confirmed (a client sends them again).
    for (auto& d : held_) {
      d.status = Error(ErrorCode::kShuttingDown, "the broker stopped before its replicas confirmed this");
      finish(d);
    }
    held_.clear();
    thread_.join();
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), [](uv_handle_t* h) {
      auto* self = static_cast<StorageWriter*>(h->data);
      if (self->on_stopped_) self->on_stopped_();
    });
  }
}

}  // namespace txmq::broker::storage
