// common/frame: cutting a byte stream into frames, and verifying them.

#include "common/frame.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using txmq::ErrorCode;
using txmq::common::FrameDecoder;
using txmq::common::verify_frame;
namespace wire = txmq::wire;

namespace {

using Bytes = std::vector<std::uint8_t>;

// A Hello frame with the given request id, as an encoder sends it.
Bytes hello_frame(std::uint64_t rid, const std::string& name = "frame-test") {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateHello(fbb, 1, fbb.CreateString(name));
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::Hello, body.Union()));
  return Bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

void set_length(Bytes& frame, std::uint32_t len) {
  frame[0] = static_cast<std::uint8_t>(len);
  frame[1] = static_cast<std::uint8_t>(len >> 8);
  frame[2] = static_cast<std::uint8_t>(len >> 16);
  frame[3] = static_cast<std::uint8_t>(len >> 24);
}

// Appends the frame plus `pad` trailing zero bytes under a length that covers them, as a
// peer with another encoder may send: the frame stays valid, the next one is misaligned.
void append_padded(Bytes& stream, Bytes frame, std::size_t pad) {
  frame.resize(frame.size() + pad, 0);
  set_length(frame, static_cast<std::uint32_t>(frame.size() - 4));
  stream.insert(stream.end(), frame.begin(), frame.end());
}

// Every frame the decoder yields right now, each verified; the request ids in order.
std::vector<std::uint64_t> drain(FrameDecoder& decoder) {
  std::vector<std::uint64_t> ids;
  for (;;) {
    auto next = decoder.next();
    REQUIRE(next.ok());
    if (next->empty()) return ids;
    CHECK(reinterpret_cast<std::uintptr_t>(next->data()) % 8 == 0);
    const wire::Frame* frame = verify_frame(*next);
    REQUIRE(frame != nullptr);
    ids.push_back(frame->request_id());
  }
}

Bytes three_frames() {
  Bytes stream;
  for (std::uint64_t rid : {1, 2, 3}) {
    Bytes f = hello_frame(rid, std::string(rid * 10, 'x'));
    stream.insert(stream.end(), f.begin(), f.end());
  }
  return stream;
}

}  // namespace

TEST_CASE("a stream delivered one byte at a time yields every frame whole") {
  Bytes stream = three_frames();
  FrameDecoder decoder(1 << 20);
  std::vector<std::uint64_t> ids;
  for (std::uint8_t b : stream) {
    decoder.append(reinterpret_cast<const char*>(&b), 1);
    for (auto id : drain(decoder)) ids.push_back(id);
  }
  CHECK(ids == std::vector<std::uint64_t>{1, 2, 3});
  CHECK(decoder.buffered() == 0);
}

TEST_CASE("a stream delivered in uneven chunks yields every frame whole") {
  Bytes stream = three_frames();
  for (std::size_t chunk : {2, 3, 5, 7, 13, 64, 1000}) {
    CAPTURE(chunk);
    FrameDecoder decoder(1 << 20);
    std::vector<std::uint64_t> ids;
    for (std::size_t i = 0; i < stream.size(); i += chunk) {
      std::size_t n = std::min(chunk, stream.size() - i);
      decoder.append(reinterpret_cast<const char*>(stream.data() + i), n);
      for (auto id : drain(decoder)) ids.push_back(id);
    }
    CHECK(ids == std::vector<std::uint64_t>{1, 2, 3});
  }
}

TEST_CASE("a partial frame is reported as buffered and not returned") {
  Bytes frame = hello_frame(9);
  FrameDecoder decoder(1 << 20);
  decoder.append(reinterpret_cast<const char*>(frame.data()), frame.size() - 1);
  auto next = decoder.next();
  REQUIRE(next.ok());
  CHECK(next->empty());
  CHECK(decoder.buffered() == frame.size() - 1);
}

TEST_CASE("a length over the limit is rejected with FrameTooLarge before its body arrives") {
  FrameDecoder decoder(1024);
  Bytes header(4);
  set_length(header, 1025);
  decoder.append(reinterpret_cast<const char*>(header.data()), header.size());
  auto next = decoder.next();
  REQUIRE_FALSE(next.ok());
  CHECK(next.error().code == ErrorCode::kFrameTooLarge);
}

