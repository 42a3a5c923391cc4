#pragma once
// Debug-build checks that loop-thread-only code runs on the loop thread, libuv style: one
// comparison of thread ids, compiled out under NDEBUG (as assert is).
//
// Each owner of loop-thread state embeds a LoopThread made on the loop thread (components
// are made in Broker::run, on the loop thread) and calls check() at the top of each of its
// loop-thread-only functions.

#include <cassert>
#include <thread>

namespace txmq::broker {

class LoopThread {
 public:
  // Bound to the calling thread.
  LoopThread() = default;

  // Binds to the calling thread: for an owner made on another thread before its loop runs.
  void bind() {
#ifndef NDEBUG
    id_ = std::this_thread::get_id();
#endif
  }

  // Asserts (Debug builds only) that the caller runs on the bound thread.
  void check() const {
#ifndef NDEBUG
    assert(id_ == std::this_thread::get_id() && "called off the loop thread");
#endif
  }

 private:
#ifndef NDEBUG
  std::thread::id id_ = std::this_thread::get_id();
#endif
};

}  // namespace txmq::broker
