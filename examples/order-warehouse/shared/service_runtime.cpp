#include "service_runtime.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

namespace orders_example {
namespace {

std::mutex out_mu;  // stdout and stderr lines come from several threads
std::string service_name = "service";

sigset_t stop_set() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGTERM);
  sigaddset(&s, SIGINT);
  return s;
}

}  // namespace

Flags::Flags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::fprintf(stderr, "expected --name value, got '%s'\n", a.c_str());
      std::exit(2);
    }
    values_[a.substr(2)] = argv[++i];
  }
}

std::string Flags::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::string Flags::require(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    std::fprintf(stderr, "missing --%s\n", name.c_str());
    std::exit(2);
  }
  return it->second;
}

long long Flags::number(const std::string& name, long long fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : std::stoll(it->second);
}

BrokerSettings broker_settings(const Flags& flags) {
  BrokerSettings settings;
  settings.broker = flags.require("broker");
  settings.tls_ca_file = flags.get("tls-ca", "");
  settings.user = flags.get("user", "");
  const std::string password_file = flags.get("password-file", "");
  if (settings.user.empty() != password_file.empty()) {
    std::fprintf(stderr, "--user and --password-file: give both or neither\n");
    std::exit(2);
  }
  if (password_file.empty()) return settings;
  std::ifstream in(password_file);
  std::getline(in, settings.password);
  if (!settings.password.empty() && settings.password.back() == '\r') settings.password.pop_back();  // from Windows
  if (settings.password.empty()) {
    std::fprintf(stderr, "--password-file: cannot read a password from the first line of %s\n", password_file.c_str());
    std::exit(2);
  }
  return settings;
}

void say(const std::string& line) {
  std::lock_guard lock(out_mu);
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

void set_service_name(const std::string& name) { service_name = name; }

void log_line(const std::string& text) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  std::lock_guard lock(out_mu);
  std::fprintf(stderr, "%lld %s %s\n", static_cast<long long>(ms), service_name.c_str(), text.c_str());
}

void block_stop_signals() {
  sigset_t s = stop_set();
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
}

void wait_for_stop_signal() {
  sigset_t s = stop_set();
  int sig = 0;
  while (sigwait(&s, &sig) != 0) {
  }
}

void pause_for_kill(const std::string& what) {
  say("paused " + what);
  log_line("paused " + what + ": waiting to be killed");
  for (;;) pause();
}

}  // namespace orders_example
