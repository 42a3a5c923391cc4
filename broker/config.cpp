#include "broker/config.h"

#include <toml.hpp>

#include "common/address.h"
#include "common/names.h"

namespace txmq::broker {
namespace {

// Accepts a plain integer (bytes) or a string with a unit: "512MiB", "64GiB", "10KB".
// Refuses negative values and values above max rather than wrapping them.
std::uint64_t parse_size(const toml::value& v, std::uint64_t max) {
  std::uint64_t bytes;
  if (v.is_integer()) {
    if (v.as_integer() < 0) throw std::runtime_error("must not be negative");
    bytes = static_cast<std::uint64_t>(v.as_integer());
  } else {
    const std::string s = v.as_string();
    std::size_t i = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == 0 || i > 15) throw std::runtime_error("'" + s + "' is not a size (a number and a unit: 64MiB)");
    const std::uint64_t n = std::stoull(s.substr(0, i));
    std::string unit = s.substr(i);
    while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
    static const std::pair<const char*, std::uint64_t> units[] = {
        {"", 1},  {"B", 1},        {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30},
        {"TiB", 1ull << 40},       {"KB", 1000ull},     {"MB", 1000000ull},  {"GB", 1000000000ull},
        {"TB", 1000000000000ull}};
    std::uint64_t mult = 0;
    for (auto& [name, m] : units)
      if (unit == name) mult = m;
    if (mult == 0) throw std::runtime_error("unknown size unit '" + unit + "' (use B, KiB, MiB, GiB, TiB)");
    if (n > max / mult) throw std::runtime_error("'" + s + "' is larger than " + std::to_string(max) + " bytes");
    bytes = n * mult;
  }
  if (bytes > max) throw std::runtime_error(std::to_string(bytes) + " is larger than " + std::to_string(max));
  return bytes;
}

// A non-negative number of milliseconds.
std::chrono::milliseconds parse_ms(const toml::value& v) {
  const auto n = v.as_integer();
  if (n < 0) throw std::runtime_error("must not be negative");
  return std::chrono::milliseconds(n);
}

// Reads table.key with parse when present; errors name the key ("limits.max_frame_bytes: ...").
template <typename T, typename Parse>
void read_with(const toml::value& root, const char* table, const char* key, T& out, Parse parse) {
  if (!root.contains(table)) return;
  const auto& t = toml::find(root, table);
  if (!t.contains(key)) return;
  try {
    out = parse(toml::find(t, key));
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(table) + "." + key + ": " + e.what());
  }
}

template <typename T>
void read(const toml::value& table, const char* key, T& out) {
  if (table.contains(key)) out = toml::find<T>(table, key);
}

// The [tls], [auth] and [audit] tables.
void read_security(const toml::value& root, BrokerConfig& c) {
  if (root.contains("tls")) {
    const auto& t = toml::find(root, "tls");
    read(t, "enabled", c.tls_enabled);
    read(t, "metrics", c.tls_metrics);
    read(t, "cert_file", c.tls_files.cert_file);
    read(t, "key_file", c.tls_files.key_file);
    read(t, "ca_file", c.tls_files.ca_file);
    if (t.contains("client_auth")) {
      const std::string auth = toml::find<std::string>(t, "client_auth");
      if (auth == "none") c.tls_client_auth = common::TlsClientAuth::kNone;
      else if (auth == "optional") c.tls_client_auth = common::TlsClientAuth::kOptional;
      else if (auth == "required") c.tls_client_auth = common::TlsClientAuth::kRequired;
      else throw std::runtime_error("tls.client_auth must be \"none\", \"optional\" or \"required\", not \"" + auth + "\"");
    }
  }
  if (root.contains("auth")) {
    const auto& t = toml::find(root, "auth");
    read(t, "enabled", c.auth_enabled);
    read(t, "users_file", c.users_file);
    read(t, "acl_file", c.acl_file);
    read(t, "allow_anonymous", c.allow_anonymous);
    read(t, "certificate_identity", c.certificate_identity);
  }
  read_with(root, "auth", "failure_delay_ms", c.auth_failure_delay, parse_ms);
  if (root.contains("audit")) read(toml::find(root, "audit"), "file", c.audit_file);
}

