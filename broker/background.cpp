// Work the broker does on its own, driven by the scheduler: releasing delayed messages when
// they come due, and retention (deleting old messages in bounded batches).

#include <spdlog/spdlog.h>

#include "broker/broker.h"
#include "broker/storage/fn_op.h"

namespace txmq::broker {
namespace {

// Delayed messages released per transaction; more wait for the next round, so one burst
// of due messages cannot make one huge commit that delays every confirm behind it.
constexpr std::size_t kDelayedPerRound = 1000;
// Messages deleted per partition per retention round, for the same reason.
constexpr std::size_t kTrimPerRound = 10000;

}  // namespace

void Broker::on_scheduler_due(Scheduler::Target target) {
  if (shutting_down_) return;
  if (target == kDelayedTarget) return release_delayed();
  if (target == kRetentionTarget) return run_retention();
  if (target == kTxnCheckTarget) return txns_->check_round();
  if (auto it = groups_by_serial_.find(target); it != groups_by_serial_.end()) on_group_due(*it->second);
}

void Broker::schedule_delayed() {
  auto next = store_->next_delayed_ms();
  if (!next) {
    spdlog::error("reading delayed messages: {}", next.error().describe());
    return;
  }
  if (*next) scheduler_->at(**next, kDelayedTarget);
}

void Broker::delayed_stored(std::uint64_t due_ms) { scheduler_->at(due_ms, kDelayedTarget); }

void Broker::release_delayed() {
  auto released = std::make_shared<std::vector<std::pair<TopicId, std::pair<PartitionId, Offset>>>>();
  writer_->submit(std::make_unique<storage::FnOp>(
      [released](storage::WriteTxn& txn) -> Status {
        auto r = txn.release_delayed(wall_ms(), kDelayedPerRound);
        if (!r) return r.error();
        *released = std::move(*r);
        return {};
      },
      [this, released](const Status& st) {
        if (!st) spdlog::error("releasing delayed messages: {}", st.error().describe());
        std::vector<Topic*> touched;
        for (const auto& [tid, where] : *released) {
          Topic* t = topics_.find(tid);
          if (!t) continue;
          auto& part = t->partitions[where.first.value()];
          if (where.second >= part.next) part.next = next(where.second);
          ++t->messages_produced;
          if (t->series.produced) t->series.produced->inc();
          if (std::find(touched.begin(), touched.end(), t) == touched.end()) touched.push_back(t);
        }
        for (Topic* t : touched) dispatch_topic(*t);
        if (st && released->size() == kDelayedPerRound)
          delayed_stored(wall_ms());  // more are due now
        else
          schedule_delayed();
      }));
}

void Broker::run_retention() {
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
  auto more = std::make_shared<bool>(false);
  auto deleted = std::make_shared<std::size_t>(0);
  auto prune = std::make_shared<TxnPrune>(txns_->prune_round(now));
  writer_->submit(std::make_unique<storage::FnOp>(
      [trims, more, deleted, prune](storage::WriteTxn& txn) -> Status {
        *deleted = 0;
        if (auto st = prune->apply(txn, kTrimPerRound); !st) return st;
        *more = prune->more;
        for (const Trim& t : trims) {
          for (std::uint32_t p = 0; p < t.partitions; ++p) {
            auto n = txn.trim(t.topic, PartitionId(p), t.min_timestamp_ms, t.max_bytes, kTrimPerRound);
            if (!n) return n.error();
            *deleted += *n;
            if (*n == kTrimPerRound) *more = true;
          }
        }
        return {};
      },
      [this, more, deleted, prune](const Status& st) {
        if (!st) spdlog::error("retention: {}", st.error().describe());
        if (st) txns_->pruned(*prune);
        if (*deleted > 0) {
          spdlog::debug("retention deleted {} message(s)", *deleted);
          for (const auto& [name, t] : topics_.all())
            for (std::uint32_t p = 0; p < t->partitions.size(); ++p)
              if (auto b = store_->partition_bounds(t->meta.id, PartitionId(p)); b) t->partitions[p].first = b->first;
          if (probe_) probe_->retention_deleted(*deleted);
        }
        const std::uint64_t interval = (st && *more) ? 100 : static_cast<std::uint64_t>(config_.retention_check_interval.count());
        scheduler_->at(wall_ms() + interval, kRetentionTarget);
      }));
}

}  // namespace txmq::broker
