#include "fuzz/loopback_session.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/frame.h"

namespace txmq::fuzz {
namespace {

// The broker never sends more than its max_frame_bytes; anything near this is garbage.
constexpr std::uint32_t kMaxAnswerBytes = 64u << 20;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "dispatch harness: %s\n", what);
  std::abort();
}

}  // namespace

bool LoopbackSession::connect(std::uint16_t port) {
  close();
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return false;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  fd_ = fd;
  in_.clear();
  return true;
}

void LoopbackSession::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  in_.clear();
}

bool LoopbackSession::take_frames(std::uint64_t rid) {
  bool answered = false;
  std::size_t pos = 0;
  while (in_.size() - pos >= common::kFrameHeaderBytes) {
    const std::uint8_t* p = in_.data() + pos;
    std::uint32_t len = static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                        static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
    if (len == 0 || len > kMaxAnswerBytes) die("the broker sent a frame with an impossible length");
    const std::size_t total = common::kFrameHeaderBytes + len;
    if (in_.size() - pos < total) break;
    aligned_.resize((total + 7) / 8);
    std::memcpy(aligned_.data(), p, total);
    const auto* frame =
        common::verify_frame({reinterpret_cast<const std::uint8_t*>(aligned_.data()), total});
    if (!frame) die("the broker sent a frame that fails verification");
    if (frame->request_id() == rid) answered = true;
    pos += total;
  }
  in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(pos));
  return answered;
}

LoopbackSession::Read LoopbackSession::read_some(std::uint64_t rid) {
  for (;;) {
    std::uint8_t buf[64 * 1024];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      in_.insert(in_.end(), buf, buf + n);
      if (take_frames(rid)) return Read::kAnswered;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Read::kMore;
    if (n < 0 && errno == EINTR) continue;
    return Read::kClosed;  // EOF, or a reset after the broker closed on an error
  }
}

LoopbackSession::Outcome LoopbackSession::exchange(std::span<const std::uint8_t> out, std::uint64_t rid,
                                                   std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::size_t sent = 0;
  for (;;) {
    if (sent < out.size()) {
      ssize_t n = ::send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n > 0) sent += static_cast<std::size_t>(n);
      else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        // The broker closed on an error; what it said before is still to be read.
        sent = out.size();
      }
    }
    switch (read_some(rid)) {
      case Read::kAnswered: return Outcome::kAnswered;
      case Read::kClosed: close(); return Outcome::kClosed;
      case Read::kMore: break;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) die("no answer to the sentinel before the deadline: the broker hangs or dropped a request");
    pollfd p{fd_, static_cast<short>(POLLIN | (sent < out.size() ? POLLOUT : 0)), 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
}

void LoopbackSession::send_and_hang_up(std::span<const std::uint8_t> out, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::size_t sent = 0;
  bool hung_up = false;
  for (;;) {
    if (sent < out.size()) {
      ssize_t n = ::send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n > 0) sent += static_cast<std::size_t>(n);
      else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) sent = out.size();
    }
    if (sent == out.size() && !hung_up) {
      ::shutdown(fd_, SHUT_WR);
      hung_up = true;
    }
    if (read_some(0xffff'ffff'ffff'ffffull) == Read::kClosed) {
      close();
      return;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) die("the broker kept a connection open after the client hung up");
    pollfd p{fd_, static_cast<short>(POLLIN | (sent < out.size() ? POLLOUT : 0)), 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
}

}  // namespace txmq::fuzz
