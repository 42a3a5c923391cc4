// The `txmq` command-line tool ($TXMQ_CLI_BIN) against the real broker: each test runs the
// binary as a child process with its standard input piped in and its output captured,
// exactly as a script would.

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/cli_run.h"
#include "tests/support/closed_port.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;
using txmq::test::BrokerProcess;
using txmq::test::run_cli;
using Run = txmq::test::CliRun;

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

TEST_CASE("a bad command line exits 2 with a hint; --help and --version exit 0") {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--no-such-flag", "stats"}, {"topic", "create"}, {"--request-timeout-ms", "soon", "stats"}, {}}) {
    CAPTURE(args.size());
    Run r = run_cli(args);
    CHECK_MESSAGE(r.exit_code == 2, "exit " << r.exit_code << " stderr: " << r.err);
    CHECK(!r.err.empty());
  }
  CHECK(run_cli({"--help"}).exit_code == 0);
  CHECK(run_cli({"--version"}).exit_code == 0);
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
