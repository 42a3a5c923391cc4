#pragma once
// "HOST:PORT" and "[IPv6]:PORT" parsing and formatting, shared by every txmq address: the
// client's broker, the tool's, notifier's and bench's --broker, the broker's listen and
// metrics_listen. HOST is a name ("localhost"), an IPv4 literal or, in brackets, an IPv6
// literal; common/resolve.h turns it into socket addresses.

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace txmq::common {

struct HostPort {
  std::string host;  // without brackets: "localhost", "127.0.0.1", "::1"
  std::uint16_t port = 0;

  // Brackets an IPv6 host again: "[::1]:7411".
  std::string to_string() const;
};

// kInvalidArgument, quoting the text, when it is not HOST:PORT with a port in 0..65535: no
// port, an empty host, a bare IPv6 address (it needs brackets), brackets around anything
// but an IPv6 address, or a name with characters other than letters, digits, '-', '_', '.'.
Result<HostPort> parse_host_port(std::string_view text);

// True for an IPv4 or IPv6 literal (without brackets), false for a name.
bool is_ip_literal(std::string_view host);

// True for an IP address only this machine can reach: 127.0.0.0/8, ::1, or 127/8 mapped
// into IPv6. False for anything else, every-interface addresses and names included.
bool is_loopback_ip(std::string_view host);

}  // namespace txmq::common
