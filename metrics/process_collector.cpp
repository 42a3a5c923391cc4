#include "metrics/process_collector.h"

#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace txmq::metrics {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The fields of /proc/self/stat that we use (see proc(5)).
struct ProcStat {
  double cpu_seconds = 0;
  double virtual_memory_bytes = 0;
  double resident_memory_bytes = 0;
  double start_ticks = 0;  // clock ticks after boot
};

std::optional<std::string> read_file(const char* path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return std::nullopt;
  return text;
}

std::optional<double> parse_number(std::string_view text) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

double clock_ticks_per_second() { return static_cast<double>(sysconf(_SC_CLK_TCK)); }

std::optional<ProcStat> read_proc_stat() {
  const std::optional<std::string> text = read_file("/proc/self/stat");
  if (!text) return std::nullopt;
  // Field 2 is the command name in parentheses and may itself contain spaces and
  // parentheses, so the fields we want are counted from the last ')'.
  const std::size_t comm_end = text->rfind(')');
  if (comm_end == std::string::npos) return std::nullopt;
  std::istringstream rest(text->substr(comm_end + 1));
  std::vector<std::string> fields;
  for (std::string field; rest >> field;) fields.push_back(std::move(field));
  // proc(5) numbers fields from 1; fields[0] is field 3.
  constexpr std::size_t kUtime = 14 - 3;
  constexpr std::size_t kStime = 15 - 3;
  constexpr std::size_t kStarttime = 22 - 3;
  constexpr std::size_t kVsize = 23 - 3;
  constexpr std::size_t kRss = 24 - 3;
  if (fields.size() <= kRss) return std::nullopt;
  const auto utime = parse_number(fields[kUtime]);
  const auto stime = parse_number(fields[kStime]);
  const auto start = parse_number(fields[kStarttime]);
  const auto vsize = parse_number(fields[kVsize]);
  const auto rss = parse_number(fields[kRss]);
  if (!utime || !stime || !start || !vsize || !rss) return std::nullopt;
  const double ticks = clock_ticks_per_second();
  return ProcStat{(*utime + *stime) / ticks, *vsize,
                  *rss * static_cast<double>(sysconf(_SC_PAGESIZE)), *start};
}

// The "btime" line of /proc/stat: when the system booted, in seconds since the epoch.
std::optional<double> read_boot_time_seconds() {
  std::ifstream in("/proc/stat");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("btime ")) return parse_number(std::string_view(line).substr(6));
  }
  return std::nullopt;
}

std::optional<double> read_start_time_seconds(const ProcStat& stat) {
  const std::optional<double> boot = read_boot_time_seconds();
  if (!boot) return std::nullopt;
  return *boot + stat.start_ticks / clock_ticks_per_second();
}

std::optional<double> count_open_fds() {
  std::error_code error;
  std::filesystem::directory_iterator it("/proc/self/fd", error);
  if (error) return std::nullopt;
  double count = 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(error)) {
    if (error) return std::nullopt;
    ++count;
  }
  // The listing includes the descriptor the iterator itself holds open.
  return count - 1;
}

// One field of /proc/self/stat, read now; NaN when it cannot be.
template <double ProcStat::*kField>
double read_stat_field() {
  const std::optional<ProcStat> stat = read_proc_stat();
  return stat ? (*stat).*kField : kNaN;
}

std::optional<double> read_max_fds() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return std::nullopt;
  return limit.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity()
                                         : static_cast<double>(limit.rlim_cur);
}

}  // namespace

std::optional<ProcessSnapshot> read_process_snapshot() {
  const std::optional<ProcStat> stat = read_proc_stat();
  if (!stat) return std::nullopt;
  const std::optional<double> start = read_start_time_seconds(*stat);
  const std::optional<double> open_fds = count_open_fds();
  const std::optional<double> max_fds = read_max_fds();
  if (!start || !open_fds || !max_fds) return std::nullopt;
  ProcessSnapshot snapshot;
  snapshot.cpu_seconds = stat->cpu_seconds;
  snapshot.virtual_memory_bytes = stat->virtual_memory_bytes;
  snapshot.resident_memory_bytes = stat->resident_memory_bytes;
  snapshot.start_time_seconds = *start;
  snapshot.open_fds = *open_fds;
  snapshot.max_fds = *max_fds;
  return snapshot;
}

void register_process_metrics(Registry& registry) {
  // One read of /proc/self/stat per metric per scrape: three small reads, simpler than
  // caching one reading between callbacks that must then agree on when it is stale.
  registry.callback_counter("process_cpu_seconds_total",
                            "Total user and system CPU time spent in seconds.",
                            &read_stat_field<&ProcStat::cpu_seconds>);
  registry.callback_gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                          &read_stat_field<&ProcStat::resident_memory_bytes>);
  registry.callback_gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                          &read_stat_field<&ProcStat::virtual_memory_bytes>);
  registry.callback_gauge("process_open_fds", "Number of open file descriptors.",
                          [] { return count_open_fds().value_or(kNaN); });
  registry.callback_gauge("process_max_fds", "Maximum number of open file descriptors.",
                          [] { return read_max_fds().value_or(kNaN); });
  const std::optional<ProcStat> stat = read_proc_stat();
  const double start = stat ? read_start_time_seconds(*stat).value_or(kNaN) : kNaN;
  registry.callback_gauge("process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.",
                          [start] { return start; });
}

}  // namespace txmq::metrics
