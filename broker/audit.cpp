#include "broker/audit.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "common/json.h"

namespace txmq::broker {
namespace {

// "2026-12-05T18:40:00.123Z"
std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace

Result<std::unique_ptr<AuditLog>> AuditLog::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  const bool created = fd >= 0;
  if (!created && errno == EEXIST) fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0)
    return Error(ErrorCode::kInvalidArgument, "audit.file: cannot open " + path + ": " + std::strerror(errno));
  if (created) {
    // A new file's name must survive a power loss like the store's files beside it do.
    const std::string dir = std::filesystem::path(path).parent_path().string();
    const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (::fsync(fd) != 0 || dfd < 0 || ::fsync(dfd) != 0) {
      const std::string why = std::strerror(errno);
      if (dfd >= 0) ::close(dfd);
      ::close(fd);
      return Error(ErrorCode::kInvalidArgument, "audit.file: cannot sync " + path + " and its directory: " + why);
    }
    ::close(dfd);
  }
  return std::unique_ptr<AuditLog>(new AuditLog(path, fd));
}

AuditLog::~AuditLog() { ::close(fd_); }

void AuditLog::record(const AuditEntry& e) {
  using common::json_string;
  std::string line = "{\"time\":\"" + utc_now() + "\",\"user\":" + json_string(e.user) +
                     ",\"peer\":" + json_string(e.peer) + ",\"action\":" + json_string(e.action) +
                     ",\"resource\":" + json_string(e.resource) + ",\"outcome\":" + json_string(e.outcome) + "}\n";
  const ssize_t n = ::write(fd_, line.data(), line.size());
  if (n == static_cast<ssize_t>(line.size())) return;
  ++write_failures_;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_error_log_ >= std::chrono::minutes(1)) {
    last_error_log_ = now;
    spdlog::error("audit.file {}: cannot write: {} ({} lines lost so far)", path_,
                  n < 0 ? std::strerror(errno) : "short write", write_failures_);
  }
}

}  // namespace txmq::broker
