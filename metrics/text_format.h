#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "metrics/metric_type.h"

// Writing the Prometheus text exposition format, version 0.0.4:
// https://prometheus.io/docs/instrumenting/exposition_formats/
// Every function appends to `out` and may throw std::bad_alloc; all are safe on any thread.

namespace txmq::metrics {

class Counter;
class Gauge;
class Histogram;

// The Content-Type of what these functions write.
inline constexpr std::string_view kTextContentType = "text/plain; version=0.0.4; charset=utf-8";

// HELP text escapes backslash and newline.
void append_escaped_help(std::string& out, std::string_view help);

// Label values escape backslash, double quote and newline; bytes that are not valid UTF-8
// are written as U+FFFD.
void append_escaped_label_value(std::string& out, std::string_view value);

// `a="x",b="y"`: the inside of a sample's braces, values escaped; empty without labels.
// names and values have the same size.
std::string format_labels(std::span<const std::string> names, std::span<const std::string> values);

// Shortest text that reads back as the same double; "+Inf", "-Inf" and "NaN" as the format
// spells them.
void append_value(std::string& out, double value);

// `# HELP` and `# TYPE` lines of one family.
void append_header(std::string& out, std::string_view name, std::string_view help, MetricType type);

// One sample line: `name{labels} value`; the braces are left out when labels is empty.
void append_sample(std::string& out, std::string_view name, std::string_view labels, double value);

// The sample lines of one child, labels as format_labels writes them. A histogram writes
// cumulative `_bucket{le="..."}` lines ending in +Inf, then `_sum` and `_count`.
void append_samples(std::string& out, std::string_view name, std::string_view labels,
                    const Counter& counter);
void append_samples(std::string& out, std::string_view name, std::string_view labels,
                    const Gauge& gauge);
void append_samples(std::string& out, std::string_view name, std::string_view labels,
                    const Histogram& histogram);

}  // namespace txmq::metrics
