#pragma once
// The storage writer's metrics: one observation per committed batch, and a count of the
// committed write operations per kind. Updated on the writer thread (lock-free metric
// updates), rendered on the loop.

#include <array>

#include "broker/storage/write_op.h"
#include "metrics/registry.h"

namespace txmq::broker::storage {

class WriterProbe {
 public:
  explicit WriterProbe(metrics::Registry& registry)
      : commit_seconds_(registry.histogram(
            "txmq_storage_commit_seconds", "Time to apply and commit (with fsync in durable mode) one batch.",
            metrics::exponential_buckets(0.0001, 2, 16))),
        batch_ops_(registry.histogram("txmq_storage_commit_batch_ops",
                                      "Write operations (produce requests, acks, ...) per committed batch.",
                                      metrics::exponential_buckets(1, 2, 14))),
        batch_bytes_(registry.histogram("txmq_storage_commit_batch_bytes", "Request bytes per committed batch.",
                                        metrics::exponential_buckets(1024, 4, 12))),
        failed_(registry.counter("txmq_storage_commit_failures_total",
                                 "Batches whose commit failed (every operation in them was answered with the error).")) {
    // Every kind has its series from the start, so that each reads 0 before its first op.
    auto& ops = registry.counter_family("txmq_storage_write_ops_total",
                                        "Write operations committed, by kind (storage::WriteOpKind).", {"op"});
    for (WriteOpKind kind : kAllWriteOpKinds) committed_[static_cast<std::size_t>(kind)] = &ops.with({name(kind)});
  }

  // Writer thread.
  void on_commit(std::size_t ops, std::size_t bytes, double seconds, bool ok) {
    commit_seconds_.observe(seconds);
    batch_ops_.observe(static_cast<double>(ops));
    batch_bytes_.observe(static_cast<double>(bytes));
    if (!ok) failed_.inc();
  }
  // Writer thread: one op of this kind committed.
  void on_committed(WriteOpKind kind) { committed_[static_cast<std::size_t>(kind)]->inc(); }

 private:
  metrics::Histogram& commit_seconds_;
  metrics::Histogram& batch_ops_;
  metrics::Histogram& batch_bytes_;
  metrics::Counter& failed_;
  std::array<metrics::Counter*, kWriteOpKinds> committed_{};  // by kind
};

}  // namespace txmq::broker::storage
