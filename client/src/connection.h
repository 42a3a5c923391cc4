#pragma once
// One client connection to a broker with its own I/O thread and libuv loop.
//
// Lifecycle: start() spawns the thread, which takes the brokers of the list in turn
// (broker_list.h), resolves each one's host (uv_getaddrinfo, on the loop), connects to each
// address it resolved to in turn until one answers, says hello, and starts over (resolving
// again) with exponential backoff whenever the connection drops or every address of every
// broker failed, until stop(). A NotLeader answer drops the connection like a lost one,
// and the next round starts at the leader it names. Requests made while
// disconnected wait (until their deadline) and go out once the hello is answered;
// requests in flight when the connection drops fail with kConnectionLost. With
// ClientOptions::first_connect_timeout, requests made before the first hello is answered
// fail with kNotConnected as soon as an attempt fails, or once that long has passed.
// With ClientOptions::tls each connection runs a TLS handshake (common/tls_session.h, on
// this loop) before the hello; a failed handshake is a failed attempt.
// Concurrency: post() and stop() from any thread; everything else on the I/O thread
// (asserted in debug builds).
//
// Hosted: given a loop, a connection runs on it instead of a thread of its own (a
// broker's replication fetcher, which then handles answers without a hand-off). The
// thread that calls start() must run that loop; it is the I/O thread, and callbacks run
// on it. dispose() stops a hosted connection, even from inside one of its own callbacks,
// and frees it once its handles are closed.

#include <uv.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "broker_list.h"
#include "common/frame.h"
#include "common/resolve.h"
#include "common/scram.h"
#include "common/tls_session.h"
#include "txmq/client.h"

namespace txmq::client::detail {

class Connection {
 public:
  using Clock = std::chrono::steady_clock;
  // Gets the verified answer frame, or an error (timeout, connection lost, the broker's
  // Error frame turned into an Error).
  using ResponseFn = std::function<void(Result<const wire::Frame*>)>;

  struct Hooks {
    std::function<void()> on_ready;                       // hello answered; I/O thread
    std::function<void(const wire::Frame&)> on_push;      // a push (request id 0)
  };

  // Its own I/O thread, or `hosted` on a loop the caller runs.
  Connection(ClientOptions options, Hooks hooks, uv_loop_t* hosted = nullptr);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  void start();
  // Stops the thread; pending requests fail with kClosed. Idempotent. Any thread but the
  // I/O thread. Not for a hosted connection (dispose).
  void stop();
  // Stops and frees a connection: a hosted one on its loop's thread once its handles are
  // closed (pending requests fail with kClosed now), any other at once as ~Connection.
  static void dispose(std::unique_ptr<Connection> connection);
  // Runs fn on the I/O thread, soon. Any thread. Returns false once stopped.
  bool post(std::function<void()> fn);

  bool on_io_thread() const { return std::this_thread::get_id() == thread_id_; }
  bool ready() const { return state_ == State::kReady; }
  // The broker's limits.max_message_bytes from its last hello answer; 0 before the first.
  // Any thread.
  std::uint32_t max_message_bytes() const { return max_message_bytes_.load(std::memory_order_relaxed); }
  // The broker's limits.max_frame_bytes, likewise.
  std::uint32_t max_frame_bytes() const { return max_frame_bytes_.load(std::memory_order_relaxed); }

  // I/O thread. A fresh request id to build a frame with.
  std::uint64_t next_request_id() { return next_rid_++; }
  // I/O thread. Sends a finished size-prefixed frame built with `rid`; cb runs once.
  // With resend, a request whose connection drops before its answer is sent again on the
  // next connection instead of failing (for idempotent requests only).
  void request(std::uint64_t rid, std::span<const std::uint8_t> frame, Clock::time_point deadline,
               ResponseFn cb, bool resend = false);

  flatbuffers::FlatBufferBuilder& builder() { return fbb_; }


  // I/O thread. Runs fn once after delay, replacing any callback set before and not yet
  // run (one slot: the producer's linger timer).
  void set_timer(Millis delay, std::function<void()> fn);

 private:
  enum class State { kIdle, kResolving, kConnecting, kHandshake, kHello, kReady, kStopped };
  struct Pending {
    Clock::time_point deadline;
    ResponseFn cb;
    std::vector<std::uint8_t> frame;  // kept until sent; kept after that too with resend
    bool sent = false;
    bool resend = false;
  };

