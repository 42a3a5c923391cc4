#pragma once
// The memory all connections hold together: bytes reserved for frames being received and
// answers queued but not yet written. Each connection has limits of its own (its largest
// frame, its output high water), but a thousand connections each within them can still take
// the machine; this is the cap over all of them.
//
// Input is reserved when a frame's length prefix arrives, for the whole frame, before its
// body is read (as Kafka's request memory pool does): a connection that cannot reserve stops
// being read, its bytes stay in the kernel, and it is resumed once another connection gives
// memory back. Output is counted as it is queued; while the total is over its limit no
// connection serves another request or takes another push.
//
// Lifecycle: one per server, created before the first connection and closed (close()) at
// shutdown, after which its idle handle is gone and nothing is resumed.
// Concurrency: loop thread only.

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace txmq::broker {

class ConnectionBudget {
 public:
  // resume(id) is called from a later loop iteration for each connection that waited and
  // may go on now; room_for_output() once the output total fell back under its limit.
  ConnectionBudget(uv_loop_t* loop, std::size_t input_limit, std::size_t output_limit,
                   std::function<void(std::uint64_t)> resume, std::function<void()> room_for_output);
  ConnectionBudget(const ConnectionBudget&) = delete;
  ConnectionBudget& operator=(const ConnectionBudget&) = delete;

  void close();

  // Reserves n more input bytes; false (nothing reserved) when that would pass the limit.
  bool try_reserve_input(std::size_t n);
  void release_input(std::size_t n);
  // The connection waits for input room; it is resumed after the next release. first: a
  // new wait (counted), not a retry of one.
  void wait_for_input(std::uint64_t conn_id, bool first);
  // The connection no longer waits (it is closing).
  void cancel_wait(std::uint64_t conn_id);
  // Resumes the connection in the next loop iteration (never from inside the caller).
  void resume_soon(std::uint64_t conn_id);

  void add_output(std::size_t n);
  void remove_output(std::size_t n);
  bool output_full() const { return output_ >= output_limit_; }

  std::size_t input_bytes() const { return input_; }
  std::size_t output_bytes() const { return output_; }
  std::uint64_t input_waits() const { return input_waits_; }    // times a frame waited for room
  std::uint64_t output_stalls() const { return output_stalls_; }  // times output reached its limit

 private:
  static void on_idle(uv_idle_t* handle);
  void schedule();

  std::size_t input_limit_;
  std::size_t output_limit_;
  std::size_t input_ = 0;   // reserved for frames being received
  std::size_t output_ = 0;  // queued or being written
  std::uint64_t input_waits_ = 0;
  std::uint64_t output_stalls_ = 0;
  std::vector<std::uint64_t> waiting_;  // connections waiting for input room
  std::vector<std::uint64_t> ready_;    // connections to resume in the next iteration
  std::function<void(std::uint64_t)> resume_;
  std::function<void()> room_for_output_;
  uv_idle_t idle_{};
  bool resuming_ = false;       // inside on_idle: the resumed may reserve ahead of waiters
  bool waiters_ready_ = false;  // waiters were moved to ready_ and not yet resumed
  bool output_room_ = false;  // output fell under its limit; room_for_output_ not yet called
  bool closed_ = false;
};

}  // namespace txmq::broker
