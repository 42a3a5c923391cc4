#pragma once

#include <atomic>
#include <cstdint>

#include "metrics/cache_line.h"
#include "metrics/metric_type.h"

namespace txmq::metrics {

// A count that only goes up: messages produced, bytes written, deliveries retried.
//
// Lifecycle: created by its Family (Registry::counter, Family<Counter>::with) and owned by it;
// the reference stays valid for the registry's life, so callers cache it.
// Concurrency: inc() and value() may run on any thread at once. inc() is one relaxed atomic
// add: lock-free, never blocks. Relaxed is enough because a counter orders nothing; a scrape
// only needs every increment to land exactly once, eventually.
// Limits: whole numbers only. An integer add is one instruction where a floating-point add is
// a compare-and-swap loop, and every txmq count is whole; fractional totals such as CPU
// seconds are collect-time counters (Registry::callback_counter). Wraps after 2^64.
class alignas(kCacheLineBytes) Counter {
 public:
  static constexpr MetricType kType = MetricType::kCounter;

  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds n. Thread: any. Errors: none.
  void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }

  // The current total. Thread: any. Errors: none.
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

}  // namespace txmq::metrics
