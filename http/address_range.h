// Which addresses a callback may connect to. A URL taken from a message could otherwise make
// the notifier POST, signed, to the loopback interface, the private network it runs in or
// a cloud metadata service (169.254.169.254): the server-side request forgery that webhook
// senders guard against by checking the address actually connected to, not only the name.
#pragma once

#include <sys/socket.h>

#include <string_view>

namespace txmq::http {

// The name of the special-purpose range an address is in ("loopback", "private",
// "link-local", "shared", "unspecified", "multicast", "reserved"), or "" for a public
// unicast address. IPv4-mapped, NAT64 and 6to4 IPv6 addresses are judged by the IPv4
// address they carry. An address of another family is "reserved".
std::string_view non_public_range(const sockaddr* address);

// The same for an address in text ("127.0.0.1", "::1"), as CURLINFO_PRIMARY_IP gives it;
// text that is not an address is "reserved".
std::string_view non_public_range(std::string_view ip);

}  // namespace txmq::http
