#pragma once
// One timer for everything that is due later: lease expiries, retries, delayed messages,
// retention, transaction check-backs. A min-heap of (due time, sequence, target) behind a
// single uv_timer_t, armed for the earliest entry; never one timer per message.
//
// Entries are wake-ups, not work: a target (a consumer group, the delayed-message release,
// retention, the check-back round) is asked to do whatever is due and to call at() again
// for its next time. The scheduler owns the deduplication: a target has at most one live
// wake-up, the earliest asked for, so callers ask freely after every change without
// tracking what they asked before. A later wake-up that an earlier one superseded stays in
// the heap but is dropped, not fired, when it comes up.
// Lifecycle: constructed on the loop thread, close() before the loop ends.
// Concurrency: loop thread only.

#include <uv.h>

#include <cstdint>
#include <functional>
#include <queue>
#include <unordered_map>
#include <vector>

#include "broker/loop_thread.h"
#include "broker/wall_clock.h"

namespace txmq::broker {

class Scheduler {
 public:
  using Target = std::uint64_t;
  using Clock = std::uint64_t (*)();  // wall-clock milliseconds; tests pass a fake one

  // on_due is called on the loop thread, once per target whose wake-up came due.
  Scheduler(uv_loop_t* loop, std::function<void(Target)> on_due, Clock clock = &wall_ms);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Wakes target at due_ms (at once when that is past), unless it already has a wake-up at
  // or before due_ms. Loop thread; no errors. Ignored after close().
  void at(std::uint64_t due_ms, Target target);
  // Wakes every target whose wake-up is due by the clock, once each, in due order (ties in
  // the order they were asked for), then arms the timer for the next. The timer calls it;
  // a test with a fake clock may too. Loop thread; no errors.
  void run_due();
  // Stops the timer and closes its handle; at() does nothing afterwards. Loop thread.
  void close();

  // Targets with a live wake-up.
  std::size_t pending() const { return live_.size(); }
  // The due time the timer is armed for; UINT64_MAX when it is not armed.
  std::uint64_t armed_for() const { return armed_for_; }

 private:
  struct Entry {
    std::uint64_t due_ms;
    std::uint64_t seq;  // ties break in insertion order, deterministically
    Target target;
    bool operator>(const Entry& o) const { return due_ms != o.due_ms ? due_ms > o.due_ms : seq > o.seq; }
  };

  void arm();

  LoopThread loop_thread_;
  uv_timer_t timer_{};
  std::function<void(Target)> on_due_;
  Clock clock_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;
  struct Live {
    std::uint64_t due_ms;  // of the target's one live entry
    std::uint64_t seq;     // which heap entry it is; others of the target are superseded
  };
  std::unordered_map<Target, Live> live_;
  std::vector<Target> due_;  // reused by run_due
  std::uint64_t next_seq_ = 0;
  std::uint64_t armed_for_ = UINT64_MAX;  // due time the timer is set for
  bool closed_ = false;
};

}  // namespace txmq::broker
