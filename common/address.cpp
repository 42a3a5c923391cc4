#include "common/address.h"

#include <arpa/inet.h>

#include <cctype>
#include <charconv>
#include <string>

namespace txmq::common {

std::string HostPort::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<HostPort> parse_host_port(std::string_view text) {
  auto bad = [&] {
    return Error(ErrorCode::kInvalidArgument,
                 "expected HOST:PORT, IP:PORT or [IPv6]:PORT, got '" + std::string(text) + "'");
  };
  std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return bad();
  std::string_view host = text.substr(0, colon);
  std::string_view port = text.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad();
    host = host.substr(1, host.size() - 2);
    // Brackets are for IPv6 only; a zone id ("%eth0") may follow a link-local address.
    std::string_view ip = host.substr(0, host.find('%'));
    if (ip.find(':') == std::string_view::npos || !is_ip_literal(ip)) return bad();
  } else if (host.find(':') != std::string_view::npos) {
    return bad();  // a bare IPv6 address needs brackets to tell it from the port
  } else {
    for (char c : host)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return bad();
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
    return bad();
  return HostPort{std::string(host), static_cast<std::uint16_t>(value)};
}

bool is_ip_literal(std::string_view host) {
  const std::string h(host);
  in_addr v4{};
  in6_addr v6{};
  return inet_pton(AF_INET, h.c_str(), &v4) == 1 || inet_pton(AF_INET6, h.c_str(), &v6) == 1;
}

bool is_loopback_ip(std::string_view host) {
  const std::string h(host);
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
  return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

}  // namespace txmq::common
