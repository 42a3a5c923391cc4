#pragma once
// The one table of txmq error codes, shared by broker, client and tools. Each code says
// whether retrying the same request can help, so that callers never guess from strings.

#include <cstdint>
#include <string_view>

namespace txmq {

//  name                  wire  retryable  message
#define TXMQ_ERROR_CODES(X)                                                               \
  X(kOk,                  0,    false,     "ok")                                          \
  X(kMalformedFrame,      1,    false,     "malformed frame")                             \
  X(kFrameTooLarge,       2,    false,     "frame larger than the broker accepts")        \
  X(kHelloRequired,       3,    false,     "the first request must be a hello")           \
  X(kUnsupportedVersion,  4,    false,     "unsupported protocol version")                \
  X(kUnknownRequest,      5,    false,     "unknown request type")                        \
  X(kInvalidArgument,     6,    false,     "invalid argument")                            \
  X(kMessageTooLarge,     7,    false,     "message larger than the broker accepts")      \
  X(kForbidden,           8,    false,     "not allowed: only the broker may do that")    \
  X(kNotAuthorized,       9,    false,     "not authorized")                              \
  X(kUnknownTopic,        10,   false,     "unknown topic")                               \
  X(kTopicExists,         11,   false,     "topic already exists")                        \
  X(kUnknownPartition,    12,   false,     "unknown partition")                           \
  X(kNotSubscribed,       13,   false,     "not subscribed to that topic and group")      \
  X(kAuthenticationFailed,14,   false,     "authentication failed")                       \
  X(kStorageFull,         20,   true,      "storage full")                                \
  X(kStorageError,        21,   true,      "storage error")                               \
  X(kShuttingDown,        22,   true,      "broker is shutting down")                     \
  X(kBusy,                23,   true,      "broker is busy")                              \
  X(kNotLeader,           24,   true,      "this broker is not the leader")               \
  X(kNotEnoughReplicas,   25,   true,      "fewer in-sync replicas than min_insync")      \
  X(kStaleEpoch,          26,   true,      "the epoch is not this leader's")              \
  X(kTimeout,             30,   true,      "timed out")                                   \
  X(kConnectionLost,      31,   true,      "connection lost")                             \
  X(kNotConnected,        32,   true,      "not connected to a broker")                   \
  X(kClosed,              33,   false,     "client is closed")                            \
  X(kInternal,            99,   false,     "internal error")

enum class ErrorCode : std::uint16_t {
#define TXMQ_ERROR_ENUM(name, wire, retryable, message) name = wire,
  TXMQ_ERROR_CODES(TXMQ_ERROR_ENUM)
#undef TXMQ_ERROR_ENUM
};

// Whether the same request may succeed if sent again later.
constexpr bool is_retryable(ErrorCode code) {
  switch (code) {
#define TXMQ_ERROR_RETRY(name, wire, retryable, message) \
  case ErrorCode::name:                                  \
    return retryable;
    TXMQ_ERROR_CODES(TXMQ_ERROR_RETRY)
#undef TXMQ_ERROR_RETRY
  }
  return false;
}

// A short, stable, human message for the code ("unknown topic").
constexpr std::string_view default_message(ErrorCode code) {
  switch (code) {
#define TXMQ_ERROR_MESSAGE(name, wire, retryable, message) \
  case ErrorCode::name:                                    \
    return message;
    TXMQ_ERROR_CODES(TXMQ_ERROR_MESSAGE)
#undef TXMQ_ERROR_MESSAGE
  }
  return "unknown error";
}

// The code's name without the k ("UnknownTopic"), for logs and the command line.
constexpr std::string_view code_name(ErrorCode code) {
  switch (code) {
#define TXMQ_ERROR_NAME(name, wire, retryable, message) \
  case ErrorCode::name:                                 \
    return std::string_view(#name).substr(1);
    TXMQ_ERROR_CODES(TXMQ_ERROR_NAME)
#undef TXMQ_ERROR_NAME
  }
  return "Unknown";
}

// Maps a code received off the wire; unknown numbers (a newer broker) become kInternal.
constexpr ErrorCode error_code_from_wire(std::uint16_t wire) {
  switch (wire) {
#define TXMQ_ERROR_FROM_WIRE(name, value, retryable, message) \
  case value:                                                 \
    return ErrorCode::name;
    TXMQ_ERROR_CODES(TXMQ_ERROR_FROM_WIRE)
#undef TXMQ_ERROR_FROM_WIRE
  }
  return ErrorCode::kInternal;
}

}  // namespace txmq
