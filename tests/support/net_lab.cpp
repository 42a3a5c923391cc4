#include "tests/support/net_lab.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace txmq::test {
namespace {

constexpr const char* kBridge = "br0";
constexpr const char* kPrefix = "txmq-";

// iproute2's ip, by its full path (root's PATH may lack /usr/sbin); "" when there is none.
const std::string& ip_path() {
  static const std::string path = [] {
    for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
      if (::access(p, X_OK) == 0) return std::string(p);
    return std::string();
  }();
  return path;
}

// Runs `ip ARGS`; an error carries the command and what it printed. Every name and address
// passed here is ours (no spaces, no quotes).
Status ip(const std::string& args) {
  const std::string command = ip_path() + " " + args + " 2>&1";
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return Error(ErrorCode::kInternal, "popen " + command + ": " + std::strerror(errno));
  std::string out;
  char buf[1024];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Error(ErrorCode::kInternal, "ip " + args + " failed: " + out);
  return {};
}

// Deletes the member namespaces of earlier test processes that are gone ("txmq-PID-I").
void delete_abandoned() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(kPrefix)) continue;
    const std::string rest = name.substr(std::strlen(kPrefix));
    const auto dash = rest.find('-');
    if (dash == std::string::npos) continue;
    const std::string pid = rest.substr(0, dash);
    if (pid.empty() || !std::all_of(pid.begin(), pid.end(), ::isdigit)) continue;
    if (std::filesystem::exists("/proc/" + pid)) continue;
    (void)ip("netns del " + name);
  }
}

}  // namespace

std::string NetLab::unavailable_reason() {
  if (::geteuid() != 0) return "not root";
  if (ip_path().empty()) return "no ip command (Debian's iproute2)";
  // Root in a container may still lack CAP_SYS_ADMIN: try in a child, which exits at once.
  const pid_t pid = ::fork();
  if (pid == 0) _exit(::unshare(CLONE_NEWNET) == 0 ? 0 : 1);
  int status = 0;
  while (pid > 0 && ::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return "this root cannot make a network namespace (unshare(CLONE_NEWNET) refused)";
  return "";
}

NetLab::NetLab(std::size_t members, int home_netns)
    : members_(members), home_netns_(home_netns), cuts_(members) {}

Result<std::unique_ptr<NetLab>> NetLab::create(std::size_t members) {
  delete_abandoned();
  const int home = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) return Error(ErrorCode::kInternal, std::string("open this thread's namespace: ") + std::strerror(errno));
  if (::unshare(CLONE_NEWNET) != 0) {
    const std::string why = std::strerror(errno);
    ::close(home);
    return Error(ErrorCode::kInternal, "unshare(CLONE_NEWNET): " + why);
  }
  std::unique_ptr<NetLab> lab(new NetLab(members, home));
  const std::string b = kBridge;
  for (const std::string& step :
       {std::string("link set lo up"), "link add " + b + " type bridge", "addr add " + hub_host() + "/24 dev " + b,
        "addr add " + etcd_host() + "/24 dev " + b, "link set " + b + " up"})
    if (auto st = ip(step); !st) return st.error();
  for (std::size_t i = 0; i < members; ++i) {
    const std::string ns = lab->netns_name(i);
    if (auto st = ip("netns add " + ns); !st) return st.error();
    lab->created_ = i + 1;
    for (const std::string& step :
         {"link add " + lab->veth(i) + " type veth peer name eth0 netns " + ns,
          "link set " + lab->veth(i) + " master " + b, "link set " + lab->veth(i) + " up",
          "-n " + ns + " link set lo up", "-n " + ns + " addr add " + lab->host(i) + "/24 dev eth0",
          "-n " + ns + " link set eth0 up"})
      if (auto st = ip(step); !st) return st.error();
  }
  return lab;
}

NetLab::~NetLab() {
  for (std::size_t i = 0; i < created_; ++i) (void)ip("netns del " + netns_name(i));
  // Back to the host's namespace. The hub (and its bridge) lives on while anything still
  // holds it (threads started from it, their sockets) and goes with the process at the latest.
  if (::setns(home_netns_, CLONE_NEWNET) != 0)
    std::fprintf(stderr, "NetLab: setns back to the host's namespace: %s\n", std::strerror(errno));
  ::close(home_netns_);
}

std::string NetLab::netns_name(std::size_t i) const {
  return kPrefix + std::to_string(::getpid()) + "-" + std::to_string(i);
}

Status NetLab::isolate(std::size_t i) { return ip("link set " + veth(i) + " down"); }

Status NetLab::cut(std::size_t i, const std::string& host) {
  if (auto st = ip("-n " + netns_name(i) + " route add blackhole " + host + "/32"); !st) return st;
  cuts_[i].push_back(host);
  return {};
}

Status NetLab::heal(std::size_t i) {
  Status first = ip("link set " + veth(i) + " up");
  for (const auto& host : cuts_[i])
    if (auto st = ip("-n " + netns_name(i) + " route del blackhole " + host + "/32"); !st && first.ok()) first = st;
  cuts_[i].clear();
  return first;
}

}  // namespace txmq::test
