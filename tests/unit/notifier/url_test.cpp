#include <doctest/doctest.h>

#include <string>

#include "notifier/url.h"

using namespace txmq::notifier;

namespace {

constexpr std::size_t kMax = 2048;

std::string refusal(std::string_view text) {
  auto u = parse_url(text, kMax);
  if (u) return "accepted as " + u->text;
  return u.error().message;
}

std::vector<AllowedUrl> allow(std::vector<std::string> entries) {
  auto a = parse_allowed_urls(entries, kMax);
  REQUIRE_MESSAGE(a.ok(), a.error().message);
  return *a;
}

// Whether the URL may be sent under the entries: it parses and falls under one.
bool allowed(const std::vector<AllowedUrl>& entries, std::string_view text) {
  auto u = parse_url(text, kMax);
  return u && match_allowed(entries, *u) != nullptr;
}

}  // namespace

TEST_CASE("a URL is normalised: scheme and host lower case, numeric hosts dotted, dot-segments gone") {
  auto u = parse_url("HTTP://LocalHost:6001/A/./b/../C?x=1", kMax);
  REQUIRE(u.ok());
  CHECK(u->text == "http://localhost:6001/A/C?x=1");
  CHECK(u->origin() == "http://localhost:6001");
  CHECK(u->path == "/A/C");
  CHECK(parse_url("http://2130706433:60010/", kMax)->text == "http://127.0.0.1:60010/");
  CHECK(parse_url("http://0x7f000001:60010/", kMax)->text == "http://127.0.0.1:60010/");
  CHECK(parse_url("http://127.1/", kMax)->text == "http://127.0.0.1/");
  CHECK(parse_url("https://h:443/x", kMax)->text == "https://h/x");
  CHECK(parse_url("https://h/x", kMax)->origin() == "https://h:443");
  CHECK(parse_url("http://h", kMax)->text == "http://h/");
  CHECK(parse_url("http://[::1]:8080/x", kMax)->host == "[::1]");
}

TEST_CASE("the normalised text parses back to itself") {
  for (const char* text : {"http://h/", "http://127.0.0.1:6001/hook/a?b=c&d=%41", "https://[::1]:1/x/y/",
                           "http://localhost:65535/%41"}) {
    auto u = parse_url(text, kMax);
    REQUIRE_MESSAGE(u.ok(), text);
    auto again = parse_url(u->text, kMax);
    REQUIRE(again.ok());
    CHECK(again->text == u->text);
  }
}

TEST_CASE("ambiguous or malformed URLs are refused with the reason") {
  CHECK(refusal("http://127.0.0.1:6001@127.0.0.1:60010/").find("userinfo") != std::string::npos);
  CHECK(refusal("http://127.0.0.1:6001@[::1]:60010/").find("userinfo") != std::string::npos);
  CHECK(refusal("http://127.0.0.1:6001@2130706433:60010/").find("userinfo") != std::string::npos);
  CHECK(refusal("http://127.0.0.1:6001\\@127.0.0.1:60010/").find("backslash") != std::string::npos);
  CHECK(refusal("http:/\\127.0.0.1/").find("backslash") != std::string::npos);
  CHECK(refusal("http://h/a b").find("space") != std::string::npos);
  CHECK(refusal("http://h/a\tb").find("space") != std::string::npos);
  CHECK(refusal(std::string_view("http://h/a\0b", 12)).find("control") != std::string::npos);
  CHECK(refusal("http://h/\xff").find("ASCII") != std::string::npos);
  CHECK(refusal("http:///x").find("empty host") != std::string::npos);
  CHECK(refusal("http://:80/").find("host") != std::string::npos);
  CHECK(refusal("http://h:0/").find("port") != std::string::npos);
  CHECK(refusal("http://h:65536/").find("ort") != std::string::npos);
  CHECK(refusal("http://127.0.0.1./").find("dot") != std::string::npos);
  CHECK(refusal("http://[fe80::1%25eth0]/").find("zone") != std::string::npos);
  CHECK(refusal("http://%31%32%37.0.0.1/").find("host") != std::string::npos);
  CHECK(refusal("http://999.0.0.1/").find("IPv4") != std::string::npos);
  CHECK(refusal("http://1.2.3.4.5/").find("IPv4") != std::string::npos);
  CHECK(refusal("http://h/hook/%2e%2e/evil").find("percent-encoded") != std::string::npos);
  CHECK(refusal("http://h/hook/%2E%2E/evil").find("percent-encoded") != std::string::npos);
  CHECK(refusal("http://h/hook%2fevil").find("percent-encoded") != std::string::npos);
  CHECK(refusal("http://h/hook%5cevil").find("percent-encoded") != std::string::npos);
  CHECK(refusal("http://h/a%00").find("percent-encoded") != std::string::npos);
  CHECK(refusal("http://h/a%zz").find("malformed percent") != std::string::npos);
  CHECK(refusal("http://h/hook/%252e%252e/evil").find("percent-encoded") != std::string::npos);
  CHECK(refusal("http://h/hook/..;/evil").find("dot-segment") != std::string::npos);
  CHECK(refusal("http://h/hook/.;x/evil").find("dot-segment") != std::string::npos);
  CHECK(parse_url("http://h/.well-known/a;b", kMax).ok());
  CHECK(refusal("http://h/a%4").find("malformed percent") != std::string::npos);
  CHECK(refusal("http://h/x#frag").find("fragment") != std::string::npos);
  CHECK(refusal("ftp://h/").find("http://") != std::string::npos);
  CHECK(refusal("http:127.0.0.1/x").find("http://") != std::string::npos);
  CHECK(refusal("").find("empty") != std::string::npos);
  CHECK(refusal("http://h/" + std::string(3000, 'a')).find("max_url_bytes") != std::string::npos);
}

