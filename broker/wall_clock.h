#pragma once
// The broker's one reading of the wall clock.

#include <chrono>
#include <cstdint>

namespace txmq::broker {

// Wall-clock milliseconds since the epoch: due times, timestamps and deadlines are stored
// on disk and must mean the same after a restart. Any thread.
inline std::uint64_t wall_ms() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

}  // namespace txmq::broker
