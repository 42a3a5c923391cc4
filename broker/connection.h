#pragma once
// One client connection: the TCP handle, the frame decoder and a bounded output queue.
//
// Lifecycle: created by the Server on accept; open until the peer goes, a protocol error,
// or shutdown; close() starts uv_close and the Server frees the Connection in the close
// callback (libuv reclaims handle memory only then). States: kOpen -> kDraining (an error
// was sent; flushing, then half-closing and discarding input until the peer hangs up or
// the linger deadline passes) -> kClosing -> freed.
// Concurrency: loop thread only.
// Limits: when the output queue passes high_water bytes, or the caller's in-flight work
// passes its own limit (see pause_reading), the connection stops reading, so a client
// that does not read its answers cannot make the broker buffer without bound.

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/frame.h"

namespace txmq::broker {

class Connection;

// What the Server wants to hear from its connections. Loop thread.
class ConnectionEvents {
 public:
  virtual ~ConnectionEvents() = default;
  // A whole frame arrived (verified by the caller, not yet here).
  virtual void on_frame(Connection& conn, std::span<const std::uint8_t> frame) = 0;
  // The output queue fell below the low-water mark: more pushes may go.
  virtual void on_writable(Connection& conn) = 0;
  // The handle is closed; conn is freed right after this returns.
  virtual void on_closed(Connection& conn) = 0;
};

struct ConnectionLimits {
  std::uint32_t max_frame_bytes = 16u << 20;
  std::size_t output_high_water = 8u << 20;
  std::chrono::milliseconds linger{1000};  // how long an erroring connection may linger
};

class Connection {
 public:
  enum class State { kOpen, kDraining, kClosing };

  Connection(std::uint64_t id, ConnectionEvents& events, const ConnectionLimits& limits);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Accepts from server into this connection and starts reading. False on failure (the
  // connection is then closing).
  bool accept(uv_stream_t* server);

  std::uint64_t id() const { return id_; }
  State state() const { return state_; }
  // Open and not condemned: requests from it are served, answers and pushes go to it.
  bool open() const { return state_ == State::kOpen && !flush_then_close_; }
  const std::string& peer() const { return peer_; }

  // Queues a whole frame (length prefix included) for the socket.
  void send(std::span<const std::uint8_t> frame);
  // True when the output queue is below high water: a push may go now.
  bool writable() const { return output_bytes() < limits_.output_high_water; }
  std::size_t output_bytes() const { return pending_.size() + writing_.size(); }

  // A reason to stop reading held by the caller (for example too many produce bytes in
  // flight to storage); reading resumes once no reason is held.
  void pause_reading();
  void resume_reading();

  // Sends what is queued, then closes: used after an error frame.
  void close_after_flush();
  // Closes now; queued output is dropped.
  void close();
  // The linger deadline of a draining connection passed. Called by the Server's
  // housekeeping timer.
  bool linger_expired(std::chrono::steady_clock::time_point now) const {
    return state_ == State::kDraining && now >= linger_deadline_;
  }

  // Protocol state owned by the session layer.
  bool hello_done = false;
  std::string client_name;
  std::string producer_group;  // transaction checks for this group may come here
  std::size_t produce_bytes_in_flight = 0;

 private:
  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  void handle_read(ssize_t nread);
  void start_write();
  void update_reading();
  void begin_draining();

  std::uint64_t id_;
  ConnectionEvents& events_;
  const ConnectionLimits& limits_;
  State state_ = State::kOpen;
  uv_tcp_t tcp_;
  uv_write_t write_req_;
  uv_shutdown_t shutdown_req_;
  bool write_in_flight_ = false;
  bool reading_ = false;
  int pause_reasons_ = 0;
  bool flush_then_close_ = false;
  std::string peer_;
  std::chrono::steady_clock::time_point linger_deadline_;
  common::FrameDecoder decoder_;
  std::vector<std::uint8_t> pending_;  // frames not yet handed to libuv
  std::vector<std::uint8_t> writing_;  // the buffer of the uv_write in flight
  char read_buf_[64 * 1024];
};

}  // namespace txmq::broker
