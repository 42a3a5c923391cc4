#pragma once
// The rule for the names clients choose: topics, consumer groups, producer groups.

#include <string_view>

namespace txmq::broker {

// 1-249 of letters, digits, '.', '_' and '-', neither "." nor "..". Any thread.
bool valid_name(std::string_view name);
inline constexpr const char* kNameRule =
    "1-249 characters of letters, digits, '.', '_' and '-', and not '.' or '..'";

}  // namespace txmq::broker
