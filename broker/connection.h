#pragma once
// One client connection: the TCP handle, the frame decoder and a bounded output queue.
//
// Lifecycle: created by the Server on accept; open until the peer goes, a protocol error,
// or shutdown; close() starts uv_close and the Server frees the Connection in the close
// callback (libuv reclaims handle memory only then). States: kOpen -> kDraining (an error
// was sent; flushing, then half-closing and discarding input until the peer hangs up or
// the linger deadline passes) -> kClosing -> freed.
// Concurrency: loop thread only.
// Limits: before the hello a frame may be at most hello_max_frame_bytes and the hello must
// arrive within hello_timeout; a frame must arrive whole within frame_timeout of its first
// byte. Frames are served one at a time from what was read, and serving (and reading) stops
// while the output queue is over high water, the caller holds a pause (too much work in
// flight, see pause_reading), or all connections together are over their ConnectionBudget:
// a client that does not read its answers, or pipelines faster than they are written,
// cannot make the broker buffer without bound. At most kFramesPerTurn frames are served
// per loop iteration, so that one pipelining client does not starve the others.
// TLS: with a TlsContext the socket carries TLS (common/tls_session.h): what is read is
// decrypted before the frame decoder sees it, and output is encrypted when its write
// starts. Every limit above counts plaintext (the budget reserves decoded frames, not
// records). A peer whose first bytes are not TLS is answered with a plain Error frame and
// closed; without a TlsContext, a peer that opens with a TLS ClientHello is closed at once.
// Either mismatch and a failed handshake are logged with the peer and the reason.

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "broker/acl.h"
#include "broker/connection_budget.h"
#include "broker/delivery_sink.h"
#include "common/frame.h"
#include "common/tls_session.h"

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
  // The byte stream broke (a frame over the limit, a zero length); the connection answers
  // with the error and closes by itself. For the Server's metrics.
  virtual void on_stream_error(Connection& conn, const Error& error) = 0;
  // The connection closes over TLS: reason is tls_handshake_failed, not_tls (plain bytes
  // on the TLS port) or tls_on_plain_port (a ClientHello on a plain one). For the metrics.
  virtual void on_tls_refused(Connection& conn, std::string_view reason) = 0;
  // The handle is closed; conn is freed right after this returns.
  virtual void on_closed(Connection& conn) = 0;
};

struct ConnectionLimits {
  std::uint32_t max_frame_bytes = 16u << 20;
  std::uint32_t hello_max_frame_bytes = 64u << 10;  // until the hello is done
  std::size_t output_high_water = 8u << 20;
  std::chrono::milliseconds linger{1000};  // how long an erroring connection may linger
  std::chrono::milliseconds hello_timeout{10000};  // from accept to a served hello
  std::chrono::milliseconds frame_timeout{60000};  // from a frame's first byte to its last
  std::chrono::milliseconds output_timeout{60000}; // for one write of queued output to finish
};

// Why a connection must be closed now (Connection::overdue).
enum class Overdue { kNone, kHello, kFrame, kOutput, kLinger, kSilent };

class Connection final : public DeliverySink {
 public:
  enum class State { kOpen, kDraining, kClosing };

  // Frames served per loop iteration at most: a fair share (libuv's own reads per pass are
  // similar), large enough that a pipelining producer is not slowed.
  static constexpr int kFramesPerTurn = 64;
  // A frame up to this size arrives within one or two reads and needs no reservation from
  // the ConnectionBudget: small requests always go on, however much large ones hold.
  static constexpr std::size_t kUnreservedFrameBytes = 64 * 1024;

