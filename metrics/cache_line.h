#pragma once

#include <cstddef>

namespace txmq::metrics {

// Metric values are aligned to this so that two of them updated by different threads (the loop
// thread and the storage writer) never share a cache line: false sharing would turn each
// relaxed increment into a cross-core transfer. 64 bytes on every x86-64 and most ARM cores;
// std::hardware_destructive_interference_size would say the same but GCC warns that its value
// may differ between compiler versions, which makes it unfit for a header.
inline constexpr std::size_t kCacheLineBytes = 64;

}  // namespace txmq::metrics
