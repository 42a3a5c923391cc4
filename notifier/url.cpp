#include "notifier/url.h"

#include <arpa/inet.h>
#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <memory>

namespace txmq::notifier {
namespace {

Error invalid(std::string why) { return Error(ErrorCode::kInvalidArgument, std::move(why)); }

struct CurlUrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using CurlUrlPtr = std::unique_ptr<CURLU, CurlUrlDeleter>;

// One part of a parsed URL; nullopt-like empty with `present` false when curl has none.
struct Part {
  bool present = false;
  std::string value;
};

Part get(CURLU* u, CURLUPart part, unsigned flags = 0) {
  char* out = nullptr;
  Part p;
  if (curl_url_get(u, part, &out, flags) == CURLUE_OK && out) {
    p.present = true;
    p.value = out;
  }
  curl_free(out);
  return p;
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), s.begin(),
                    [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); });
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A receiver that decodes %2e%2e or %2f before routing (or decodes twice: %252e) would see
// a path the allow-list never saw; one that does not would see another. Neither is
// guessed: such paths are refused. So are dot-segments with parameters ("..;"), which
// libcurl keeps as names and servers such as Tomcat route as "..".
Status check_path(std::string_view path) {
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '%') continue;
    if (i + 2 >= path.size()) return invalid("malformed percent-escape in the path");
    const int hi = hex_value(path[i + 1]), lo = hex_value(path[i + 2]);
    if (hi < 0 || lo < 0) return invalid("malformed percent-escape in the path");
    const int byte = hi * 16 + lo;
    if (byte == '.' || byte == '/' || byte == '\\' || byte == '%' || byte == 0)
      return invalid("percent-encoded '.', '/', '\\', '%' or NUL in the path");
  }
  for (std::size_t start = 1; start <= path.size();) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view segment = path.substr(start, end - start);
    const std::string_view name = segment.substr(0, segment.find(';'));
    if (name.size() != segment.size() && (name == "." || name == ".."))
      return invalid("a dot-segment with parameters (\"..;\") in the path");
    start = end + 1;
  }
  return {};
}

// Hosts are names or canonical IP literals. A last label that is numeric makes the host an
// IPv4 address to WHATWG parsers and to getaddrinfo ("127.1", "0x7f.1"), so it must be one
// libcurl already normalised to dotted-quad form.
Status check_host(const std::string& host) {
  if (host.empty()) return invalid("empty host");
  if (host.front() == '[') {
    if (host.back() != ']') return invalid("malformed IPv6 host");
    const std::string inner = host.substr(1, host.size() - 2);
    in6_addr a;
    if (inet_pton(AF_INET6, inner.c_str(), &a) != 1) return invalid("malformed IPv6 host");
    return {};
  }
  if (host.back() == '.') return invalid("host ends with a dot");
  for (char c : host)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'))
      return invalid("host has a character other than letters, digits, '.', '-' and '_'");
  const std::string last = host.substr(host.rfind('.') == std::string::npos ? 0 : host.rfind('.') + 1);
  const bool numeric = last.empty() || std::all_of(last.begin(), last.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }) ||
                       last.starts_with("0x");
  if (!numeric) return {};
  in_addr a;
  char canonical[INET_ADDRSTRLEN];
  if (inet_pton(AF_INET, host.c_str(), &a) != 1 || !inet_ntop(AF_INET, &a, canonical, sizeof canonical) ||
      host != canonical)
    return invalid("numeric host is not an IPv4 address");
  return {};
}

std::uint16_t default_port(const std::string& scheme) { return scheme == "https" ? 443 : 80; }

}  // namespace

std::string Url::origin() const { return scheme + "://" + host + ":" + std::to_string(port); }

bool Url::host_is_ip() const {
  if (host.starts_with("[")) return true;
  in_addr a;
  return inet_pton(AF_INET, host.c_str(), &a) == 1;
}

