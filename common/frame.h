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

// What one message header costs in a FlatBuffer beyond its name and value: its slot in the
// vector, its table and the two lengths, the name's NUL and padding. limits.max_message_bytes
// counts it for every header, so that a message of many empty headers (which a hostile
// producer can even make share one table) is as large as it will be when delivered; the
// client counts the same way to refuse such a message before sending it.
inline constexpr std::size_t kHeaderOverheadBytes = 32;

// Accumulates bytes read from a stream and cuts them into frames. Owned by one
// connection; not thread-safe.
class FrameDecoder {
 public:
  explicit FrameDecoder(std::uint32_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

  // The largest frame next() accepts from now on (a connection raises it after the hello).
  void set_max_frame_bytes(std::uint32_t max_frame_bytes) { max_frame_bytes_ = max_frame_bytes; }

  void append(const char* data, std::size_t len);

  // The next whole frame (length prefix included, 8-byte aligned), an empty span when
  // more bytes are needed, or kFrameTooLarge / kMalformedFrame (the stream cannot be
  // resynchronised after that). The span stays valid until the next append() or next().
  Result<std::span<const std::uint8_t>> next();

  // Bytes received but not yet returned as a frame: nonzero at a disconnect means the peer
  // vanished mid-frame.
  std::size_t buffered() const { return buf_.size() - pos_; }

  // The whole size (length prefix included) of the frame being received, once its length
  // prefix has arrived and is within the limit; 0 when no frame is partly received. What a
  // connection must hold in memory to finish the frame.
  std::size_t partial_frame_bytes() const;

  // Gives back memory held for frames already returned: after one large frame a connection
  // keeps room only for what it holds and the frame it is receiving. Invalidates spans.
  void release_memory();
  // Bytes of memory the decoder holds (its buffers' capacity).
  std::size_t capacity() const { return buf_.capacity() + aligned_.capacity() * sizeof(std::uint64_t); }

 private:
  std::vector<std::uint8_t> buf_;
  std::size_t pos_ = 0;  // start of the first byte not yet returned
  std::vector<std::uint64_t> aligned_;  // copy of the last frame that arrived misaligned
  std::uint32_t max_frame_bytes_;
};

// Runs the FlatBuffers verifier over a whole frame as next() returned it, and checks what
// the verifier does not: that every vector of 8-byte elements (structs with a ulong, ulong
// arrays) starts 8-byte aligned, since the generated accessors read them in place. nullptr
// when it is not a valid wire::Frame. No field of a frame may be read before this returned
// non-null.
const wire::Frame* verify_frame(std::span<const std::uint8_t> frame);

// A builder's finished size-prefixed frame as bytes ready for the socket.
inline std::span<const std::uint8_t> frame_bytes(const flatbuffers::FlatBufferBuilder& fbb) {
  return {fbb.GetBufferPointer(), fbb.GetSize()};
}

}  // namespace txmq::common
