#pragma once
// Runs the `txmq` command-line tool ($TXMQ_CLI_BIN, which ctest sets) as a child process,
// the way a script would: arguments, standard input piped in, standard output and error
// captured, and a deadline after which the child is killed. Throws std::runtime_error when
// the tool cannot be started (no TXMQ_CLI_BIN, no pipes, no fork).

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace txmq::test {

struct CliRun {
  int exit_code = -1;  // the exit status, 128 + signal, or -1 when killed for the deadline
  std::string out;
  std::string err;
};

// Runs the tool with `args`, feeding it `input`. The environment is the test's own minus
// TXMQ_BROKER, plus `env`. Never blocks past `timeout`.
CliRun run_cli(const std::vector<std::string>& args, const std::string& input = {},
               const std::vector<std::pair<std::string, std::string>>& env = {},
               std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace txmq::test
