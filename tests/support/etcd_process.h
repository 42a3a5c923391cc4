#pragma once
// Test support: a real one-member etcd (Debian's etcd-server) as a child process, on
// 127.0.0.1 with a data directory in a temporary area, for the tests of the broker's etcd
// client and of everything the cluster keeps in etcd.
//
// Caveats a test author must know:
// - The binary is $TXMQ_ETCD_BIN, or /usr/bin/etcd (scripts/install-deps.sh installs it).
// - etcd cannot be given port 0: its JSON gateway dials the configured client address. The
//   two ports are reserved by the constructor (bind 127.0.0.1:0, read, close) and kept for
//   good, so that endpoint() is known before the first start and stays true across
//   restarts; a start that meets a port taken meanwhile waits for it to be free.
// - Election timings are short (100 ms heartbeats, 1 s election timeout): one member elects
//   itself at once.
// - Like BrokerProcess: drive it from the test's main thread (the child dies with it);
//   every wait polls with a deadline.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "common/result.h"
#include "tests/support/broker_process.h"

namespace txmq::test {

class EtcdProcess {
 public:
  // host: the IP address etcd listens on (a NetLab's etcd_host(), say); its ports are
  // still reserved on 127.0.0.1.
  explicit EtcdProcess(std::string host = "127.0.0.1");
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;
  ~EtcdProcess();  // SIGKILLs it if running; removes the temporary area

  // Starts etcd on the reserved ports and waits (up to `timeout`) until it serves clients.
  // Errors: kInvalidArgument when already running or the binary is missing; kInternal when
  // it exits first; kTimeout. Messages end with the tail of its log.
  Status start(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  void kill9();
  bool stop();      // SIGSTOP: frozen, its sockets open (false: not stopped in 5 s)
  void resume();    // SIGCONT
  bool running();

  // "http://HOST:PORT", the client URL; the same across restarts.
  std::string endpoint() const { return "http://" + host_ + ":" + std::to_string(client_port_); }
  pid_t pid() const { return pid_; }
  std::string log_contents(std::size_t max_bytes = 16 * 1024) const;

 private:
  Status start_once(std::chrono::milliseconds timeout);

  std::string host_;
  TempDir temp_;
  std::string log_path_;
  std::uint16_t client_port_ = 0;
  std::uint16_t peer_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace txmq::test
