#include <doctest/doctest.h>

#include "http/address_range.h"

using txmq::http::non_public_range;

TEST_CASE("special-purpose IPv4 ranges are named, public addresses are not") {
  CHECK(non_public_range("127.0.0.1") == "loopback");
  CHECK(non_public_range("127.255.0.9") == "loopback");
  CHECK(non_public_range("10.1.2.3") == "private");
  CHECK(non_public_range("172.16.0.1") == "private");
  CHECK(non_public_range("172.31.255.255") == "private");
  CHECK(non_public_range("172.32.0.1") == "");
  CHECK(non_public_range("192.168.1.1") == "private");
  CHECK(non_public_range("169.254.169.254") == "link-local");
  CHECK(non_public_range("100.64.0.1") == "shared");
  CHECK(non_public_range("0.0.0.0") == "unspecified");
  CHECK(non_public_range("224.0.0.1") == "multicast");
  CHECK(non_public_range("255.255.255.255") == "reserved");
  CHECK(non_public_range("8.8.8.8") == "");
  CHECK(non_public_range("1.1.1.1") == "");
}

TEST_CASE("IPv6 ranges, and IPv4 carried in IPv6, are named") {
  CHECK(non_public_range("::1") == "loopback");
  CHECK(non_public_range("::") == "unspecified");
  CHECK(non_public_range("::ffff:127.0.0.1") == "loopback");
  CHECK(non_public_range("::ffff:10.0.0.1") == "private");
  CHECK(non_public_range("::ffff:8.8.8.8") == "");
  CHECK(non_public_range("64:ff9b::7f00:1") == "loopback");
  CHECK(non_public_range("2002:a9fe:a9fe::1") == "link-local");
  CHECK(non_public_range("fe80::1") == "link-local");
  CHECK(non_public_range("fd00::1") == "private");
  CHECK(non_public_range("ff02::1") == "multicast");
  CHECK(non_public_range("2001:db8::1") == "reserved");
  CHECK(non_public_range("2606:4700:4700::1111") == "");
}

TEST_CASE("text that is not an address is not public") {
  CHECK(non_public_range("") == "reserved");
  CHECK(non_public_range("localhost") == "reserved");
}
