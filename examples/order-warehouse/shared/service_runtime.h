#pragma once
// The process plumbing the three services share, so that each main.cpp shows only its flow:
// flags, the stdout protocol the scenario runner reads, log lines, stopping on SIGTERM.
//
// Stdout carries only lines meant for the runner ("listening on 127.0.0.1:PORT", "ready",
// "paused ..."); logs go to stderr.

#include <chrono>
#include <map>
#include <string>

#include "txmq/client.h"

namespace orders_example {

// --name value pairs. Unknown names are kept; a missing required one exits with code 2.
class Flags {
 public:
  Flags(int argc, char** argv);
  std::string get(const std::string& name, const std::string& fallback) const;
  std::string require(const std::string& name) const;
  long long number(const std::string& name, long long fallback) const;

 private:
  std::map<std::string, std::string> values_;
};

// One line on stdout, flushed at once (the runner waits for it).
void say(const std::string& line);
// One log line on stderr: "<unix ms> <service> <text>".
void log_line(const std::string& text);
void set_service_name(const std::string& name);

// Blocks SIGTERM and SIGINT in every thread; call first in main, before any thread starts.
void block_stop_signals();
// Waits for SIGTERM or SIGINT.
void wait_for_stop_signal();

// "paused <what>", then blocks until the runner SIGKILLs the process: the crash points
// of the fault injection. Never returns.
[[noreturn]] void pause_for_kill(const std::string& what);

// Client options every service uses: reconnect quickly, so that the broker's restart in
// the scenario costs the services a second, not the library's default backoff.
template <typename Options>
Options client_options(const std::string& broker, const std::string& name) {
  Options o;
  o.broker = broker;
  o.client_name = name;
  o.request_timeout = std::chrono::milliseconds(5000);
  o.reconnect_initial = std::chrono::milliseconds(50);
  o.reconnect_max = std::chrono::milliseconds(500);
  return o;
}

}  // namespace orders_example
