#pragma once
// One timer for everything that is due later: lease expiries, retries, delayed messages,
// retention. A min-heap of (due time, sequence, target) behind a single uv_timer_t, armed
// for the earliest entry; never one timer per message.
//
// Entries are wake-ups, not work: a target (a consumer group, the delayed-message release,
// retention) is asked to do whatever is due and to call at() again for its next time.
// A wake-up that turns out early or stale is harmless; the target just re-registers.
// Lifecycle: constructed on the loop, close() before the loop ends.
// Concurrency: loop thread only.

#include <uv.h>

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

namespace txmq::broker {

// Wall-clock milliseconds since the epoch: due times are stored on disk and must mean the
// same after a restart.
std::uint64_t wall_ms();

class Scheduler {
 public:
  using Target = std::uint64_t;

  Scheduler(uv_loop_t* loop, std::function<void(Target)> on_due);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Wakes target at due_ms (or at once when that is past).
  void at(std::uint64_t due_ms, Target target);
  void close();
  std::size_t size() const { return heap_.size(); }

 private:
  struct Entry {
    std::uint64_t due_ms;
    std::uint64_t seq;  // ties break in insertion order, deterministically
    Target target;
    bool operator>(const Entry& o) const { return due_ms != o.due_ms ? due_ms > o.due_ms : seq > o.seq; }
  };

  void arm();
  void fire();

  uv_timer_t timer_{};
  std::function<void(Target)> on_due_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;
  std::uint64_t next_seq_ = 0;
  std::uint64_t armed_for_ = UINT64_MAX;  // due time the timer is set for
  bool closed_ = false;
};

}  // namespace txmq::broker
