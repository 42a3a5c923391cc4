#pragma once
// The storage writer: the one thread that writes to LMDB.
//
// The loop thread submits WriteOps; the writer takes everything queued, applies it as one
// LMDB transaction (if an op fails, again with each op in a nested transaction of its own,
// so one op's failure does not sink its neighbours), commits (fsync in durable mode), and hands the ops back to the
// loop through a uv_async_t, where each op's complete() runs. While it syncs, the loop
// goes on reading and queueing, so the next batch is whatever arrived meanwhile: batches
// grow with load by themselves (group commit), and durable throughput becomes a multiple
// of the disk's flush rate.
//
// Every op says what it is (WriteOp::kind, the list in write_op.h); the writer counts the
// ops that committed per kind in its probe.
// Lifecycle: start() once, then submit() any number of times, then stop(); the writer
// finishes every op submitted before stop() and completes it before on_stopped runs.
// Concurrency: submit() and stop() on the loop thread only; complete() runs on the loop.

#include <uv.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "broker/storage/store.h"
#include "broker/storage/write_op.h"
#include "broker/storage/writer_probe.h"

namespace txmq::broker::storage {

struct WriterOptions {
  SyncMode sync = SyncMode::kDurable;
  std::chrono::milliseconds relaxed_sync_interval{100};
  // One transaction carries at most this much payload; the rest waits for the next. Keeps
  // a burst from building one transaction that holds memory and delays every confirm.
  std::size_t max_batch_bytes = 64u << 20;
};

class StorageWriter {
 public:
  StorageWriter(uv_loop_t* loop, Store& store, WriterOptions options);
  StorageWriter(const StorageWriter&) = delete;
  StorageWriter& operator=(const StorageWriter&) = delete;
  ~StorageWriter();

  // Metrics for every commit; null (the default) records none. Set before start().
  void set_probe(WriterProbe* probe) { probe_ = probe; }

  // Starts the thread. Loop thread.
  void start();
  // Queues an op; its complete() runs on the loop later. Loop thread.
  void submit(std::unique_ptr<WriteOp> op);
  // Ops submitted and not yet completed.
  std::size_t in_flight() const { return in_flight_; }
  // Finishes and completes every op already submitted, stops the thread, closes the
  // async handle, then calls on_stopped. Loop thread.
  void stop(std::function<void()> on_stopped);

  std::uint64_t commits() const { return commits_.load(std::memory_order_relaxed); }

  // Replication (broker/replication.h). on_committed runs on the loop after each batch,
  // after the batch's completions (or their holding), with the replication log's newest
  // index. With the gate on, a gated op's complete() waits until release() is given an
  // index that covers the record its batch wrote; completions stay in commit order. Ops
  // still held when the writer stops complete with kShuttingDown. Loop thread, all three.
  void set_on_committed(std::function<void(std::uint64_t last_index)> fn) { on_committed_ = std::move(fn); }
  void set_commit_gate(bool on);
  void release(std::uint64_t commit_index);
  std::size_t held() const { return held_.size(); }

 private:
  struct Done {
    std::unique_ptr<WriteOp> op;
    Status status;
    std::uint64_t index = 0;  // the replication log's newest record once its batch was done
  };
  void finish(Done& done);  // loop thread: complete() and the count

  void run();                                  // writer thread
  void commit_batch(std::vector<std::unique_ptr<WriteOp>>& batch);  // writer thread
  // One attempt at the batch; statuses[i] is op i's. True when the transaction committed.
  bool apply_batch(std::vector<std::unique_ptr<WriteOp>>& batch, std::vector<Status>& statuses);
  bool commit_tick();  // a commit of one tiny record; true when it went through
  static void on_async(uv_async_t* handle);    // loop thread
  void drain_done();                           // loop thread

  uv_loop_t* loop_;
  Store& store_;
  WriterOptions options_;
  WriterProbe* probe_ = nullptr;
  uv_async_t async_;
  std::thread thread_;
  std::function<void()> on_stopped_;
  std::size_t in_flight_ = 0;  // loop thread only
  std::function<void(std::uint64_t)> on_committed_;  // loop thread only
  bool gate_ = false;                                 // loop thread only
  std::uint64_t released_ = 0;                        // loop thread only
  std::deque<Done> held_;                             // loop thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<WriteOp>> queue_;  // guarded by mu_
  std::vector<Done> done_;                       // guarded by mu_
  bool stopping_ = false;                        // guarded by mu_
  bool thread_exited_ = false;                   // guarded by mu_

  std::atomic<std::uint64_t> commits_{0};
};

}  // namespace txmq::broker::storage
