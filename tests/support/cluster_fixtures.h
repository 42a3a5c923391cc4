// What the integration tests that run a Cluster share: a member's ClusterStatus as a small
// value, waits on the leader's in-sync set and on a follower's log, and the end of a test
// that stops every member and compares their stores.
//
// The waits take the test's deadline: how long replication may take differs from test to
// test. Everything here REQUIREs or CHECKs on failure, so call it from the test's own thread.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/support/client_fixtures.h"
#include "tests/support/cluster.h"
#include "tests/support/raw_frames.h"

namespace txmq::test {

// One request on a session of its own (hello first: a follower answers the hello and the
// cluster requests); the answer, or why there is none.
inline Result<ReceivedFrame> ask(const std::string& address, const flatbuffers::FlatBufferBuilder& request) {
  using namespace std::chrono_literals;
  auto conn = RawConnection::connect(address, 2s);
  if (!conn) return conn.error();
  if (auto st = conn->send_frame(hello(1)); !st) return st.error();
  auto answer = conn->read_frame(kWait);
  if (!answer) return answer.error();
  if (answer->type() != wire::Body::HelloOk) return Error(ErrorCode::kInternal, "hello refused");
  if (auto st = conn->send_frame(request); !st) return st.error();
  return conn->read_frame(kWait);
}

// What a broker's ClusterStatus says, the parts the tests look at.
struct ClusterView {
  std::string role;  // "leader", "follower"
  std::uint64_t epoch = 0;
  std::uint64_t first_index = 0;  // of its log
  std::uint64_t last_index = 0;
  std::uint64_t commit_index = 0;
  std::set<std::string> in_sync;  // member ids
  bool installing_snapshot = false;
  // [cluster]: etcd's keys as this member last read them.
  std::string etcd_leader;
  std::uint64_t etcd_epoch = 0;
  std::set<std::string> etcd_in_sync;
  bool lease_held = false;
};

// The member's ClusterStatus; nullopt when it does not answer one.
inline std::optional<ClusterView> view(const std::string& address) {
  auto f = ask(address, cluster_status(2));
  if (!f) return std::nullopt;
  const auto* info = f->frame().body_as_ClusterInfo();
  if (info == nullptr) return std::nullopt;
  ClusterView v;
  v.role = info->role() ? info->role()->str() : "";
  v.epoch = info->epoch();
  v.first_index = info->first_index();
  v.last_index = info->last_index();
  v.commit_index = info->commit_index();
  if (info->in_sync())
    for (const auto* id : *info->in_sync()) v.in_sync.insert(id->str());
  v.installing_snapshot = info->installing_snapshot();
  if (const auto* e = info->etcd()) {
    v.etcd_leader = e->leader() ? e->leader()->str() : "";
    v.etcd_epoch = e->epoch();
    v.lease_held = e->lease_held();
    if (e->in_sync())
      for (const auto* id : *e->in_sync()) v.etcd_in_sync.insert(id->str());
  }
  return v;
}

inline std::string describe(const std::optional<ClusterView>& v) {
  if (!v) return "no ClusterInfo";
  std::string s = v->role + " epoch " + std::to_string(v->epoch) + " log " + std::to_string(v->first_index) + ".." +
                  std::to_string(v->last_index) + " commit " + std::to_string(v->commit_index) + " in sync {";
  for (const auto& id : v->in_sync) s += " " + id;
  s += " }";
  if (v->installing_snapshot) s += " installing a snapshot";
  if (!v->etcd_leader.empty() || !v->etcd_in_sync.empty()) {
    s += "; etcd: leader " + (v->etcd_leader.empty() ? std::string("none") : v->etcd_leader) + " epoch " +
         std::to_string(v->etcd_epoch) + " in sync {";
    for (const auto& id : v->etcd_in_sync) s += " " + id;
    s += " }";
  }
  return s;
}

// [cluster]: the member that leads by its own status and by etcd's (the leader key names
// it), other than `not_this`, waited for up to `timeout`; nullopt when none did. `seen`
// gets what each member said at the last look.
inline std::optional<std::size_t> elected_leader(Cluster& cluster, client::Millis timeout,
                                                 std::optional<std::size_t> not_this = std::nullopt,
                                                 std::string* seen = nullptr) {
  using namespace std::chrono_literals;
  std::optional<std::size_t> found;
  wait_until(
      [&] {
        if (seen) seen->clear();
        for (std::size_t i = 0; i < cluster.size(); ++i) {
          if (not_this && i == *not_this) continue;
          auto v = view(cluster.address(i));
          if (seen) *seen += cluster.id(i) + ": " + describe(v) + "\n";
          if (v && v->role == "leader" && v->etcd_leader == cluster.id(i)) {
            found = i;
            return true;
          }
        }
        return false;
      },
      timeout, 50ms);
  return found;
}

// Waits until member `leader` leads with `members` in its in-sync set and, when
// `committed`, a commit index that covers its whole log (below min_insync it cannot).
inline void wait_in_sync(Cluster& cluster, std::size_t leader, std::size_t members, client::Millis deadline,
                         bool committed = true) {
  using namespace std::chrono_literals;
  std::optional<ClusterView> last;
  bool ok = wait_until(
      [&] {
        last = view(cluster.address(leader));
        return last && last->role == "leader" && last->in_sync.size() == members &&
               (!committed || last->commit_index == last->last_index);
      },
      deadline, 20ms);
  REQUIRE_MESSAGE(ok, cluster.id(leader) << " never had " << members << " in sync: " << describe(last));
}

// Waits until member i's log ends where member `leader`'s does.
inline void wait_caught_up(Cluster& cluster, std::size_t i, std::size_t leader, client::Millis deadline) {
  using namespace std::chrono_literals;
  std::optional<ClusterView> f, l;
  bool ok = wait_until(
      [&] {
        l = view(cluster.address(leader));
        f = view(cluster.address(i));
        return l && f && f->last_index == l->last_index;
      },
      deadline, 20ms);
  REQUIRE_MESSAGE(ok, cluster.id(i) << " did not catch up: " << describe(f) << "; leader " << describe(l));
}

// Promotes member i (a raw Promote frame, as `txmq cluster promote` sends) and waits until
// it leads; the cluster's configuration then names it leader for later starts.
inline void promote_member(Cluster& cluster, std::size_t i, client::Millis deadline) {
  auto answer = ask(cluster.address(i), promote(2));
  REQUIRE_MESSAGE(answer.ok(), describe(answer));
  const auto* error = answer->frame().body_as_Error();
  REQUIRE_MESSAGE(error == nullptr, "Promote refused: " << (error && error->message() ? error->message()->str() : ""));
  std::optional<ClusterView> v;
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        v = view(cluster.address(i));
                        return v && v->role == "leader";
                      },
                      deadline, std::chrono::milliseconds(20)),
                  cluster.id(i) << " did not lead after Promote: " << describe(v));
  cluster.set_leader(i);
}

// Stops every member, the leader first: once it is gone the followers have nothing more
// to fetch, so their stores stay where the leader's ended.
inline void stop_all(Cluster& cluster) {
  CHECK(cluster.broker(cluster.leader()).terminate() == 0);
  for (std::size_t i = 0; i < cluster.size(); ++i)
    if (i != cluster.leader()) CHECK(cluster.broker(i).terminate() == 0);
}

// Each stopped member's `txmq-broker --digest`, checked to be the same for every member;
// returns member 0's.
inline std::string check_same_digests(Cluster& cluster) {
  std::vector<std::string> digests;
  for (std::size_t i = 0; i < cluster.size(); ++i) {
    auto d = store_digest(cluster.data_dir(i));
    REQUIRE_MESSAGE(d.ok(), describe(d));
    digests.push_back(*d);
  }
  for (std::size_t i = 1; i < digests.size(); ++i) {
    INFO(cluster.id(0) << ":\n" << digests[0] << cluster.id(i) << ":\n" << digests[i]);
    CHECK(digests[i] == digests[0]);
  }
  return digests[0];
}

}  // namespace txmq::test
