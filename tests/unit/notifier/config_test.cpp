#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "notifier/config.h"
#include "support/broker_process.h"

using namespace txmq::notifier;

namespace {
txmq::Result<NotifierConfig> load(const std::string& text) {
  static txmq::test::TempDir dir;
  const std::string path = dir.path() + "/notifier.toml";
  std::ofstream(path) << text;
  auto c = load_config_file(path);
  if (!c) return c;
  if (auto st = validate(*c); !st) return st.error();
  return c;
}
}  // namespace

TEST_CASE("the shipped example config loads and validates") {
  auto c = load_config_file(std::string(std::getenv("TXMQ_SOURCE_DIR")) + "/config/txmq-notifier.toml");
  REQUIRE_MESSAGE(c.ok(), c.error().message);
  auto st = validate(*c);
  REQUIRE_MESSAGE(st.ok(), st.error().message);
  CHECK(c->subscriptions.size() >= 1);
}

TEST_CASE("defaults: Svix-like schedule, 8 attempts, give-up topic named after the group") {
  auto c = load("[[subscription]]\ntopic = \"orders\"\ngroup = \"points\"\nurl = \"http://127.0.0.1:9/x\"\n");
  REQUIRE_MESSAGE(c.ok(), c.error().message);
  const auto& s = c->subscriptions[0];
  CHECK(s.name == "points");
  CHECK(s.max_attempts == 8);
  CHECK(s.schedule.size() == 7);
  CHECK(s.gave_up_topic == "points.gave-up");
  CHECK(c->broker == "127.0.0.1:7411");
}

TEST_CASE("mistakes are refused with the key named") {
  auto msg = [](const std::string& text) {
    auto c = load(text);
    REQUIRE_FALSE(c.ok());
    return c.error().message;
  };
  const std::string base = "[[subscription]]\ntopic = \"t\"\ngroup = \"g\"\n";
  CHECK(msg(base + "url = \"http://x/\"\nretries = 3\n").find("subscription[0].retries: unknown key") !=
        std::string::npos);
  CHECK(msg(base).find("set exactly one of url and url_header") != std::string::npos);
  CHECK(msg(base + "url = \"ftp://x/\"\n").find("http://") != std::string::npos);
  CHECK(msg(base + "url_header = \"cb\"\n").find("allowed_urls") != std::string::npos);
  CHECK(msg(base + "url = \"http://x/\"\nmax_attempts = 0\n").find("max_attempts") != std::string::npos);
  CHECK(msg(base + "url = \"http://x/\"\nschedule_ms = []\n").find("schedule_ms") != std::string::npos);
  CHECK(msg(base + "url = \"http://x/\"\nrequest_timeout_ms = -1\n").find("must not be negative") !=
        std::string::npos);
  CHECK(msg(base + "url = \"http://x/\"\nsecret = \"abc\"\n").find("whsec_") != std::string::npos);
  CHECK(msg("[notifier]\nbroker = \"nowhere\"\n" + base + "url = \"http://x/\"\n").find("notifier.broker") !=
        std::string::npos);
  CHECK(msg("[notifier]\n").find("no [[subscription]]") != std::string::npos);
}

TEST_CASE("allowed_urls entries are parsed; one that is not a full origin plus path is refused") {
  const std::string base = "[[subscription]]\ntopic = \"t\"\ngroup = \"g\"\nurl_header = \"cb\"\n";
  auto ok = load(base + "allowed_urls = [\"http://127.0.0.1:6001\", \"HTTPS://Partner.example/notify/\"]\n");
  REQUIRE_MESSAGE(ok.ok(), ok.error().message);
  const auto& s = ok->subscriptions[0];
  REQUIRE(s.allowed.size() == 2);
  CHECK(s.allowed[0].url.origin() == "http://127.0.0.1:6001");
  CHECK(s.allowed[1].url.origin() == "https://partner.example:443");
  CHECK(s.allowed[1].prefix == "/notify");
  CHECK_FALSE(s.allow_private_networks);
  CHECK(s.max_url_bytes == 2048);
  CHECK(s.max_endpoint_series == 100);
  CHECK(s.max_endpoints == 1000);
  for (const char* bad : {"http://user@h/", "http://h/x?y=1", "http://h/a\\\\b", "http://h:0/", "http://h./"}) {
    auto c = load(base + "allowed_urls = [\"" + bad + "\"]\n");
    REQUIRE_FALSE_MESSAGE(c.ok(), bad);
    CHECK_MESSAGE(c.error().message.find("not a full origin plus path") != std::string::npos, c.error().message);
  }
}

