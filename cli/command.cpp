#include "cli/command.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "common/version.h"

namespace txmq::cli {
namespace {

// How long the tool waits for a broker it has not reached yet (one that answers slowly
// once connected still gets --request-timeout-ms per request).
constexpr Millis kFirstConnectTimeout{1000};

// The flag when given, else the environment variable when set, else fallback.
std::string flag_or_env(const std::string& flag, const char* env, std::string fallback = "") {
  if (!flag.empty()) return flag;
  if (const char* value = std::getenv(env); value && *value) return value;
  return fallback;
}

}  // namespace

txmq::client::ClientOptions GlobalOptions::client_options() const {
  txmq::client::ClientOptions o;
  o.broker = flag_or_env(broker, "TXMQ_BROKER", std::string(txmq::kDefaultBrokerAddress));
  o.tls.ca_file = flag_or_env(tls_ca, "TXMQ_TLS_CA");
  o.tls.cert_file = flag_or_env(tls_cert, "TXMQ_TLS_CERT");
  o.tls.key_file = flag_or_env(tls_key, "TXMQ_TLS_KEY");
  // A CA or a certificate means TLS: nobody gives one to talk in plain text.
  o.tls.enabled = tls || flag_or_env("", "TXMQ_TLS") == "1" || !o.tls.ca_file.empty() || !o.tls.cert_file.empty();
  o.user = user;
  o.password = password;
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
  app.add_flag("--tls", global.tls, "connect with TLS (default: $TXMQ_TLS=1, or implied by --tls-ca or --tls-cert)");
  app.add_option("--tls-ca", global.tls_ca,
                 "PEM file of the CA that signed the broker's certificate (default: $TXMQ_TLS_CA, else the "
                 "system's CAs)");
  app.add_option("--tls-cert", global.tls_cert,
                 "PEM client certificate, for a broker that asks for one (default: $TXMQ_TLS_CERT)");
  app.add_option("--tls-key", global.tls_key, "PEM private key of --tls-cert (default: $TXMQ_TLS_KEY)");
  app.add_option("--user", global.user,
                 "user to authenticate as with SCRAM-SHA-256, for a broker with auth.enabled (default: $TXMQ_USER)");
  app.add_option("--password-file", global.password_file,
                 "file whose first line is --user's password (default: $TXMQ_PASSWORD_FILE, else the password "
                 "from $TXMQ_PASSWORD; never on the command line)");
}

CLI::App* add_group_of_commands(CLI::App& app, const std::string& name, const std::string& description) {
  CLI::App* group = app.add_subcommand(name, description);
  group->require_subcommand(1);
  return group;
}

Status GlobalOptions::read_credentials() {
  user = flag_or_env(user, "TXMQ_USER");
  password_file = flag_or_env(password_file, "TXMQ_PASSWORD_FILE");
  if (user.empty()) {
    if (!password_file.empty())
      return Error(ErrorCode::kInvalidArgument, "--password-file needs --user (or $TXMQ_USER)");
    return {};
  }
  if (!password_file.empty()) {
    std::ifstream in(password_file);
    if (!in || !std::getline(in, password))
      return Error(ErrorCode::kInvalidArgument, "cannot read a password from " + password_file);
    if (!password.empty() && password.back() == '\r') password.pop_back();
  } else {
    password = flag_or_env("", "TXMQ_PASSWORD");
  }
  if (password.empty())
    return Error(ErrorCode::kInvalidArgument,
                 "--user " + user + " needs a password: --password-file FILE, $TXMQ_PASSWORD_FILE or $TXMQ_PASSWORD");
  return {};
}

int fail(const txmq::Error& e) {
  std::cerr << "txmq: " << e.describe() << "\n";
  return 1;
}

}  // namespace txmq::cli
