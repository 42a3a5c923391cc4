#pragma once
// Test support for integration tests: run the real txmq-broker binary as a child process
// and talk to it over raw sockets.
//
// Caveats a test author must know:
// - BrokerProcess finds the binary through $TXMQ_BROKER_BIN, which tests/CMakeLists.txt
//   sets for every test. Run a test executable by hand with that variable set.
// - The broker is started with PR_SET_PDEATHSIG, so it dies with the thread that forked
//   it: call start()/restart() from the test's main thread, never from a short-lived
//   std::thread.
// - Nothing here sleeps to synchronise: every wait takes a deadline and polls a condition
//   (a pipe, a socket, a process state) until it holds or the deadline passes.
// - Not thread-safe: one test thread drives one BrokerProcess / RawConnection. (The
//   stdout reader thread inside BrokerProcess is internal and synchronised.)

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/result.h"
#include "txmq_generated.h"

namespace txmq::test {

using namespace std::chrono_literals;

// Calls predicate every `interval` until it returns true (then true) or `timeout` passed
// (then false, after one last try). The predicate runs on the calling thread.
bool wait_until(const std::function<bool()>& predicate, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval = 5ms);

// SIGSTOP, then waits until the kernel shows the process stopped (the signal is delivered
// asynchronously: a request sent right after kill() may still be served). False when it
// is not stopped within `timeout`.
bool stop_process(pid_t pid, std::chrono::milliseconds timeout = 5s);

// The last max_bytes of a file (a child's log), or all of it; "" when it cannot be read.
std::string file_tail(const std::string& path, std::size_t max_bytes);

// "ok" or the error's describe(), for doctest messages: REQUIRE_MESSAGE(st.ok(), describe(st)).
std::string describe(const Status& status);

// A fresh directory under /tmp (mkdtemp), removed with everything in it by the destructor
// unless keep() was called. Movable, not copyable.
class TempDir {
 public:
  // prefix: the name before the random suffix, e.g. "txmq-store" -> /tmp/txmq-store-Ab12Cd.
  // Aborts the test process if /tmp is not writable: no test can run without it.
  explicit TempDir(std::string_view prefix = "txmq-test");
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::string& path() const { return path_; }
  // path()/name, not created.
  std::string file(std::string_view name) const;
  // Leaves the directory on disk after destruction (to inspect a failure).
  void keep() { keep_ = true; }

 private:
  void remove();

  std::string path_;  // empty once moved from
  bool keep_ = false;
};

struct BrokerOptions {
  // Data directory. Empty: <temp area>/data, a fresh directory removed with the temp area.
  // A directory given here is never removed.
  std::string data_dir;
  // Keep the temp area (data, log, config) after the BrokerProcess is destroyed.
  bool keep = false;
  // Passed as --listen and --metrics-listen. An empty metrics_listen passes --no-metrics
  // instead: no metrics endpoint.
  std::string listen = "127.0.0.1:0";
  std::string metrics_listen = "127.0.0.1:0";
  // More command-line arguments, after the ones above. Do not repeat --data, --listen,
  // --metrics-listen or --config here; use the fields instead.
  std::vector<std::string> args;
  // TOML text; when not empty it is written to <temp area>/broker.toml and passed with
  // --config. Example: "[limits]\nmax_message_bytes = 1024\n".
  std::string config_toml;
  // Extra environment variables (name, value), added to (or replacing in) the test's own.
  std::vector<std::pair<std::string, std::string>> env;
  // How long start() waits for the "listening on" line.
  std::chrono::milliseconds start_timeout = 10s;
  // The binary. Empty: $TXMQ_BROKER_BIN.
  std::string binary;
  // The network namespace it runs in, a path such as /run/netns/NAME (NetLab::netns_path);
  // empty: the test's own. listen and metrics_listen are then that namespace's addresses.
  std::string netns;
};

// One txmq-broker child process on one data directory.
//
// Lifecycle: construct (creates the temp area, starts nothing), start(), then any of
// kill9() / terminate() / restart() any number of times; the destructor SIGKILLs a broker
// still running and removes the temp area unless BrokerOptions::keep.
// Output: the broker's stdout is a pipe read line by line by a background thread for as
// long as the process lives (so the pipe never fills); stderr (the log) is appended to
// log_path(), across restarts.
class BrokerProcess {
 public:
  using Options = BrokerOptions;

  explicit BrokerProcess(Options options = {});
  BrokerProcess(const BrokerProcess&) = delete;
  BrokerProcess& operator=(const BrokerProcess&) = delete;
  ~BrokerProcess();

  // Forks and execs the broker with --data DIR --listen L (--metrics-listen M | --no-metrics)
  // [--config F] plus the extra args, then waits until it prints "listening on HOST:PORT" (recording a
  // "metrics on HOST:PORT" line seen before it). Errors: kInvalidArgument when no binary is
  // known or the broker is already running; kInternal when fork/exec/pipe fail or the
  // broker exits before listening; kTimeout after options.start_timeout (the broker is then
  // killed). Every error message ends with the tail of the log.
  Status start();

  // SIGKILL and reap: a crash. No-op when not running.
  void kill9();

