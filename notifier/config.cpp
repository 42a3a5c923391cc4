#include "notifier/config.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <toml.hpp>

#include "common/address.h"
#include "common/well_known.h"

namespace txmq::notifier {
namespace {

// Throws with the key's name in front, so every message says which key was wrong.
[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::runtime_error(where + ": " + what);
}

void reject_unknown(const toml::value& table, const std::string& where, const std::set<std::string>& known) {
  for (const auto& [key, value] : table.as_table())
    if (!known.contains(key)) fail(where + "." + key, "unknown key");
}

std::uint64_t non_negative(const toml::value& v, const std::string& where) {
  if (!v.is_integer()) fail(where, "must be an integer");
  if (v.as_integer() < 0) fail(where, "must not be negative");
  return static_cast<std::uint64_t>(v.as_integer());
}

std::string string_of(const toml::value& v, const std::string& where) {
  if (!v.is_string()) fail(where, "must be a string");
  return v.as_string();
}

SubscriptionConfig read_subscription(const toml::value& t, std::size_t index) {
  const std::string at = "subscription[" + std::to_string(index) + "]";
  if (!t.is_table()) fail(at, "must be a table ([[subscription]])");
  reject_unknown(t, at,
                 {"name", "topic", "group", "url", "url_header", "allowed_urls", "max_attempts", "schedule_ms",
                  "jitter", "max_retry_after_ms", "request_timeout_ms", "concurrency", "secret", "success_body",
                  "content_type", "gave_up_topic", "max_response_bytes", "breaker_failures",
                  "breaker_cooldown_ms", "allow_private_networks", "max_url_bytes", "max_endpoint_series",
                  "max_endpoints", "secret_env", "ca_file"});
  SubscriptionConfig s;
  auto str = [&](const char* key, std::string& out) {
    if (t.contains(key)) out = string_of(t.at(key), at + "." + key);
  };
  auto ms = [&](const char* key, Millis& out) {
    if (t.contains(key)) out = Millis(non_negative(t.at(key), at + "." + key));
  };
  auto u32 = [&](const char* key, std::uint32_t& out) {
    if (!t.contains(key)) return;
    const auto n = non_negative(t.at(key), at + "." + key);
    if (n > UINT32_MAX) fail(at + "." + key, "too large");
    out = static_cast<std::uint32_t>(n);
  };
  str("name", s.name);
  str("topic", s.topic);
  str("group", s.group);
  str("url", s.url);
  str("url_header", s.url_header);
  str("secret", s.secret);
  str("secret_env", s.secret_env);
  str("ca_file", s.ca_file);
  str("success_body", s.success_body);
  str("content_type", s.content_type);
  str("gave_up_topic", s.gave_up_topic);
  u32("max_attempts", s.max_attempts);
  u32("concurrency", s.concurrency);
  u32("breaker_failures", s.breaker_failures);
  u32("max_endpoint_series", s.max_endpoint_series);
  u32("max_endpoints", s.max_endpoints);
  if (t.contains("max_url_bytes")) s.max_url_bytes = non_negative(t.at("max_url_bytes"), at + ".max_url_bytes");
  if (t.contains("allow_private_networks")) {
    const auto& v = t.at("allow_private_networks");
    if (!v.is_boolean()) fail(at + ".allow_private_networks", "must be true or false");
    s.allow_private_networks = v.as_boolean();
  }
  ms("max_retry_after_ms", s.max_retry_after);
  ms("request_timeout_ms", s.request_timeout);
  ms("breaker_cooldown_ms", s.breaker_cooldown);
  if (t.contains("max_response_bytes"))
    s.max_response_bytes = non_negative(t.at("max_response_bytes"), at + ".max_response_bytes");
  if (t.contains("jitter")) {
    const auto& v = t.at("jitter");
    if (!v.is_floating() && !v.is_integer()) fail(at + ".jitter", "must be a number");
    s.jitter = v.is_floating() ? v.as_floating() : static_cast<double>(v.as_integer());
  }
  if (t.contains("schedule_ms")) {
    const auto& v = t.at("schedule_ms");
    if (!v.is_array()) fail(at + ".schedule_ms", "must be an array of milliseconds");
    s.schedule.clear();
    for (const auto& d : v.as_array()) s.schedule.emplace_back(non_negative(d, at + ".schedule_ms"));
  }
  if (t.contains("allowed_urls")) {
    const auto& v = t.at("allowed_urls");
    if (!v.is_array()) fail(at + ".allowed_urls", "must be an array of URL prefixes");
    for (const auto& u : v.as_array()) s.allowed_urls.push_back(string_of(u, at + ".allowed_urls"));
  }
  return s;
}

// "" when the file can be opened for reading, else why not, naming it. The client would
// refuse it too, but only on its first request and with every request after it failing.
std::string unreadable(const std::string& key, const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return key + ": no file '" + path + "'";
  if (!std::ifstream(path).is_open()) return key + ": cannot read '" + path + "'";
  return {};
}

}  // namespace

client::ClientOptions NotifierConfig::client_options(std::string client_name) const {
  client::ClientOptions o;
  o.broker = broker;
  o.client_name = std::move(client_name);
  o.tls = broker_tls;
  o.user = user;
  o.password = password;
  return o;
}

Result<NotifierConfig> load_config_file(const std::string& path) {
  NotifierConfig c;
  try {
    const auto root = toml::parse(path);
    reject_unknown(root, "config", {"notifier", "subscription"});
    if (root.contains("notifier")) {
      const auto& t = root.at("notifier");
      reject_unknown(t, "notifier",
                     {"broker", "metrics_listen", "log_level", "tls", "tls_ca_file", "tls_cert_file", "tls_key_file",
                      "user", "password_file"});
      if (t.contains("broker")) c.broker = string_of(t.at("broker"), "notifier.broker");
      if (t.contains("tls")) {
        const auto& v = t.at("tls");
        if (!v.is_boolean()) fail("notifier.tls", "must be true or false");
        c.broker_tls.enabled = v.as_boolean();
      }
      if (t.contains("tls_ca_file")) c.broker_tls.ca_file = string_of(t.at("tls_ca_file"), "notifier.tls_ca_file");
      if (t.contains("tls_cert_file"))
        c.broker_tls.cert_file = string_of(t.at("tls_cert_file"), "notifier.tls_cert_file");
      if (t.contains("tls_key_file")) c.broker_tls.key_file = string_of(t.at("tls_key_file"), "notifier.tls_key_file");
      if (t.contains("user")) c.user = string_of(t.at("user"), "notifier.user");
      if (t.contains("password_file")) c.password_file = string_of(t.at("password_file"), "notifier.password_file");
      if (t.contains("metrics_listen")) c.metrics_listen = string_of(t.at("metrics_listen"), "notifier.metrics_listen");
      if (t.contains("log_level")) c.log_level = string_of(t.at("log_level"), "notifier.log_level");
    }
    if (root.contains("subscription")) {
      const auto& subs = root.at("subscription");
      if (!subs.is_array()) fail("subscription", "must be an array of tables ([[subscription]])");
      for (std::size_t i = 0; i < subs.as_array().size(); ++i)
        c.subscriptions.push_back(read_subscription(subs.as_array()[i], i));
    }
  } catch (const std::exception& e) {
    return Error(ErrorCode::kInvalidArgument, "config " + path + ": " + e.what());
  }
  return c;
}

Status validate(NotifierConfig& c) {
  auto bad = [](std::string m) { return Error(ErrorCode::kInvalidArgument, std::move(m)); };
  if (auto a = common::parse_host_port(c.broker); !a) return bad("notifier.broker: " + a.error().message);
  auto& tls = c.broker_tls;
  // A CA or a certificate means TLS: nobody gives one to talk in plain text.
  if (!tls.ca_file.empty() || !tls.cert_file.empty()) tls.enabled = true;
  if (tls.cert_file.empty() != tls.key_file.empty())
    return bad("notifier.tls_cert_file and notifier.tls_key_file: set both or neither");
  for (const auto& [key, path] : {std::pair<const char*, const std::string&>{"notifier.tls_ca_file", tls.ca_file},
                                  {"notifier.tls_cert_file", tls.cert_file},
                                  {"notifier.tls_key_file", tls.key_file}})
    if (!path.empty())
      if (auto why = unreadable(key, path); !why.empty()) return bad(why);
  if (c.user.empty() != c.password_file.empty())
    return bad("notifier.user and notifier.password_file: set both or neither");
  if (!c.password_file.empty()) {
    std::ifstream in(c.password_file);
    if (!in || !std::getline(in, c.password) || c.password.empty())
      return bad("notifier.password_file: cannot read a password from the first line of " + c.password_file);
  }
  if (!c.metrics_listen.empty())
    if (auto a = common::parse_host_port(c.metrics_listen); !a)
      return bad("notifier.metrics_listen: " + a.error().message);
  if (c.subscriptions.empty()) return bad("no [[subscription]]: nothing to deliver");
  std::set<std::string> names, groups;
  for (std::size_t i = 0; i < c.subscriptions.size(); ++i) {
    auto& s = c.subscriptions[i];
    if (s.name.empty()) s.name = s.group;
    const std::string at = "subscription '" + (s.name.empty() ? std::to_string(i) : s.name) + "'";
    if (s.topic.empty()) return bad(at + ": topic is required");
    if (s.group.empty()) return bad(at + ": group is required");
    if (!names.insert(s.name).second) return bad(at + ": a second subscription has this name");
    // Two subscriptions in one group would share its messages, each seeing half.
    if (!groups.insert(s.group + "\n" + s.topic).second)
      return bad(at + ": another subscription consumes topic '" + s.topic + "' as group '" + s.group + "'");
    if (s.url.empty() == s.url_header.empty()) return bad(at + ": set exactly one of url and url_header");
    if (s.max_url_bytes < 16 || s.max_url_bytes > 65536) return bad(at + ": max_url_bytes must be between 16 and 65536");
    if (!s.url.empty()) {
      auto url = parse_url(s.url, s.max_url_bytes);
      if (!url) return bad(at + ": url: " + url.error().message);
      s.endpoint = std::move(*url);
    }
    if (!s.url_header.empty() && s.allowed_urls.empty())
      return bad(at + ": url_header needs allowed_urls, the URL prefixes a message may name");
    if (!s.url.empty() && !s.allowed_urls.empty())
      return bad(at + ": allowed_urls applies to url_header only; a fixed url is allowed as it is");
    if (!s.url.empty() && s.allow_private_networks)
      return bad(at + ": allow_private_networks applies to url_header only; a fixed url is allowed as it is");
    auto allowed = parse_allowed_urls(s.allowed_urls, s.max_url_bytes);
    if (!allowed) return bad(at + ": " + allowed.error().message);
    s.allowed = std::move(*allowed);
    if (s.max_endpoint_series < 1) return bad(at + ": max_endpoint_series must be at least 1");
    if (s.max_endpoints < 1) return bad(at + ": max_endpoints must be at least 1");
    // The give-up history rides in the broker's failure history, which keeps 64 entries.
    if (s.max_attempts < 1 || s.max_attempts > 50) return bad(at + ": max_attempts must be between 1 and 50");
    if (s.schedule.empty()) return bad(at + ": schedule_ms must hold at least one delay");
    if (s.jitter < 0 || s.jitter >= 1) return bad(at + ": jitter must be in [0, 1)");
    if (s.request_timeout.count() < 1) return bad(at + ": request_timeout_ms must be positive");
    if (s.concurrency < 1 || s.concurrency > 1000) return bad(at + ": concurrency must be between 1 and 1000");
    if (s.breaker_failures < 1) return bad(at + ": breaker_failures must be at least 1");
    if (s.breaker_cooldown.count() < 1) return bad(at + ": breaker_cooldown_ms must be positive");
    if (!s.secret_env.empty()) {
      if (!s.secret.empty()) return bad(at + ": set secret or secret_env, not both");
      // Unset is an error, not "unsigned": a receiver that checks signatures would refuse
      // every request, and one that does not would accept forgeries unnoticed.
      const char* value = std::getenv(s.secret_env.c_str());
      if (value == nullptr || *value == '\0')
        return bad(at + ": secret_env names " + s.secret_env + ", which is not set in the environment");
      s.secret = value;
    }
    if (!s.secret.empty() && !s.secret.starts_with("whsec_"))
      return bad(at + (s.secret_env.empty() ? ": secret" : ": the value of " + s.secret_env) +
                 " must look like whsec_<base64>");
    if (!s.ca_file.empty())
      if (auto why = unreadable(at + ": ca_file", s.ca_file); !why.empty()) return bad(why);
    if (s.gave_up_topic.empty()) s.gave_up_topic = txmq::gave_up_topic(s.group);
  }
  return {};
}

std::string secret_exposure(const std::string& path, const NotifierConfig& c) {
  const auto held = std::find_if(c.subscriptions.begin(), c.subscriptions.end(),
                                 [](const SubscriptionConfig& s) { return !s.secret.empty() && s.secret_env.empty(); });
  struct stat st{};
  if (held == c.subscriptions.end() || ::stat(path.c_str(), &st) != 0 || (st.st_mode & 077) == 0) return {};
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return "config " + path + " holds the signing secret of subscription '" + held->name + "' and is open to " +
         "group or others (mode " + mode + "): chmod 600 " + path +
         ", or take the secret from the environment (secret_env)";
}

}  // namespace txmq::notifier
