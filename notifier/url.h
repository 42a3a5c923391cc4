// Callback URLs, parsed and normalised once with libcurl's URL API, so that the allow-list
// compares what libcurl will request and the request goes to exactly the URL that was
// checked. A message's URL is chosen by whoever produced the message: parsing is strict,
// and anything ambiguous between a parser and a receiver is refused rather than guessed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace txmq::notifier {

struct Url {
  std::string scheme;  // "http" or "https"
  std::string host;    // lower case; a dotted-quad IPv4, a bracketed IPv6 or a DNS name
  std::uint16_t port = 0;  // explicit, or the scheme's default
  std::string path;    // starts with '/'; dot-segments removed
  std::string query;   // without '?'; may be empty
  std::string text;    // scheme://host[:port]path[?query]: what is requested

  // "scheme://host:port", port always written: what a breaker and a request slot are per.
  std::string origin() const;
  // The host is an IP address written as such, not a name (no resolution can change it).
  bool host_is_ip() const;
};

// Parses an absolute http(s) URL, refusing with kInvalidArgument and a reason fit for a
// give-up record: bytes other than printable ASCII (space, tab, NUL, controls, 0x80..0xFF),
// backslashes, userinfo ("user@"), a fragment, an IPv6 zone id, an empty host, a host that
// ends with a dot or holds characters outside [a-z0-9._-], a numeric host that is not a
// canonical IPv4 address (after libcurl turned "2130706433", "0x7f000001" and "127.1" into
// "127.0.0.1"), port 0, percent-encoded '.', '/', '\', '%' or NUL, malformed
// percent-escapes and dot-segments with parameters ("..;") in the path, and anything
// longer than max_bytes.
Result<Url> parse_url(std::string_view text, std::size_t max_bytes);

// One allowed_urls entry: an origin and a path prefix matched on segment boundaries.
struct AllowedUrl {
  Url url;
  std::string prefix;  // the path without a trailing '/' ("" for the root)
  bool exact_allowed;  // the entry's path has no trailing '/': that path itself matches too
};

// Parses the allowed_urls entries of a subscription. An entry must be a full origin with an
// optional path (no query, no fragment, no userinfo), under the same rules as parse_url.
// kInvalidArgument naming the entry.
Result<std::vector<AllowedUrl>> parse_allowed_urls(const std::vector<std::string>& entries,
                                                   std::size_t max_bytes);

// The entry `url` falls under, or nullptr: same scheme, host and port, and a path equal to
// the entry's (when it has no trailing slash) or below it at a '/' boundary.
const AllowedUrl* match_allowed(const std::vector<AllowedUrl>& allowed, const Url& url);

}  // namespace txmq::notifier
