#pragma once
// Errors are values. Result<T> holds either a T or an Error (a code from errors.h plus a
// message that adds context). Nothing here throws.

#include <cassert>
#include <cstdint>
#include <string>
#include <utility>
#include <variant>

// Relative to this file: the installed copy (include/txmq/common/) has no project root on
// the include path.
#include "errors.h"

namespace txmq {

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;  // context for a person: "unknown topic 'orders'"
  // kNotLeader: the leader's client address ("host:port") when the broker that refused
  // knows it, for a client to go there; empty otherwise.
  std::string leader;
  std::uint64_t leader_epoch = 0;  // kNotLeader: that leader's epoch, when known

  Error() = default;
  Error(ErrorCode c) : code(c), message(default_message(c)) {}
  Error(ErrorCode c, std::string m) : code(c), message(std::move(m)) {}

  bool retryable() const { return is_retryable(code); }
  // "UnknownTopic: unknown topic 'orders'"
  std::string describe() const { return std::string(code_name(code)) + ": " + message; }
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}
  Result(ErrorCode code) : v_(Error(code)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}
  Result(ErrorCode code) : error_(code), ok_(code == ErrorCode::kOk) {}

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { assert(!ok_); return error_; }

 private:
  Error error_{ErrorCode::kOk};
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace txmq