  void run();
  void begin();  // the I/O thread's first step: the deadline timer, the first connection
  void connect();
  // Resolves the list's current entry; then tries its addresses (connect_next).
  void resolve_entry();
  // The current entry failed: on to the list's next one, or the round failed.
  void next_entry();
  void on_resolved(Result<common::Addresses> addresses);
  // Connects to addresses_[next_address_], or gives up the round when none is left.
  void connect_next();
  void on_connected(int status);
  void start_reading();
  void read_failed(ssize_t status);
  // Bytes from the socket: decrypted first with TLS, then cut into frames.
  void received(const char* data, std::size_t len);
  void received_tls(const char* data, std::size_t len);
  void decode(const char* data, std::size_t len);
  void attempt_failed(const std::string& why);
  // True while requests must not outlive a failed first attempt (first_connect_timeout).
  bool failing_fast() const;
  void send_hello();
  // The hello's answers: AuthChallenge (SCRAM's server-first), HelloOk, or an Error.
  // False when the connection was dropped.
  bool hello_answered(const wire::Frame& frame);
  // A NotLeader refusal: the next round starts at the leader it names (or past this broker
  // when it names none), and this connection is dropped as if lost.
  void follow_leader(const Error& refusal);
  void handle_frame(std::span<const std::uint8_t> bytes);
  void write(std::span<const std::uint8_t> frame);
  // Error for a frame the broker would refuse for its size (and close the connection over,
  // failing every request in flight with it); ok when it fits or the limit is unknown.
  Status check_size(std::span<const std::uint8_t> frame) const;
  void flush_writes();
  void disconnected(const Error& why);
  void schedule_reconnect();
  void check_deadlines();
  // Heartbeats (heartbeat_): one sent when nothing was for an interval; the connection
  // dropped when nothing was heard for three. `stalled`: this thread was held (a handler)
  // since the last look, so what the broker sent may be unread yet.
  void check_heartbeats(Clock::time_point now, bool stalled);
  void drain_posted();
  void fail_all(const Error& why, bool include_unsent);
  void close_loop();
  // A handle of ours finished closing: the last one frees a disposed hosted connection.
  static void handle_closed(uv_handle_t* handle);
  void close_tcp();

  ClientOptions options_;
  Hooks hooks_;
  std::thread thread_;
  std::thread::id thread_id_;
  uv_loop_t own_loop_{};
  uv_loop_t* loop_ = &own_loop_;  // own_loop_, or the hosted one
  bool hosted_ = false;
  int open_handles_ = 0;           // wake_, the timers and tcp_, until their close callbacks
  bool free_when_closed_ = false;  // disposed while hosted
  uv_async_t wake_{};
  uv_timer_t tick_{};        // deadlines, every kTickMs
  uv_timer_t reconnect_{};
  uv_timer_t user_timer_{};
  std::function<void()> user_timer_fn_;
  uv_tcp_t* tcp_ = nullptr;  // heap: a closing handle outlives the next connection attempt
  std::optional<BrokerList> brokers_;  // options_.broker, parsed on the first round
  std::string host_;         // of the entry being tried: the broker's certificate must name it
  std::shared_ptr<common::TlsContext> tls_context_;  // loaded on the first round with tls.enabled
  std::unique_ptr<common::TlsSession> tls_;          // this connection's, with TLS
  bool heard_ = false;       // anything was read on this connection
  common::Resolution* resolving_ = nullptr;  // the lookup in flight, if any
  common::Addresses addresses_;              // this round's, from the lookup
  std::size_t next_address_ = 0;             // the next of addresses_ to try
  std::string round_errors_;                 // "ADDRESS: why" of each address failed this round
  Clock::time_point connect_started_;        // of the current address's attempt
  Clock::time_point started_;                // start(): first_connect_timeout counts from here
  Millis heartbeat_{0};                      // agreed in the hello (HelloOk.heartbeat_ms); 0 none
  Clock::time_point last_heard_;             // the last bytes read
  Clock::time_point last_sent_;              // the last frame written
  Clock::time_point last_tick_;              // check_deadlines' last run
  bool ever_ready_ = false;                  // a hello was answered once
  bool redirecting_ = false;                 // disconnected() by follow_leader
  Error last_error_{ErrorCode::kNotConnected, "not connected yet"};
  std::atomic<State> state_{State::kIdle};
  std::atomic<std::uint32_t> max_frame_bytes_{0};    // from HelloOk
  std::atomic<std::uint32_t> max_message_bytes_{0};  // from HelloOk
  Millis backoff_;
  std::uint64_t next_rid_ = 1;
  std::uint64_t hello_rid_ = 0;
  std::optional<common::scram::ClientExchange> scram_;  // this connection's, with a user
  std::map<std::uint64_t, Pending> pending_;  // by request id; unsent ones keep their frame
  common::FrameDecoder decoder_{64u << 20};
  std::vector<std::uint8_t> out_;      // frames waiting for the write in flight (plaintext)
  std::vector<std::uint8_t> writing_;  // the buffer of the write in flight
  bool write_in_flight_ = false;
  char read_buf_[64 * 1024];
  flatbuffers::FlatBufferBuilder fbb_{4096};

  std::mutex mu_;
  std::vector<std::function<void()>> posted_;  // guarded by mu_
  bool stopping_ = false;                      // guarded by mu_
};

// Converts a verified answer into the error it carries, if it is an Error frame.
Status as_status(const wire::Frame& frame);

}  // namespace txmq::client::detail
