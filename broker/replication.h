#pragma once
// Replication: the leader's log shipped to followers that pull it (broker/storage/redo.h
// has what a record holds). One broker of `replication.peers` leads an epoch; the others
// follow it.
//
// A follower runs a Fetcher: a client connection to the leader (TLS and SCRAM as any
// client's) that sends ReplicaFetch long polls. Each answer's records are applied by the
// storage writer as one ApplyRecordsOp (group commit and fsync like any op); the next
// fetch carries the new durable index, which is the follower's acknowledgement. Catch-up
// and steady state are the same loop. A follower serves no client request but the hello,
// Stats and the cluster requests: the rest get NotLeader with the leader's address.
//
// The leader answers fetches from its log, or holds them (up to wait_ms) until the writer
// commits more. It tracks each follower's durable index; the in-sync set is the leader
// and every follower whose log has held the leader's whole log within
// replica_lag_max_ms. The set is stored (meta "in_sync"), so a change is a record of its
// own, replicated and durable before it is used. The commit index is the lowest durable
// index over the in-sync set, and moves only while the set has min_insync members. In
// sync mode the writer holds every op's completion (every confirm) until the commit index
// covers the record its batch wrote (StorageWriter::set_commit_gate); the writer keeps
// committing meanwhile. Below min_insync, client writes are refused with
// NotEnoughReplicas. In async mode confirms are not held and followers trail by their lag.
//
// Epochs: the leader of a new epoch writes it into the epochs key space first (a record
// like any other). `Promote` makes a follower leader of the next epoch; it is refused to a
// follower not in the last in-sync set it saw, unless unclean. A fetch from a replica with
// a newer epoch than the leader's is refused (StaleEpoch: this leader was replaced), so a
// former leader cannot gather followers; one whose log diverged is told where
// (ReplicaRecords.truncate_to).
//
// Snapshots: a follower that needs records the leader's log no longer holds is told so
// (ReplicaRecords.needs_snapshot). It empties its store and pulls the leader's with
// SnapshotFetch: the leader opens one read transaction per follower (a session) and
// answers chunks of its entries in key order; the follower installs each chunk as a write
// op, carries the resume point itself, and then fetches the log from the snapshot's index
// on. While a session is open the leader keeps the log from the snapshot's index on; a
// session idle for kSnapshotIdle is closed. A store whose install did not finish (meta
// "snapshot_pending") serves nothing and cannot be promoted: its install starts again.
//
// Thread: the loop thread, every function; the Fetcher's client connection is hosted on
// the same loop.
// Lifecycle: start() after the store and writer; close() before the writer stops.

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "broker/config.h"
#include "broker/etcd_view.h"
#include "broker/connection.h"
#include "broker/responder.h"
#include "broker/storage/store.h"
#include "broker/storage/writer.h"
#include "common/result.h"
#include "metrics/registry.h"
#include "txmq_generated.h"

namespace txmq::broker {

class Fetcher;  // replication.cpp

class Replication {
 public:
  struct Hooks {
    // This broker became the leader (start() as leader, or a promotion): the broker starts
    // its components and serves clients. Loop thread.
    std::function<void()> became_leader;
    // [cluster]: the in-sync set changes in etcd first (a compare-and-swap on this
    // leader's epoch, ClusterCoordinator::store_in_sync). done(stored, known): stored once
    // etcd holds it; not stored and known when etcd refused it; not known when no answer
    // came (etcd may hold it or not).
    std::function<void(const std::set<std::string>& members, std::function<void(bool stored, bool known)> done)>
        store_in_sync;
    // [cluster]: etcd as the coordinator last read it, for ClusterStatus answers.
    std::function<EtcdView()> etcd_view;
  };

  Replication(uv_loop_t* loop, const BrokerConfig& config, storage::Store& store, storage::StorageWriter& writer,
              Responder& responder, metrics::Registry* registry, Hooks hooks);
  Replication(const Replication&) = delete;
  Replication& operator=(const Replication&) = delete;
  ~Replication();

  // A leader begins its first epoch when the store has none, then calls became_leader; a
  // follower starts fetching; without replication, calls became_leader at once.
  // Errors: reading the store's epochs.
  Status start();
  // Stops fetching, answers held fetches; done runs once nothing of it is left on the loop.
  void close(std::function<void()> done);

  // Serves clients: a leader, or a broker without replication.
  bool serving() const { return role_ != Role::kFollower; }
  // What a client request of this type gets instead of being served, if anything: on a
  // follower NotLeader (with the leader's address); on a leader in sync mode below
  // min_insync, NotEnoughReplicas for a request that writes.
  std::optional<Error> refuse(wire::Body type) const;
  // What a hello naming a producer group gets instead of being taken, if anything:
  // NotLeader on a follower, and on a leader fenced at its lease deadline. Check-backs come
  // from the leader alone, so a transactional producer must not settle elsewhere.
  std::optional<Error> refuse_producer_group() const;

  // [cluster]: what etcd decided (broker/cluster_coordinator.h).
  // Follow `leader` (a peer id), leader of `epoch`: fetch from it alone, and take no answer
  // of an older epoch. Ignored while leading (a deposed leader restarts instead).
  void follow(const std::string& leader, std::uint64_t epoch);
  // Lead `epoch`, won in etcd with that in-sync set: stop fetching, write the epoch's first
  // record, serve. done runs once it leads, or with the writer's error.
  void lead(std::uint64_t epoch, std::set<std::string> in_sync, std::function<void(const Status&)> done);
  // Stop (true) or resume confirming and taking writes: the leader's etcd lease may have
  // expired (why says since when), so another broker may lead.
  void set_fenced(bool fenced, std::string why);
  // The time the leader's etcd lease may have expired, renewed with each keep-alive: past
  // it, every confirm and write waits as if fenced, checked at each use (not only when the
  // coordinator next looks).
  void set_lease_deadline(std::chrono::steady_clock::time_point deadline);
  bool fenced() const;
  // Whether this broker may stand for election: its store is whole (no snapshot install
  // under way or unfinished).
  bool can_lead() const;
  bool leading() const { return role_ == Role::kLeader; }
  storage::LogPosition log_position() const { return store_.log_position(); }

