#pragma once
// The audit trail: operator actions (topic create and delete, group configuration,
// redrive, transactions ended by an operator, user and rule changes) as one JSON object per
// line, appended to audit.file:
//   {"time":"2026-12-05T18:40:00.123Z","user":"ops","peer":"127.0.0.1:40312",
//    "action":"topic.delete","resource":"topic:orders","outcome":"ok"}
// outcome is "ok" or the error the request was answered with ("NotAuthorized: user 'ops'
// may not delete topic 'orders'"). A request is recorded when it is answered, so its
// outcome is the one the client saw; one whose connection went before the answer is
// recorded with the outcome "unanswered: connection closed".
//
// A file the broker creates is fsynced with its directory at once, so that its name survives
// a power loss as the store's files do. Lines are written with one write(2) on an O_APPEND descriptor, so a line is never torn
// by another writer, and flushed to the kernel at once (not fsynced: an audit line of a
// request in flight at a power loss may be lost, the request's own outcome then is too).
// Errors: open() gives kInvalidArgument naming the file; a failed write is logged once
// per minute and counted, and the broker goes on.
// Concurrency: loop thread only.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"

namespace txmq::broker {

struct AuditEntry {
  std::string user;      // "" when authentication is off or the broker itself acted
  std::string peer;      // "" for the broker's own actions (a reload)
  std::string action;    // "topic.create", "user.add", ...
  std::string resource;  // "topic:orders", a user name, a file
  std::string outcome;   // "ok" or the error
};

class AuditLog {
 public:
  static Result<std::unique_ptr<AuditLog>> open(const std::string& path);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  void record(const AuditEntry& entry);
  std::uint64_t write_failures() const { return write_failures_; }
  const std::string& path() const { return path_; }

 private:
  AuditLog(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
  std::uint64_t write_failures_ = 0;
  std::chrono::steady_clock::time_point last_error_log_{};
};

}  // namespace txmq::broker
