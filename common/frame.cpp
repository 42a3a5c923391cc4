#include "common/frame.h"

#include <cstring>

namespace txmq::common {

void FrameDecoder::append(const char* data, std::size_t len) {
  // Compact before growing so a long-lived connection's buffer stays the size of its
  // largest frame rather than the size of everything it ever received.
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 64 * 1024 && pos_ > buf_.size() / 2) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
  }
  buf_.insert(buf_.end(), data, data + len);
}

Result<std::span<const std::uint8_t>> FrameDecoder::next() {
  std::size_t avail = buf_.size() - pos_;
  if (avail < kFrameHeaderBytes) return std::span<const std::uint8_t>{};
  const std::uint8_t* p = buf_.data() + pos_;
  std::uint32_t len = static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                      static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
  if (len > max_frame_bytes_)
    return Error(ErrorCode::kFrameTooLarge, "frame of " + std::to_string(len) +
                                                " bytes exceeds the limit of " +
                                                std::to_string(max_frame_bytes_));
  if (len == 0) return Error(ErrorCode::kMalformedFrame, "empty frame");
  if (avail - kFrameHeaderBytes < len) return std::span<const std::uint8_t>{};
  pos_ += kFrameHeaderBytes + len;
  // FlatBuffers reads scalars in place and aligns them relative to the start of the
  // size-prefixed buffer, so that start must be 8-byte aligned. Our encoders' frames are
  // multiples of 8 bytes and keep the stream aligned; any other peer's frame is copied.
  std::size_t total = kFrameHeaderBytes + len;
  if (reinterpret_cast<std::uintptr_t>(p) % alignof(std::uint64_t) != 0) {
    aligned_.resize((total + 7) / 8);
    std::memcpy(aligned_.data(), p, total);
    p = reinterpret_cast<const std::uint8_t*>(aligned_.data());
  }
  return std::span<const std::uint8_t>(p, total);
}

const wire::Frame* verify_frame(std::span<const std::uint8_t> frame) {
  flatbuffers::Verifier::Options opts;
  opts.max_depth = 16;  // our schema nests 4 deep; anything deeper is hostile
  opts.max_tables = 1'000'000;
  flatbuffers::Verifier verifier(frame.data(), frame.size(), opts);
  if (!wire::VerifySizePrefixedFrameBuffer(verifier)) return nullptr;
  return wire::GetSizePrefixedFrame(frame.data());
}

}  // namespace txmq::common
