#include "fuzz/inproc_broker.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include "broker/broker.h"

namespace txmq::fuzz {
namespace {

using namespace std::chrono_literals;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "inproc broker: %s\n", what.c_str());
  std::abort();
}

// Reads the broker's "listening on HOST:PORT" line from fd within the deadline.
std::uint16_t read_port(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto nl = out.find('\n'); nl != std::string::npos) {
      std::string_view line(out.data(), nl);
      constexpr std::string_view kPrefix = "listening on ";
      if (line.substr(0, kPrefix.size()) != kPrefix) die("unexpected output '" + std::string(line) + "'");
      return static_cast<std::uint16_t>(std::stoul(std::string(line.substr(line.rfind(':') + 1))));
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) die("no 'listening on' line within the deadline");
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[256];
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) die("the broker stopped before listening");
    out.append(buf, static_cast<std::size_t>(n));
  }
}

}  // namespace

InprocBroker::InprocBroker() = default;
InprocBroker::~InprocBroker() { stop(); }

void InprocBroker::start(broker::BrokerConfig config) {
  // /dev/shm first: its fsync costs nothing, and a commit's fsync (relaxed mode still
  // syncs data pages) would otherwise cap the executions per second.
  const char* tmp = std::getenv("TMPDIR");
  std::error_code ec;
  const char* base = tmp && *tmp ? tmp : std::filesystem::is_directory("/dev/shm", ec) ? "/dev/shm" : "/tmp";
  std::string templ = std::string(base) + "/txmq-fuzz-XXXXXX";
  if (!::mkdtemp(templ.data())) die("cannot create a directory from " + templ);
  data_dir_ = templ;
  config.data_dir = data_dir_;
  config.listen = "127.0.0.1:0";
  config.metrics_listen.clear();

  // Logs are off unless asked for: thousands of inputs a second would each log a line.
  const char* level = std::getenv("TXMQ_FUZZ_LOG");
  spdlog::set_level(level && *level ? spdlog::level::from_str(level) : spdlog::level::off);
  // A peer that vanished must be a write error, not the end of the fuzzer.
  ::signal(SIGPIPE, SIG_IGN);
  struct sigaction fuzzer_sigint {};
  ::sigaction(SIGINT, nullptr, &fuzzer_sigint);

  // The broker announces its port on stdout, as it does for scripts and tests: point
  // stdout at a pipe until that line arrived, then put it back.
  int fds[2];
  if (::pipe(fds) != 0) die("pipe failed");
  std::fflush(stdout);
  int saved_stdout = ::dup(STDOUT_FILENO);
  ::dup2(fds[1], STDOUT_FILENO);
  ::close(fds[1]);

  broker_ = std::make_unique<broker::Broker>(std::move(config));
  thread_ = std::thread([this] {
    int rc = broker_->run();
    std::lock_guard lock(mu_);
    finished_ = true;
    exit_code_ = rc;
    cv_.notify_all();
  });
  port_ = read_port(fds[0], 30s);
  std::fflush(stdout);
  ::dup2(saved_stdout, STDOUT_FILENO);
  ::close(saved_stdout);
  ::close(fds[0]);
  ::sigaction(SIGINT, &fuzzer_sigint, nullptr);
}

bool InprocBroker::running() {
  std::lock_guard lock(mu_);
  return thread_.joinable() && !finished_;
}

void InprocBroker::stop() {
  if (!thread_.joinable()) return;
  std::unique_lock lock(mu_);
  // Once run() returned the broker's watcher is gone and SIGTERM would end the process.
  if (!finished_) ::kill(::getpid(), SIGTERM);
  // Shutdown waits for the writer to finish its queue and for connections to close (a
  // draining one lingers until housekeeping closes it); seconds are plenty.
  if (!cv_.wait_for(lock, 30s, [this] { return finished_; })) die("the broker did not stop within 30 s of SIGTERM");
  lock.unlock();
  thread_.join();
  broker_.reset();
  if (!std::getenv("TXMQ_FUZZ_KEEP_DATA")) {
    std::error_code ec;
    std::filesystem::remove_all(data_dir_, ec);
  }
}

}  // namespace txmq::fuzz
