// Retention: deleting old messages in bounded rounds, driven by the scheduler, and in the
// same write the transactions' share (ended transactions, silent idempotent producers).

#include <spdlog/spdlog.h>

#include "broker/topic_log.h"
#include "broker/storage/fn_op.h"
#include "broker/transaction_coordinator.h"

namespace txmq::broker {
namespace {

// Messages deleted per partition per retention round (and ended transactions and
// producers pruned), so that one round cannot make one huge commit that delays every
// confirm behind it.
constexpr std::size_t kTrimPerRound = 10000;
// When a round left work behind, the next comes this soon.
constexpr std::uint64_t kRetentionBusyMs = 100;

}  // namespace

void TopicLog::retention_due() {
  loop_thread_.check();
  struct Trim {
    TopicId topic;
    std::uint32_t partitions;
    std::uint64_t min_timestamp_ms;
    std::uint64_t max_bytes;
  };
  std::vector<Trim> trims;
  const std::uint64_t now = wall_ms();
  for (const auto& [name, t] : topics_.all()) {
    const std::uint64_t age = t->meta.retention_ms ? t->meta.retention_ms : config_.retention_ms;
    const std::uint64_t bytes = t->meta.retention_bytes ? t->meta.retention_bytes : config_.retention_bytes;
    trims.push_back(Trim{t->meta.id, t->meta.partitions, age ? (now > age ? now - age : 0) : 0,
                         bytes ? bytes : UINT64_MAX});
  }
  struct Outcome {
    TxnPrune prune;
    bool more = false;
    std::size_t deleted = 0;
  };
  auto outcome = std::make_shared<Outcome>(Outcome{txns_->prune_round(now)});
  writer_.submit(std::make_unique<storage::FnOp>(
      [trims = std::move(trims), outcome](storage::WriteTxn& txn) -> Status {
        outcome->deleted = 0;
        if (auto st = outcome->prune.apply(txn, kTrimPerRound); !st) return st;
        outcome->more = outcome->prune.more;
        for (const Trim& t : trims) {
          for (std::uint32_t p = 0; p < t.partitions; ++p) {
            auto n = txn.trim(t.topic, PartitionId(p), t.min_timestamp_ms, t.max_bytes, kTrimPerRound);
            if (!n) return n.error();
            outcome->deleted += *n;
            if (*n == kTrimPerRound) outcome->more = true;
          }
        }
        return {};
      },
      [this, outcome](const Status& st) {
        if (st) txns_->pruned(outcome->prune);
        retention_done(st, outcome->more, outcome->deleted);
      }));
}

void TopicLog::retention_done(const Status& status, bool more, std::size_t deleted) {
  loop_thread_.check();
  if (!status) spdlog::error("retention: {}", status.error().describe());
  if (deleted > 0) {
    spdlog::debug("retention deleted {} message(s)", deleted);
    for (const auto& [name, t] : topics_.all())
      for (std::uint32_t p = 0; p < t->partitions.size(); ++p)
        if (auto b = store_.partition_bounds(t->meta.id, PartitionId(p)); b) t->partitions[p].first = b->first;
    if (probe_) probe_->retention_deleted(deleted);
  }
  const std::uint64_t interval =
      (status && more) ? kRetentionBusyMs : static_cast<std::uint64_t>(config_.retention_check_interval.count());
  scheduler_.at(wall_ms() + interval, retention_target_);
}

}  // namespace txmq::broker
