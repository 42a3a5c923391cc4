#include "broker/connection_budget.h"

#include <algorithm>
#include <unordered_set>

namespace txmq::broker {

ConnectionBudget::ConnectionBudget(uv_loop_t* loop, std::size_t input_limit, std::size_t output_limit,
                                   std::function<void(std::uint64_t)> resume, std::function<void()> room_for_output)
    : input_limit_(input_limit), output_limit_(output_limit), resume_(std::move(resume)),
      room_for_output_(std::move(room_for_output)) {
  uv_idle_init(loop, &idle_);
  idle_.data = this;
}

void ConnectionBudget::close() {
  if (closed_) return;
  closed_ = true;
  waiting_.clear();
  ready_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), nullptr);
}

bool ConnectionBudget::try_reserve_input(std::size_t n) {
  // While others wait, a newcomer waits behind them rather than take the room a release
  // made for them; only those being resumed may.
  if (!resuming_ && (!waiting_.empty() || waiters_ready_)) return false;
  if (input_ + n > input_limit_) return false;
  input_ += n;
  return true;
}

void ConnectionBudget::release_input(std::size_t n) {
  input_ -= std::min(n, input_);
  if (n > 0 && !waiting_.empty()) {
    // Every waiter tries again, in the order they came; those that still do not fit wait
    // again. Meanwhile nobody else may reserve (try_reserve_input), so a large frame is not
    // overtaken for ever by connections that never waited.
    ready_.insert(ready_.end(), waiting_.begin(), waiting_.end());
    waiting_.clear();
    waiters_ready_ = true;
    schedule();
  }
}

void ConnectionBudget::wait_for_input(std::uint64_t conn_id, bool first) {
  if (first) ++input_waits_;
  if (std::find(waiting_.begin(), waiting_.end(), conn_id) == waiting_.end()) waiting_.push_back(conn_id);
}

void ConnectionBudget::cancel_wait(std::uint64_t conn_id) {
  std::erase(waiting_, conn_id);
}

void ConnectionBudget::resume_soon(std::uint64_t conn_id) {
  if (closed_) return;
  ready_.push_back(conn_id);
  schedule();
}

void ConnectionBudget::add_output(std::size_t n) {
  const bool was_full = output_full();
  output_ += n;
  if (!was_full && output_full()) ++output_stalls_;
}

void ConnectionBudget::remove_output(std::size_t n) {
  const bool was_full = output_full();
  output_ -= std::min(n, output_);
  if (was_full && !output_full()) {
    output_room_ = true;  // told from the next iteration: this may run inside a destructor
    schedule();
  }
}

void ConnectionBudget::schedule() {
  // An idle handle runs in the next loop iteration without blocking in poll; it is stopped
  // as soon as it ran, so it costs nothing while nobody waits.
  if (!closed_ && !uv_is_active(reinterpret_cast<uv_handle_t*>(&idle_))) uv_idle_start(&idle_, &on_idle);
}

void ConnectionBudget::on_idle(uv_idle_t* handle) {
  auto* self = static_cast<ConnectionBudget*>(handle->data);
  uv_idle_stop(handle);
  if (self->output_room_) {
    self->output_room_ = false;
    if (self->room_for_output_) self->room_for_output_();
  }
  std::vector<std::uint64_t> ready;
  ready.swap(self->ready_);
  // In the order they asked, each once.
  std::unordered_set<std::uint64_t> done;
  self->resuming_ = true;
  for (std::uint64_t id : ready)
    if (done.insert(id).second) self->resume_(id);
  self->resuming_ = false;
  self->waiters_ready_ = false;
}

}  // namespace txmq::broker
