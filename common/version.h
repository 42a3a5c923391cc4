#pragma once

#include <cstdint>
#include <string_view>

namespace txmq {

inline constexpr std::string_view kVersion = "0.1.0";
// Bumped on any incompatible change to schema/txmq.fbs.
inline constexpr std::uint32_t kProtocolVersion = 1;
// The broker's protocol port when nothing says otherwise.
inline constexpr std::string_view kDefaultBrokerAddress = "127.0.0.1:7411";

}  // namespace txmq
