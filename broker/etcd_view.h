#pragma once
// What a broker last read of its cluster's keys in etcd (broker/cluster_coordinator.h), for
// ClusterStatus answers (`txmq cluster status`).

#include <cstdint>
#include <set>
#include <string>

namespace txmq::broker {

struct EtcdView {
  std::string endpoint;  // the etcd endpoint in use
  bool lease_held = false;
  std::string leader;  // "" when etcd names none
  std::uint64_t epoch = 0;
  std::set<std::string> in_sync;
  std::uint32_t min_insync = 0;
  std::set<std::string> members;  // registered (their leases alive)
};

}  // namespace txmq::broker
