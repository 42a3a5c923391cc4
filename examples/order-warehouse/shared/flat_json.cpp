#include "flat_json.h"

#include <cctype>
#include <charconv>

namespace orders_example {
namespace {

void append_escaped(std::string& out, std::string_view s) {
  static const char* kHex = "0123456789abcdef";
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void append_utf8(std::string& out, unsigned cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A cursor over the text; every reader returns false on malformed input.
struct Reader {
  std::string_view s;
  std::size_t i = 0;

  void skip_ws() {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  }
  bool eat(char c) {
    skip_ws();
    if (i < s.size() && s[i] == c) return ++i, true;
    return false;
  }
  bool hex4(unsigned& v) {
    if (i + 4 > s.size()) return false;
    auto r = std::from_chars(s.data() + i, s.data() + i + 4, v, 16);
    if (r.ptr != s.data() + i + 4) return false;
    i += 4;
    return true;
  }
  bool string(std::string& out) {
    if (!eat('"')) return false;
    while (i < s.size()) {
      char c = s[i++];
      if (c == '"') return true;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) return false;
      switch (char e = s[i++]) {
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          unsigned cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= s.size() && s[i] == '\\' && s[i + 1] == 'u') {
            i += 2;
            unsigned lo = 0;
            if (!hex4(lo)) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: out += e;  // \" \\ \/
      }
    }
    return false;
  }
  // Any value, returned as its raw text (strings keep their quotes).
  bool raw_value(std::string& out) {
    skip_ws();
    const std::size_t start = i;
    int depth = 0;
    bool in_string = false;
    for (; i < s.size(); ++i) {
      char c = s[i];
      if (in_string) {
        if (c == '\\') ++i;
        else if (c == '"') in_string = false;
        continue;
      }
      if (c == '"') in_string = true;
      else if (c == '{' || c == '[') ++depth;
      else if (c == '}' || c == ']') {
        if (depth == 0) break;
        if (--depth == 0) {
          ++i;
          break;
        }
      } else if (c == ',' && depth == 0) {
        break;
      }
    }
    if (depth != 0 || in_string) return false;
    out.assign(s.substr(start, i - start));
    while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back()))) out.pop_back();
    return !out.empty();
  }
};

}  // namespace

void JsonWriter::name(std::string_view n) {
  if (!out_.empty()) out_ += ',';
  append_escaped(out_, n);
  out_ += ':';
}

JsonWriter& JsonWriter::field(std::string_view n, std::string_view value) {
  name(n);
  append_escaped(out_, value);
  return *this;
}

JsonWriter& JsonWriter::field(std::string_view n, std::int64_t value) {
  name(n);
  out_ += std::to_string(value);
  return *this;
}

std::optional<std::map<std::string, std::string>> parse_flat_json(std::string_view text) {
  Reader r{text};
  std::map<std::string, std::string> fields;
  if (!r.eat('{')) return std::nullopt;
  if (r.eat('}')) return fields;
  do {
    std::string key, value;
    if (!r.string(key) || !r.eat(':')) return std::nullopt;
    r.skip_ws();
    if (r.i < text.size() && text[r.i] == '"') {
      if (!r.string(value)) return std::nullopt;
    } else if (!r.raw_value(value)) {
      return std::nullopt;
    }
    fields[key] = std::move(value);
  } while (r.eat(','));
  if (!r.eat('}')) return std::nullopt;
  return fields;
}

std::optional<std::int64_t> json_int(const std::map<std::string, std::string>& fields, const std::string& name) {
  auto it = fields.find(name);
  if (it == fields.end()) return std::nullopt;
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
  if (ec != std::errc() || ptr != it->second.data() + it->second.size()) return std::nullopt;
  return v;
}

}  // namespace orders_example
