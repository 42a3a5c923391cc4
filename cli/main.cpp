// txmq: the command-line tool for people and scripts. This file builds the command line and
// runs the chosen command; each command group lives in its own file (cli/command.h lists
// them, with the tool's exit codes).

#include <CLI/CLI.hpp>

#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "cli/command.h"
#include "common/command_line.h"
#include "common/version.h"

int main(int argc, char** argv) {
  using namespace txmq::cli;
  // A broker that goes away must surface as an error message, not a silent SIGPIPE exit.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"txmq: talk to a txmq broker"};
  app.set_version_flag("--version", std::string(txmq::kVersion));
  app.require_subcommand(1);
  GlobalOptions global;
  add_global_options(app, global);

  std::vector<std::unique_ptr<CommandGroup>> groups;
  groups.push_back(add_topic_commands(app));
  groups.push_back(add_produce_command(app));
  groups.push_back(add_consume_command(app));
  groups.push_back(add_group_commands(app));
  groups.push_back(add_dead_letter_commands(app));
  groups.push_back(add_transaction_commands(app));
  groups.push_back(add_stats_command(app));
  groups.push_back(add_users_commands(app));
  groups.push_back(add_cluster_commands(app));

  if (auto code = txmq::common::parse_command_line(app, argc, argv)) return *code;
  if (auto st = global.read_credentials(); !st) {
    fail(st.error());
    return 2;  // bad usage
  }
  for (const auto& group : groups)
    if (group->chosen()) return group->run(global);
  return 2;
}
