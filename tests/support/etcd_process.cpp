#include "tests/support/etcd_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tests/support/cluster.h"

namespace txmq::test {
namespace {

constexpr std::string_view kServing = "serving insecure client requests on";

std::string etcd_binary() {
  const char* env = std::getenv("TXMQ_ETCD_BIN");
  return env != nullptr && *env != '\0' ? env : "/usr/bin/etcd";
}

}  // namespace

EtcdProcess::EtcdProcess(std::string host)
    : host_(std::move(host)),
      temp_("txmq-etcd"), log_path_(temp_.file("etcd.log")), client_port_(reserve_port()), peer_port_(reserve_port()) {}

EtcdProcess::~EtcdProcess() { kill9(); }

std::string EtcdProcess::log_contents(std::size_t max_bytes) const { return file_tail(log_path_, max_bytes); }

bool EtcdProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == 0) return true;
  pid_ = -1;
  return false;
}

void EtcdProcess::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

bool EtcdProcess::stop() { return pid_ > 0 && stop_process(pid_); }

void EtcdProcess::resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

Status EtcdProcess::start(std::chrono::milliseconds timeout) {
  if (running()) return Error(ErrorCode::kInvalidArgument, "etcd already running");
  if (::access(etcd_binary().c_str(), X_OK) != 0)
    return Error(ErrorCode::kInvalidArgument,
                 "no etcd at " + etcd_binary() + " (scripts/install-deps.sh installs etcd-server; or set TXMQ_ETCD_BIN)");
  // The reserved ports, once no one holds them (a TIME_WAIT does not count): another
  // process may have taken one since it was reserved, or a killed etcd's may linger.
  for (int attempt = 0;; ++attempt) {
    if (!wait_until([&] { return port_free(client_port_) && port_free(peer_port_); }, std::chrono::seconds(10),
                    std::chrono::milliseconds(50)))
      return Error(ErrorCode::kTimeout, "etcd's ports stay taken");
    Status st = start_once(timeout);
    if (st.ok() || attempt == 3 || st.error().message.find("address already in use") == std::string::npos) return st;
  }
}

Status EtcdProcess::start_once(std::chrono::milliseconds timeout) {
  const std::string client = endpoint();
  const std::string peer = "http://" + host_ + ":" + std::to_string(peer_port_);
  const std::string log_start = log_contents(SIZE_MAX);
  std::vector<std::string> args = {etcd_binary(),
                                   "--name", "e1",
                                   "--data-dir", temp_.file("data"),
                                   "--listen-client-urls", client,
                                   "--advertise-client-urls", client,
                                   "--listen-peer-urls", peer,
                                   "--initial-advertise-peer-urls", peer,
                                   "--initial-cluster", "e1=" + peer,
                                   "--heartbeat-interval", "100",
                                   "--election-timeout", "1000"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log_fd < 0 || null_fd < 0) {
    for (int fd : {log_fd, null_fd})
      if (fd >= 0) ::close(fd);
    return Error(ErrorCode::kInternal, std::string("open etcd's log: ") + std::strerror(errno));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    ::close(log_fd);
    ::close(null_fd);
    return Error(ErrorCode::kInternal, std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test leaves no etcd behind
    if (getppid() != parent) _exit(127);
    execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(log_fd);
  ::close(null_fd);
  pid_ = pid;

  // Ready once this run's log says it serves clients.
  const auto fail = [&](ErrorCode code, const std::string& what) {
    kill9();
    return Status(Error(code, what + "; etcd's log ends:\n" + log_contents(4096)));
  };
  bool exited = false;
  const bool ready = wait_until(
      [&] {
        if (!running()) {
          exited = true;
          return true;
        }
        return log_contents(SIZE_MAX).find(kServing, log_start.size()) != std::string::npos;
      },
      timeout, std::chrono::milliseconds(20));
  if (exited) {
    const std::string log = log_contents(SIZE_MAX).substr(log_start.size());
    return fail(ErrorCode::kInternal,
                log.find("address already in use") != std::string::npos ? "etcd: address already in use"
                                                                          : "etcd exited before serving");
  }
  if (!ready) return fail(ErrorCode::kTimeout, "etcd did not serve within " + std::to_string(timeout.count()) + " ms");
  return {};
}

}  // namespace txmq::test