TEST_CASE("an entry without a trailing slash allows its origin, not other ports or hosts") {
  const auto entries = allow({"http://127.0.0.1:6001"});
  CHECK(allowed(entries, "http://127.0.0.1:6001/"));
  CHECK(allowed(entries, "http://127.0.0.1:6001/any/path?q=1"));
  CHECK_FALSE(allowed(entries, "http://127.0.0.1:60010/"));  // the port extension
  CHECK_FALSE(allowed(entries, "http://127.0.0.1:6001@127.0.0.1:60010/"));
  CHECK_FALSE(allowed(entries, "http://127.0.0.1:6001@[::1]:60010/"));
  CHECK_FALSE(allowed(entries, "http://127.0.0.1:6001@2130706433:60010/"));
  CHECK_FALSE(allowed(entries, "http://127.0.0.1:6001@0x7f000001:60010/"));
  CHECK_FALSE(allowed(entries, "http://127.0.0.1:6001\\@127.0.0.1:60010/"));
  CHECK_FALSE(allowed(entries, "http://localhost:6001/"));  // another host, though it resolves the same
  CHECK_FALSE(allowed(entries, "https://127.0.0.1:6001/"));
  CHECK_FALSE(allowed(entries, "http://[::ffff:127.0.0.1]:6001/"));
  CHECK(allowed(entries, "http://2130706433:6001/x"));  // the same address, normalised
}

TEST_CASE("path prefixes match on segment boundaries after normalisation") {
  const auto slash = allow({"http://127.0.0.1:6001/hook/"});
  CHECK(allowed(slash, "http://127.0.0.1:6001/hook/"));
  CHECK(allowed(slash, "http://127.0.0.1:6001/hook/a/b"));
  CHECK(allowed(slash, "http://127.0.0.1:6001/hook/a/../b"));
  CHECK_FALSE(allowed(slash, "http://127.0.0.1:6001/hook"));
  CHECK_FALSE(allowed(slash, "http://127.0.0.1:6001/hook/../evil"));
  CHECK_FALSE(allowed(slash, "http://127.0.0.1:6001/hook/%2e%2e/evil"));
  CHECK_FALSE(allowed(slash, "http://127.0.0.1:6001/hookevil"));
  const auto bare = allow({"http://127.0.0.1:6001/hook"});
  CHECK(allowed(bare, "http://127.0.0.1:6001/hook"));
  CHECK(allowed(bare, "http://127.0.0.1:6001/hook/x"));
  CHECK(allowed(bare, "http://127.0.0.1:6001/hook?x=1"));
  CHECK_FALSE(allowed(bare, "http://127.0.0.1:6001/hookevil"));
  CHECK_FALSE(allowed(bare, "http://127.0.0.1:6001/HOOK/x"));  // paths are case-sensitive
  const auto upper = allow({"HTTP://EXAMPLE.com/Hook/"});
  CHECK(allowed(upper, "http://example.COM/Hook/x"));
}

TEST_CASE("an allowed_urls entry must be a full origin plus path") {
  for (const char* bad : {"http://user@h/", "http://h/?q=1", "http://h/#x", "http://h:99999/", "http://",
                          "http://h/%2e%2e/", "http://h\\x/", "http://h./x", "https://[fe80::1%25lo]/"}) {
    auto a = parse_allowed_urls({bad}, kMax);
    REQUIRE_FALSE_MESSAGE(a.ok(), bad);
    CHECK(a.error().message.find("not a full origin plus path") != std::string::npos);
  }
}

TEST_CASE("a literal IP host is told apart from a name") {
  CHECK(parse_url("http://127.0.0.1/", kMax)->host_is_ip());
  CHECK(parse_url("http://[::1]/", kMax)->host_is_ip());
  CHECK_FALSE(parse_url("http://localhost/", kMax)->host_is_ip());
}
