#pragma once
// Test support for replication tests: a leader and followers, each a real txmq-broker
// (BrokerProcess) on 127.0.0.1 (or in a NetLab's namespaces: ClusterOptions::hosts) with a
// data directory of its own, all configured with one [replication] table that names every
// member.
//
// Caveats a test author must know:
// - Members name each other by client address, so every member's protocol port is fixed
//   for the cluster's life, reserved before the first start (bind 127.0.0.1:0, read the
//   port, close). Another process may take a reserved port in between: start() retries a
//   start that failed with "address already in use" while the port is taken, and
//   start_all() reserves new ports for everyone when a first start meets a taken port.
//   The metrics port is any free one each run (BrokerProcess::metrics_address()).
// - Member i (0-based) is "b<i+1>"; member 0 starts as the leader, the others as followers.
//   set_leader(i) rewrites every member's role for its next start: what an operator
//   changes in the configuration after promoting a follower.
// - The configuration file is the cluster's, passed with --config and rewritten before
//   each start, so that one BrokerProcess keeps one log (log_path()) across restarts and
//   role changes.
// - Data directories live in the cluster's temporary area and outlive restarts; wipe(i)
//   empties one (a follower started empty).
// - Like BrokerProcess: drive it from the test's main thread; nothing sleeps to
//   synchronise.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "tests/support/broker_process.h"

namespace txmq::test {

struct ClusterOptions {
  std::size_t members = 3;
  bool sync = true;              // replication.mode
  std::uint32_t min_insync = 2;  // replication.min_insync
  // replication.replica_lag_max_ms: short, so that a stopped follower leaves the in-sync
  // set within a test; long enough for a follower under ASan on a busy machine.
  std::chrono::milliseconds lag_max{2000};
  std::chrono::milliseconds fetch_wait{200};  // replication.fetch_wait_ms
  // More keys of every member's [replication] table, one "key = value" a line
  // (e.g. "log_max_bytes = \"64KiB\"\n").
  std::string replication_toml;
  // More TOML for every member, after the [replication] tables (start it with a table
  // header, e.g. "[transactions]\n...").
  std::string extra_toml;
  bool keep = false;  // leave the temporary area (data, configs, logs) on disk
  // [cluster]: etcd at this client URL chooses the leader (no member is configured as one;
  // set_leader only tells stop_all which to stop first).
  std::string etcd_endpoint;
  std::uint32_t lease_ttl_s = 2;  // cluster.lease_ttl_s
  bool unclean_election = false;  // cluster.unclean_election
  // Member i's IP address and network namespace (BrokerOptions::netns), as a NetLab gives
  // them; empty: 127.0.0.1 and the test's own namespace. A member not on loopback is
  // started with --allow-insecure (the namespace is the test's alone).
  std::vector<std::string> hosts;
  std::vector<std::string> netns;
};

class Cluster {
 public:
  explicit Cluster(ClusterOptions options = {});
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;
  ~Cluster();

  // Starts every member not running, the leader first. Errors: the first start() error.
  Status start_all();
  // Starts member i (not running) on its port and data directory with the current roles.
  // Errors: BrokerProcess::start's; a port still taken after a while (kTimeout).
  Status start(std::size_t i);

  std::size_t size() const { return members_.size(); }
  BrokerProcess& broker(std::size_t i) { return *members_[i].process; }
  std::string id(std::size_t i) const { return "b" + std::to_string(i + 1); }
  // "HOST:PORT" (127.0.0.1 unless ClusterOptions::hosts), fixed for the cluster's life
  // (valid before the first start).
  std::string address(std::size_t i) const;
  // Every member's address, comma-separated, in member order (a client's broker list).
  std::string addresses() const;
  const std::string& data_dir(std::size_t i) const { return members_[i].data_dir; }
  std::size_t leader() const { return leader_; }

  // Member i leads from its next start on; every other member follows (configuration only:
  // a running member is not told).
  void set_leader(std::size_t i) { leader_ = i; }
  // Deletes member i's data directory (it must not be running) and makes it again, empty.
  void wipe(std::size_t i);

  // The configuration member i starts with, as written to its file.
  std::string config_toml(std::size_t i) const;

 private:
  struct Member {
    std::string host;
    std::uint16_t port = 0;
    std::string data_dir;
    std::string config_path;
    std::unique_ptr<BrokerProcess> process;
  };
  void reserve_ports();

  ClusterOptions options_;
  TempDir temp_;
  std::vector<Member> members_;
  std::size_t leader_ = 0;
  bool ever_started_ = false;  // once any member ran, its peers know the ports: keep them
};

// A free TCP port on 127.0.0.1 at the time of the call (bound to port 0, read, closed).
std::uint16_t reserve_port();
// True when a TCP listener could bind 127.0.0.1:port now (a port in TIME_WAIT counts as
// free, as it does for a listener with SO_REUSEADDR).
bool port_free(std::uint16_t port);

// What `txmq-broker --digest --data DIR` prints for a stopped broker's store: one line per
// key space ("name entries sha256"), then "last_index N epoch E". Errors: kInternal with
// its stderr when it exits with another code than 0.
Result<std::string> store_digest(const std::string& data_dir);

}  // namespace txmq::test
