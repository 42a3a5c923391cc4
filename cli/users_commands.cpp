// txmq users add|passwd|remove|list: the users file a broker with SCRAM-SHA-256 reads. These
// commands edit the file and need no broker; the broker applies the change on SIGHUP.
//
// A password never comes from the command line, where `ps` and shell history show it:
// --password-file, else $TXMQ_PASSWORD, else stdin (asked twice without echo on a
// terminal, one line otherwise).

#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include "cli/command.h"
#include "common/names.h"
#include "common/scram.h"
#include "common/users_file.h"

namespace txmq::cli {
namespace {

namespace scram = txmq::common::scram;
using txmq::common::UsersFile;

constexpr const char* kReloadHint = "reload the broker with SIGHUP (kill -HUP <pid>) to apply";

struct UsersOptions {
  std::string user;                                      // add, passwd, remove
  std::string users_file;                                // --users-file
  std::string password_file;                             // --password-file; "": $TXMQ_PASSWORD, else stdin
  std::uint32_t iterations = scram::kDefaultIterations;  // add, passwd --iterations
};

std::string strip_line_end(std::string line) {
  if (!line.empty() && line.back() == '\n') line.pop_back();
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

// Reads one line from the terminal with echo off; restores the terminal whatever happens.
std::optional<std::string> read_hidden(const char* prompt) {
  std::fprintf(stderr, "%s", prompt);
  std::fflush(stderr);
  termios old{};
  const bool tty = ::tcgetattr(STDIN_FILENO, &old) == 0;
  if (tty) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  std::string line;
  const bool got = static_cast<bool>(std::getline(std::cin, line));
  if (tty) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
  std::fprintf(stderr, "\n");
  if (!got) return std::nullopt;
  return strip_line_end(line);
}

// The new password, from the first source given (see the top of the file).
Result<std::string> read_password(const UsersOptions& o) {
  auto invalid = [](std::string what) { return Error(ErrorCode::kInvalidArgument, std::move(what)); };
  std::string password;
  if (!o.password_file.empty()) {
    std::ifstream in(o.password_file);
    if (!in) return invalid("--password-file " + o.password_file + ": cannot read it");
    std::getline(in, password);
    password = strip_line_end(password);
  } else if (const char* env = std::getenv("TXMQ_PASSWORD"); env && *env) {
    password = env;
  } else if (::isatty(STDIN_FILENO)) {
    auto first = read_hidden("New password: ");
    auto second = first ? read_hidden("Repeat the password: ") : std::nullopt;
    if (!first || !second) return invalid("no password given");
    if (*first != *second) return invalid("the two passwords differ");
    password = *first;
  } else {
    if (!std::getline(std::cin, password)) return invalid("no password on stdin");
    password = strip_line_end(password);
  }
  if (password.empty()) return invalid("the password is empty");
  return password;
}

class UsersCommands final : public CommandGroup {
 public:
  explicit UsersCommands(CLI::App& app)
      : CommandGroup(add_group_of_commands(
            app, "users", "edit the users file of SCRAM-SHA-256 logins (needs no broker; SIGHUP it after)")) {
    add_ = add_changing_command("add", "add a user (creates the file, mode 0600, if missing)", true);
    passwd_ = add_changing_command("passwd", "change a user's password", true);
    remove_ = add_changing_command("remove", "remove a user", false);
    list_ = command_->add_subcommand("list", "the users in the file, one per line");
    add_users_file_option(list_);
  }

  int run(const GlobalOptions&) override {
    const bool exists = std::filesystem::exists(o_.users_file);
    if (!exists && !add_->parsed())
      return fail(Error(ErrorCode::kInvalidArgument, o_.users_file + ": no such users file"));
    auto file = exists ? UsersFile::load(o_.users_file) : UsersFile::parse("", o_.users_file);
    if (!file) return fail(file.error());

    if (list_->parsed()) {
      for (const auto& user : file->users()) std::printf("%s\n", user.c_str());
      return 0;
    }
    if (remove_->parsed()) {
      if (!file->remove(o_.user)) return no_such_user();
      return save(*file, "removed user '" + o_.user + "'");
    }
    const bool known = file->find(o_.user) != nullptr;
    if (add_->parsed() && known)
      return fail(Error(ErrorCode::kInvalidArgument,
                        "user '" + o_.user + "' already exists in " + o_.users_file + " (use `txmq users passwd`)"));
    if (passwd_->parsed() && !known) return no_such_user();
    // Refuse a bad name before asking for a password that would be thrown away.
    if (!txmq::common::valid_name(o_.user) || o_.user == txmq::common::kAnonymousUser)
      return fail(Error(ErrorCode::kInvalidArgument,
                        "user '" + o_.user + "': user names are " + txmq::common::kNameRule + ", and not 'anonymous'"));
    auto password = read_password(o_);
    if (!password) return fail(password.error());
    if (auto ok = file->set(o_.user, scram::derive(*password, o_.iterations)); !ok) return fail(ok.error());
    return save(*file, (add_->parsed() ? "added user '" : "changed the password of user '") + o_.user + "'");
  }

 private:
  void add_users_file_option(CLI::App* command) {
    command->add_option("--users-file", o_.users_file, "the users file (the broker's [auth] users_file)")->required();
  }

  CLI::App* add_changing_command(const std::string& name, const std::string& description, bool sets_password) {
    CLI::App* command = command_->add_subcommand(name, description);
    command->add_option("user", o_.user, "user name")->required();
    add_users_file_option(command);
    if (sets_password) {
      command->add_option("--password-file", o_.password_file,
                          "read the password from this file's first line (default: $TXMQ_PASSWORD, else stdin)");
      command->add_option("--iterations", o_.iterations, "PBKDF2 iterations (default 4096)")
          ->check(CLI::Range(scram::kMinIterations, scram::kMaxIterations));
    }
    return command;
  }

  int no_such_user() {
    return fail(Error(ErrorCode::kInvalidArgument, "no user '" + o_.user + "' in " + o_.users_file));
  }

  int save(const UsersFile& file, const std::string& change) {
    if (auto ok = file.save(o_.users_file); !ok) return fail(ok.error());
    std::printf("%s in %s; %s\n", change.c_str(), o_.users_file.c_str(), kReloadHint);
    return 0;
  }

  UsersOptions o_;
  CLI::App* add_;
  CLI::App* passwd_;
  CLI::App* remove_;
  CLI::App* list_;
};

}  // namespace

std::unique_ptr<CommandGroup> add_users_commands(CLI::App& app) { return std::make_unique<UsersCommands>(app); }

}  // namespace txmq::cli