TEST_CASE("a length at the limit is accepted") {
  Bytes frame = hello_frame(4);
  FrameDecoder decoder(static_cast<std::uint32_t>(frame.size() - 4));
  decoder.append(reinterpret_cast<const char*>(frame.data()), frame.size());
  CHECK(drain(decoder) == std::vector<std::uint64_t>{4});
}

TEST_CASE("a length of 0xFFFFFFFF is rejected with FrameTooLarge") {
  FrameDecoder decoder(16u << 20);
  const std::uint8_t header[4] = {0xFF, 0xFF, 0xFF, 0xFF};
  decoder.append(reinterpret_cast<const char*>(header), 4);
  auto next = decoder.next();
  REQUIRE_FALSE(next.ok());
  CHECK(next.error().code == ErrorCode::kFrameTooLarge);
}

TEST_CASE("a length of zero is rejected as malformed") {
  FrameDecoder decoder(1024);
  const std::uint8_t header[4] = {0, 0, 0, 0};
  decoder.append(reinterpret_cast<const char*>(header), 4);
  auto next = decoder.next();
  REQUIRE_FALSE(next.ok());
  CHECK(next.error().code == ErrorCode::kMalformedFrame);
}

TEST_CASE("frames that arrive misaligned in the stream still verify") {
  // Padding of 1..7 bytes puts the following frame at every misaligned offset; reading
  // its fields in place would be a misaligned load (UBSan fails the test).
  Bytes stream;
  std::uint64_t rid = 1;
  for (std::size_t pad = 1; pad <= 7; ++pad) append_padded(stream, hello_frame(rid++), pad);
  Bytes last = hello_frame(rid);
  stream.insert(stream.end(), last.begin(), last.end());

  FrameDecoder decoder(1 << 20);
  decoder.append(reinterpret_cast<const char*>(stream.data()), stream.size());
  std::vector<std::uint64_t> ids;
  for (;;) {
    auto next = decoder.next();
    REQUIRE(next.ok());
    if (next->empty()) break;
    CHECK(reinterpret_cast<std::uintptr_t>(next->data()) % 8 == 0);
    const wire::Frame* frame = verify_frame(*next);
    REQUIRE(frame != nullptr);
    REQUIRE(frame->body_as_Hello() != nullptr);
    CHECK(frame->body_as_Hello()->client_name()->str() == "frame-test");
    ids.push_back(frame->request_id());
  }
  CHECK(ids == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8});
}

TEST_CASE("verify_frame rejects random bytes under a matching length") {
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<std::size_t> size(1, 300);
  for (int i = 0; i < 2000; ++i) {
    CAPTURE(i);
    // 8-byte aligned storage, as the decoder hands frames over.
    std::size_t len = size(rng);
    std::vector<std::uint64_t> storage((4 + len + 7) / 8);
    auto* p = reinterpret_cast<std::uint8_t*>(storage.data());
    for (std::size_t j = 4; j < 4 + len; ++j) p[j] = static_cast<std::uint8_t>(byte(rng));
    std::uint32_t l = static_cast<std::uint32_t>(len);
    std::memcpy(p, &l, 4);  // little-endian host
    CHECK(verify_frame({p, 4 + len}) == nullptr);
  }
}

TEST_CASE("verify_frame rejects a frame cut short") {
  Bytes frame = hello_frame(5, "a client name long enough to be cut");
  for (std::size_t cut = 4; cut < frame.size(); ++cut) {
    CAPTURE(cut);
    std::vector<std::uint64_t> storage((frame.size() + 7) / 8);
    auto* p = reinterpret_cast<std::uint8_t*>(storage.data());
    std::memcpy(p, frame.data(), cut);
    // As received: the length still claims the whole frame.
    CHECK(verify_frame({p, cut}) == nullptr);
  }
}

TEST_CASE("verify_frame rejects a frame whose length was cut to match its truncation") {
  Bytes frame = hello_frame(5, "a client name long enough to be cut");
  for (std::size_t cut = 4; cut < frame.size(); ++cut) {
    CAPTURE(cut);
    Bytes shorter(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(cut));
    set_length(shorter, static_cast<std::uint32_t>(cut - 4));
    std::vector<std::uint64_t> storage((cut + 7) / 8 + 1);
    std::memcpy(storage.data(), shorter.data(), cut);
    CHECK(verify_frame({reinterpret_cast<const std::uint8_t*>(storage.data()), cut}) == nullptr);
  }
}

