#include "broker/config.h"

#include <toml.hpp>

#include "common/address.h"

namespace txmq::broker {
namespace {

// Accepts a plain integer (bytes) or a string with a unit: "512MiB", "64GiB", "10KB".
std::uint64_t parse_size(const toml::value& v) {
  if (v.is_integer()) {
    if (v.as_integer() < 0) throw std::runtime_error("size must not be negative");
    return static_cast<std::uint64_t>(v.as_integer());
  }
  std::string s = v.as_string();
  std::size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0) throw std::runtime_error("size '" + s + "' has no number");
  std::uint64_t n = std::stoull(s.substr(0, i));
  std::string unit = s.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  static const std::pair<const char*, std::uint64_t> units[] = {
      {"", 1},          {"B", 1},
      {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"TiB", 1ull << 40},
      {"KB", 1000ull},  {"MB", 1000000ull},  {"GB", 1000000000ull}, {"TB", 1000000000000ull}};
  for (auto& [name, mult] : units)
    if (unit == name) return n * mult;
  throw std::runtime_error("unknown size unit '" + unit + "' (use B, KiB, MiB, GiB, TiB)");
}

template <typename T>
void read(const toml::value& table, const char* key, T& out) {
  if (table.contains(key)) out = toml::find<T>(table, key);
}

}  // namespace

Result<BrokerConfig> load_config_file(const std::string& path, BrokerConfig c) {
  try {
    const auto root = toml::parse(path);
    if (root.contains("broker")) {
      const auto& t = toml::find(root, "broker");
      read(t, "listen", c.listen);
      read(t, "metrics_listen", c.metrics_listen);
      read(t, "data_dir", c.data_dir);
    }
    if (root.contains("topics")) {
      const auto& t = toml::find(root, "topics");
      read(t, "auto_create", c.auto_create_topics);
      read(t, "default_partitions", c.default_partitions);
    }
    if (root.contains("limits")) {
      const auto& t = toml::find(root, "limits");
      if (t.contains("max_frame_bytes")) c.max_frame_bytes = static_cast<std::uint32_t>(parse_size(toml::find(t, "max_frame_bytes")));
      if (t.contains("max_message_bytes")) c.max_message_bytes = static_cast<std::uint32_t>(parse_size(toml::find(t, "max_message_bytes")));
      if (t.contains("connection_output_bytes")) c.connection_output_bytes = parse_size(toml::find(t, "connection_output_bytes"));
      if (t.contains("connection_inflight_bytes")) c.connection_inflight_bytes = parse_size(toml::find(t, "connection_inflight_bytes"));
    }
    if (root.contains("storage")) {
      const auto& t = toml::find(root, "storage");
      if (t.contains("max_size")) c.storage_max_bytes = parse_size(toml::find(t, "max_size"));
      if (t.contains("sync")) {
        std::string mode = toml::find<std::string>(t, "sync");
        if (mode == "durable") c.sync = storage::SyncMode::kDurable;
        else if (mode == "relaxed") c.sync = storage::SyncMode::kRelaxed;
        else throw std::runtime_error("storage.sync must be \"durable\" or \"relaxed\", not \"" + mode + "\"");
      }
      if (t.contains("relaxed_sync_interval_ms"))
        c.relaxed_sync_interval = std::chrono::milliseconds(toml::find<std::int64_t>(t, "relaxed_sync_interval_ms"));
    }
    if (root.contains("retention")) {
      const auto& t = toml::find(root, "retention");
      if (t.contains("max_age_ms")) c.retention_ms = static_cast<std::uint64_t>(toml::find<std::int64_t>(t, "max_age_ms"));
      if (t.contains("max_partition_bytes")) c.retention_bytes = parse_size(toml::find(t, "max_partition_bytes"));
      if (t.contains("check_interval_ms"))
        c.retention_check_interval = std::chrono::milliseconds(toml::find<std::int64_t>(t, "check_interval_ms"));
    }
    if (root.contains("transactions")) {
      const auto& t = toml::find(root, "transactions");
      auto ms = [&](const char* key, std::chrono::milliseconds& out) {
        if (t.contains(key)) out = std::chrono::milliseconds(toml::find<std::int64_t>(t, key));
      };
      ms("timeout_ms", c.txn_timeout);
      ms("check_backoff_initial_ms", c.txn_check_initial);
      ms("check_backoff_max_ms", c.txn_check_max);
      ms("ended_retention_ms", c.txn_ended_retention);
      read(t, "max_checks", c.txn_max_checks);
      if (t.contains("checks_per_second")) {
        const auto& v = toml::find(t, "checks_per_second");
        c.txn_checks_per_second = v.is_integer() ? static_cast<double>(v.as_integer()) : v.as_floating();
      }
    }
    if (root.contains("producers")) read(toml::find(root, "producers"), "idempotence_window", c.idempotence_window);
    if (root.contains("log")) read(toml::find(root, "log"), "level", c.log_level);
  } catch (const std::exception& e) {
    return Error(ErrorCode::kInvalidArgument, "config " + path + ": " + e.what());
  }
  return c;
}

Status validate(const BrokerConfig& c) {
  auto bad = [](std::string m) { return Error(ErrorCode::kInvalidArgument, std::move(m)); };
  if (auto a = common::parse_host_port(c.listen); !a) return bad("broker.listen: " + a.error().message);
  if (!c.metrics_listen.empty())
    if (auto a = common::parse_host_port(c.metrics_listen); !a)
      return bad("broker.metrics_listen: " + a.error().message);
  if (c.data_dir.empty()) return bad("broker.data_dir must not be empty");
  if (c.default_partitions == 0 || c.default_partitions > 1024)
    return bad("topics.default_partitions must be between 1 and 1024");
  if (c.max_frame_bytes < 1024) return bad("limits.max_frame_bytes must be at least 1024");
  if (c.max_message_bytes == 0 || c.max_message_bytes + 1024 > c.max_frame_bytes)
    return bad("limits.max_message_bytes must be positive and at least 1 KiB below limits.max_frame_bytes");
  if (c.storage_max_bytes < (1ull << 20)) return bad("storage.max_size must be at least 1MiB");
  if (c.retention_check_interval.count() < 10) return bad("retention.check_interval_ms must be at least 10");
  if (c.txn_timeout.count() < 1) return bad("transactions.timeout_ms must be positive");
  if (c.txn_check_initial.count() < 1 || c.txn_check_max < c.txn_check_initial)
    return bad("transactions.check_backoff_initial_ms must be positive and at most check_backoff_max_ms");
  if (c.txn_max_checks == 0) return bad("transactions.max_checks must be at least 1");
  if (c.txn_checks_per_second <= 0) return bad("transactions.checks_per_second must be positive");
  if (c.idempotence_window == 0 || c.idempotence_window > 1024)
    return bad("producers.idempotence_window must be between 1 and 1024");
  return {};
}

}  // namespace txmq::broker
