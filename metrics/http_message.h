#pragma once

#include <cstddef>
#include <string>
#include <string_view>

// The sliver of HTTP/1.1 that the metrics endpoint speaks: find and parse a request head,
// write a complete response. Pure functions, so they are tested without sockets.

namespace txmq::metrics {

// Every status the endpoint answers with; reason_phrase() is the one table of their texts.
enum class HttpStatus {
  kOk = 200,
  kBadRequest = 400,
  kNotFound = 404,
  kMethodNotAllowed = 405,
  kHeadersTooLarge = 431,
  kInternalError = 500,
};

// "OK", "Not Found", ... Thread: any. Errors: none.
std::string_view reason_phrase(HttpStatus status);

enum class HeadStatus {
  kIncomplete,  // no blank line yet: read more
  kComplete,    // method and path are set
  kMalformed,   // answer 400
  kTooLarge,    // no blank line within the limit: answer 431
};

struct RequestHead {
  HeadStatus status = HeadStatus::kIncomplete;
  std::string_view method;  // "GET"; points into the parsed buffer
  std::string_view path;    // the request target without its query: "/metrics"
};

// Looks for a complete request head (request line and headers, ending in an empty line) at
// the start of `buffer` and parses its request line. Header fields are not interpreted: the
// endpoint needs none of them. Thread: any. Errors: reported in the status.
RequestHead parse_request_head(std::string_view buffer, std::size_t max_head_bytes);

// A complete response with Content-Type, Content-Length and "Connection: close", plus
// "Allow: GET" on a 405 as RFC 9110 requires (the endpoint serves GET only).
// Thread: any. Errors: std::bad_alloc.
std::string format_response(HttpStatus status, std::string_view content_type,
                            std::string_view body);

}  // namespace txmq::metrics
