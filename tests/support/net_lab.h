#pragma once
// Test support: a private network for a cluster test, so that a nemesis can cut links as
// well as kill and freeze processes. Root only (CAP_SYS_ADMIN and CAP_NET_ADMIN).
//
// The layout:
// - The hub: the calling thread (call it from the test's main thread, before starting
//   anything: every thread and child started afterwards inherits it) moves into a network
//   namespace of its own. A bridge there holds two addresses: 10.77.0.1, the test's own
//   (clients and the views a test reads), and 10.77.0.2 for etcd, so that a member can be
//   cut from etcd without being cut from its clients.
// - Member i: a named namespace "txmq-<test pid>-<i>" with loopback up and one veth onto
//   the bridge at 10.77.0.(11+i). Start it there with BrokerOptions::netns = netns_path(i).
// The host's own namespace is never touched: its interfaces, routes and addresses stay as
// they were, and the hub goes away with the test process. The destructor deletes the
// members' namespaces and moves the thread back; a test that crashed leaves its
// namespaces behind, and the next create() deletes those whose process is gone.
//
// Faults, undone by heal(i):
// - isolate(i): the bridge's end of i's veth goes down. Every packet to or from i is
//   dropped, as with a pulled cable: TCP retransmits, then times out (a new connection may
//   fail sooner, EHOSTUNREACH, once the neighbour entry has expired).
// - cut(i, host): a blackhole route in i's namespace. What i sends to host fails at once,
//   so no TCP connection between them gets through, either way; i's other links work.

#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace txmq::test {

class NetLab {
 public:
  // Why no NetLab can be made here, or "" when it can: not root, no `ip`, or no right to
  // make a network namespace (root in a container without CAP_SYS_ADMIN).
  static std::string unavailable_reason();
  // Builds the hub and `members` member namespaces. Errors: kInternal naming the step (the
  // `ip` command and what it printed).
  static Result<std::unique_ptr<NetLab>> create(std::size_t members);
  NetLab(const NetLab&) = delete;
  NetLab& operator=(const NetLab&) = delete;
  ~NetLab();

  static std::string hub_host() { return "10.77.0.1"; }
  static std::string etcd_host() { return "10.77.0.2"; }
  std::string host(std::size_t i) const { return "10.77.0." + std::to_string(11 + i); }
  std::string netns_path(std::size_t i) const { return "/run/netns/" + netns_name(i); }
  std::size_t size() const { return members_; }

  Status isolate(std::size_t i);
  Status cut(std::size_t i, const std::string& host);
  // Undoes isolate(i) and every cut(i, ...).
  Status heal(std::size_t i);

 private:
  NetLab(std::size_t members, int home_netns);
  std::string netns_name(std::size_t i) const;
  std::string veth(std::size_t i) const { return "vm" + std::to_string(i); }

  std::size_t members_;
  int home_netns_;                               // the thread's namespace before, to go back to
  std::vector<std::vector<std::string>> cuts_;   // member i's blackholed hosts
  std::size_t created_ = 0;                      // member namespaces made so far
};

}  // namespace txmq::test