  // tls: null for a plain connection; otherwise it must outlive the connection.
  Connection(std::uint64_t id, ConnectionEvents& events, const ConnectionLimits& limits,
             ConnectionBudget& budget, const common::TlsContext* tls = nullptr);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Accepts from server into this connection and starts reading. False on failure (the
  // connection is then closing).
  bool accept(uv_stream_t* server);

  std::uint64_t id() const { return id_; }
  State state() const { return state_; }
  // Open and not condemned: requests from it are served, answers and pushes go to it.
  bool open() const override { return state_ == State::kOpen && !flush_then_close_; }
  const std::string& peer() const { return peer_; }
  // The CN of the client certificate the TLS handshake verified; "" without one.
  std::string peer_certificate_name() const { return tls_ ? tls_->peer_common_name() : std::string(); }
  // The socket's file descriptor; -1 when it has none (closed).
  int fd() const {
    uv_os_fd_t fd = -1;
    return uv_fileno(reinterpret_cast<const uv_handle_t*>(&tcp_), &fd) == 0 ? fd : -1;
  }

  // Queues a whole frame (length prefix included) for the socket.
  void send(std::span<const std::uint8_t> frame) override;
  // True when the output queue is below high water and, while all connections together are
  // over their output budget, empty: a push may go now. A client that reads its answers
  // keeps its queue empty and carries on; those that do not are the ones held back.
  bool writable() const override {
    return output_bytes() < limits_.output_high_water && (output_bytes() == 0 || !budget_.output_full());
  }
  std::size_t output_bytes() const {
    return pending_.size() + writing_.size() + (tls_ ? tls_->held_bytes() : 0);
  }

  // A reason to stop reading held by the caller (for example too many produce bytes in
  // flight to storage); reading resumes once no reason is held.
  void pause_reading();
  void resume_reading();

  // The hello was served: larger frames are accepted from now on.
  void hello_completed();
  bool hello_done() const { return hello_done_; }

  // Heartbeats agreed in the hello (HelloOk.heartbeat_ms; 0: none): the peer is overdue
  // (kSilent) once nothing was read from it for kHeartbeatMisses intervals while the
  // broker was reading, and heartbeat_due() says when the broker should send one.
  static constexpr int kHeartbeatMisses = 3;
  void set_heartbeat(std::chrono::milliseconds interval);
  std::chrono::milliseconds heartbeat() const { return heartbeat_; }
  // Nothing was sent for an interval: a Heartbeat should go now.
  bool heartbeat_due(std::chrono::steady_clock::time_point now) const {
    return heartbeat_.count() > 0 && open() && now - last_sent_ >= heartbeat_;
  }

  // Serves frames already received and reads again if nothing holds it back. The
  // ConnectionBudget calls it (through the Server) when there may be room again, and the
  // connection asks for it when a pause ends. Never call it from inside a request handler.
  void resume();

  // Whether a deadline of this connection passed: the hello, a frame, a write to a client
  // that stopped reading, a peer silent past its heartbeats, or the linger of an erroring
  // connection. Called by the Server's housekeeping timer.
  // Not const: it notes the write queue's progress, which the output deadline is about.
  Overdue overdue(std::chrono::steady_clock::time_point now);

  // Sends what is queued, then closes: used after an error frame.
  void close_after_flush();
  // Closes now; queued output is dropped.
  void close();
  // Protocol state owned by the session layer.
  std::string client_name;
  std::string producer_group;  // transaction checks for this group may come here
  std::chrono::milliseconds heartbeat_asked{0};  // Hello.heartbeat_ms, until the hello is answered
  Access access;               // who the peer is and what it may do (set by the hello)
  std::size_t produce_bytes_in_flight = 0;

 private:
  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  void handle_read(ssize_t nread);
  // The first bytes of the connection tell a TLS peer from a plain one; false when they do
  // not match this port (the connection is then closing).
  bool check_first_bytes(std::size_t nread);
  // Decrypts what was read into the decoder; false when the session ended (the connection
  // is then closing).
  bool receive_tls(std::size_t nread);
  void fail_tls(const Error& error);
  // Output queued and not yet handed to libuv: frames, or TLS records (a handshake message,
  // an alert, close_notify) the session wants sent.
  bool output_waiting() const { return !pending_.empty() || (tls_ && tls_->has_output()); }
  void serve();
  bool may_serve() const;
  void reserve_input();
  void fail_stream(const Error& error);
  // Answers with an Error frame (request id 0) and closes once it is written.
  void send_error_and_close(const Error& error);
  void start_write();
  void sync_output();
  void update_reading();
  void begin_draining();

  std::uint64_t id_;
  ConnectionEvents& events_;
  const ConnectionLimits& limits_;
  ConnectionBudget& budget_;
  State state_ = State::kOpen;
  bool hello_done_ = false;
  bool serving_ = false;       // inside serve(): a handler's send() must not serve again
  bool backlog_ = false;       // whole frames may be buffered, not yet served
  bool input_waiting_ = false; // waiting for the budget to reserve the partial frame
  std::size_t input_reserved_ = 0;   // from the budget, for the partial frame
  std::size_t output_counted_ = 0;   // output bytes the budget knows of
  std::chrono::steady_clock::time_point accepted_;
  std::chrono::steady_clock::time_point frame_started_;  // of the partial frame, if any
  std::chrono::steady_clock::time_point write_started_;  // the write in flight's last progress
  std::size_t write_queued_ = 0;  // its bytes not yet taken by the kernel, at the last look
  std::chrono::milliseconds heartbeat_{0};
  std::chrono::steady_clock::time_point last_heard_;  // the last read, or reading's restart
  std::chrono::steady_clock::time_point last_sent_;   // the last frame queued
  uv_tcp_t tcp_;
  uv_write_t write_req_;
  uv_shutdown_t shutdown_req_;
  bool write_in_flight_ = false;
  bool reading_ = false;
  int pause_reasons_ = 0;
  bool flush_then_close_ = false;
  std::string peer_;
  const common::TlsContext* tls_context_;     // null: plain
  std::unique_ptr<common::TlsSession> tls_;   // made on accept when tls_context_ is set
  bool first_read_ = true;                    // nothing was read from the peer yet
  std::chrono::steady_clock::time_point linger_deadline_;
  common::FrameDecoder decoder_;
  static constexpr std::size_t kKeepOutputCapacity = 64u << 10;  // kept across writes
  std::vector<std::uint8_t> pending_;  // frames not yet handed to libuv (plaintext)
  std::vector<std::uint8_t> writing_;  // the buffer of the uv_write in flight (as sent)
  char read_buf_[64 * 1024];
};

}  // namespace txmq::broker