  // SIGTERM, then waits up to `timeout` for the exit. Returns the exit code when the
  // broker exited, 128 + signal number when a signal ended it, or -1 when it did not exit
  // in time (it is then SIGKILLed) or was not running.
  int terminate(std::chrono::milliseconds timeout = 10s);

  // Starts again on the same data directory (after terminate() if still running). The
  // ports change: read address() again afterwards.
  Status restart();

  // True while the child has not exited (reaps it when it has).
  bool running();
  pid_t pid() const { return pid_; }

  // "127.0.0.1:PORT" of the protocol listener of the current run; empty before start().
  const std::string& address() const { return address_; }
  std::uint16_t port() const { return port_; }
  // "HOST:PORT" of the metrics endpoint when the broker printed "metrics on ..." before
  // its "listening on" line; empty otherwise.
  const std::string& metrics_address() const { return metrics_address_; }
  std::uint16_t metrics_port() const { return metrics_port_; }

  const std::string& data_dir() const { return data_dir_; }
  const std::string& log_path() const { return log_path_; }
  // The whole log (stderr of every run so far), or its last max_bytes.
  std::string log_contents(std::size_t max_bytes = 64 * 1024) const;
  // Every stdout line of the current run so far.
  std::vector<std::string> stdout_lines() const;

 private:
  void reader_loop(int fd);  // stdout reader thread
  void join_reader();
  Status fail(ErrorCode code, const std::string& what);

  Options options_;
  TempDir temp_;  // log, config and the default data directory
  std::string data_dir_;
  std::string log_path_;
  std::string config_path_;  // empty when no config_toml
  pid_t pid_ = -1;           // -1 when no child is running
  std::string address_;
  std::uint16_t port_ = 0;
  std::string metrics_address_;
  std::uint16_t metrics_port_ = 0;

  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;  // guarded by mu_; stdout of the current run
  bool stdout_eof_ = false;         // guarded by mu_; the child closed stdout (exited)
};

// The value of one sample line ("name value" or "name{labels} value") of the broker's
// /metrics page, fetched with a plain HTTP/1.0 GET; -1 when absent or unreachable.
double scrape_metric(const BrokerProcess& broker, const std::string& sample);

// A frame as read off a socket: its bytes (length prefix included) in 8-byte aligned
// storage, already verified as a wire::Frame.
class ReceivedFrame {
 public:
  explicit ReceivedFrame(std::span<const std::uint8_t> bytes);
  const wire::Frame& frame() const { return *wire::GetSizePrefixedFrame(data()); }
  std::span<const std::uint8_t> bytes() const { return {data(), size_}; }
  // Shorthands for the common checks.
  wire::Body type() const { return frame().body_type(); }
  std::uint64_t request_id() const { return frame().request_id(); }
  // The error code of an Error frame; nullopt for any other frame.
  std::optional<ErrorCode> error_code() const;

 private:
  const std::uint8_t* data() const { return reinterpret_cast<const std::uint8_t*>(storage_.data()); }
  std::vector<std::uint64_t> storage_;
  std::size_t size_;
};

// A tiny blocking client for protocol tests: raw bytes and raw frames over one TCP
// connection, each call bounded by a timeout. Movable, not copyable; closes its socket on
// destruction. Writes never raise SIGPIPE.
class RawConnection {
 public:
  RawConnection() = default;
  RawConnection(RawConnection&& other) noexcept;
  RawConnection& operator=(RawConnection&& other) noexcept;
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;
  ~RawConnection();

  // Connects to "HOST:PORT" (IPv4 or [IPv6]). kInvalidArgument for a bad address,
  // kTimeout, kConnectionLost when refused.
  static Result<RawConnection> connect(std::string_view address,
                                       std::chrono::milliseconds timeout = 5s);

  // Writes all bytes. kConnectionLost when the peer is gone, kTimeout when the socket
  // stayed full for `timeout`.
  Status send_bytes(std::span<const std::uint8_t> bytes, std::chrono::milliseconds timeout = 5s);
  // Sends a builder's buffer as it is: the caller already called FinishSizePrefixed().
  Status send_frame(const flatbuffers::FlatBufferBuilder& fbb, std::chrono::milliseconds timeout = 5s);

  // The next whole frame. kTimeout when none arrived in time (bytes of a partial frame stay
  // buffered for the next call); kConnectionLost when the peer closed or reset the
  // connection before a whole frame; kFrameTooLarge when the length prefix exceeds
  // max_frame_bytes; kMalformedFrame when the bytes do not verify as a wire::Frame.
  Result<ReceivedFrame> read_frame(std::chrono::milliseconds timeout = 5s,
                                   std::uint32_t max_frame_bytes = 64u << 20);

  // Reads and discards whatever arrives until the peer closes (true) or `timeout` passes
  // (false).
  bool wait_closed(std::chrono::milliseconds timeout = 5s);

  // Half-closes the sending side (the peer reads EOF); reading still works.
  void shutdown_write();
  // Closes the socket now.
  void close();
  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }

 private:
  explicit RawConnection(int fd) : fd_(fd) {}
  // Waits for `events` on the socket until the deadline; false on timeout.
  bool poll_until(short events, std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  std::vector<std::uint8_t> in_;  // received bytes not yet returned as a frame
};

}  // namespace txmq::test
