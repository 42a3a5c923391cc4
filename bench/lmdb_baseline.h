#pragma once
// The raw LMDB baseline the broker's durable produce figure is printed beside: the same
// number of 100-byte values put under 16-byte big-endian keys, `per_txn` puts per
// durable (fsynced) transaction, in a fresh environment on the same file system.

#include <cstddef>
#include <string>

namespace txmq::bench {

struct BaselineResult {
  double messages_per_second = 0;
  double seconds = 0;
  std::string error;  // empty on success
};

BaselineResult run_lmdb_baseline(const std::string& dir, std::size_t messages, std::size_t value_size,
                                 std::size_t per_txn);

}  // namespace txmq::bench
