#pragma once

#include <string>
#include <string_view>

namespace txmq::metrics {

// Every txmq metric name starts with "txmq_", so that one selector finds them all. The
// process_* metrics are the exception: their names are standard across exporters.
inline constexpr std::string_view kNamespace = "txmq";

// True for [a-zA-Z_][a-zA-Z0-9_]*. Prometheus also allows ':' but reserves it for recording
// rules, so an exporter must not use it. Thread: any. Errors: none.
bool is_valid_metric_name(std::string_view name);

// True for [a-zA-Z_][a-zA-Z0-9_]* not starting with "__", which Prometheus reserves for its
// own labels. Thread: any. Errors: none.
bool is_valid_label_name(std::string_view name);

// "txmq_<subsystem>_<name>": metric_name("storage", "write_seconds") is
// "txmq_storage_write_seconds". The name is checked when it is registered, not here.
// Conventions that `promtool check metrics` enforces, and that the name should follow:
// counters end in "_total", everything else does not; values are in base units and say so
// ("_seconds", "_bytes", never "_milliseconds"); the unit comes before "_total"
// ("txmq_storage_written_bytes_total"). Thread: any. Errors: std::bad_alloc.
std::string metric_name(std::string_view subsystem, std::string_view name);

}  // namespace txmq::metrics
