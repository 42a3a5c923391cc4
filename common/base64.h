#pragma once
// Base64 (RFC 4648, the standard alphabet with padding), for the byte strings that travel
// as text: SCRAM's nonces and proofs, Standard Webhooks secrets, etcd's keys and values.

#include <optional>
#include <string>
#include <string_view>

namespace txmq::common {

std::string base64_encode(std::string_view bytes);
// Strict: whole groups of four, padding only at the end, no whitespace, and the unused low
// bits of the last group zero, so that each value has exactly one text. nullopt otherwise.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace txmq::common
