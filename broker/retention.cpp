// Retention: deleting old messages in bounded rounds, driven by the scheduler, and in the
// same write the transactions' share (ended transactions, silent idempotent producers).

#include <spdlog/spdlog.h>

#include "broker/topic_log.h"
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

// One retention round: old messages trimmed per partition, and the transactions' share
// (TxnPrune), at most kTrimPerRound of each, in one write.
class TopicLog::RetentionOp final : public storage::WriteOp {
 public:
  // What one partition keeps.
  struct Trim {
    TopicId topic;
    std::uint32_t partitions;
    std::uint64_t min_timestamp_ms;  // older messages go (0: none for age)
    std::uint64_t max_bytes;         // the partition's bytes beyond this go, oldest first
  };

  RetentionOp(TopicLog& log, std::vector<Trim> trims, TxnPrune prune)
      : log_(log), trims_(std::move(trims)), prune_(prune) {}

  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kRetention; }

  Status apply(storage::WriteTxn& txn) override {
    deleted_ = 0;
    if (auto st = prune_.apply(txn, kTrimPerRound); !st) return st;
    more_ = prune_.more;
    for (const Trim& t : trims_) {
      for (std::uint32_t p = 0; p < t.partitions; ++p) {
        auto n = txn.trim(t.topic, PartitionId(p), t.min_timestamp_ms, t.max_bytes, kTrimPerRound);
        if (!n) return n.error();
        deleted_ += *n;
        if (*n == kTrimPerRound) more_ = true;
      }
    }
    return {};
  }

  void complete(const Status& status) override {
    if (status) log_.txns_->pruned(prune_);
    log_.retention_done(status, more_, deleted_);
  }

 private:
  TopicLog& log_;
  std::vector<Trim> trims_;  // one per topic
  TxnPrune prune_;           // decided on the loop; apply fills in what it did
  bool more_ = false;        // by apply: work was left for the next round
  std::size_t deleted_ = 0;  // by apply: messages deleted
};

void TopicLog::retention_due() {
  loop_thread_.check();
  std::vector<RetentionOp::Trim> trims;
  const std::uint64_t now = wall_ms();
  for (const auto& [name, t] : topics_.all()) {
    const std::uint64_t age = t->meta.retention_ms ? t->meta.retention_ms : config_.retention_ms;
    const std::uint64_t bytes = t->meta.retention_bytes ? t->meta.retention_bytes : config_.retention_bytes;
    trims.push_back(RetentionOp::Trim{t->meta.id, t->meta.partitions, age ? (now > age ? now - age : 0) : 0,
                                      bytes ? bytes : UINT64_MAX});
  }
  writer_.submit(std::make_unique<RetentionOp>(*this, std::move(trims), txns_->prune_round(now)));
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
