#pragma once
// The broker's configuration: defaults, overridden by a TOML file, overridden by flags.
// Every key is documented in config/txmq-broker.toml and the README.

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "broker/storage/store.h"
#include "common/result.h"
#include "common/tls_session.h"

namespace txmq::broker {

// Replication (broker/replication.h): a leader ships its log to followers that pull it.
struct ReplicationConfig {
  std::string id;                 // replication.id: this broker's name among its peers; "" is off
  bool leader = true;             // replication.role: "leader" or "follower" at start
  // replication.peers: every member, this one included, id -> client address "host:port"
  // ([replication.peers] b1 = "127.0.0.1:7001"). A follower fetches from the leader here;
  // NotLeader answers name the leader's address from here.
  std::vector<std::pair<std::string, std::string>> peers;
  bool sync = true;               // replication.mode: "sync" (confirm once on min_insync) or "async"
  std::uint32_t min_insync = 2;   // replication.min_insync: leader included
  std::chrono::milliseconds lag_max{10000};       // replication.replica_lag_max_ms
  std::uint32_t fetch_max_bytes = 4u << 20;       // replication.fetch_max_bytes
  std::chrono::milliseconds fetch_wait{500};      // replication.fetch_wait_ms
  std::chrono::milliseconds fetch_interval{0};    // replication.fetch_interval_ms (async mode)
  std::uint64_t log_max_bytes = 1ull << 30;       // replication.log_max_bytes
  std::uint64_t log_max_age_ms = 24ull * 3600 * 1000;  // replication.log_max_age_ms
  std::uint32_t snapshot_chunk_bytes = 1u << 20;  // replication.snapshot_chunk_bytes
  // How a follower logs in to the leader when the leader authenticates (SCRAM); with
  // tls.enabled it connects with TLS, trusting tls.ca_file and showing tls.cert_file.
  std::string user;               // replication.user
  std::string password_file;      // replication.password_file
  bool enabled() const { return !id.empty(); }
  bool role_given = false;        // replication.role was in the file (refused with [cluster])
};

// Automatic failover coordinated by etcd (broker/cluster_coordinator.h): the [cluster]
// table. Off without endpoints; needs [replication] (its peers are the members).
struct ClusterConfig {
  std::vector<std::string> etcd_endpoints;  // cluster.etcd_endpoints: "http://host:port", tried in order
  std::string name = "txmq";                // cluster.name: the cluster's keys are under /txmq/<name>/
  std::uint32_t lease_ttl_s = 3;            // cluster.lease_ttl_s: a broker silent this long is gone
  bool unclean_election = false;            // cluster.unclean_election: a broker out of the in-sync set may lead
  bool enabled() const { return !etcd_endpoints.empty(); }
};

struct BrokerConfig {
  std::string listen = "127.0.0.1:7411";          // broker.listen
  std::string metrics_listen = "127.0.0.1:7412";  // broker.metrics_listen ("" disables)
  std::string data_dir = "./txmq-data";           // broker.data_dir
  // Serve a non-loopback address without authentication (refused otherwise).
  bool allow_insecure = false;                    // broker.allow_insecure
  bool auto_create_topics = false;                // topics.auto_create
  std::uint32_t default_partitions = 1;           // topics.default_partitions

  std::uint32_t max_frame_bytes = 16u << 20;      // limits.max_frame_bytes
  std::uint32_t max_message_bytes = 1u << 20;     // limits.max_message_bytes
  std::size_t connection_output_bytes = 8u << 20; // limits.connection_output_bytes
  std::size_t connection_inflight_bytes = 64u << 20;  // limits.connection_inflight_bytes
  std::uint32_t hello_max_frame_bytes = 64u << 10;    // limits.hello_max_frame_bytes
  std::chrono::milliseconds hello_timeout{10000};     // limits.hello_timeout_ms
  std::chrono::milliseconds frame_timeout{60000};     // limits.frame_timeout_ms
  std::chrono::milliseconds output_timeout{60000};    // limits.output_timeout_ms
  std::chrono::milliseconds heartbeat_min{500};       // limits.heartbeat_min_interval_ms
  std::size_t total_input_bytes = 128u << 20;         // limits.total_input_bytes
  std::size_t total_output_bytes = 128u << 20;        // limits.total_output_bytes

  std::uint64_t storage_max_bytes = 64ull << 30;  // storage.max_size
  storage::SyncMode sync = storage::SyncMode::kDurable;  // storage.sync
  std::chrono::milliseconds relaxed_sync_interval{100};  // storage.relaxed_sync_interval_ms

  std::uint64_t retention_ms = 7ull * 24 * 3600 * 1000;  // retention.max_age_ms (0: keep forever)
  std::uint64_t retention_bytes = 0;              // retention.max_partition_bytes (0: no limit)
  std::chrono::milliseconds retention_check_interval{10000};  // retention.check_interval_ms

  std::chrono::milliseconds txn_timeout{6000};             // transactions.timeout_ms
  std::chrono::milliseconds txn_check_initial{5000};       // transactions.check_backoff_initial_ms
  std::chrono::milliseconds txn_check_max{300000};         // transactions.check_backoff_max_ms
  std::uint32_t txn_max_checks = 15;                       // transactions.max_checks
  double txn_checks_per_second = 100;                      // transactions.checks_per_second (per group)
  std::chrono::milliseconds txn_ended_retention{86400000}; // transactions.ended_retention_ms
  std::uint32_t idempotence_window = 64;                   // producers.idempotence_window
  std::chrono::milliseconds producer_expiry{86400000};     // producers.expiry_ms

  std::string log_level = "info";                 // log.level

  // TLS on the protocol port, and on the metrics endpoint with the same certificate.
  bool tls_enabled = false;                       // tls.enabled
  bool tls_metrics = false;                       // tls.metrics (no client certificates asked for)
  common::TlsFiles tls_files;                     // tls.cert_file, tls.key_file, tls.ca_file
  common::TlsClientAuth tls_client_auth = common::TlsClientAuth::kNone;  // tls.client_auth

  // Authentication (SCRAM-SHA-256 in the hello, or a verified client certificate) and
  // authorization (deny by default, broker/acl.h). Both files are reloaded on SIGHUP.
  bool auth_enabled = false;                      // auth.enabled
  std::string users_file;                         // auth.users_file
  std::string acl_file;                           // auth.acl_file
  bool allow_anonymous = false;                   // auth.allow_anonymous (as user "anonymous")
  // A verified client certificate's subject CN is the user (no password asked).
  bool certificate_identity = true;               // auth.certificate_identity
  std::chrono::milliseconds auth_failure_delay{1000};  // auth.failure_delay_ms

  // The audit trail of operator actions, one JSON object per line ("": data_dir/audit.log).
  std::string audit_file;                         // audit.file

  ReplicationConfig replication;                  // [replication]
  ClusterConfig cluster;                          // [cluster]
};

// Reads a TOML file over the defaults. kInvalidArgument names the file, key and problem.
Result<BrokerConfig> load_config_file(const std::string& path, BrokerConfig base = {});

// Checks cross-field rules after flags were applied.
Status validate(const BrokerConfig& config);

}  // namespace txmq::broker
