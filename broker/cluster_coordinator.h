#pragma once
// Automatic failover through etcd ([cluster]): membership, election and fencing for the
// brokers of replication.peers. Consensus is etcd's; this is a client of it.
//
// Keys, under /txmq/<cluster.name>/:
//   members/<id>  {"id", "address", "epoch", "last_index"}, on the broker's lease: who is
//                 alive, and (before the first election) whose log is the longest.
//   leader        {"id", "epoch"}, on the leader's lease: gone when the leader's lease is.
//   state         {"epoch", "leader", "in_sync": [...], "min_insync"}: written only by an
//                 election or by the leader's compare-and-swap on it.
//
// The lease is the broker's heartbeat: kept alive every lease_ttl_s / 3, one request per
// keep-alive. Its deadline is the time the last answered keep-alive was sent plus the TTL
// less a sixth of it; past it a leader is fenced (Replication::set_fenced: it confirms and
// takes no writes) until a keep-alive is answered again.
//
// Election: with no leader key, a broker that holds its lease and may lead (a member of the
// state's in-sync set, or, with cluster.unclean_election, one out of it once no member is
// registered or there has been no leader for two TTLs; its store whole) writes, in
// one transaction that checks that there is still no leader key and that the state key is
// unchanged since it read it, the leader key on its lease and a state with the next epoch
// (one above both the state's and its own log's) and the in-sync set less the former
// leader. Only one such transaction can succeed. The first election of a cluster (no state
// key) waits until every peer has registered, and only the one with the longest log (then
// the lowest id) stands.
//
// A broker follows the leader the leader key names (Replication::follow). One that sees
// its leader key gone or naming another, or its lease lost while leading, steps down: the
// broker restarts itself (Hooks::step_down), so that nothing of its leading survives, and
// rejoins as a follower whose log is truncated to the new leader's. A leader key naming
// this broker on a lease of an earlier run (it crashed and came back before the lease
// expired) is revoked at once, so that an election need not wait out the TTL.
//
// The in-sync set changes by the leader's compare-and-swap on the state key, guarded by its
// own leader key (store_in_sync); Replication uses a change only once it succeeded.
// When etcd cannot be reached no election can happen, and the leader's deadline passes:
// the cluster takes no writes, and resumes by itself when etcd answers again.
//
// Thread: the loop thread, every function.
// Lifecycle: start() after Replication::start(); close() before the loop ends.

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "broker/config.h"
#include "broker/etcd_view.h"
#include "broker/replication.h"
#include "etcd/client.h"
#include "metrics/registry.h"

namespace txmq::broker {

class ClusterCoordinator {
 public:
  struct Hooks {
    // This broker was leading and must not any more: the broker restarts itself.
    std::function<void(const std::string& why)> step_down;
  };

  ClusterCoordinator(uv_loop_t* loop, const BrokerConfig& config, Replication& replication, metrics::Registry* registry,
                     Hooks hooks);
  ClusterCoordinator(const ClusterCoordinator&) = delete;
  ClusterCoordinator& operator=(const ClusterCoordinator&) = delete;
  ~ClusterCoordinator();

  void start();
  // Revokes the lease (a leader that stops hands over at once), then closes; done runs on
  // the loop once nothing of this is left on it.
  void close(std::function<void()> done);

  // Replication's hook: the in-sync set becomes `members` in etcd. done(stored, known), as
  // Replication::Hooks::store_in_sync says.
  void store_in_sync(const std::set<std::string>& members, std::function<void(bool, bool)> done);

  EtcdView view() const;

 private:
  struct Probe;
  struct LeaderKey {
    std::string id;
    std::uint64_t epoch = 0;
    std::int64_t lease = 0;
    std::int64_t create_revision = 0;
  };
  struct State {
    std::uint64_t epoch = 0;
    std::string leader;
    std::set<std::string> in_sync;
    std::uint32_t min_insync = 0;
    std::int64_t mod_revision = 0;
  };
  struct Member {
    std::uint64_t epoch = 0, last_index = 0;
  };
  using Clock = std::chrono::steady_clock;

  void tick();
  void grant();
  void register_member();
  void keep_alive();
  void lease_lost(const std::string& why);
  void sync();  // reads every key, then watches from there
  void apply(const etcd::KeyValue& kv, bool deleted);
  void decide();
  void campaign();
  void step_down(const std::string& why);
  std::string state_json(const State& s) const;
  std::string member_json() const;
  void log_waiting(const std::string& why);  // at most once per reason in a row
  void log_trouble(const std::string& what);  // etcd failing: once each until a call succeeds

  uv_loop_t* loop_;
  const BrokerConfig& config_;
  const ClusterConfig& cc_;
  Replication& replication_;
  Hooks hooks_;
  std::unique_ptr<Probe> probe_;
  std::unique_ptr<etcd::Client> etcd_;
  const std::string prefix_, leader_key_, state_key_, members_prefix_;
  const std::chrono::milliseconds ttl_, keepalive_every_, margin_;
  uv_timer_t timer_{};

  std::int64_t lease_ = 0;  // 0: none held
  bool granting_ = false;
  bool registered_ = false;   // the member key is on the current lease
  bool registering_ = false;
  bool keepalive_in_flight_ = false;
  Clock::time_point next_keepalive_{};
  Clock::time_point lease_deadline_{};  // when the lease may have expired
  Clock::time_point last_keepalive_ok_{};
  Clock::time_point retry_at_{};  // grants and syncs after a failure

  bool synced_ = false;  // the keys were read and a watch follows them
  std::int64_t seen_revision_ = 0;  // of the newest read or watch event applied
  bool syncing_ = false;
  etcd::Client::WatchId watch_ = 0;
  std::optional<LeaderKey> leader_;
  std::optional<State> state_;
  std::map<std::string, Member> members_;

  Clock::time_point leaderless_since_{};  // when the leader key was last seen gone ({}: there is one)
  bool campaigning_ = false;
  bool leading_ = false;   // Replication leads the epoch of our leader key
  bool starting_ = false;  // Replication::lead under way
  std::int64_t revoked_ = 0;  // an earlier run's lease, revoked once
  bool stepping_down_ = false;
  bool closing_ = false;
  std::string waiting_;  // the last "why not campaigning" logged
  std::set<std::string> trouble_;  // etcd failures logged since the last success
};

}  // namespace txmq::broker
