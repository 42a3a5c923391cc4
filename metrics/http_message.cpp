#include "metrics/http_message.h"

namespace txmq::metrics {

namespace {

constexpr std::string_view kHeadEnd = "\r\n\r\n";

bool is_token(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (c < 'A' || c > 'Z') return false;  // every registered method is upper-case letters
  }
  return true;
}

RequestHead without_request(HeadStatus status) { return {status, {}, {}}; }

}  // namespace

std::string_view reason_phrase(HttpStatus status) {
  switch (status) {
    case HttpStatus::kOk:
      return "OK";
    case HttpStatus::kBadRequest:
      return "Bad Request";
    case HttpStatus::kNotFound:
      return "Not Found";
    case HttpStatus::kMethodNotAllowed:
      return "Method Not Allowed";
    case HttpStatus::kHeadersTooLarge:
      return "Request Header Fields Too Large";
    case HttpStatus::kInternalError:
      return "Internal Server Error";
  }
  return "Unknown";
}

RequestHead parse_request_head(std::string_view buffer, std::size_t max_head_bytes) {
  const std::size_t head_end = buffer.find(kHeadEnd);
  if (head_end == std::string_view::npos) {
    return without_request(buffer.size() >= max_head_bytes ? HeadStatus::kTooLarge
                                                           : HeadStatus::kIncomplete);
  }
  if (head_end + kHeadEnd.size() > max_head_bytes) return without_request(HeadStatus::kTooLarge);

  // Request line: method SP request-target SP HTTP-version.
  const std::string_view line = buffer.substr(0, buffer.find("\r\n"));
  const std::size_t first_space = line.find(' ');
  const std::size_t last_space = line.rfind(' ');
  if (first_space == std::string_view::npos || first_space == last_space) {
    return without_request(HeadStatus::kMalformed);
  }
  const std::string_view method = line.substr(0, first_space);
  const std::string_view target = line.substr(first_space + 1, last_space - first_space - 1);
  const std::string_view version = line.substr(last_space + 1);
  if (!is_token(method) || !target.starts_with('/') || !version.starts_with("HTTP/1.")) {
    return without_request(HeadStatus::kMalformed);
  }
  return {HeadStatus::kComplete, method, target.substr(0, target.find('?'))};
}

std::string format_response(HttpStatus status, std::string_view content_type,
                            std::string_view body) {
  std::string response;
  response.reserve(160 + body.size());
  response.append("HTTP/1.1 ")
      .append(std::to_string(static_cast<int>(status)))
      .append(" ")
      .append(reason_phrase(status))
      .append("\r\nContent-Type: ")
      .append(content_type)
      .append("\r\nContent-Length: ")
      .append(std::to_string(body.size()))
      .append("\r\nConnection: close\r\n");
  if (status == HttpStatus::kMethodNotAllowed) response.append("Allow: GET\r\n");
  response.append("\r\n").append(body);
  return response;
}

}  // namespace txmq::metrics
