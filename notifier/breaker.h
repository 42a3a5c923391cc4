// A circuit breaker for one endpoint. Closed: requests flow. After `failures_to_open`
// consecutive failures it opens: nothing is sent for the cool-down, and the messages meant
// for the endpoint wait without spending attempts. Then it lets one probe through
// (half-open): success closes it, failure opens it for another cool-down.
#pragma once

#include <cstdint>

namespace txmq::notifier {

class CircuitBreaker {
 public:
  enum class State { kClosed = 0, kOpen = 1, kHalfOpen = 2 };  // values are the metric's

  CircuitBreaker(std::uint32_t failures_to_open, std::uint64_t cooldown_ms)
      : failures_to_open_(failures_to_open), cooldown_ms_(cooldown_ms) {}

  // May a request start now? While half-open, only the probe may, one at a time.
  bool allow(std::uint64_t now_ms) {
    if (state_ == State::kOpen && now_ms >= open_until_ms_) state_ = State::kHalfOpen;
    if (state_ == State::kClosed) return true;
    if (state_ == State::kHalfOpen && !probing_) return probing_ = true;
    return false;
  }

  // A request that allow() let through ended. Returns true when this changed the state.
  bool on_success() {
    failures_ = 0;
    probing_ = false;
    if (state_ == State::kClosed) return false;
    state_ = State::kClosed;
    return true;
  }
  bool on_failure(std::uint64_t now_ms) {
    probing_ = false;
    if (state_ == State::kClosed && ++failures_ < failures_to_open_) return false;
    state_ = State::kOpen;
    open_until_ms_ = now_ms + cooldown_ms_;
    failures_ = 0;
    return true;
  }
  // A request that allow() let through ended with no verdict on the endpoint (the message
  // itself was refused, say): a probe slot is given back.
  void on_neutral() { probing_ = false; }

  State state() const { return state_; }
  std::uint64_t open_until_ms() const { return open_until_ms_; }  // while open

 private:
  std::uint32_t failures_to_open_;
  std::uint64_t cooldown_ms_;
  State state_ = State::kClosed;
  std::uint32_t failures_ = 0;       // consecutive, while closed
  std::uint64_t open_until_ms_ = 0;  // the cool-down's end
  bool probing_ = false;             // the half-open probe is in flight
};

}  // namespace txmq::notifier