  // Requests.
  void fetch(Connection& conn, RequestId rid, const wire::ReplicaFetch& req);
  void status(Connection& conn, RequestId rid);
  void promote(Connection& conn, RequestId rid, const wire::Promote& req);
  void digest(Connection& conn, RequestId rid);
  void snapshot_fetch(Connection& conn, RequestId rid, const wire::SnapshotFetch& req);

 private:
  Error fenced_refusal() const;  // NotLeader from a leader past its lease deadline
  // Standalone: replication is off (no replication.id); the log is still written, and
  // status and digest are answered.
  enum class Role { kStandalone, kLeader, kFollower };
  struct Follower {
    std::string address;
    std::uint64_t durable_index = 0;
    std::uint64_t next_index = 0;  // what its last fetch asked for
    // The leader's last index when it last answered this follower: a fetch past it means
    // the follower holds everything the leader had then (it is caught up).
    std::uint64_t end_at_answer = UINT64_MAX;
    std::chrono::steady_clock::time_point caught_up;  // when its log last held the whole of ours
    std::optional<std::chrono::steady_clock::time_point> last_fetch;
  };
  struct HeldFetch {
    std::uint64_t connection;
    RequestId rid;
    std::uint64_t next_index;
    std::uint32_t max_bytes;
    std::string replica;
    std::chrono::steady_clock::time_point deadline;
  };
  struct Probe;
  friend class Fetcher;
  // A snapshot a follower is pulling: the leader's read transaction it is read from.
  struct SnapshotSession {
    std::uint64_t id = 0;
    std::unique_ptr<storage::Snapshot> snapshot;
    std::chrono::steady_clock::time_point started;
    std::chrono::steady_clock::time_point last_used;  // closed once idle for kSnapshotIdle
    std::uint64_t entries = 0, bytes = 0;             // sent so far
    bool done = false;                                // its last chunk was sent
  };

  // Leader.
  void become_leader(std::uint64_t epoch);
  void log_advanced(std::uint64_t last_index);  // the writer committed up to here
  void answer_fetch(Connection& conn, RequestId rid, std::uint64_t next_index, std::uint32_t max_bytes);
  void answer_held(bool all);  // those with records now (all: every one, at their deadline or close)
  void update_commit_index();
  void check_in_sync();  // the timer: who dropped out, who caught up
  void write_in_sync(std::set<std::string> members);
  void store_in_sync_locally(std::set<std::string> members);  // the record, then use it
  // Closes the fetcher, writes the epoch's first record, leads.
  void begin_epoch(std::uint64_t epoch, std::function<void(const Status&)> done);
  std::string peer_address(const std::string& id) const;
  // The last record of this log that belongs to `epoch` or an earlier one.
  std::uint64_t end_of_epoch(std::uint64_t epoch) const;
  // Where a follower whose last record is of follower_epoch diverged from this log.
  std::uint64_t divergence_point(std::uint64_t follower_epoch, std::uint64_t follower_next) const;
  // The in-sync set as the store holds it (a follower's view: the last one it applied).
  std::set<std::string> stored_in_sync() const;
  std::string leader_address() const;
  std::uint64_t known_leader_epoch() const;  // for NotLeader answers
  std::string_view role_name() const;
  void follower_applied();  // the fetcher applied records: a new epoch names a new leader
  std::uint64_t known_epoch_ = 0;

  uv_loop_t* loop_;
  const BrokerConfig& config_;
  const ReplicationConfig& rc_;
  storage::Store& store_;
  storage::StorageWriter& writer_;
  Responder& responder_;
  Hooks hooks_;
  std::unique_ptr<Probe> probe_;
  Role role_ = Role::kStandalone;
  std::string leader_id_;
  std::map<std::string, Follower> followers_;  // leader: every peer but this one
  std::set<std::string> in_sync_;              // leader included; as last written
  // [cluster]: members being added to etcd's in-sync set: waited for (the commit index
  // covers them) from before etcd may name them until a write's outcome is known.
  std::set<std::string> joining_;
  std::uint64_t epoch_start_index_ = 0;        // the log's end when this epoch began
  bool in_sync_write_pending_ = false;
  std::uint64_t commit_index_ = 0;
  std::vector<HeldFetch> held_;
  std::map<std::string, SnapshotSession> snapshots_;  // leader: by follower id, one each
  std::uint64_t next_session_ = 0;
  void close_idle_snapshots();
  uv_timer_t timer_{};  // in-sync checks and held fetches' deadlines
  std::unique_ptr<Fetcher> fetcher_;  // a follower's; kept (closed) after a promotion
  bool promoting_ = false;
  bool fenced_ = false;                   // [cluster]: see set_fenced
  std::optional<std::chrono::steady_clock::time_point> lease_deadline_;  // [cluster]
  std::string fence_why_;
  std::set<std::string> cluster_in_sync_;  // [cluster]: etcd's set when this broker was elected
  std::uint64_t followed_epoch_ = 0;       // [cluster]: the epoch of the leader followed
  bool closing_ = false;
  std::function<void()> close_done_;
};

}  // namespace txmq::broker
