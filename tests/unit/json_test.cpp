#include "common/json.h"

#include <doctest/doctest.h>

#include <string>

using txmq::common::json_string;

TEST_CASE("a JSON string escapes quotes and backslashes") {
  CHECK(json_string("") == R"("")");
  CHECK(json_string("plain") == R"("plain")");
  CHECK(json_string("a\"b\\c") == R"("a\"b\\c")");
  CHECK(json_string("/") == R"("/")");  // JSON allows it unescaped
}

TEST_CASE("a JSON string escapes every control character, by name where JSON has one") {
  CHECK(json_string("\n\r\t") == R"("\n\r\t")");
  CHECK(json_string(std::string("a\0b", 3)) == R"("a\u0000b")");
  CHECK(json_string("\x01\x08\x0c\x1b\x1f") == R"("\u0001\u0008\u000c\u001b\u001f")");
  CHECK(json_string("\x20\x7f") == "\"\x20\x7f\"");  // DEL is no control character to JSON
}

TEST_CASE("a JSON string keeps valid UTF-8 and replaces each byte that is not") {
  CHECK(json_string("caf\xc3\xa9") == "\"caf\xc3\xa9\"");
  CHECK(json_string("\xe2\x82\xac \xf0\x9f\x98\x80") == "\"\xe2\x82\xac \xf0\x9f\x98\x80\"");  // 3 and 4 bytes
  CHECK(json_string("\xff\xfe") == R"("\ufffd\ufffd")");
  CHECK(json_string("\xc0\xaf") == R"("\ufffd\ufffd")");  // an overlong '/'
  CHECK(json_string("a\xe2\x82") == R"("a\ufffd\ufffd")");  // a truncated sequence
}
