// txmq-notifier: delivers messages as HTTP callbacks (see README "Notifier").

#include <CLI/CLI.hpp>
#include <curl/curl.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <iostream>

#include "common/command_line.h"
#include "common/version.h"
#include "notifier/notifier.h"

int main(int argc, char** argv) {
  CLI::App app{"txmq-notifier: delivers messages from txmq topics as signed HTTP callbacks"};
  app.set_version_flag("--version", std::string(txmq::kVersion));
  std::string config_file, broker, metrics_listen, log_level;
  app.add_option("-c,--config", config_file, "TOML configuration file (see config/txmq-notifier.toml)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--broker", broker, "broker address HOST:PORT (notifier.broker)");
  app.add_option("--metrics-listen", metrics_listen, "metrics address HOST:PORT, port 0 for any (notifier.metrics_listen)");
  bool no_metrics = false;
  app.add_flag("--no-metrics", no_metrics, "serve no metrics (as notifier.metrics_listen = \"\")");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error (notifier.log_level)");
  if (auto code = txmq::common::parse_command_line(app, argc, argv)) return *code;

  auto loaded = txmq::notifier::load_config_file(config_file);
  if (!loaded) {
    std::cerr << "txmq-notifier: " << loaded.error().message << "\n";
    return 2;
  }
  auto config = std::move(*loaded);
  if (!broker.empty()) config.broker = broker;
  if (!metrics_listen.empty()) config.metrics_listen = metrics_listen;
  if (no_metrics) config.metrics_listen.clear();
  if (!log_level.empty()) config.log_level = log_level;
  if (auto st = txmq::notifier::validate(config); !st) {
    std::cerr << "txmq-notifier: " << st.error().message << "\n";
    return 2;
  }

  // Logs go to stderr: stdout carries only the machine-readable "metrics on" and "ready".
  spdlog::set_default_logger(spdlog::stderr_color_mt("txmq-notifier"));
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  if (const std::string exposed = txmq::notifier::secret_exposure(config_file, config); !exposed.empty())
    spdlog::warn("{}", exposed);
  std::signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  int code;
  {
    txmq::notifier::Notifier notifier(std::move(config));
    code = notifier.run();
  }
  curl_global_cleanup();
  return code;
}
