#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "metrics/cache_line.h"
#include "metrics/metric_type.h"

namespace txmq::metrics {

// Counts observations (latencies, batch sizes) into buckets with fixed upper bounds, and keeps
// their sum.
//
// Lifecycle: created by its Family (Registry::histogram, Family<Histogram>::with), which also
// owns the upper bounds the histogram points to; the reference stays valid for the registry's
// life, so callers cache it.
// Concurrency: every member may run on any thread at once, lock-free. observe() is a binary
// search over the bounds, one relaxed add to one bucket and a relaxed compare-and-swap loop on
// the sum. A scrape that races with observe() may see a bucket without the matching sum; the
// next scrape is consistent again, which is all Prometheus needs.
// Limits: at most kMaxBuckets finite bounds, stored inline so that an observation touches no
// other allocation. The count is not stored: it is the +Inf bucket's cumulative count, computed
// at render time, so the two can never disagree.
class alignas(kCacheLineBytes) Histogram {
 public:
  static constexpr MetricType kType = MetricType::kHistogram;
  // Prometheus advises about ten buckets; 32 leaves room for fine latency scales.
  static constexpr std::size_t kMaxBuckets = 32;

  // upper_bounds must satisfy validate_buckets and outlive the histogram (its Family owns
  // both). Thread: any. Errors: none.
  explicit Histogram(std::span<const double> upper_bounds) noexcept;
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Counts value in the first bucket whose bound is >= value. NaN lands in +Inf and makes the
  // sum NaN, as in the Go client. Thread: any. Errors: none.
  void observe(double value) noexcept;

  // The finite upper bounds; +Inf is implicit. Thread: any. Errors: none.
  std::span<const double> upper_bounds() const noexcept { return upper_bounds_; }

  // Observations in bucket i alone, not cumulative; i == upper_bounds().size() is +Inf.
  // Thread: any. Errors: none (i out of range is a programming error).
  std::uint64_t bucket_count(std::size_t i) const noexcept;

  // The sum of all observations. Thread: any. Errors: none.
  double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

 private:
  std::span<const double> upper_bounds_;
  std::atomic<double> sum_{0};
  std::array<std::atomic<std::uint64_t>, kMaxBuckets + 1> buckets_{};  // + 1 for +Inf
};

// Prometheus's default buckets, 5 ms to 10 s: right for request latencies in seconds.
// Thread: any. Errors: std::bad_alloc.
std::vector<double> default_buckets();

// count bounds start, start*factor, start*factor^2, ...: exponential_buckets(0.0001, 2, 16)
// covers 100 us to 3.3 s. Thread: any. Errors: std::invalid_argument unless start > 0,
// factor > 1 and 1 <= count <= Histogram::kMaxBuckets.
std::vector<double> exponential_buckets(double start, double factor, std::size_t count);

// Throws std::invalid_argument unless the bounds are finite, strictly increasing and at most
// Histogram::kMaxBuckets. An empty list is valid (a histogram with +Inf only). Thread: any.
void validate_buckets(std::span<const double> upper_bounds);

}  // namespace txmq::metrics
