#include "http/address_range.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>
#include <string>

namespace txmq::http {
namespace {

struct Range4 {
  std::uint32_t network;
  int bits;
  std::string_view name;
};

// RFC 6890's special-purpose IPv4 ranges that a callback has no business reaching.
constexpr Range4 kRanges4[] = {
    {0x00000000, 8, "unspecified"},   // 0.0.0.0/8, "this network"
    {0x0A000000, 8, "private"},       // 10.0.0.0/8
    {0x64400000, 10, "shared"},       // 100.64.0.0/10, carrier-grade NAT
    {0x7F000000, 8, "loopback"},      // 127.0.0.0/8
    {0xA9FE0000, 16, "link-local"},   // 169.254.0.0/16, cloud metadata services
    {0xAC100000, 12, "private"},      // 172.16.0.0/12
    {0xC0000000, 24, "reserved"},     // 192.0.0.0/24, IETF protocol assignments
    {0xC0000200, 24, "reserved"},     // 192.0.2.0/24, documentation
    {0xC0A80000, 16, "private"},      // 192.168.0.0/16
    {0xC6120000, 15, "private"},      // 198.18.0.0/15, benchmarking
    {0xC6336400, 24, "reserved"},     // 198.51.100.0/24, documentation
    {0xCB007100, 24, "reserved"},     // 203.0.113.0/24, documentation
    {0xE0000000, 4, "multicast"},     // 224.0.0.0/4
    {0xF0000000, 4, "reserved"},      // 240.0.0.0/4 and the broadcast address
};

std::string_view range4(std::uint32_t a) {
  for (const auto& r : kRanges4)
    if ((a >> (32 - r.bits)) == (r.network >> (32 - r.bits))) return r.name;
  return "";
}

std::uint32_t v4_at(const std::uint8_t* b) {
  return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) | b[3];
}

std::string_view range6(const in6_addr& addr) {
  const std::uint8_t* b = addr.s6_addr;
  auto zeros = [&](int from, int to) {
    for (int i = from; i < to; ++i)
      if (b[i] != 0) return false;
    return true;
  };
  if (zeros(0, 10) && b[10] == 0xFF && b[11] == 0xFF) return range4(v4_at(b + 12));  // ::ffff:a.b.c.d
  if (zeros(0, 15) && b[15] == 1) return "loopback";                                  // ::1
  if (zeros(0, 16)) return "unspecified";                                             // ::
  if (zeros(0, 12)) return "reserved";  // ::a.b.c.d, deprecated IPv4-compatible
  // 64:ff9b::/96 (NAT64) and 2002::/16 (6to4) reach the IPv4 address they embed.
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B && zeros(4, 12)) return range4(v4_at(b + 12));
  if (b[0] == 0x20 && b[1] == 0x02) return range4(v4_at(b + 2));
  if ((b[0] & 0xFE) == 0xFC) return "private";                  // fc00::/7, unique local
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80) return "link-local";  // fe80::/10
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0) return "private";     // fec0::/10, site-local
  if (b[0] == 0xFF) return "multicast";                             // ff00::/8
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0D && b[3] == 0xB8) return "reserved";  // 2001:db8::/32
  if (b[0] == 0x01 && zeros(1, 8)) return "reserved";  // 100::/64, discard
  return "";
}

}  // namespace

std::string_view non_public_range(const sockaddr* address) {
  if (!address) return "reserved";
  if (address->sa_family == AF_INET)
    return range4(ntohl(reinterpret_cast<const sockaddr_in*>(address)->sin_addr.s_addr));
  if (address->sa_family == AF_INET6) return range6(reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr);
  return "reserved";
}

std::string_view non_public_range(std::string_view ip) {
  const std::string text(ip);
  in_addr a4;
  if (inet_pton(AF_INET, text.c_str(), &a4) == 1) return range4(ntohl(a4.s_addr));
  in6_addr a6;
  if (inet_pton(AF_INET6, text.c_str(), &a6) == 1) return range6(a6);
  return "reserved";
}

}  // namespace txmq::http
