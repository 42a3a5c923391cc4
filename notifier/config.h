// txmq-notifier's configuration: where the broker is, and one subscription per callback
// target. Read from TOML (config/txmq-notifier.toml documents every key and its default).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "notifier/url.h"
#include "txmq/client.h"

namespace txmq::notifier {

using Millis = std::chrono::milliseconds;

// One topic consumed by one group, each message POSTed to one endpoint.
struct SubscriptionConfig {
  std::string name;         // for logs and metric labels; unique
  std::string topic;        // consumed...
  std::string group;        // ...as this consumer group (owned by the notifier)
  std::string url;          // the endpoint; or, when empty,
  std::string url_header;   // the message header holding the endpoint, which must fall
  std::vector<std::string> allowed_urls;  // under one of these (else: given up)
  // With url_header: whether a message's URL may reach loopback, private, link-local and
  // other special-purpose addresses (address_range.h). An allowed_urls entry whose host is
  // an IP literal allows its own address regardless; a fixed url is always allowed.
  bool allow_private_networks = false;
  std::size_t max_url_bytes = 2048;           // longer URLs are given up (url_invalid)
  std::uint32_t max_endpoint_series = 100;    // endpoint label values; the rest are "other"
  std::uint32_t max_endpoints = 1000;         // endpoint states (breaker, slots) kept
  std::uint32_t max_attempts = 8;         // HTTP attempts before giving up
  // Delay after failed attempt k (1-based) is schedule[k-1]; the last repeats. Svix's
  // schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, about 27.6 h in all.
  std::vector<Millis> schedule{Millis(5'000),      Millis(300'000),    Millis(1'800'000), Millis(7'200'000),
                               Millis(18'000'000), Millis(36'000'000), Millis(36'000'000)};
  double jitter = 0.2;                    // each delay varied by +-20%
  Millis max_retry_after{3'600'000};      // a Retry-After stretches a delay up to this
  Millis request_timeout{15'000};         // whole request, connect included
  std::uint32_t concurrency = 16;         // requests in flight per endpoint
  std::string secret;                     // "whsec_<base64>": sign requests; "": unsigned
  std::string secret_env;                 // or the environment variable holding it (set at start)
  std::string ca_file;                    // PEM CAs for https endpoints; "": the system's
  std::string success_body;               // "": any 2xx succeeds; else 2xx and this body
  std::string content_type = "application/octet-stream";  // unless the message says
  std::string gave_up_topic;              // give-up records; default "<group>.gave-up", txmq::gave_up_topic
  std::size_t max_response_bytes = 64 * 1024;  // response body read up to this
  std::uint32_t breaker_failures = 5;     // consecutive failures that open the breaker
  Millis breaker_cooldown{30'000};        // open this long, then one probe

  // Filled by validate(): the parsed forms of url and allowed_urls.
  Url endpoint;                       // url, when set
  std::vector<AllowedUrl> allowed;    // allowed_urls
};

struct NotifierConfig {
  std::string broker = "127.0.0.1:7411";
  // TLS to the broker ([notifier] tls, tls_ca_file, tls_cert_file, tls_key_file): a CA or
  // a certificate implies tls, as the txmq tool's flags do; validate() checks the files.
  client::TlsOptions broker_tls;
  // Authentication to a broker with auth.enabled ([notifier] user, password_file): the
  // password is read by validate() from the file's first line, never kept in this config.
  std::string user;
  std::string password_file;
  std::string password;
  std::string metrics_listen = "127.0.0.1:7413";  // "" serves no metrics
  std::string log_level = "info";
  std::vector<SubscriptionConfig> subscriptions;

  // The broker connection every client the notifier makes uses (subscriptions, give-up
  // records, admin), named client_name in the broker's logs.
  client::ClientOptions client_options(std::string client_name) const;
};

// Reads a TOML file. Unknown keys are errors (a misspelt key would otherwise be a silent
// default); every error names the file and the key. kInvalidArgument.
Result<NotifierConfig> load_config_file(const std::string& path);

// Checks values and fills defaults that depend on others (gave_up_topic), and each
// secret_env's value into secret. kInvalidArgument, also for a secret_env that is not set.
Status validate(NotifierConfig& config);

// A warning to log when the config file at path holds a signing secret (secret, not
// secret_env) and its mode lets group or others at it (mode & 077); "" otherwise. Call it
// after validate().
std::string secret_exposure(const std::string& path, const NotifierConfig& config);

}  // namespace txmq::notifier
