// The `txmq` command-line tool ($TXMQ_CLI_BIN) against the real broker: each test runs the
// binary as a child process with its standard input piped in and its output captured,
// exactly as a script would.

#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/closed_port.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;
using txmq::test::BrokerProcess;

struct Run {
  int exit_code = -1;  // the exit status, 128 + signal, or -1 when killed for the deadline
  std::string out;
  std::string err;
};

std::string cli_binary() {
  const char* bin = std::getenv("TXMQ_CLI_BIN");
  REQUIRE_MESSAGE((bin != nullptr && *bin != '\0'), "TXMQ_CLI_BIN is not set (ctest sets it)");
  return bin;
}

// Runs the txmq tool with args, feeding it `input` on stdin and capturing stdout and
// stderr. The environment is the test's own minus TXMQ_BROKER, plus `env`. A child still
// running at the deadline is killed (exit_code -1).
Run run_cli(const std::vector<std::string>& args, const std::string& input = {},
            const std::vector<std::pair<std::string, std::string>>& env = {}, Millis timeout = 30s) {
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
  REQUIRE(pipe2(in, O_CLOEXEC) == 0);
  REQUIRE(pipe2(out, O_CLOEXEC) == 0);
  REQUIRE(pipe2(err, O_CLOEXEC) == 0);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
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

  Run run;
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
  bool reaped = txmq::test::wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; },
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

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string numbered_lines(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "line-" + std::to_string(i) + "\n";
  return s;
}

void start(BrokerProcess& broker) {
  auto st = broker.start();
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
}

// Runs a command that must succeed; returns its result.
Run must_run(const std::vector<std::string>& args, const std::string& input = {}) {
  Run r = run_cli(args, input);
  std::string command = "txmq";
  for (const auto& a : args) command += " " + a;
  REQUIRE_MESSAGE(r.exit_code == 0, command << ": exit " << r.exit_code << "\nstdout:\n" << r.out
                                            << "\nstderr:\n" << r.err);
  return r;
}

}  // namespace

TEST_CASE("topic create prints the topic and topic list shows it") {
  BrokerProcess broker;
  start(broker);
  const std::string b = broker.address();
  Run created = must_run({"--broker", b, "topic", "create", "orders", "--partitions", "3"});
  CHECK(created.out.find("created topic orders with 3 partition(s)") != std::string::npos);
  Run listed = must_run({"--broker", b, "topic", "list"});
  CHECK(std::regex_search(listed.out, std::regex(R"(^orders\s+partitions=3 messages=0$)", std::regex::multiline)));
}

TEST_CASE("produce sends each stdin line and consume prints them in order, acking each") {
  BrokerProcess broker;
  start(broker);
  const std::string b = broker.address();
  must_run({"--broker", b, "topic", "create", "lines"});
  const std::string input = numbered_lines(100);
  Run produced = must_run({"--broker", b, "produce", "lines"}, input);
  CHECK(produced.err.find("100 message(s) confirmed durable") != std::string::npos);

  Run consumed = must_run({"--broker", b, "consume", "lines", "--group", "g", "--max", "100"});
  CHECK(lines_of(consumed.out) == lines_of(input));  // one partition: send order
}

TEST_CASE("a second consume of a group that acked everything prints nothing") {
  BrokerProcess broker;
  start(broker);
  const std::string b = broker.address();
  must_run({"--broker", b, "topic", "create", "lines"});
  must_run({"--broker", b, "produce", "lines"}, numbered_lines(100));
  Run first = must_run({"--broker", b, "consume", "lines", "--group", "g", "--max", "100"});
  REQUIRE(lines_of(first.out).size() == 100);
  Run second = must_run({"--broker", b, "consume", "lines", "--group", "g", "--timeout-ms", "300"});
  CHECK(second.out.empty());
}

TEST_CASE("produce to an unknown topic exits non-zero with UnknownTopic on stderr") {
  BrokerProcess broker;
  start(broker);
  Run r = run_cli({"--broker", broker.address(), "produce", "missing"}, "a\nb\n");
  CHECK(r.exit_code != 0);
  CHECK(r.exit_code != -1);
  CHECK_MESSAGE(r.err.find("UnknownTopic") != std::string::npos, "stderr: " << r.err);
}

TEST_CASE("--broker localhost:PORT reaches a broker on 127.0.0.1") {
  BrokerProcess broker;
  start(broker);
  const std::string b = "localhost:" + std::to_string(broker.port());
  must_run({"--broker", b, "topic", "create", "named"});
  must_run({"--broker", b, "produce", "named"}, "by name\n");
  Run consumed = must_run({"--broker", b, "consume", "named", "--group", "g", "--max", "1"});
  CHECK(consumed.out == "by name\n");
}

