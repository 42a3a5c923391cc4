// A program the bench starts and stops: the broker under test, the notifier processes.
#pragma once

#include <sys/types.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace txmq::bench {

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();  // SIGKILLs one still running

  // Starts args[0] with args, its stdout piped to us.
  bool spawn(const std::vector<std::string>& args);
  // The next line of its stdout without the line end; nullopt at EOF. Blocks until one comes.
  std::optional<std::string> next_line();
  // Reads lines until one starts with prefix (true), EOF or timeout_s passed (false); the
  // timeout is checked between lines.
  bool wait_for_line(const std::string& prefix, int timeout_s);
  // SIGTERM, then its exit code (128 + signal when a signal ended it); -1 when not running.
  int stop();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
};

}  // namespace txmq::bench
