#include "broker/scheduler.h"

#include <algorithm>
#include <chrono>

namespace txmq::broker {

std::uint64_t wall_ms() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

Scheduler::Scheduler(uv_loop_t* loop, std::function<void(Target)> on_due) : on_due_(std::move(on_due)) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
}

void Scheduler::at(std::uint64_t due_ms, Target target) {
  if (closed_) return;
  heap_.push(Entry{due_ms, next_seq_++, target});
  if (due_ms < armed_for_) arm();
}

void Scheduler::arm() {
  if (heap_.empty()) {
    uv_timer_stop(&timer_);
    armed_for_ = UINT64_MAX;
    return;
  }
  const std::uint64_t due = heap_.top().due_ms;
  const std::uint64_t now = wall_ms();
  armed_for_ = due;
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<Scheduler*>(t->data)->fire(); },
                 due > now ? due - now : 0, 0);
}

void Scheduler::fire() {
  armed_for_ = UINT64_MAX;
  const std::uint64_t now = wall_ms();
  // Take what is due first, then call out: targets re-register while we run.
  std::vector<Target> due;
  while (!heap_.empty() && heap_.top().due_ms <= now) {
    due.push_back(heap_.top().target);
    heap_.pop();
  }
  // A target registered twice for the same moment does its work once.
  std::sort(due.begin(), due.end());
  due.erase(std::unique(due.begin(), due.end()), due.end());
  for (Target t : due) on_due_(t);
  if (!closed_ && armed_for_ == UINT64_MAX) arm();
}

void Scheduler::close() {
  closed_ = true;
  if (timer_.loop && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_)))
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

}  // namespace txmq::broker
