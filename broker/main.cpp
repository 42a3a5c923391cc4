// txmq-broker: reads its configuration, then serves until SIGINT or SIGTERM.

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "broker/broker.h"
#include "broker/storage/store.h"
#include "broker/storage/store_check.h"
#include "common/command_line.h"
#include "common/version.h"

namespace {

// --digest: what a stopped broker's store holds, per key space, and where its replication
// log ends, for comparing replicas (a leader's and its followers' stores hold the same
// state up to the commit index). Only an existing store: opening an empty directory would
// create one. Returns the exit code.
int print_digest(const txmq::broker::BrokerConfig& config) {
  namespace storage = txmq::broker::storage;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(std::filesystem::path(config.data_dir) / "data.mdb", ec)) {
    std::cerr << "txmq-broker: no store in " << config.data_dir << " (no data.mdb)\n";
    return 1;
  }
  // The store may log (an upgrade in place): to stderr, so that stdout is only the digest.
  spdlog::set_default_logger(spdlog::stderr_color_mt("txmq"));
  auto store = storage::Store::open({config.data_dir, config.storage_max_bytes, config.sync});
  if (!store) {
    std::cerr << "txmq-broker: " << store.error().message << "\n";
    return 1;
  }
  auto digests = (*store)->digest();
  if (!digests) {
    std::cerr << "txmq-broker: " << digests.error().message << "\n";
    return 1;
  }
  for (const auto& d : *digests) std::cout << d.key_space << " " << d.entries << " " << d.sha256 << "\n";
  const auto position = (*store)->log_position();
  std::cout << "last_index " << position.last_index << " epoch " << position.epoch << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using txmq::broker::BrokerConfig;
  CLI::App app{"txmq-broker: a transactional message broker"};
  app.set_version_flag("--version", std::string(txmq::kVersion));
  std::string config_file, data_dir, listen, metrics_listen, log_level;
  app.add_option("-c,--config", config_file, "TOML configuration file (see config/txmq-broker.toml)")
      ->check(CLI::ExistingFile);
  app.add_option("--data", data_dir, "data directory (broker.data_dir)");
  app.add_option("--listen", listen, "protocol address HOST:PORT, port 0 for any (broker.listen)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  bool no_metrics = false;
  app.add_option("--metrics-listen", metrics_listen, "metrics address HOST:PORT (broker.metrics_listen)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_flag("--no-metrics", no_metrics, "serve no metrics and keep none (as broker.metrics_listen = \"\")");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error (log.level)");
  bool allow_insecure = false;
  app.add_flag("--allow-insecure", allow_insecure,
               "serve a non-loopback --listen address without authentication (broker.allow_insecure)");
  bool check_store = false;
  app.add_flag("--check-store", check_store,
               "check the store in the data directory (read-only; safe beside a running broker), "
               "print what was found and exit: 0 passed, 1 problems found, 2 not readable");
  bool digest = false;
  app.add_flag("--digest", digest,
               "print the store's digest (per key space: name, entries, SHA-256; then "
               "\"last_index N epoch E\" of the replication log) and exit: 0, or 1 with the error. "
               "For a stopped broker's store: compares replicas");
  if (auto code = txmq::common::parse_command_line(app, argc, argv)) return *code;

  BrokerConfig config;
  if (!config_file.empty()) {
    auto loaded = txmq::broker::load_config_file(config_file);
    if (!loaded) {
      std::cerr << "txmq-broker: " << loaded.error().message << "\n";
      return 2;
    }
    config = std::move(*loaded);
  }
  if (!data_dir.empty()) config.data_dir = data_dir;
  if (!listen.empty()) config.listen = listen;
  if (!metrics_listen.empty()) config.metrics_listen = metrics_listen;
  if (no_metrics) config.metrics_listen.clear();
  if (!log_level.empty()) config.log_level = log_level;
  if (allow_insecure) config.allow_insecure = true;
  if (check_store) {
    auto report = txmq::broker::storage::check_store(config.data_dir);
    if (!report) {
      std::cerr << "txmq-broker: " << report.error().message << "\n";
      return 2;
    }
    std::cout << "store " << config.data_dir << ": " << report->describe();
    return report->ok() ? 0 : 1;
  }
  if (digest) return print_digest(config);
  if (auto st = txmq::broker::validate(config); !st) {
    std::cerr << "txmq-broker: " << st.error().message << "\n";
    return 2;
  }

  // Logs go to stderr: stdout carries only the machine-readable "listening on" line.
  auto logger = spdlog::stderr_color_mt("txmq");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  // A client that vanishes must surface as a write error, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);

  int code = 0;
  std::string restart;
  {
    txmq::broker::Broker broker(std::move(config));
    code = broker.run();
    restart = broker.restart_reason();
  }  // everything closed, the store included, before the exec
  if (restart.empty()) return code;
  // A leader that stepped down ([cluster]) starts again as this same process, with the same
  // arguments, and rejoins as a follower: none of its leading state survives, and its log
  // is truncated to the new leader's at its first fetch.
  spdlog::warn("restarting to rejoin the cluster as a follower ({})", restart);
  spdlog::default_logger()->flush();
  std::fflush(stdout);
  // By its path, so that the process keeps its name (an exec of /proc/self/exe is "exe").
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  ::execv(ec ? "/proc/self/exe" : self.c_str(), argv);
  spdlog::error("cannot restart: execv {}: {}", self, std::strerror(errno));
  return 1;
}
