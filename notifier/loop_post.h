// Runs functions on the notifier's loop thread, posted from any thread: the client
// library calls back on its own I/O threads (deliveries, produce receipts), and all of the
// notifier's state belongs to the loop.
#pragma once

#include <uv.h>

#include <functional>
#include <mutex>
#include <vector>

namespace txmq::notifier {

class LoopPost {
 public:
  // Thread: the loop's, before or while it runs.
  explicit LoopPost(uv_loop_t* loop) {
    uv_async_init(loop, &async_, &LoopPost::on_async);
    async_.data = this;
  }
  LoopPost(const LoopPost&) = delete;
  LoopPost& operator=(const LoopPost&) = delete;

  // Thread: any. Functions run in the order posted. After close(), posts are dropped.
  void post(std::function<void()> fn) {
    bool wake;
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      // Only the first post into an empty queue wakes the loop: the others ride along
      // (an eventfd write per delivery was a visible share of the notifier's time).
      wake = queue_.empty();
      queue_.push_back(std::move(fn));
    }
    if (wake) uv_async_send(&async_);
  }

  // Thread: the loop's. Runs what is queued, then drops later posts; destroy the object
  // only after on_closed ran.
  void close(std::function<void()> on_closed) {
    run_queued();
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      queue_.clear();
    }
    on_closed_ = std::move(on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), [](uv_handle_t* h) {
      auto* self = static_cast<LoopPost*>(h->data);
      auto cb = std::move(self->on_closed_);
      if (cb) cb();
    });
  }

 private:
  static void on_async(uv_async_t* async) { static_cast<LoopPost*>(async->data)->run_queued(); }

  void run_queued() {
    std::vector<std::function<void()>> batch;
    {
      std::lock_guard lock(mu_);
      batch.swap(queue_);
    }
    for (auto& fn : batch) fn();
  }

  uv_async_t async_;
  std::mutex mu_;
  std::vector<std::function<void()>> queue_;  // guarded by mu_
  bool closed_ = false;                       // guarded by mu_
  std::function<void()> on_closed_;
};

}  // namespace txmq::notifier
