#include "metrics/http_message.h"

#include <doctest/doctest.h>

#include <string>

using txmq::metrics::HeadStatus;
using txmq::metrics::HttpStatus;
using txmq::metrics::parse_request_head;

TEST_CASE("a complete request head yields its method and path without the query") {
  const auto head = parse_request_head(
      "GET /metrics?name[]=x HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n", 8192);
  CHECK(head.status == HeadStatus::kComplete);
  CHECK(head.method == "GET");
  CHECK(head.path == "/metrics");
}

TEST_CASE("a request head without its blank line is incomplete") {
  CHECK(parse_request_head("GET /metrics HTTP/1.1\r\nHost: x\r\n", 8192).status ==
        HeadStatus::kIncomplete);
  CHECK(parse_request_head("", 8192).status == HeadStatus::kIncomplete);
}

TEST_CASE("a request head reaching the limit without its blank line is too large") {
  const std::string filler(100, 'a');
  CHECK(parse_request_head("GET / HTTP/1.1\r\nX: " + filler, 64).status == HeadStatus::kTooLarge);
  CHECK(parse_request_head("GET / HTTP/1.1\r\nX: " + filler + "\r\n\r\n", 64).status ==
        HeadStatus::kTooLarge);
}

TEST_CASE("a request line that is not method, target and HTTP/1.x is malformed") {
  for (const char* request :
       {"GET\r\n\r\n", "GET /metrics\r\n\r\n", "get /metrics HTTP/1.1\r\n\r\n",
        "GET metrics HTTP/1.1\r\n\r\n", "GET /metrics HTTP/2\r\n\r\n", "\r\n\r\n"}) {
    CAPTURE(request);
    CHECK(parse_request_head(request, 8192).status == HeadStatus::kMalformed);
  }
}

TEST_CASE("a response carries status, content type, length and Connection: close") {
  CHECK(txmq::metrics::format_response(HttpStatus::kOk, "text/plain", "hello") ==
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        "Connection: close\r\n\r\nhello");
}

TEST_CASE("a 405 response says which method is allowed") {
  const std::string response =
      txmq::metrics::format_response(HttpStatus::kMethodNotAllowed, "text/plain", "");
  CHECK(response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
  CHECK(response.find("\r\nAllow: GET\r\n") != std::string::npos);
}
