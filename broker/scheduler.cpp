#include "broker/scheduler.h"

namespace txmq::broker {

Scheduler::Scheduler(uv_loop_t* loop, std::function<void(Target)> on_due, Clock clock)
    : on_due_(std::move(on_due)), clock_(clock) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
}

void Scheduler::at(std::uint64_t due_ms, Target target) {
  loop_thread_.check();
  if (closed_) return;
  auto [it, fresh] = live_.try_emplace(target, Live{due_ms, next_seq_});
  if (!fresh) {
    if (it->second.due_ms <= due_ms) return;  // already woken then or sooner
    // Earlier than the live one, which becomes superseded: dropped when it surfaces.
    it->second = Live{due_ms, next_seq_};
  }
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
  const std::uint64_t now = clock_();
  armed_for_ = due;
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<Scheduler*>(t->data)->run_due(); },
                 due > now ? due - now : 0, 0);
}

void Scheduler::run_due() {
  loop_thread_.check();
  armed_for_ = UINT64_MAX;
  const std::uint64_t now = clock_();
  // Take what is due first, then call out: targets ask for their next wake-up while we run,
  // and a wake-up asked for now (due at once) waits for the next turn of the loop rather
  // than running inside this one.
  due_.clear();
  while (!heap_.empty() && heap_.top().due_ms <= now) {
    const Entry e = heap_.top();
    heap_.pop();
    auto it = live_.find(e.target);
    if (it == live_.end() || it->second.seq != e.seq) continue;  // superseded
    live_.erase(it);
    due_.push_back(e.target);
  }
  for (Target t : due_) on_due_(t);  // a callback calls at(), never run_due()
  if (!closed_ && armed_for_ == UINT64_MAX) arm();
}

void Scheduler::close() {
  loop_thread_.check();
  closed_ = true;
  if (timer_.loop && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_)))
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

}  // namespace txmq::broker
