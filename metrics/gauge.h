#pragma once

#include <atomic>

#include "metrics/cache_line.h"
#include "metrics/metric_type.h"

namespace txmq::metrics {

// A value that goes up and down: pending deliveries, open transactions, leases held.
//
// Lifecycle: created by its Family (Registry::gauge, Family<Gauge>::with) and owned by it; the
// reference stays valid for the registry's life, so callers cache it.
// Concurrency: every member may run on any thread at once, lock-free. set() is one relaxed
// store; inc() and dec() are a relaxed compare-and-swap loop (what std::atomic<double> does
// for fetch_add), which only retries when two threads update the same gauge at once.
// Limits: a double, so whole values are exact up to 2^53.
class alignas(kCacheLineBytes) Gauge {
 public:
  static constexpr MetricType kType = MetricType::kGauge;
  static_assert(std::atomic<double>::is_always_lock_free);

  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  // Thread: any. Errors: none.
  void set(double value) noexcept { value_.store(value, std::memory_order_relaxed); }
  // Thread: any. Errors: none.
  void inc(double delta = 1) noexcept { value_.fetch_add(delta, std::memory_order_relaxed); }
  // Thread: any. Errors: none.
  void dec(double delta = 1) noexcept { value_.fetch_sub(delta, std::memory_order_relaxed); }
  // Thread: any. Errors: none.
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

}  // namespace txmq::metrics
