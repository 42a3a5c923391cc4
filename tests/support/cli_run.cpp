#include "tests/support/cli_run.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "tests/support/broker_process.h"

extern char** environ;

namespace txmq::test {
namespace {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;
using namespace std::chrono_literals;

std::string cli_binary() {
  const char* bin = std::getenv("TXMQ_CLI_BIN");
  if (bin == nullptr || *bin == '\0') throw std::runtime_error("TXMQ_CLI_BIN is not set (ctest sets it)");
  return bin;
}

}  // namespace

CliRun run_cli(const std::vector<std::string>& args, const std::string& input,
               const std::vector<std::pair<std::string, std::string>>& env, Millis timeout) {
  // A child that exits before reading all its input must not kill the test with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);

  // Everything is built before fork: the test process has other threads.
  std::vector<std::string> argv_strings{cli_binary()};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "TXMQ_BROKER=", 12) != 0) env_strings.emplace_back(*e);
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    dup2(in[0], STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  fcntl(in[1], F_SETFL, O_NONBLOCK);

  CliRun run;
  const auto deadline = Clock::now() + timeout;
  std::size_t written = 0;
  int stdin_fd = in[1];
  if (input.empty()) {
    ::close(stdin_fd);
    stdin_fd = -1;
  }
  int out_fd = out[0], err_fd = err[0];
  while ((out_fd >= 0 || err_fd >= 0) && Clock::now() < deadline) {
    pollfd fds[3];
    int n = 0;
    if (stdin_fd >= 0) fds[n++] = {stdin_fd, POLLOUT, 0};
    if (out_fd >= 0) fds[n++] = {out_fd, POLLIN, 0};
    if (err_fd >= 0) fds[n++] = {err_fd, POLLIN, 0};
    auto left = std::chrono::ceil<Millis>(deadline - Clock::now()).count();
    int rc = ::poll(fds, n, static_cast<int>(std::max<long long>(left, 0)));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) break;
    for (int i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == stdin_fd) {
        ssize_t w = ::write(stdin_fd, input.data() + written, input.size() - written);
        if (w > 0) written += static_cast<std::size_t>(w);
        if (w < 0 && errno != EAGAIN && errno != EINTR) written = input.size();  // child closed stdin
        if (written == input.size()) {
          ::close(stdin_fd);
          stdin_fd = -1;
        }
        continue;
      }
      char buf[4096];
      ssize_t r = ::read(fds[i].fd, buf, sizeof(buf));
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      std::string& sink = fds[i].fd == out_fd ? run.out : run.err;
      if (r > 0) {
        sink.append(buf, static_cast<std::size_t>(r));
        continue;
      }
      ::close(fds[i].fd);
      (fds[i].fd == out_fd ? out_fd : err_fd) = -1;
    }
  }
  for (int fd : {stdin_fd, out_fd, err_fd})
    if (fd >= 0) ::close(fd);

  // Both pipes closed: the child is exiting; reap it, but never wait past the deadline.
  int status = 0;
  bool reaped = wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; },
                                       std::max<Millis>(std::chrono::ceil<Millis>(deadline - Clock::now()), 0ms));
  if (!reaped) {
    ::kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    run.exit_code = -1;
  } else if (WIFEXITED(status)) {
    run.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    run.exit_code = 128 + WTERMSIG(status);
  }
  return run;
}

}  // namespace txmq::test
