#pragma once
// "HOST:PORT" and "[IPv6]:PORT" parsing, shared by the broker's config and the clients.

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace txmq::common {

struct HostPort {
  std::string host;  // without brackets: "127.0.0.1", "::1"
  std::uint16_t port = 0;

  // Brackets an IPv6 host again: "[::1]:7411".
  std::string to_string() const;
};

// kInvalidArgument when the text is not HOST:PORT with a port in 0..65535.
Result<HostPort> parse_host_port(std::string_view text);

// True for an IP address only this machine can reach: 127.0.0.0/8, ::1, or 127/8 mapped
// into IPv6. False for anything else, every-interface addresses and names included.
bool is_loopback_ip(std::string_view host);

}  // namespace txmq::common