TEST_CASE("--broker [::1]:PORT reaches a broker listening on [::1]") {
  txmq::test::BrokerOptions o;
  o.listen = "[::1]:0";
  BrokerProcess broker(o);
  start(broker);
  const std::string b = "[::1]:" + std::to_string(broker.port());
  must_run({"--broker", b, "topic", "create", "v6"});
  Run listed = must_run({"--broker", b, "topic", "list"});
  CHECK(listed.out.find("v6") != std::string::npos);
}

// "At once" below means well before the request timeout, which these runs set to 60 s: a
// tool that waited for it would take a minute, one that gives up at once takes about one
// second (its first-connect limit) plus its start-up, which a loaded machine running
// sanitized builds can stretch to several. The bound sits between the two, so it does not
// measure speed, only which of the two happened.
constexpr auto kGaveUpAtOnce = 20s;

TEST_CASE("a broker name that does not resolve exits 1 at once, naming it") {
  const auto t0 = Clock::now();
  Run r = run_cli({"--broker", "no-such-host.invalid:7411", "--request-timeout-ms", "60000", "topic", "list"}, {},
                  {}, 90s);
  const auto took = Clock::now() - t0;
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.err.find("cannot resolve 'no-such-host.invalid'") != std::string::npos, "stderr: " << r.err);
  CHECK(took < kGaveUpAtOnce);
}

TEST_CASE("a closed port exits 1 at once with the reason, for every kind of command") {
  txmq::test::ClosedPort closed;
  const std::string b = "127.0.0.1:" + std::to_string(closed.port());
  const std::vector<std::pair<std::vector<std::string>, std::string>> commands = {
      {{"--broker", b, "--request-timeout-ms", "60000", "topic", "list"}, ""},
      {{"--broker", b, "--request-timeout-ms", "60000", "produce", "t"}, "a\n"},
      {{"--broker", b, "--request-timeout-ms", "60000", "consume", "t", "--group", "g"}, ""},
      {{"--broker", b, "--request-timeout-ms", "60000", "stats"}, ""},
  };
  for (const auto& [args, input] : commands) {
    CAPTURE(args[4]);
    const auto t0 = Clock::now();
    Run r = run_cli(args, input, {}, 90s);
    const auto took = std::chrono::duration_cast<Millis>(Clock::now() - t0);
    CHECK_MESSAGE(r.exit_code == 1, "exit " << r.exit_code << " stderr: " << r.err);
    CHECK_MESSAGE(r.err.find("connection refused") != std::string::npos, "stderr: " << r.err);
    CHECK_MESSAGE(took < kGaveUpAtOnce, "took " << took.count() << " ms");
  }
}

TEST_CASE("TXMQ_BROKER names the broker when --broker is absent") {
  BrokerProcess broker;
  start(broker);
  must_run({"--broker", broker.address(), "topic", "create", "via-env"});
  Run r = run_cli({"topic", "list"}, {}, {{"TXMQ_BROKER", broker.address()}});
  REQUIRE_MESSAGE(r.exit_code == 0, "exit " << r.exit_code << "\nstderr:\n" << r.err);
  CHECK(r.out.find("via-env") != std::string::npos);
}

TEST_CASE("stats prints messages_produced after a produce") {
  BrokerProcess broker;
  start(broker);
  const std::string b = broker.address();
  must_run({"--broker", b, "topic", "create", "counted"});
  must_run({"--broker", b, "produce", "counted"}, numbered_lines(100));
  Run stats = must_run({"--broker", b, "stats"});
  CHECK_MESSAGE(std::regex_search(stats.out, std::regex(R"(^messages_produced\s+100$)", std::regex::multiline)),
                "stats:\n" << stats.out);
  CHECK(std::regex_search(stats.out, std::regex(R"(^topics\s+1$)", std::regex::multiline)));
}

TEST_CASE("produce of a line over the broker's limits exits 1 with a too-large error, not a lost connection") {
  // A 17 MiB line once made a frame over limits.max_frame_bytes: the broker closed the
  // connection and the tool said "ConnectionLost" (retryable) instead of why.
  BrokerProcess broker;
  start(broker);
  const std::string b = broker.address();
  must_run({"--broker", b, "topic", "create", "big"});
  for (std::size_t size : {std::size_t{17} << 20, std::size_t{2} << 20}) {
    CAPTURE(size);
    Run r = run_cli({"--broker", b, "produce", "big"}, "small\n" + std::string(size, 'x') + "\nsmall\n");
    CHECK(r.exit_code == 1);
    CHECK_MESSAGE(r.err.find("TooLarge") != std::string::npos, "stderr: " << r.err);
    CHECK_MESSAGE(r.err.find("ConnectionLost") == std::string::npos, "stderr: " << r.err);
  }
  Run listed = must_run({"--broker", b, "topic", "list"});
  // The small lines around it were confirmed; the large ones never stored.
  CHECK_MESSAGE(std::regex_search(listed.out, std::regex(R"(^big\s+partitions=1 messages=4$)", std::regex::multiline)),
                listed.out);
}
