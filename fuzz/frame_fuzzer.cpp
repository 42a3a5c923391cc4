// libFuzzer target: the framing layer every connection and the client run on bytes from
// the network. An input is one seed byte and a byte stream:
//
//   seed: bits 0-1 pick the chunk sizes the stream is appended in (as reads from a socket
//         split it), the rest vary them; 0xff repeats the stream until it passes 80 KiB,
//         appended in chunks of up to 4 KiB, so that the decoder's compaction (past
//         64 KiB consumed) runs too. (One seed value only: an 80 KiB input costs a hundred
//         small ones, and with three bits' worth of seeds they took most of the run.)
//   stream: what a peer sent, normally length-prefixed wire::Frame buffers.
//
// Every frame the decoder returns is checked against the stream (same bytes, same length
// prefix, 8-byte aligned start), verified, and when verified, read field by field
// (frame_walk.h) so ASan and UBSan see any read a handler could make.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/frame.h"
#include "fuzz/frame_walk.h"

namespace {

// The broker's default limit is 16 MiB; a small one makes FrameTooLarge reachable from
// inputs of a few KiB.
constexpr std::uint32_t kMaxFrameBytes = 64 * 1024;
constexpr std::size_t kRepeatUntil = 80 * 1024;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "frame_fuzzer: %s\n", what);
  std::abort();
}

// Chunk sizes from the seed: small ones (1..8) split headers and fields byte by byte,
// large ones put many frames in one read. A tiny LCG keeps the sequence deterministic.
class Chunker {
 public:
  Chunker(std::uint8_t seed, std::uint32_t mode) : state_(seed * 2654435761u + 1), mode_(mode) {}
  std::size_t next() {
    state_ = state_ * 1103515245u + 12345u;
    std::uint32_t r = state_ >> 16;
    switch (mode_) {
      case 0: return 1 + r % 8;
      case 1: return 1 + r % 64;
      case 2: return 1 + r % 4096;
      default: return 64 * 1024;  // a whole read buffer, as Connection reads
    }
  }

 private:
  std::uint32_t state_;
  std::uint32_t mode_;
};

std::uint32_t le32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t seed = data[0];
  // One buffer for the whole run: growing a fresh 80 KiB vector per input spent a third
  // of the run in page faults.
  static std::vector<std::uint8_t> stream;
  stream.assign(data + 1, data + size);
  const bool repeat = seed == 0xff;
  if (repeat && !stream.empty()) {
    const std::size_t one = stream.size();
    stream.resize((kRepeatUntil / one + 1) * one);
    for (std::size_t at = one; at < stream.size(); at += one) std::memcpy(stream.data() + at, stream.data(), one);
  }

  txmq::common::FrameDecoder decoder(kMaxFrameBytes);
  // Repeated streams in small chunks would spend the run in append(): 4 KiB reads.
  Chunker chunker(seed, repeat ? 2 : seed & 0x3);
  std::size_t fed = 0;      // bytes appended so far
  std::size_t consumed = 0; // bytes of the stream returned as frames so far
  volatile std::uint64_t sink = 0;
  while (fed < stream.size()) {
    std::size_t n = std::min(chunker.next(), stream.size() - fed);
    decoder.append(reinterpret_cast<const char*>(stream.data() + fed), n);
    fed += n;
    for (;;) {
      auto frame = decoder.next();
      if (!frame) return 0;  // FrameTooLarge or an empty frame: the connection closes here
      if (frame->empty()) break;
      // The decoder's contract, checked against the stream itself.
      if (reinterpret_cast<std::uintptr_t>(frame->data()) % 8 != 0) fail("frame start not 8-byte aligned");
      if (frame->size() < txmq::common::kFrameHeaderBytes) fail("frame shorter than its prefix");
      if (consumed + frame->size() > fed) fail("frame extends past the bytes appended");
      if (std::memcmp(frame->data(), stream.data() + consumed, frame->size()) != 0)
        fail("frame bytes differ from the stream");
      if (le32(frame->data()) + txmq::common::kFrameHeaderBytes != frame->size())
        fail("frame size differs from its length prefix");
      consumed += frame->size();
      if (decoder.buffered() != fed - consumed) fail("buffered() disagrees with the bytes left");
      if (const auto* f = txmq::common::verify_frame(*frame)) sink = sink + txmq::fuzz::walk_frame(*f);
    }
  }
  (void)sink;
  return 0;
}
