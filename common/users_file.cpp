#include "common/users_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/names.h"

namespace txmq::common {
namespace {

Error storage_error(const std::string& path, const std::string& what) {
  return Error(ErrorCode::kStorageError, path + ": " + what + ": " + std::strerror(errno));
}

Status check_user_name(std::string_view user) {
  if (!valid_name(user)) return Error(ErrorCode::kInvalidArgument, std::string("user names are ") + kNameRule);
  if (user == kAnonymousUser)
    return Error(ErrorCode::kInvalidArgument,
                 "'anonymous' is reserved for connections that did not authenticate; choose another user name");
  return {};
}

// Writes all of text to fd; false with errno set.
bool write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace

Result<UsersFile> UsersFile::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(ErrorCode::kInvalidArgument, path + ": cannot read: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

Result<UsersFile> UsersFile::parse(std::string_view text, std::string_view origin) {
  UsersFile file;
  std::size_t number = 0;
  while (!text.empty()) {
    const std::size_t newline = text.find('\n');
    std::string_view raw = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    ++number;
    auto invalid = [&](const std::string& what) {
      return Error(ErrorCode::kInvalidArgument, std::string(origin) + ":" + std::to_string(number) + ": " + what);
    };

    std::string_view content = raw;
    if (content.ends_with('\r')) content.remove_suffix(1);
    const std::size_t first = content.find_first_not_of(" \t");
    if (first == std::string_view::npos || content[first] == '#') {
      file.lines_.push_back({"", std::string(raw), {}});
      continue;
    }
    const std::size_t colon = content.find(':');
    if (colon == std::string_view::npos) return invalid("expected USER:SCRAM-SHA-256$...");
    const std::string_view user = content.substr(0, colon);
    // The name may be echoed: it is not secret, and the operator needs to find the line.
    if (auto ok = check_user_name(user); !ok) return invalid("user '" + std::string(user) + "': " + ok.error().message);
    if (file.find(user)) return invalid("user '" + std::string(user) + "' appears twice");
    auto credentials = scram::from_text(content.substr(colon + 1));
    // from_text's messages never hold the secret's bytes.
    if (!credentials) return invalid("user '" + std::string(user) + "': " + credentials.error().message);
    file.lines_.push_back({std::string(user), std::string(raw), std::move(*credentials)});
  }
  return file;
}

const scram::StoredCredentials* UsersFile::find(std::string_view user) const {
  for (const Line& line : lines_)
    if (!line.user.empty() && line.user == user) return &line.credentials;
  return nullptr;
}

std::vector<std::string> UsersFile::users() const {
  std::vector<std::string> out;
  for (const Line& line : lines_)
    if (!line.user.empty()) out.push_back(line.user);
  return out;
}

std::size_t UsersFile::size() const {
  return static_cast<std::size_t>(
      std::count_if(lines_.begin(), lines_.end(), [](const Line& line) { return !line.user.empty(); }));
}

Status UsersFile::set(std::string_view user, const scram::StoredCredentials& credentials) {
  if (auto ok = check_user_name(user); !ok) return ok;
  std::string raw = std::string(user) + ":" + scram::to_text(credentials);
  for (Line& line : lines_) {
    if (line.user == user) {
      line.raw = std::move(raw);
      line.credentials = credentials;
      return {};
    }
  }
  lines_.push_back({std::string(user), std::move(raw), credentials});
  return {};
}

bool UsersFile::remove(std::string_view user) {
  auto it = std::find_if(lines_.begin(), lines_.end(),
                         [&](const Line& line) { return !line.user.empty() && line.user == user; });
  if (it == lines_.end()) return false;
  lines_.erase(it);
  return true;
}

std::string UsersFile::text() const {
  std::string out;
  for (const Line& line : lines_) out += line.raw + "\n";
  return out;
}

Status UsersFile::save(const std::string& path) const {
  // A temporary file beside the target, so that rename() replaces it in one step on the
  // same file system; mkstemp creates it 0600 and fchmod makes sure whatever the umask.
  const std::size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  std::string temp = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) return storage_error(path, "cannot create a temporary file beside it");
  auto abandon = [&](const char* what) {
    Error e = storage_error(path, what);
    ::close(fd);
    ::unlink(temp.c_str());
    return e;
  };
  if (::fchmod(fd, 0600) != 0) return abandon("cannot set mode 0600");
  if (!write_all(fd, text())) return abandon("cannot write");
  if (::fsync(fd) != 0) return abandon("cannot fsync");
  if (::close(fd) != 0) {
    Error e = storage_error(path, "cannot close");
    ::unlink(temp.c_str());
    return e;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    Error e = storage_error(path, "cannot rename the temporary file over it");
    ::unlink(temp.c_str());
    return e;
  }
  // The rename itself lasts only once the directory is on disk.
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

}  // namespace txmq::common