Result<Url> parse_url(std::string_view text, std::size_t max_bytes) {
  if (text.empty()) return invalid("empty URL");
  if (text.size() > max_bytes)
    return invalid("URL of " + std::to_string(text.size()) + " bytes is longer than max_url_bytes (" +
                   std::to_string(max_bytes) + ")");
  for (char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (b <= 0x20 || b >= 0x7F) return invalid("URL has a space, a control character or a byte that is not ASCII");
    if (c == '\\') return invalid("URL has a backslash");
  }
  std::size_t after_scheme;
  if (starts_with_nocase(text, "http://")) after_scheme = 7;
  else if (starts_with_nocase(text, "https://")) after_scheme = 8;
  else return invalid("URL must start with http:// or https://");
  const std::string_view authority = text.substr(after_scheme, text.find_first_of("/?#", after_scheme) - after_scheme);
  if (authority.empty()) return invalid("empty host");
  if (authority.find('@') != std::string_view::npos) return invalid("userinfo (user@) is not allowed in a URL");
  if (authority.find('%') != std::string_view::npos)
    return invalid("percent-escapes and zone ids are not allowed in the host");
  if (text.find('#') != std::string_view::npos) return invalid("a fragment (#) is not allowed in a URL");

  CurlUrlPtr u(curl_url());
  if (!u) return Error(ErrorCode::kInternal, "curl_url failed");
  const std::string copy(text);
  if (CURLUcode rc = curl_url_set(u.get(), CURLUPART_URL, copy.c_str(), 0); rc != CURLUE_OK)
    return invalid(std::string("malformed URL: ") + curl_url_strerror(rc));

  Url url;
  url.scheme = get(u.get(), CURLUPART_SCHEME).value;
  std::transform(url.scheme.begin(), url.scheme.end(), url.scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  if (url.scheme != "http" && url.scheme != "https") return invalid("URL must start with http:// or https://");
  if (get(u.get(), CURLUPART_USER).present || get(u.get(), CURLUPART_PASSWORD).present ||
      get(u.get(), CURLUPART_OPTIONS).present)
    return invalid("userinfo (user@) is not allowed in a URL");
  if (get(u.get(), CURLUPART_ZONEID).present) return invalid("IPv6 zone ids are not allowed");
  url.host = get(u.get(), CURLUPART_HOST).value;
  std::transform(url.host.begin(), url.host.end(), url.host.begin(), [](unsigned char c) { return std::tolower(c); });
  if (auto st = check_host(url.host); !st) return st.error();
  const Part port = get(u.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
  const unsigned long port_number = port.present ? std::stoul(port.value) : 0;
  if (port_number == 0 || port_number > 65535) return invalid("port must be between 1 and 65535");
  url.port = static_cast<std::uint16_t>(port_number);
  url.path = get(u.get(), CURLUPART_PATH).value;
  if (url.path.empty()) url.path = "/";
  if (url.path.front() != '/') return invalid("malformed path");
  if (auto st = check_path(url.path); !st) return st.error();
  url.query = get(u.get(), CURLUPART_QUERY).value;

  url.text = url.scheme + "://" + url.host;
  if (url.port != default_port(url.scheme)) url.text += ":" + std::to_string(url.port);
  url.text += url.path;
  if (!url.query.empty()) url.text += "?" + url.query;

  // What is requested must be what was checked: libcurl parses the normalised text again
  // when it sends, and must read the same URL back.
  CurlUrlPtr again(curl_url());
  if (!again || curl_url_set(again.get(), CURLUPART_URL, url.text.c_str(), 0) != CURLUE_OK ||
      get(again.get(), CURLUPART_URL).value != url.text)
    return invalid("URL does not normalise stably");
  return url;
}

Result<std::vector<AllowedUrl>> parse_allowed_urls(const std::vector<std::string>& entries, std::size_t max_bytes) {
  std::vector<AllowedUrl> out;
  for (const auto& entry : entries) {
    auto bad = [&](const std::string& why) {
      return invalid("allowed_urls entry '" + entry + "' is not a full origin plus path (scheme://host[:port][/path]): " +
                     why);
    };
    auto url = parse_url(entry, max_bytes);
    if (!url) return bad(url.error().message);
    if (!url->query.empty() || entry.find('?') != std::string::npos) return bad("it has a query");
    AllowedUrl a{*url, url->path, !url->path.ends_with("/")};
    if (a.prefix.ends_with("/")) a.prefix.pop_back();
    out.push_back(std::move(a));
  }
  return out;
}

const AllowedUrl* match_allowed(const std::vector<AllowedUrl>& allowed, const Url& url) {
  for (const auto& a : allowed) {
    if (a.url.scheme != url.scheme || a.url.host != url.host || a.url.port != url.port) continue;
    if (url.path.size() > a.prefix.size() && url.path.starts_with(a.prefix) && url.path[a.prefix.size()] == '/')
      return &a;
    if (a.exact_allowed && url.path == a.prefix) return &a;
  }
  return nullptr;
}

}  // namespace txmq::notifier
