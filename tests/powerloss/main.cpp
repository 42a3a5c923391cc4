// txmq-powerloss: the power-loss simulator by hand.
//   txmq-powerloss run --dir D --journal J [--kill-at N] -- CMD ARGS...
//                                                            runs CMD with writes under D journaled in J
//   txmq-powerloss apply --journal J --mode M --seed N       applies a power loss, prints the report
// Kill the command (SIGKILL) before apply: the loss assumes nothing under D is running.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/powerloss/power_loss.h"

namespace {

namespace fs = std::filesystem;
namespace powerloss = txmq::test::powerloss;

// Replaces this process with the command under the preload; returns only on failure.
int run(const std::string& dir, const std::string& journal, std::uint64_t kill_at, std::vector<std::string> command) {
  std::error_code ec;
  fs::create_directories(journal, ec);
  if (ec) {
    std::fprintf(stderr, "cannot create %s: %s\n", journal.c_str(), ec.message().c_str());
    return 1;
  }
  for (const auto& [name, value] : powerloss::preload_env(fs::absolute(dir), fs::absolute(journal), kill_at))
    setenv(name.c_str(), value.c_str(), 1);
  std::vector<char*> argv;
  for (std::string& arg : command) argv.push_back(arg.data());
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  std::perror(argv[0]);
  return 127;
}

int apply(const std::string& journal, const std::string& mode_name, std::uint64_t seed) {
  std::optional<powerloss::LossMode> mode = powerloss::parse_loss_mode(mode_name);
  if (!mode) {
    std::fprintf(stderr, "unknown mode '%s' (none, all, prefix, subset, torn)\n", mode_name.c_str());
    return 2;
  }
  txmq::Result<powerloss::LossReport> report = powerloss::lose_power(journal, *mode, seed);
  if (!report) {
    std::fprintf(stderr, "%s\n", report.error().describe().c_str());
    return 1;
  }
  std::printf("%s\n", report->describe().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Simulates a power loss on the files a command wrote"};
  app.require_subcommand(1);

  std::string dir, journal, mode = "all";
  std::uint64_t seed = 0, kill_at = 0;
  std::vector<std::string> command;
  CLI::App* run_cmd = app.add_subcommand("run", "run a command with its writes under --dir journaled");
  run_cmd->add_option("--dir", dir, "directory whose files are tracked")->required();
  run_cmd->add_option("--journal", journal, "journal directory, outside --dir (created if missing)")->required();
  run_cmd->add_option("--kill-at", kill_at, "SIGKILL the command just before its Nth tracked write or sync (0: never)")
      ->capture_default_str();
  run_cmd->add_option("command", command, "the command and its arguments, after --")->required();

  CLI::App* apply_cmd = app.add_subcommand("apply", "lose the pending writes of a journal");
  apply_cmd->add_option("--journal", journal, "journal directory")->required();
  apply_cmd->add_option("--mode", mode, "none, all, prefix, subset or torn")->capture_default_str();
  apply_cmd->add_option("--seed", seed, "random seed")->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  if (run_cmd->parsed()) return run(dir, journal, kill_at, command);
  return apply(journal, mode, seed);
}
