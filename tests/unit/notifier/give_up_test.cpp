#include <doctest/doctest.h>

#include <string>

#include "notifier/give_up.h"
#include "notifier/signature.h"

using namespace txmq::notifier;

namespace {

GiveUp sample_give_up() {
  GiveUp g;
  g.webhook_id = "t:0:7";
  g.subscription = "s";
  g.endpoint = "http://127.0.0.1:1/x";
  g.reason = "max_attempts";
  g.at_ms = 1;
  for (std::uint32_t i = 1; i <= 50; ++i)
    g.attempts.push_back(AttemptRecord{i, 1, 2, "timeout", 0, std::string(200, 'e')});
  g.other_history = {"lease expired"};
  return g;
}

txmq::client::Delivery delivery(std::size_t body_bytes, std::size_t header_bytes = 10) {
  txmq::client::Delivery d;
  d.topic = "t";
  d.group = "g";
  d.offset = 7;
  d.key = "k";
  d.headers.push_back({"h", std::string(header_bytes, 'v')});
  for (std::size_t i = 0; i < body_bytes; ++i) d.body.push_back(static_cast<char>('a' + i % 26));
  return d;
}

// The body bytes a cut record kept, decoded from message.body_base64.
std::string kept_body(const std::string& record) {
  const std::string key = "\"body_base64\":\"";
  const auto at = record.find(key) + key.size();
  auto body = base64_decode(record.substr(at, record.find('"', at) - at));
  REQUIRE(body.has_value());
  return *body;
}

}  // namespace

TEST_CASE("a record that fits is whole") {
  const auto record = give_up_json(sample_give_up(), delivery(1000), 1u << 20);
  CHECK(record.find("\"truncated\"") == std::string::npos);
  CHECK(record.find("\"body\":\"abc") != std::string::npos);
}

TEST_CASE("a record too large for the broker keeps the body's first bytes and says what was cut") {
  const auto d = delivery(900'000);
  const std::size_t limit = 500'000;
  const auto record = give_up_json(sample_give_up(), d, limit);
  CHECK(record.size() <= limit);
  CHECK(record.size() > limit - 8);  // filled, not merely cut
  CHECK(record.find("\"truncated\":true") != std::string::npos);
  CHECK(record.find("\"body_bytes\":900000") != std::string::npos);
  CHECK(record.find("\"headers\":{\"h\"") != std::string::npos);  // key and headers kept
  const std::string kept = kept_body(record);
  CHECK(kept.size() > 300'000);
  CHECK(d.body.starts_with(kept));
  CHECK(record.find("\"body_bytes_kept\":" + std::to_string(kept.size())) != std::string::npos);
}

TEST_CASE("when even the details do not fit, they go too, and the record still fits") {
  const auto d = delivery(10'000, 20'000);  // headers alone exceed the limit
  for (std::size_t limit : {8'000u, 2'000u, 700u}) {
    const auto record = give_up_json(sample_give_up(), d, limit);
    CHECK_MESSAGE(record.size() <= limit, limit);
    CHECK(record.find("\"truncated\":true") != std::string::npos);
    CHECK(record.find("\"webhook_id\":\"t:0:7\"") != std::string::npos);
    CHECK(record.find("\"header_bytes\":20001") != std::string::npos);
    CHECK(d.body.starts_with(kept_body(record)));
  }
}
