#include "common/frame.h"

#include <algorithm>
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
  // Once a frame's length is known, room for all of it is made at once: growth by doubling
  // would hold up to twice the frame while it arrives.
  if (const std::size_t want = pos_ + partial_frame_bytes(); want > buf_.capacity())
    buf_.reserve(std::max(want, buf_.size() + len));
  buf_.insert(buf_.end(), data, data + len);
}

std::size_t FrameDecoder::partial_frame_bytes() const {
  const std::size_t avail = buf_.size() - pos_;
  if (avail < kFrameHeaderBytes) return avail == 0 ? 0 : kFrameHeaderBytes;
  const std::uint8_t* p = buf_.data() + pos_;
  const std::uint32_t len = static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                            static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
  if (len > max_frame_bytes_ || avail >= kFrameHeaderBytes + len) return 0;  // an error, or whole
  return kFrameHeaderBytes + len;
}

void FrameDecoder::release_memory() {
  // 64 KiB: one read's worth, kept so that a busy connection does not reallocate per read.
  // Beyond that the buffer keeps room for what it holds and the frame being received, not
  // for the largest frame it ever held: a connection that received one 16 MiB frame, then
  // one byte of the next, must not keep 16 MiB that no budget accounts for.
  constexpr std::size_t kKeep = 64 * 1024;
  const std::size_t need = std::max({kKeep, buffered(), partial_frame_bytes()});
  if (buf_.capacity() > 2 * need) {
    std::vector<std::uint8_t> fresh;
    fresh.reserve(std::max(buffered(), partial_frame_bytes()));
    fresh.assign(buf_.begin() + static_cast<std::ptrdiff_t>(pos_), buf_.end());
    buf_.swap(fresh);
    pos_ = 0;
  }
  // The aligned copy backs only the frame last returned, which the caller is done with.
  if (aligned_.capacity() * sizeof(std::uint64_t) > kKeep) std::vector<std::uint64_t>().swap(aligned_);
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

namespace {

// True when v is absent, empty, or its elements start 8-byte aligned. The frame starts
// 8-byte aligned (FrameDecoder guarantees it), so the address tells. (FlatBuffers' own
// builder leaves an empty vector's data at 4 mod 8; with nothing to read, that is fine.)
template <typename V>
bool aligned8(const V* v) {
  return v == nullptr || v->size() == 0 || reinterpret_cast<std::uintptr_t>(v->Data()) % 8 == 0;
}

bool aligned8(const wire::RetryPolicy* retry) { return retry == nullptr || aligned8(retry->delays_ms()); }

// Every vector of 8-byte elements in the schema, by the body that holds it.
bool vectors_aligned(const wire::Frame& f) {
  switch (f.body_type()) {
    case wire::Body::ProduceOk: return aligned8(f.body_as_ProduceOk()->offsets());
    case wire::Body::Ack: return aligned8(f.body_as_Ack()->messages());
    case wire::Body::ConfigureGroup: return aligned8(f.body_as_ConfigureGroup()->retry());
    case wire::Body::GroupList:
      if (const auto* groups = f.body_as_GroupList()->groups())
        for (const auto* g : *groups)
          if (!aligned8(g->retry())) return false;
      return true;
    case wire::Body::Redrive: return aligned8(f.body_as_Redrive()->offsets());
    case wire::Body::RedriveOk:
      return aligned8(f.body_as_RedriveOk()->redriven()) && aligned8(f.body_as_RedriveOk()->failed());
    case wire::Body::PrepareOk: return aligned8(f.body_as_PrepareOk()->transaction_ids());
    case wire::Body::EndTransactions: return aligned8(f.body_as_EndTransactions()->items());
    case wire::Body::EndTransactionsOk: return aligned8(f.body_as_EndTransactionsOk()->results());
    default: return true;
  }
}

}  // namespace

const wire::Frame* verify_frame(std::span<const std::uint8_t> frame) {
  flatbuffers::Verifier::Options opts;
  opts.max_depth = 16;  // our schema nests 4 deep; anything deeper is hostile
  opts.max_tables = 1'000'000;
  flatbuffers::Verifier verifier(frame.data(), frame.size(), opts);
  if (!wire::VerifySizePrefixedFrameBuffer(verifier)) return nullptr;
  const wire::Frame* f = wire::GetSizePrefixedFrame(frame.data());
  if (f->body() != nullptr && !vectors_aligned(*f)) return nullptr;
  return f;
}

}  // namespace txmq::common
