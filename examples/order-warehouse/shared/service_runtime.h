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

// How a service reaches the broker, from its flags:
//   --broker HOST:PORT               required
//   --tls-ca FILE                    TLS, verifying the broker's certificate with this CA
//   --user NAME --password-file FILE SCRAM-SHA-256 as NAME, the password the file's first line
// Without the last three the connection is plain and anonymous, as to a broker with
// neither TLS nor authentication. A user without a password file (or the reverse), or a
// password file that cannot be read, exits with code 2.
struct BrokerSettings {
  std::string broker;       // HOST:PORT
  std::string tls_ca_file;  // "": plain TCP
  std::string user;         // "": no authentication
  std::string password;     // the password file's first line; never a flag, which ps shows
};
BrokerSettings broker_settings(const Flags& flags);

// Client options every service uses: the broker settings above, and a quick reconnect, so
// that the broker's restart in the scenario costs the services a second, not the
// library's default backoff.
template <typename Options>
Options client_options(const BrokerSettings& settings, const std::string& name) {
  Options o;
  o.broker = settings.broker;
  o.client_name = name;
  o.tls.enabled = !settings.tls_ca_file.empty();
  o.tls.ca_file = settings.tls_ca_file;
  o.user = settings.user;
  o.password = settings.password;
  o.request_timeout = std::chrono::milliseconds(5000);
  o.reconnect_initial = std::chrono::milliseconds(50);
  o.reconnect_max = std::chrono::milliseconds(500);
  return o;
}

}  // namespace orders_example
