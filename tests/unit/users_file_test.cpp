// common/users_file: parsing, editing with comments kept, and saving 0600 in one step.

#include "common/users_file.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/broker_process.h"

using namespace txmq;
using namespace txmq::common;
using txmq::test::TempDir;

namespace {

// RFC 7677's example user, with the text of its secret.
const std::string kSecret =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

const std::string kText = "# users of the order system\n"
                          "orders:" + kSecret + "\n"
                          "\n"
                          "  # the warehouse, added in March\n"
                          "warehouse:" + kSecret + "\n";

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Whether the message leaks any part of the secret's salt or keys.
bool holds_secret(const std::string& message) {
  return message.find("W22ZaJ0S") != std::string::npos || message.find("WG5d8oPm") != std::string::npos ||
         message.find("wfPLwcE6") != std::string::npos;
}

}  // namespace

TEST_CASE("parse reads users in file order and skips comments and blank lines") {
  auto file = UsersFile::parse(kText, "users.txt");
  REQUIRE(file.ok());
  CHECK(file->size() == 2);
  CHECK(file->users() == std::vector<std::string>{"orders", "warehouse"});
  const auto* orders = file->find("orders");
  REQUIRE(orders != nullptr);
  CHECK(orders->iterations == 4096);
  CHECK(scram::to_text(*orders) == kSecret);
  CHECK(file->find("points") == nullptr);
  CHECK(file->find("") == nullptr);
  CHECK(file->text() == kText);
}

TEST_CASE("set replaces in place and appends; remove drops the line; comments stay") {
  auto file = UsersFile::parse(kText, "users.txt");
  REQUIRE(file.ok());
  const scram::StoredCredentials fresh = scram::derive("new password", scram::kDefaultIterations);
  REQUIRE(file->set("orders", fresh).ok());
  CHECK(*file->find("orders") == fresh);
  REQUIRE(file->set("points", fresh).ok());
  CHECK(file->users() == std::vector<std::string>{"orders", "warehouse", "points"});
  CHECK(file->remove("warehouse"));
  CHECK_FALSE(file->remove("warehouse"));
  CHECK(file->text() == "# users of the order system\n"
                        "orders:" + scram::to_text(fresh) + "\n"
                        "\n"
                        "  # the warehouse, added in March\n"
                        "points:" + scram::to_text(fresh) + "\n");
  auto again = UsersFile::parse(file->text(), "users.txt");
  REQUIRE(again.ok());
  CHECK(*again->find("points") == fresh);
}

TEST_CASE("a duplicate user is refused with its line number") {
  auto file = UsersFile::parse(kText + "orders:" + kSecret + "\n", "users.txt");
  REQUIRE(!file.ok());
  CHECK(file.error().code == ErrorCode::kInvalidArgument);
  CHECK(file.error().message.find("users.txt:6:") == 0);
  CHECK(file.error().message.find("orders") != std::string::npos);
  CHECK(file.error().message.find("twice") != std::string::npos);
}

TEST_CASE("bad names, 'anonymous' and damaged secrets are refused, naming the line and never the secret") {
  for (const std::string& line : std::vector<std::string>{"bad name:" + kSecret, "a/b:" + kSecret, "..:" + kSecret, ":" + kSecret,
                                 "anonymous:" + kSecret, "orders", "orders:" + kSecret.substr(0, 60),
                                 "orders:" + kSecret + "x", "orders:SCRAM-SHA-256$100" + kSecret.substr(18)}) {
    CAPTURE(line);
    auto file = UsersFile::parse("# first\n" + line + "\n", "users.txt");
    REQUIRE(!file.ok());
    CHECK(file.error().code == ErrorCode::kInvalidArgument);
    CHECK(file.error().message.find("users.txt:2:") == 0);
    CHECK_FALSE(holds_secret(file.error().message));
  }
  auto file = UsersFile::parse("", "users.txt");
  REQUIRE(file.ok());
  const auto c = scram::derive("pw", scram::kDefaultIterations);
  CHECK(file->set("anonymous", c).error().code == ErrorCode::kInvalidArgument);
  CHECK(file->set("a b", c).error().code == ErrorCode::kInvalidArgument);
  CHECK(file->set("", c).error().code == ErrorCode::kInvalidArgument);
  CHECK(file->size() == 0);
}

TEST_CASE("save writes mode 0600 whatever the umask, and load reads back the same") {
  TempDir dir("txmq-users");
  const std::string path = dir.file("users");
  auto file = UsersFile::parse(kText, path);
  REQUIRE(file.ok());
  const mode_t old_mask = ::umask(0);
  const Status saved = file->save(path);
  ::umask(old_mask);
  REQUIRE(saved.ok());
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(read(path) == kText);
  auto loaded = UsersFile::load(path);
  REQUIRE(loaded.ok());
  CHECK(loaded->text() == file->text());
  CHECK(loaded->users() == file->users());
  // Only the file itself is left: the temporary one was renamed over it.
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1);
}

TEST_CASE("save replaces the file whole and, when it cannot, leaves the old one") {
  TempDir dir("txmq-users");
  const std::string path = dir.file("users");
  auto file = UsersFile::parse(kText, path);
  REQUIRE(file.ok());
  REQUIRE(file->save(path).ok());
  REQUIRE(file->remove("orders"));
  REQUIRE(file->save(path).ok());
  CHECK(read(path) == file->text());

  // A read-only directory (root ignores the mode, so skip the check there).
  if (::geteuid() != 0) {
    REQUIRE(::chmod(dir.path().c_str(), 0500) == 0);
    REQUIRE(file->set("points", scram::derive("pw", scram::kDefaultIterations)).ok());
    const Status saved = file->save(path);
    ::chmod(dir.path().c_str(), 0700);
    REQUIRE(!saved.ok());
    CHECK(saved.error().code == ErrorCode::kStorageError);
    CHECK(saved.error().message.find(path) == 0);
    CHECK(read(path).find("points") == std::string::npos);
    CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1);
  }
}

TEST_CASE("load names the path of a file it cannot read") {
  TempDir dir("txmq-users");
  auto file = UsersFile::load(dir.file("missing"));
  REQUIRE(!file.ok());
  CHECK(file.error().code == ErrorCode::kInvalidArgument);
  CHECK(file.error().message.find(dir.file("missing")) == 0);
}
