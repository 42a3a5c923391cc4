// Standard Webhooks request signing (https://www.standardwebhooks.com): the receiver
// recomputes HMAC-SHA256 over "<webhook-id>.<webhook-timestamp>.<body>" with the shared
// secret and compares it with the webhook-signature header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/base64.h"
#include "common/result.h"

namespace txmq::notifier {

using common::base64_decode;
using common::base64_encode;

// The key bytes of a "whsec_<base64>" secret. kInvalidArgument.
Result<std::string> decode_secret(std::string_view secret);

// "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)).
std::string sign(std::string_view key, std::string_view id, std::int64_t timestamp_s, std::string_view body);

}  // namespace txmq::notifier
