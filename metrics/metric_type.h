#pragma once

#include <string_view>

namespace txmq::metrics {

// The metric types txmq exposes. Summaries are left out on purpose: their quantiles cannot be
// aggregated across brokers, a histogram's buckets can.
enum class MetricType { kCounter, kGauge, kHistogram };

// The word written on the `# TYPE` line. Thread: any. Errors: none.
constexpr std::string_view type_name(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace txmq::metrics
