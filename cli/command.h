#pragma once
// What every command of the txmq tool shares: the global flags, the client options built
// from them, the error exit, and the shape of a command group (one top-level subcommand
// and its own subcommands, each group in its own file with its own options).
//
// Exit codes: 0 success; 1 the broker answered with an error, could not be reached (within
// about a second: refused, unreachable, name not found) or a message was not confirmed;
// 2 bad usage. Errors go to stderr as "txmq: Code: message".

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "txmq/client.h"

namespace txmq::cli {

using txmq::client::Millis;

// The flags given before the subcommand.
struct GlobalOptions {
  std::string broker;               // --broker; "": $TXMQ_BROKER, else the default address
  long request_timeout_ms = 10000;  // --request-timeout-ms: the wait for each answer
  // TLS: each flag, when not given, from its environment variable.
  bool tls = false;                 // --tls; else $TXMQ_TLS=1 (implied by any file below)
  std::string tls_ca;               // --tls-ca; else $TXMQ_TLS_CA
  std::string tls_cert;             // --tls-cert; else $TXMQ_TLS_CERT
  std::string tls_key;              // --tls-key; else $TXMQ_TLS_KEY
  // Authentication (SCRAM-SHA-256): never a password on the command line, where ps shows it.
  std::string user;                 // --user; else $TXMQ_USER
  std::string password_file;        // --password-file; else $TXMQ_PASSWORD_FILE
  std::string password;             // read_credentials(): the file's first line, else $TXMQ_PASSWORD

  Millis timeout() const { return Millis(request_timeout_ms); }
  // Fills user and password from the flags and the environment. kInvalidArgument: a user
  // without a password, an unreadable or empty password file.
  Status read_credentials();
  // Options for a Producer, Consumer or Admin of the tool.
  txmq::client::ClientOptions client_options() const;
};

// Adds --broker, --request-timeout-ms, the TLS flags, --user and --password-file to the tool.
void add_global_options(CLI::App& app, GlobalOptions& global);

// Prints "txmq: Code: message" to stderr and returns exit code 1.
int fail(const txmq::Error& e);

// One top-level subcommand (topic, produce, consume, ...). Its constructor adds the
// subcommand, its own subcommands and their options to the app, bound to members; so a
// group is neither copied nor moved once made. After parsing, main runs the chosen one.
class CommandGroup {
 public:
  explicit CommandGroup(CLI::App* command) : command_(command) {}
  CommandGroup(const CommandGroup&) = delete;
  CommandGroup& operator=(const CommandGroup&) = delete;
  virtual ~CommandGroup() = default;

  // Whether this group's subcommand was on the command line.
  bool chosen() const { return command_->parsed(); }
  // Runs the parsed command; returns the tool's exit code.
  virtual int run(const GlobalOptions& global) = 0;

 protected:
  CLI::App* command_;  // owned by the app
};

// Adds the top-level subcommand of a group whose own subcommands are its commands (topic
// create, topic list, ...): one of them is required.
CLI::App* add_group_of_commands(CLI::App& app, const std::string& name, const std::string& description);

// In the order `txmq --help` lists them.
std::unique_ptr<CommandGroup> add_topic_commands(CLI::App& app);
std::unique_ptr<CommandGroup> add_produce_command(CLI::App& app);
std::unique_ptr<CommandGroup> add_consume_command(CLI::App& app);
std::unique_ptr<CommandGroup> add_group_commands(CLI::App& app);
std::unique_ptr<CommandGroup> add_dead_letter_commands(CLI::App& app);
std::unique_ptr<CommandGroup> add_transaction_commands(CLI::App& app);
std::unique_ptr<CommandGroup> add_stats_command(CLI::App& app);
std::unique_ptr<CommandGroup> add_users_commands(CLI::App& app);
std::unique_ptr<CommandGroup> add_cluster_commands(CLI::App& app);

}  // namespace txmq::cli
