#include "broker/topic_table.h"

#include <algorithm>

namespace txmq::broker {

PartitionId partition_for_key(std::span<const std::uint8_t> key, std::uint32_t partitions) {
  std::uint64_t h = 14695981039346656037ull;
  for (std::uint8_t b : key) {
    h ^= b;
    h *= 1099511628211ull;
  }
  return PartitionId(static_cast<std::uint32_t>(h % partitions));
}

Status TopicTable::load(const storage::Store& store) {
  auto metas = store.load_topics();
  if (!metas) return metas.error();
  for (auto& meta : *metas) {
    Topic& t = add(meta);
    for (std::uint32_t p = 0; p < meta.partitions; ++p) {
      auto bounds = store.partition_bounds(meta.id, PartitionId(p));
      if (!bounds) return bounds.error();
      t.partitions[p] = PartitionState{bounds->first, bounds->next};
    }
  }
  return {};
}

Topic* TopicTable::find(std::string_view name) {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second.get();
}

Topic* TopicTable::find(TopicId id) {
  for (auto& [name, t] : by_name_)
    if (t->meta.id == id) return t.get();
  return nullptr;
}

Topic& TopicTable::add(storage::TopicMeta meta) {
  auto t = std::make_unique<Topic>();
  t->partitions.resize(meta.partitions);
  t->meta = std::move(meta);
  Topic& ref = *t;
  by_name_[ref.meta.name] = std::move(t);
  return ref;
}

void TopicTable::remove(std::string_view name) {
  if (auto it = by_name_.find(name); it != by_name_.end()) by_name_.erase(it);
}

Result<PartitionId> TopicTable::pick_partition(Topic& topic, int requested,
                                               std::span<const std::uint8_t> key) {
  const std::uint32_t n = topic.meta.partitions;
  if (requested >= 0) {
    if (static_cast<std::uint32_t>(requested) >= n)
      return Error(ErrorCode::kUnknownPartition, "topic '" + topic.meta.name + "' has " +
                                                     std::to_string(n) + " partitions, not partition " +
                                                     std::to_string(requested));
    return PartitionId(static_cast<std::uint32_t>(requested));
  }
  if (!key.empty()) return partition_for_key(key, n);
  return PartitionId(topic.round_robin++ % n);
}

}  // namespace txmq::broker