// The [replication] table.
void read_replication(const toml::value& root, ReplicationConfig& r) {
  if (!root.contains("replication")) return;
  const auto& t = toml::find(root, "replication");
  read(t, "id", r.id);
  if (t.contains("role")) {
    const std::string role = toml::find<std::string>(t, "role");
    if (role != "leader" && role != "follower")
      throw std::runtime_error("replication.role must be \"leader\" or \"follower\", not \"" + role + "\"");
    r.leader = role == "leader";
    r.role_given = true;
  }
  if (t.contains("mode")) {
    const std::string mode = toml::find<std::string>(t, "mode");
    if (mode != "sync" && mode != "async")
      throw std::runtime_error("replication.mode must be \"sync\" or \"async\", not \"" + mode + "\"");
    r.sync = mode == "sync";
  }
  if (t.contains("peers")) {
    r.peers.clear();
    for (const auto& [id, address] : toml::find(t, "peers").as_table()) {
      if (!address.is_string()) throw std::runtime_error("replication.peers." + id + " must be \"host:port\"");
      r.peers.emplace_back(id, address.as_string());
    }
  }
  read(t, "min_insync", r.min_insync);
  read(t, "user", r.user);
  read(t, "password_file", r.password_file);
  read_with(root, "replication", "replica_lag_max_ms", r.lag_max, parse_ms);
  read_with(root, "replication", "fetch_wait_ms", r.fetch_wait, parse_ms);
  read_with(root, "replication", "fetch_interval_ms", r.fetch_interval, parse_ms);
  read_with(root, "replication", "fetch_max_bytes", r.fetch_max_bytes,
            [](const toml::value& v) { return static_cast<std::uint32_t>(parse_size(v, 256u << 20)); });
  read_with(root, "replication", "log_max_bytes", r.log_max_bytes, [](const toml::value& v) { return parse_size(v, UINT64_MAX); });
  read_with(root, "replication", "log_max_age_ms", r.log_max_age_ms,
            [](const toml::value& v) { return static_cast<std::uint64_t>(parse_ms(v).count()); });
  read_with(root, "replication", "snapshot_chunk_bytes", r.snapshot_chunk_bytes,
            [](const toml::value& v) { return static_cast<std::uint32_t>(parse_size(v, 16u << 20)); });
}

// The [cluster] table.
void read_cluster(const toml::value& root, ClusterConfig& c) {
  if (!root.contains("cluster")) return;
  const auto& t = toml::find(root, "cluster");
  if (t.contains("etcd_endpoints")) {
    const auto& v = toml::find(t, "etcd_endpoints");
    if (v.is_string()) {
      c.etcd_endpoints = {v.as_string()};
    } else {
      c.etcd_endpoints.clear();
      for (const auto& e : v.as_array()) {
        if (!e.is_string()) throw std::runtime_error("cluster.etcd_endpoints must be a list of \"http://host:port\"");
        c.etcd_endpoints.push_back(e.as_string());
      }
    }
  }
  read(t, "name", c.name);
  read(t, "lease_ttl_s", c.lease_ttl_s);
  read(t, "unclean_election", c.unclean_election);
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
      read(t, "allow_insecure", c.allow_insecure);
    }
    if (root.contains("topics")) {
      const auto& t = toml::find(root, "topics");
      read(t, "auto_create", c.auto_create_topics);
      read(t, "default_partitions", c.default_partitions);
    }
    constexpr std::uint64_t kU32 = UINT32_MAX;
    auto size_u32 = [&](const toml::value& v) { return static_cast<std::uint32_t>(parse_size(v, kU32)); };
    auto size_any = [&](const toml::value& v) { return parse_size(v, UINT64_MAX); };
    read_with(root, "limits", "max_frame_bytes", c.max_frame_bytes, size_u32);
    read_with(root, "limits", "max_message_bytes", c.max_message_bytes, size_u32);
    read_with(root, "limits", "connection_output_bytes", c.connection_output_bytes, size_any);
    read_with(root, "limits", "connection_inflight_bytes", c.connection_inflight_bytes, size_any);
    read_with(root, "limits", "hello_max_frame_bytes", c.hello_max_frame_bytes, size_u32);
    read_with(root, "limits", "hello_timeout_ms", c.hello_timeout, parse_ms);
    read_with(root, "limits", "frame_timeout_ms", c.frame_timeout, parse_ms);
    read_with(root, "limits", "output_timeout_ms", c.output_timeout, parse_ms);
    read_with(root, "limits", "heartbeat_min_interval_ms", c.heartbeat_min, parse_ms);
    read_with(root, "limits", "total_input_bytes", c.total_input_bytes, size_any);
    read_with(root, "limits", "total_output_bytes", c.total_output_bytes, size_any);
    if (root.contains("storage")) {
      const auto& t = toml::find(root, "storage");
      read_with(root, "storage", "max_size", c.storage_max_bytes, size_any);
      if (t.contains("sync")) {
        std::string mode = toml::find<std::string>(t, "sync");
        if (mode == "durable") c.sync = storage::SyncMode::kDurable;
        else if (mode == "relaxed") c.sync = storage::SyncMode::kRelaxed;
        else throw std::runtime_error("storage.sync must be \"durable\" or \"relaxed\", not \"" + mode + "\"");
      }
      read_with(root, "storage", "relaxed_sync_interval_ms", c.relaxed_sync_interval, parse_ms);
    }
    read_with(root, "retention", "max_age_ms", c.retention_ms,
              [](const toml::value& v) { return static_cast<std::uint64_t>(parse_ms(v).count()); });
    read_with(root, "retention", "max_partition_bytes", c.retention_bytes, size_any);
    read_with(root, "retention", "check_interval_ms", c.retention_check_interval, parse_ms);
    read_with(root, "transactions", "timeout_ms", c.txn_timeout, parse_ms);
    read_with(root, "transactions", "check_backoff_initial_ms", c.txn_check_initial, parse_ms);
    read_with(root, "transactions", "check_backoff_max_ms", c.txn_check_max, parse_ms);
    read_with(root, "transactions", "ended_retention_ms", c.txn_ended_retention, parse_ms);
    read_with(root, "transactions", "max_checks", c.txn_max_checks, [](const toml::value& v) {
      if (v.as_integer() < 1) throw std::runtime_error("must be at least 1");
      return static_cast<std::uint32_t>(v.as_integer());
    });
    read_with(root, "transactions", "checks_per_second", c.txn_checks_per_second, [](const toml::value& v) {
      const double r = v.is_integer() ? static_cast<double>(v.as_integer()) : v.as_floating();
      if (r <= 0) throw std::runtime_error("must be positive");
      return r;
    });
    if (root.contains("producers")) read(toml::find(root, "producers"), "idempotence_window", c.idempotence_window);
    read_with(root, "producers", "expiry_ms", c.producer_expiry, parse_ms);
    if (root.contains("log")) read(toml::find(root, "log"), "level", c.log_level);
    read_security(root, c);
    read_replication(root, c.replication);
    read_cluster(root, c.cluster);
  } catch (const std::exception& e) {
    return Error(ErrorCode::kInvalidArgument, "config " + path + ": " + e.what());
  }
  return c;
}

