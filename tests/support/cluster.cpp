#include "tests/support/cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace txmq::test {
namespace {

bool address_in_use(const Status& st) {
  return !st.ok() && st.error().message.find("address already in use") != std::string::npos;
}

}  // namespace

bool port_free(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  // As libuv's uv_tcp_bind does, so that a port in TIME_WAIT counts as free.
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

std::uint16_t reserve_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  std::uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

Cluster::Cluster(ClusterOptions options) : options_(std::move(options)), temp_("txmq-cluster") {
  if (options_.keep) temp_.keep();
  members_.resize(options_.members);
  for (std::size_t i = 0; i < members_.size(); ++i) {
    Member& m = members_[i];
    m.data_dir = temp_.file(id(i) + "-data");
    std::filesystem::create_directories(m.data_dir);
    m.config_path = temp_.file(id(i) + ".toml");
    m.host = i < options_.hosts.size() ? options_.hosts[i] : "127.0.0.1";
  }
  reserve_ports();
}

Cluster::~Cluster() {
  // Followers first, so that none is left fetching from a leader that is gone.
  for (std::size_t i = members_.size(); i-- > 0;) members_[i].process->kill9();
}

void Cluster::reserve_ports() {
  for (std::size_t i = 0; i < members_.size(); ++i) {
    Member& m = members_[i];
    m.port = reserve_port();
    BrokerOptions bo;
    bo.data_dir = m.data_dir;
    bo.keep = options_.keep;
    bo.listen = address(i);
    bo.metrics_listen = m.host + ":0";
    // The cluster's own configuration file, rewritten before each start (see the header):
    // not BrokerOptions::config_toml, which is written once.
    bo.args = {"--config", m.config_path};
    if (m.host != "127.0.0.1") bo.args.push_back("--allow-insecure");
    if (i < options_.netns.size()) bo.netns = options_.netns[i];
    m.process = std::make_unique<BrokerProcess>(std::move(bo));
  }
}

std::string Cluster::address(std::size_t i) const {
  return members_[i].host + ":" + std::to_string(members_[i].port);
}

std::string Cluster::addresses() const {
  std::string out;
  for (std::size_t i = 0; i < members_.size(); ++i) out += (i ? "," : "") + address(i);
  return out;
}

std::string Cluster::config_toml(std::size_t i) const {
  std::ostringstream s;
  s << "[replication]\n"
    << "id = \"" << id(i) << "\"\n";
  if (options_.etcd_endpoint.empty()) s << "role = \"" << (i == leader_ ? "leader" : "follower") << "\"\n";
  s
    << "mode = \"" << (options_.sync ? "sync" : "async") << "\"\n"
    << "min_insync = " << options_.min_insync << "\n"
    << "replica_lag_max_ms = " << options_.lag_max.count() << "\n"
    << "fetch_wait_ms = " << options_.fetch_wait.count() << "\n"
    << options_.replication_toml << "\n[replication.peers]\n";
  for (std::size_t j = 0; j < members_.size(); ++j) s << id(j) << " = \"" << address(j) << "\"\n";
  if (!options_.etcd_endpoint.empty())
    s << "\n[cluster]\netcd_endpoints = [\"" << options_.etcd_endpoint << "\"]\nname = \"test\"\nlease_ttl_s = "
      << options_.lease_ttl_s << "\nunclean_election = " << (options_.unclean_election ? "true" : "false") << "\n";
  s << "\n" << options_.extra_toml;
  return s.str();
}

Status Cluster::start(std::size_t i) {
  Member& m = members_[i];
  for (int attempt = 0;; ++attempt) {
    std::ofstream(m.config_path) << config_toml(i);
    auto st = m.process->start();
    if (!address_in_use(st) || attempt == 5) return st;
    // Someone else holds the port for now (a connection in TIME_WAIT does not count):
    // wait for it to be released rather than give up.
    if (!wait_until([&] { return port_free(m.port); }, std::chrono::seconds(10), std::chrono::milliseconds(50)))
      return Error(ErrorCode::kTimeout, "port " + std::to_string(m.port) + " of " + id(i) + " stays taken");
  }
}

Status Cluster::start_all() {
  const bool ran_before = ever_started_;
  for (int attempt = 0;; ++attempt) {
    Status first;
    // The leader first: the followers fetch from it.
    std::vector<std::size_t> order{leader_};
    for (std::size_t i = 0; i < members_.size(); ++i)
      if (i != leader_) order.push_back(i);
    for (std::size_t i : order) {
      if (members_[i].process->running()) continue;
      first = start(i);
      if (!first.ok()) break;
      ever_started_ = true;
    }
    if (first.ok()) return first;
    // A first start that met a port taken for good: new ports for everyone (the members
    // started in this call ran for moments only, and know their peers by id).
    if (!address_in_use(first) || ran_before || attempt == 3) return first;
    for (auto& m : members_) m.process->kill9();
    reserve_ports();
  }
}

void Cluster::wipe(std::size_t i) {
  std::error_code ec;
  std::filesystem::remove_all(members_[i].data_dir, ec);
  std::filesystem::create_directories(members_[i].data_dir);
}

Result<std::string> store_digest(const std::string& data_dir) {
  const char* bin = std::getenv("TXMQ_BROKER_BIN");
  if (bin == nullptr || *bin == '\0') return Error(ErrorCode::kInvalidArgument, "TXMQ_BROKER_BIN is not set");
  // Data directories are mkdtemp paths (no quotes or spaces); stderr is kept apart so
  // that only the digest is compared.
  const std::string command = std::string(bin) + " --digest --data '" + data_dir + "' 2>/dev/null";
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return Error(ErrorCode::kInternal, "popen " + command);
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Error(ErrorCode::kInternal, command + " failed (status " + std::to_string(status) + "): " + out);
  return out;
}

}  // namespace txmq::test
