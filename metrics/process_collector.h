#pragma once

#include <optional>

#include "metrics/registry.h"

// The standard process_* metrics that every Prometheus client library exports, read from
// /proc on Linux. Reading them costs a few small file reads per scrape; nothing is sampled
// between scrapes.

namespace txmq::metrics {

// One reading of /proc/self/stat, /proc/stat, /proc/self/fd and the fd limit.
struct ProcessSnapshot {
  double cpu_seconds = 0;            // user + system time since the process started
  double virtual_memory_bytes = 0;   // vsize
  double resident_memory_bytes = 0;  // rss pages times the page size
  double start_time_seconds = 0;     // since the Unix epoch: boot time + starttime ticks
  double open_fds = 0;               // entries in /proc/self/fd
  double max_fds = 0;                // soft RLIMIT_NOFILE
};

// Reads everything now. Thread: any. Errors: std::nullopt if /proc is unreadable or its
// format is unexpected (not Linux, /proc not mounted).
std::optional<ProcessSnapshot> read_process_snapshot();

// Registers process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds and
// process_start_time_seconds as collect-time metrics; each reads only the file it needs when
// the registry renders, and reads NaN if that fails. The start time is read once, now.
// Thread: any, once per registry. Errors: std::invalid_argument if any of the names is already
// registered, std::bad_alloc.
void register_process_metrics(Registry& registry);

}  // namespace txmq::metrics
