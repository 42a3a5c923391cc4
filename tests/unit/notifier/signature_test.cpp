#include <doctest/doctest.h>

#include "common/utf8.h"
#include "notifier/signature.h"

using namespace txmq::notifier;

TEST_CASE("the signature matches the Standard Webhooks specification's example") {
  auto key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  REQUIRE(key.ok());
  CHECK(sign(*key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, R"({"test": 2432232314})") ==
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

TEST_CASE("a secret without the whsec_ prefix or with bad base64 is refused") {
  CHECK_FALSE(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").ok());
  CHECK_FALSE(decode_secret("whsec_not base64!").ok());
  CHECK_FALSE(decode_secret("whsec_").ok());
}

TEST_CASE("base64 round-trips every length and refuses malformed input") {
  std::string bytes;
  for (int i = 0; i < 40; ++i) {
    auto decoded = base64_decode(base64_encode(bytes));
    REQUIRE(decoded.has_value());
    CHECK(*decoded == bytes);
    bytes += static_cast<char>(i * 37);
  }
  CHECK(base64_encode("foob") == "Zm9vYg==");
  CHECK_FALSE(base64_decode("Zm9vYg=").has_value());
  CHECK_FALSE(base64_decode("Zm=vYg==").has_value());
}

TEST_CASE("UTF-8 validity refuses overlong forms and surrogates") {
  CHECK(txmq::common::valid_utf8("caf\xc3\xa9"));
  CHECK_FALSE(txmq::common::valid_utf8("\xc0\xaf"));  // overlong '/'
  CHECK_FALSE(txmq::common::valid_utf8("\xed\xa0\x80"));  // a surrogate
}
