#pragma once
// The name rule shared by the broker (topics, consumer groups, producer groups) and the
// users file (user names): one rule, so that a name valid in one place is valid in all.

#include <string_view>

namespace txmq::common {

// 1-249 of letters, digits, '.', '_' and '-', neither "." nor "..". Any thread.
bool valid_name(std::string_view name);
inline constexpr const char* kNameRule = "1-249 characters of letters, digits, '.', '_' and '-', and not '.' or '..'";

}  // namespace txmq::common
