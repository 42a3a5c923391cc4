#pragma once
// Framing: a frame is a 4-byte little-endian length followed by one wire::Frame
// FlatBuffer of that many bytes. FlatBuffers' size-prefixed buffers have exactly this
// layout, so encoders call FinishSizePrefixed() and send the builder's bytes as they are.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/result.h"
#include "txmq_generated.h"

namespace txmq::common {

inline constexpr std::size_t kFrameHeaderBytes = 4;

// Accumulates bytes read from a stream and cuts them into frames. Owned by one
// connection; not thread-safe.
class FrameDecoder {
 public:
  explicit FrameDecoder(std::uint32_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

  void append(const char* data, std::size_t len);

  // The next whole frame (length prefix included, 8-byte aligned), an empty span when
  // more bytes are needed, or kFrameTooLarge / kMalformedFrame (the stream cannot be
  // resynchronised after that). The span stays valid until the next append() or next().
  Result<std::span<const std::uint8_t>> next();

  // Bytes received but not yet returned as a frame: nonzero at a disconnect means the peer
  // vanished mid-frame.
  std::size_t buffered() const { return buf_.size() - pos_; }

 private:
  std::vector<std::uint8_t> buf_;
  std::size_t pos_ = 0;  // start of the first byte not yet returned
  std::vector<std::uint64_t> aligned_;  // copy of the last frame that arrived misaligned
  std::uint32_t max_frame_bytes_;
};

// Runs the FlatBuffers verifier over a whole frame as next() returned it; nullptr when it
// is not a valid wire::Frame. No field of a frame may be read before this returned
// non-null.
const wire::Frame* verify_frame(std::span<const std::uint8_t> frame);

// A builder's finished size-prefixed frame as bytes ready for the socket.
inline std::span<const std::uint8_t> frame_bytes(const flatbuffers::FlatBufferBuilder& fbb) {
  return {fbb.GetBufferPointer(), fbb.GetSize()};
}

}  // namespace txmq::common
