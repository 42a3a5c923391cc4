#include <doctest/doctest.h>

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