TEST_CASE("a fixed url is parsed and normalised like a message's") {
  const std::string base = "[[subscription]]\ntopic = \"t\"\ngroup = \"g\"\n";
  auto c = load(base + "url = \"http://LOCALHOST:8080/a/../cb\"\n");
  REQUIRE_MESSAGE(c.ok(), c.error().message);
  CHECK(c->subscriptions[0].endpoint.text == "http://localhost:8080/cb");
  auto bad = load(base + "url = \"http://127.0.0.1:1@127.0.0.1:2/\"\n");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("userinfo") != std::string::npos);
}

TEST_CASE("the hardening keys are read and checked") {
  const std::string base =
      "[[subscription]]\ntopic = \"t\"\ngroup = \"g\"\nurl_header = \"cb\"\nallowed_urls = [\"http://h/\"]\n";
  auto c = load(base + "allow_private_networks = true\nmax_url_bytes = 4096\nmax_endpoint_series = 5\nmax_endpoints = 7\n");
  REQUIRE_MESSAGE(c.ok(), c.error().message);
  CHECK(c->subscriptions[0].allow_private_networks);
  CHECK(c->subscriptions[0].max_url_bytes == 4096);
  CHECK(c->subscriptions[0].max_endpoint_series == 5);
  CHECK(c->subscriptions[0].max_endpoints == 7);
  CHECK_FALSE(load(base + "allow_private_networks = 1\n").ok());
  CHECK_FALSE(load(base + "max_url_bytes = 1\n").ok());
  CHECK_FALSE(load(base + "max_endpoints = 0\n").ok());
  CHECK_FALSE(load(base + "max_endpoint_series = 0\n").ok());
  auto fixed = load("[[subscription]]\ntopic = \"t\"\ngroup = \"g\"\nurl = \"http://h/\"\nallow_private_networks = true\n");
  REQUIRE_FALSE(fixed.ok());
  CHECK(fixed.error().message.find("url_header only") != std::string::npos);
}

TEST_CASE("broker TLS keys: a CA implies tls, files are checked at load with the file named") {
  txmq::test::TempDir dir;
  const std::string ca = dir.path() + "/ca.pem";
  std::ofstream(ca) << "not checked here: the client loads it\n";
  const std::string sub = "[[subscription]]\ntopic = \"t\"\ngroup = \"g\"\nurl = \"http://x/\"\n";

  auto plain = load(sub);
  REQUIRE_MESSAGE(plain.ok(), plain.error().message);
  CHECK_FALSE(plain->client_options("n").tls.enabled);

  auto with_ca = load("[notifier]\ntls_ca_file = \"" + ca + "\"\n" + sub);
  REQUIRE_MESSAGE(with_ca.ok(), with_ca.error().message);
  const auto o = with_ca->client_options("txmq-notifier/s");
  CHECK(o.tls.enabled);
  CHECK(o.tls.ca_file == ca);
  CHECK(o.client_name == "txmq-notifier/s");
  CHECK(o.broker == "127.0.0.1:7411");

  auto on = load("[notifier]\ntls = true\n" + sub);
  REQUIRE_MESSAGE(on.ok(), on.error().message);
  CHECK(on->broker_tls.enabled);
  CHECK(on->broker_tls.ca_file.empty());

  auto msg = [](const std::string& text) {
    auto c = load(text);
    REQUIRE_FALSE(c.ok());
    return c.error().message;
  };
  const std::string missing = dir.path() + "/missing.pem";
  CHECK(msg("[notifier]\ntls_ca_file = \"" + missing + "\"\n" + sub) ==
        "notifier.tls_ca_file: no file '" + missing + "'");
  CHECK(msg("[notifier]\ntls_cert_file = \"" + ca + "\"\n" + sub).find("set both or neither") != std::string::npos);
  CHECK(msg("[notifier]\ntls_cert_file = \"" + ca + "\"\ntls_key_file = \"" + missing + "\"\n" + sub) ==
        "notifier.tls_key_file: no file '" + missing + "'");
  CHECK(msg("[notifier]\ntls = \"yes\"\n" + sub).find("notifier.tls: must be true or false") != std::string::npos);
}

