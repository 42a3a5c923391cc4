#include "metrics/histogram.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace txmq::metrics {

Histogram::Histogram(std::span<const double> upper_bounds) noexcept : upper_bounds_(upper_bounds) {}

void Histogram::observe(double value) noexcept {
  // "bound < value" rather than lower_bound's default: NaN fails every comparison, so it
  // passes all bounds and lands in +Inf instead of the first bucket.
  const auto bucket = std::partition_point(upper_bounds_.begin(), upper_bounds_.end(),
                                           [value](double bound) { return !(bound >= value); });
  buckets_[static_cast<std::size_t>(bucket - upper_bounds_.begin())].fetch_add(
      1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

std::uint64_t Histogram::bucket_count(std::size_t i) const noexcept {
  return buckets_[i].load(std::memory_order_relaxed);
}

std::vector<double> default_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> exponential_buckets(double start, double factor, std::size_t count) {
  if (!(start > 0) || !(factor > 1) || count == 0 || count > Histogram::kMaxBuckets) {
    throw std::invalid_argument("exponential_buckets needs start > 0, factor > 1 and 1 to " +
                                std::to_string(Histogram::kMaxBuckets) + " buckets");
  }
  std::vector<double> bounds(count);
  for (std::size_t i = 0; i < count; ++i) {
    bounds[i] = start * std::pow(factor, static_cast<double>(i));
  }
  validate_buckets(bounds);  // a huge factor can overflow to +Inf
  return bounds;
}

void validate_buckets(std::span<const double> upper_bounds) {
  if (upper_bounds.size() > Histogram::kMaxBuckets) {
    throw std::invalid_argument("a histogram has at most " +
                                std::to_string(Histogram::kMaxBuckets) + " buckets");
  }
  for (std::size_t i = 0; i < upper_bounds.size(); ++i) {
    if (!std::isfinite(upper_bounds[i])) {
      throw std::invalid_argument("histogram bounds must be finite; +Inf is implicit");
    }
    if (i > 0 && !(upper_bounds[i - 1] < upper_bounds[i])) {
      throw std::invalid_argument("histogram bounds must be strictly increasing");
    }
  }
}

}  // namespace txmq::metrics