TEST_CASE("a built produce frame round-trips through the decoder and verifier") {
  flatbuffers::FlatBufferBuilder fbb;
  const std::string key = "order-42", body = "{\"total\": 12.50}";
  std::vector<std::uint8_t> hv = {0, 1, 2, 255};
  auto header = wire::CreateHeader(fbb, fbb.CreateString("trace"), fbb.CreateVector(hv));
  auto headers = fbb.CreateVector(std::vector<flatbuffers::Offset<wire::Header>>{header});
  auto msg = wire::CreateMessage(
      fbb, fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(key.data()), key.size()), headers,
      fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()), 3);
  auto produce = wire::CreateProduce(fbb, fbb.CreateString("orders"),
                                     fbb.CreateVector(std::vector<flatbuffers::Offset<wire::Message>>{msg}));
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, 77, wire::Body::Produce, produce.Union()));

  FrameDecoder decoder(1 << 20);
  decoder.append(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
  auto next = decoder.next();
  REQUIRE(next.ok());
  REQUIRE(next->size() == fbb.GetSize());
  const wire::Frame* frame = verify_frame(*next);
  REQUIRE(frame != nullptr);
  CHECK(frame->request_id() == 77);
  const wire::Produce* p = frame->body_as_Produce();
  REQUIRE(p != nullptr);
  CHECK(p->topic()->str() == "orders");
  REQUIRE(p->messages()->size() == 1);
  const wire::Message* m = p->messages()->Get(0);
  CHECK(std::string(m->key()->begin(), m->key()->end()) == key);
  CHECK(std::string(m->body()->begin(), m->body()->end()) == body);
  CHECK(m->partition() == 3);
  REQUIRE(m->headers()->size() == 1);
  CHECK(m->headers()->Get(0)->name()->str() == "trace");
  CHECK(std::vector<std::uint8_t>(m->headers()->Get(0)->value()->begin(),
                                  m->headers()->Get(0)->value()->end()) == hv);
  CHECK(decoder.buffered() == 0);
}

TEST_CASE("empty vectors of 8-byte elements pass verification wherever the builder put them") {
  // FlatBuffers' builder leaves an empty [ulong]'s data at 4 mod 8; nothing is read there.
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<std::uint64_t> none, one{5};
  auto body = txmq::wire::CreateRedriveOk(fbb, fbb.CreateVector(none), fbb.CreateVector(one));
  fbb.FinishSizePrefixed(txmq::wire::CreateFrame(fbb, 7, txmq::wire::Body::RedriveOk, body.Union()));
  std::vector<std::uint64_t> aligned((fbb.GetSize() + 7) / 8);
  std::memcpy(aligned.data(), fbb.GetBufferPointer(), fbb.GetSize());
  const auto* f = txmq::common::verify_frame({reinterpret_cast<const std::uint8_t*>(aligned.data()), fbb.GetSize()});
  REQUIRE(f != nullptr);
  CHECK(f->body_as_RedriveOk()->failed()->Get(0) == 5);
}

TEST_CASE("after a large frame the decoder keeps room for what it holds, not for that frame") {
  // A client that sends a 4 MiB frame and then one byte of the next must not leave the
  // connection holding 4 MiB that no memory budget counts.
  FrameDecoder decoder(8u << 20);
  std::vector<std::uint8_t> big(4u << 20, 0);
  for (int i = 0; i < 4; ++i) big[i] = static_cast<std::uint8_t>((big.size() - 4) >> (8 * i));
  big.push_back(0x10);  // the first byte of the next frame's length
  decoder.append(reinterpret_cast<const char*>(big.data()), big.size());
  auto frame = decoder.next();
  REQUIRE(frame.ok());
  CHECK(frame->size() == (4u << 20));
  CHECK(decoder.capacity() >= (4u << 20));
  decoder.release_memory();
  CHECK(decoder.buffered() == 1);
  CHECK(decoder.capacity() <= 256u * 1024);
}
