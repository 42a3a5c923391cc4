#include "cli/command.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "common/version.h"

namespace txmq::cli {
namespace {

// How long the tool waits for a broker it has not reached yet (one that answers slowly
// once connected still gets --request-timeout-ms per request).
constexpr Millis kFirstConnectTimeout{1000};

std::string broker_address(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("TXMQ_BROKER"); env && *env) return env;
  return std::string(txmq::kDefaultBrokerAddress);
}

}  // namespace

txmq::client::ClientOptions GlobalOptions::client_options() const {
  txmq::client::ClientOptions o;
  o.broker = broker_address(broker);
  o.client_name = "txmq-cli";
  o.request_timeout = timeout();
  // A person or script waiting on the tool wants "connection refused" or "name not
  // found" now, not after the request timeout; the libraries' default keeps waiting.
  o.first_connect_timeout = std::min(timeout(), kFirstConnectTimeout);
  return o;
}

void add_global_options(CLI::App& app, GlobalOptions& global) {
  app.add_option("--broker", global.broker,
                 "broker host:port, a.b.c.d:port or [v6]:port (default: $TXMQ_BROKER, else 127.0.0.1:7411)");
  app.add_option("--request-timeout-ms", global.request_timeout_ms, "how long to wait for each answer")
      ->check(CLI::PositiveNumber);
}

CLI::App* add_group_of_commands(CLI::App& app, const std::string& name, const std::string& description) {
  CLI::App* group = app.add_subcommand(name, description);
  group->require_subcommand(1);
  return group;
}

int fail(const txmq::Error& e) {
  std::cerr << "txmq: " << e.describe() << "\n";
  return 1;
}

}  // namespace txmq::cli
