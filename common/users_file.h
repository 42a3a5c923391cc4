#pragma once
// The users file: who may log in to a broker with SCRAM-SHA-256, as stored credentials only
// (common/scram.h), never a password. The broker reads it at start and on SIGHUP; the
// `txmq users` command adds, removes and re-keys users in it.
//
// Format, one user per line; blank lines and lines starting with '#' are comments (kept
// when the file is rewritten):
//   orders:SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>
// A user name follows the broker's name rule (letters, digits, '.', '_', '-'; 1-249) and is
// not "anonymous", which names unauthenticated connections in the ACL.
//
// Errors: load and parse give kInvalidArgument naming the file, the line number and what is
// wrong (a duplicate user, a bad name, a damaged secret), never a secret's bytes. save()
// writes a temporary file with mode 0600 in the same directory, fsyncs it and renames it
// over the old one (a reader sees the old file or the new, never half of one); its errors
// are kStorageError naming the path and errno's text.
// Concurrency: none; a value.

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/scram.h"

namespace txmq::common {

class UsersFile {
 public:
  static Result<UsersFile> load(const std::string& path);
  // origin names the text in errors (the path).
  static Result<UsersFile> parse(std::string_view text, std::string_view origin);

  // Null when there is no such user.
  const scram::StoredCredentials* find(std::string_view user) const;
  // User names in file order.
  std::vector<std::string> users() const;
  std::size_t size() const;

  // Adds the user or replaces its credentials (in place). kInvalidArgument for a name the
  // rule above refuses.
  Status set(std::string_view user, const scram::StoredCredentials& credentials);
  // False when there was no such user.
  bool remove(std::string_view user);

  std::string text() const;
  Status save(const std::string& path) const;

 private:
  struct Line {
    std::string user;  // empty: a comment or blank line, kept as `raw`
    std::string raw;
    scram::StoredCredentials credentials;
  };
  std::vector<Line> lines_;
};

// The user name reserved for connections that did not authenticate.
inline constexpr std::string_view kAnonymousUser = "anonymous";

}  // namespace txmq::common