namespace {

Status validate_replication(const ReplicationConfig& r) {
  auto bad = [](std::string m) { return Error(ErrorCode::kInvalidArgument, std::move(m)); };
  if (!r.enabled()) {
    if (!r.peers.empty()) return bad("replication.peers needs replication.id (this broker's name among them)");
    return {};
  }
  if (!common::valid_name(r.id)) return bad("replication.id '" + r.id + "' is not a valid name");
  bool self = false;
  for (const auto& [id, address] : r.peers) {
    if (!common::valid_name(id)) return bad("replication.peers: '" + id + "' is not a valid name");
    if (auto a = common::parse_host_port(address); !a) return bad("replication.peers." + id + ": " + a.error().message);
    self = self || id == r.id;
  }
  if (!self) return bad("replication.peers must name this broker too (" + r.id + " = \"host:port\")");
  if (r.min_insync < 1 || r.min_insync > r.peers.size())
    return bad("replication.min_insync must be between 1 and the number of peers (" + std::to_string(r.peers.size()) + ")");
  if (r.lag_max.count() < 100) return bad("replication.replica_lag_max_ms must be at least 100");
  if (r.fetch_wait.count() > r.lag_max.count() / 2)
    return bad("replication.fetch_wait_ms must be at most half of replication.replica_lag_max_ms");
  if (r.fetch_max_bytes < 64u << 10) return bad("replication.fetch_max_bytes must be at least 64KiB");
  if (r.fetch_interval.count() > 0 && r.sync)
    return bad("replication.fetch_interval_ms is for mode = \"async\": in sync mode it would hold back every confirm");
  if (r.fetch_interval.count() > r.lag_max.count() / 2)
    return bad("replication.fetch_interval_ms must be at most half of replication.replica_lag_max_ms");
  if (r.snapshot_chunk_bytes < 4u << 10) return bad("replication.snapshot_chunk_bytes must be at least 4KiB");
  return {};
}

Status validate_cluster(const ClusterConfig& c, const ReplicationConfig& r) {
  auto bad = [](std::string m) { return Error(ErrorCode::kInvalidArgument, std::move(m)); };
  if (!c.enabled()) return {};
  if (!r.enabled())
    return bad("[cluster] needs [replication] with id and peers: the peers are the brokers etcd chooses a leader among");
  if (r.role_given)
    return bad("replication.role must not be set with [cluster]: etcd decides which broker leads");
  for (const auto& e : c.etcd_endpoints) {
    if (!e.starts_with("http://"))
      return bad("cluster.etcd_endpoints: '" + e + "' must be http://host:port (etcd over TLS is not supported yet)");
    if (auto hp = common::parse_host_port(std::string_view(e).substr(7)); !hp)
      return bad("cluster.etcd_endpoints: '" + e + "': " + hp.error().message);
  }
  if (!common::valid_name(c.name)) return bad("cluster.name '" + c.name + "' is not a valid name");
  if (c.lease_ttl_s < 2 || c.lease_ttl_s > 60)
    return bad("cluster.lease_ttl_s must be between 2 (etcd's minimum) and 60");
  return {};
}

}  // namespace

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
  if (c.hello_max_frame_bytes < 256) return bad("limits.hello_max_frame_bytes must be at least 256");
  if (c.hello_timeout.count() < 100) return bad("limits.hello_timeout_ms must be at least 100");
  // Heartbeats are sent and checked every 250 ms: an interval of two checks at least.
  if (c.heartbeat_min.count() < 500 || c.heartbeat_min.count() > 3'600'000)
    return bad("limits.heartbeat_min_interval_ms must be between 500 and 3600000");
  if (c.frame_timeout.count() < 100) return bad("limits.frame_timeout_ms must be at least 100");
  if (c.output_timeout.count() < 100) return bad("limits.output_timeout_ms must be at least 100");
  // A frame is reserved whole before its body is read, so the largest must fit alone.
  if (c.total_input_bytes < std::size_t{c.max_frame_bytes} + 4)
    return bad("limits.total_input_bytes must be at least limits.max_frame_bytes");
  if (c.total_output_bytes < c.connection_output_bytes)
    return bad("limits.total_output_bytes must be at least limits.connection_output_bytes");
  if (c.storage_max_bytes < (1ull << 20)) return bad("storage.max_size must be at least 1MiB");
  if (c.retention_check_interval.count() < 10) return bad("retention.check_interval_ms must be at least 10");
  if (c.txn_timeout.count() < 1) return bad("transactions.timeout_ms must be positive");
  if (c.txn_check_initial.count() < 1 || c.txn_check_max < c.txn_check_initial)
    return bad("transactions.check_backoff_initial_ms must be positive and at most check_backoff_max_ms");
  if (c.txn_max_checks == 0) return bad("transactions.max_checks must be at least 1");
  if (c.txn_checks_per_second <= 0) return bad("transactions.checks_per_second must be positive");
  if (c.idempotence_window == 0 || c.idempotence_window > 1024)
    return bad("producers.idempotence_window must be between 1 and 1024");
  if (c.producer_expiry < std::chrono::seconds(1)) return bad("producers.expiry_ms must be at least 1000");
  if (c.tls_enabled) {
    // Whether the files can be read and match is checked when the broker loads them.
    if (c.tls_files.cert_file.empty() || c.tls_files.key_file.empty())
      return bad("tls.enabled needs tls.cert_file and tls.key_file");
    if (c.tls_client_auth != common::TlsClientAuth::kNone && c.tls_files.ca_file.empty())
      return bad("tls.client_auth = \"optional\" or \"required\" needs tls.ca_file (the CA of client certificates)");
  }
  if (auto st = validate_replication(c.replication); !st) return st;
  if (auto st = validate_cluster(c.cluster, c.replication); !st) return st;
  if (c.tls_metrics && (c.tls_files.cert_file.empty() || c.tls_files.key_file.empty()))
    return bad("tls.metrics needs tls.cert_file and tls.key_file (the metrics endpoint serves the same certificate)");
  if (c.auth_enabled) {
    if (c.users_file.empty() && !(c.certificate_identity && c.tls_client_auth != common::TlsClientAuth::kNone))
      return bad("auth.enabled needs auth.users_file (SCRAM users) or client certificates "
                 "(tls.client_auth with auth.certificate_identity)");
    if (c.acl_file.empty()) return bad("auth.enabled needs auth.acl_file: with authentication on, nothing is allowed "
                                       "that no rule allows");
  }
  if (c.auth_failure_delay > std::chrono::seconds(60)) return bad("auth.failure_delay_ms must be at most 60000");
  return {};
}

}  // namespace txmq::broker
