// common/address: HOST:PORT parsing.

#include "common/address.h"

#include <doctest/doctest.h>

using txmq::ErrorCode;
using txmq::common::HostPort;
using txmq::common::parse_host_port;

TEST_CASE("an IPv4 host with port 0 parses") {
  auto hp = parse_host_port("127.0.0.1:0");
  REQUIRE(hp.ok());
  CHECK(hp->host == "127.0.0.1");
  CHECK(hp->port == 0);
}

TEST_CASE("a bracketed IPv6 host parses without its brackets") {
  auto hp = parse_host_port("[::1]:7411");
  REQUIRE(hp.ok());
  CHECK(hp->host == "::1");
  CHECK(hp->port == 7411);
}

TEST_CASE("the highest port 65535 parses") {
  auto hp = parse_host_port("0.0.0.0:65535");
  REQUIRE(hp.ok());
  CHECK(hp->port == 65535);
}

TEST_CASE("an address without a port is rejected") {
  for (const char* text : {"127.0.0.1", "127.0.0.1:", "[::1]", "[::1]:", "localhost"}) {
    CAPTURE(text);
    auto hp = parse_host_port(text);
    REQUIRE_FALSE(hp.ok());
    CHECK(hp.error().code == ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("a port above 65535 is rejected") {
  for (const char* text : {"127.0.0.1:65536", "127.0.0.1:99999999999", "[::1]:70000"}) {
    CAPTURE(text);
    CHECK_FALSE(parse_host_port(text).ok());
  }
}

TEST_CASE("a port that is not a plain number is rejected") {
  for (const char* text : {"127.0.0.1:-1", "127.0.0.1:+80", "127.0.0.1:80x", "127.0.0.1: 80"}) {
    CAPTURE(text);
    CHECK_FALSE(parse_host_port(text).ok());
  }
}

TEST_CASE("a bare IPv6 address is rejected: it needs brackets") {
  CHECK_FALSE(parse_host_port("::1:80").ok());
  CHECK_FALSE(parse_host_port("fe80::1:7411").ok());
}

TEST_CASE("an empty host is rejected") {
  for (const char* text : {":7411", "[]:7411", ""}) {
    CAPTURE(text);
    CHECK_FALSE(parse_host_port(text).ok());
  }
}

TEST_CASE("the error message quotes the text") {
  auto hp = parse_host_port("nonsense");
  REQUIRE_FALSE(hp.ok());
  CHECK(hp.error().message.find("'nonsense'") != std::string::npos);
}

TEST_CASE("to_string brackets IPv6 hosts and round-trips") {
  CHECK(HostPort{"::1", 7411}.to_string() == "[::1]:7411");
  CHECK(HostPort{"127.0.0.1", 80}.to_string() == "127.0.0.1:80");
  for (const char* text : {"[::1]:7411", "10.0.0.1:1"}) {
    auto hp = parse_host_port(text);
    REQUIRE(hp.ok());
    CHECK(hp->to_string() == text);
  }
}

TEST_CASE("loopback addresses are told from every-interface and other addresses") {
  // The broker warns at start when it listens anywhere but loopback: nothing authenticates.
  using txmq::common::is_loopback_ip;
  for (const char* yes : {"127.0.0.1", "127.5.6.7", "::1", "::ffff:127.0.0.1"}) {
    CAPTURE(yes);
    CHECK(is_loopback_ip(yes));
  }
  for (const char* no : {"0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "::ffff:10.0.0.1", "localhost", "", "128.0.0.1"}) {
    CAPTURE(no);
    CHECK_FALSE(is_loopback_ip(no));
  }
}

TEST_CASE("a host name parses as it is") {
  for (const char* text : {"localhost:7411", "broker-1.example.com:0", "my_host:65535", "no-such-host.invalid:1"}) {
    CAPTURE(text);
    auto hp = parse_host_port(text);
    REQUIRE(hp.ok());
    CHECK(hp->to_string() == text);
  }
  auto hp = parse_host_port("localhost:7411");
  REQUIRE(hp.ok());
  CHECK(hp->host == "localhost");
  CHECK(hp->port == 7411);
}

TEST_CASE("a host name with characters no name has is rejected") {
  for (const char* text : {"local host:80", "a/b:80", "host\t:80", "[localhost]:80", "[127.0.0.1]:80", "[x:y]:80",
                           "[::1:80", "::1]:80"}) {
    CAPTURE(text);
    CHECK_FALSE(parse_host_port(text).ok());
  }
}

TEST_CASE("a name without a port, or with port 65536, is rejected; port 0 is taken") {
  CHECK_FALSE(parse_host_port("localhost").ok());
  CHECK_FALSE(parse_host_port("localhost:").ok());
  CHECK_FALSE(parse_host_port("localhost:65536").ok());
  auto hp = parse_host_port("localhost:0");
  REQUIRE(hp.ok());
  CHECK(hp->port == 0);
}

TEST_CASE("a bracketed IPv6 address may carry a zone id") {
  auto hp = parse_host_port("[fe80::1%eth0]:7411");
  REQUIRE(hp.ok());
  CHECK(hp->host == "fe80::1%eth0");
  CHECK(hp->to_string() == "[fe80::1%eth0]:7411");
}

TEST_CASE("IP literals are told from names") {
  using txmq::common::is_ip_literal;
  for (const char* yes : {"127.0.0.1", "::1", "fe80::1", "0.0.0.0"}) {
    CAPTURE(yes);
    CHECK(is_ip_literal(yes));
  }
  for (const char* no : {"localhost", "", "1.2.3", "example.com"}) {
    CAPTURE(no);
    CHECK_FALSE(is_ip_literal(no));
  }
}
