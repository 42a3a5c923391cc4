#pragma once
// The dispatcher target's side of one TCP connection to the in-process broker on
// 127.0.0.1: sends a batch of bytes and reads until the answer to one request id arrives,
// the broker closes the connection, or a deadline passes.
//
// Every frame the broker sends is verified on arrival: an answer the client could not
// read is a bug, reported like a crash. Answers to earlier requests (a produce confirmed
// after the sentinel was answered) and pushes (deliveries, transaction checks) are read
// and dropped along the way.
// Not thread-safe; one per fuzz thread.

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

namespace txmq::fuzz {

class LoopbackSession {
 public:
  enum class Outcome {
    kAnswered,  // a frame with the awaited request id arrived
    kClosed,    // the broker closed the connection first (a fatal error, or EOF awaited)
  };

  LoopbackSession() = default;
  LoopbackSession(const LoopbackSession&) = delete;
  LoopbackSession& operator=(const LoopbackSession&) = delete;
  ~LoopbackSession() { close(); }

  // Connects to 127.0.0.1:port. False when the connection was refused.
  bool connect(std::uint16_t port);
  bool connected() const { return fd_ >= 0; }
  void close();

  // Sends `out`, reading all the while (so neither side blocks on a full socket buffer),
  // until a frame answering `rid` arrived or the broker closed. Aborts the process when
  // neither happened within `timeout`: the broker hangs or dropped a request.
  Outcome exchange(std::span<const std::uint8_t> out, std::uint64_t rid, std::chrono::milliseconds timeout);

  // Sends `out`, half-closes, and waits (up to `timeout`, else aborts) for the broker to
  // close: for byte streams that may end inside a frame, where no answer can be awaited.
  void send_and_hang_up(std::span<const std::uint8_t> out, std::chrono::milliseconds timeout);

 private:
  enum class Read { kMore, kAnswered, kClosed };
  Read read_some(std::uint64_t rid);
  // Cuts whole frames off in_, verifies each; true when one answers rid.
  bool take_frames(std::uint64_t rid);

  int fd_ = -1;
  std::vector<std::uint8_t> in_;        // bytes received, not yet cut into frames
  std::vector<std::uint64_t> aligned_;  // one frame, 8-byte aligned for the verifier
};

}  // namespace txmq::fuzz
