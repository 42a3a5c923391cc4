// client/src/broker_list: ClientOptions::broker's list, and the order a connection tries it.

#include "broker_list.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using txmq::ErrorCode;
using txmq::client::detail::BrokerList;

namespace {

BrokerList parsed(std::string_view text) {
  auto list = BrokerList::parse(text);
  REQUIRE_MESSAGE(list.ok(), list.error().message);
  return std::move(*list);
}

// One round from its start, as the connection walks it when every entry fails.
std::vector<std::string> round_of(BrokerList& list) {
  std::vector<std::string> out{list.start_round().to_string()};
  while (list.next()) out.push_back(list.current_entry().to_string());
  return out;
}

using Order = std::vector<std::string>;

}  // namespace

TEST_CASE("one address is a list of one") {
  auto list = parsed("127.0.0.1:7411");
  REQUIRE(list.size() == 1);
  CHECK(list.entry(0).host == "127.0.0.1");
  CHECK(list.entry(0).port == 7411);
  CHECK(round_of(list) == Order{"127.0.0.1:7411"});
}

TEST_CASE("a comma-separated list keeps its order, blanks around entries ignored") {
  auto list = parsed("h1:1, [::1]:2 ,h3:3");
  REQUIRE(list.size() == 3);
  CHECK(list.entry(1).host == "::1");
  CHECK(round_of(list) == Order{"h1:1", "[::1]:2", "h3:3"});
}

TEST_CASE("an empty entry is refused, quoting the list") {
  for (const char* text : {"", "h1:1,", ",h1:1", "h1:1,,h2:2", " "}) {
    CAPTURE(text);
    auto list = BrokerList::parse(text);
    REQUIRE_FALSE(list.ok());
    CHECK(list.error().code == ErrorCode::kInvalidArgument);
    CHECK(list.error().message.find("empty broker address") != std::string::npos);
  }
}

TEST_CASE("an entry that is not HOST:PORT is refused, quoting it") {
  auto list = BrokerList::parse("h1:1,h2");
  REQUIRE_FALSE(list.ok());
  CHECK(list.error().code == ErrorCode::kInvalidArgument);
  CHECK_MESSAGE(list.error().message.find("'h2'") != std::string::npos, list.error().message);
}

TEST_CASE("a round tries every entry once, then ends") {
  auto list = parsed("a:1,b:2,c:3");
  CHECK(list.start_round().to_string() == "a:1");
  CHECK(list.next() == std::optional<std::size_t>(1));
  CHECK(list.next() == std::optional<std::size_t>(2));
  CHECK_FALSE(list.next());
  CHECK_FALSE(list.next());
}

TEST_CASE("rounds start from the entry that last connected, wrapping around") {
  auto list = parsed("a:1,b:2,c:3");
  list.start_round();
  REQUIRE(list.next());
  list.connected();  // b answered the hello
  CHECK(round_of(list) == Order{"b:2", "c:3", "a:1"});
  CHECK(round_of(list) == Order{"b:2", "c:3", "a:1"});
}

TEST_CASE("a leader in the list is where the next round starts") {
  auto list = parsed("a:1,b:2,c:3");
  REQUIRE(list.prefer("c:3").ok());
  CHECK(list.size() == 3);
  CHECK(round_of(list) == Order{"c:3", "a:1", "b:2"});
}

TEST_CASE("a leader the list lacks is learned, tried first, and the list stays the way back") {
  auto list = parsed("a:1,b:2");
  REQUIRE(list.prefer("l:9").ok());
  CHECK(list.size() == 3);
  CHECK(round_of(list) == Order{"l:9", "a:1", "b:2"});
}

TEST_CASE("a second unlisted leader replaces the first learned one") {
  auto list = parsed("a:1,b:2");
  REQUIRE(list.prefer("l:9").ok());
  REQUIRE(list.prefer("m:8").ok());
  CHECK(list.size() == 3);
  CHECK(round_of(list) == Order{"m:8", "a:1", "b:2"});
}

TEST_CASE("a leader address that is not HOST:PORT changes nothing") {
  auto list = parsed("a:1,b:2");
  list.start_round();
  REQUIRE(list.next());
  list.connected();
  auto st = list.prefer("not an address");
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::kInvalidArgument);
  CHECK(list.size() == 2);
  CHECK(round_of(list) == Order{"b:2", "a:1"});
}

TEST_CASE("a refusal that names no leader moves the next round past that broker") {
  auto list = parsed("a:1,b:2,c:3");
  list.start_round();
  list.skip_current();
  CHECK(round_of(list) == Order{"b:2", "c:3", "a:1"});
}