TEST_CASE("secret_env takes the secret from the environment; unset, or beside secret, is refused") {
  const std::string base = "[[subscription]]\ntopic = \"t\"\ngroup = \"g\"\nurl = \"http://x/\"\n";
  ::unsetenv("TXMQ_UNIT_SECRET");
  auto unset = load(base + "secret_env = \"TXMQ_UNIT_SECRET\"\n");
  REQUIRE_FALSE(unset.ok());
  CHECK(unset.error().message.find("secret_env names TXMQ_UNIT_SECRET, which is not set") != std::string::npos);
  ::setenv("TXMQ_UNIT_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1);
  auto c = load(base + "secret_env = \"TXMQ_UNIT_SECRET\"\n");
  REQUIRE_MESSAGE(c.ok(), c.error().message);
  CHECK(c->subscriptions[0].secret == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  auto both = load(base + "secret_env = \"TXMQ_UNIT_SECRET\"\nsecret = \"whsec_AAAA\"\n");
  REQUIRE_FALSE(both.ok());
  CHECK(both.error().message.find("not both") != std::string::npos);
  ::setenv("TXMQ_UNIT_SECRET", "plain", 1);
  auto malformed = load(base + "secret_env = \"TXMQ_UNIT_SECRET\"\n");
  REQUIRE_FALSE(malformed.ok());
  CHECK(malformed.error().message.find("the value of TXMQ_UNIT_SECRET must look like whsec_") != std::string::npos);
  ::unsetenv("TXMQ_UNIT_SECRET");
}

TEST_CASE("a secret in a file open to group or others is named with chmod 600; one from the environment is not") {
  txmq::test::TempDir dir;
  const std::string path = dir.path() + "/exposed.toml";
  std::ofstream(path) << "[[subscription]]\ntopic = \"t\"\ngroup = \"g\"\nurl = \"http://x/\"\n"
                         "secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";
  auto c = load_config_file(path);
  REQUIRE(c.ok());
  REQUIRE(validate(*c).ok());
  ::chmod(path.c_str(), 0640);
  const std::string warning = secret_exposure(path, *c);
  CHECK(warning.find("mode 0640") != std::string::npos);
  CHECK(warning.find("chmod 600 " + path) != std::string::npos);
  ::chmod(path.c_str(), 0600);
  CHECK(secret_exposure(path, *c).empty());
  ::chmod(path.c_str(), 0644);
  c->subscriptions[0].secret_env = "FROM_THE_ENVIRONMENT";  // as validate() leaves it
  CHECK(secret_exposure(path, *c).empty());
}

TEST_CASE("ca_file is read and must be readable") {
  const std::string base = "[[subscription]]\ntopic = \"t\"\ngroup = \"g\"\nurl = \"https://x/\"\n";
  auto missing = load(base + "ca_file = \"/no/such/ca.pem\"\n");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().message.find("ca_file: no file '/no/such/ca.pem'") != std::string::npos);
  txmq::test::TempDir dir;
  const std::string ca = dir.path() + "/ca.pem";
  std::ofstream(ca) << "not checked until a request\n";
  auto c = load(base + "ca_file = \"" + ca + "\"\n");
  REQUIRE_MESSAGE(c.ok(), c.error().message);
  CHECK(c->subscriptions[0].ca_file == ca);
}
