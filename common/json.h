#pragma once
// JSON string literals, header-only like utf8.h so that every library can use it without
// linking another: the broker's audit log, the notifier's give-up records and the txmq
// tool's --json output all write strings whose bytes came from a client.

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

#include "common/utf8.h"

namespace txmq::common {

// s as a quoted JSON string literal: '"' and '\' escaped, control characters as \n, \r, \t
// or \u00XX, valid UTF-8 kept as it is, and each byte that is not valid UTF-8 replaced by
// \ufffd, so that the output is valid JSON whatever the input.
inline std::string json_string(std::string_view s) {
  std::string out = "\"";
  out.reserve(s.size() + 2);
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_length(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    const auto c = static_cast<unsigned char>(s[i++]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

}  // namespace txmq::common
