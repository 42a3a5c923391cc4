#pragma once
// The records of transactions in LMDB (layout.h has the key spaces that hold them).
//
// Both are a fixed layout of big-endian integers, like the keys, followed by the variable
// parts, rather than FlatBuffers: every transaction writes a HalfRecord at prepare and an
// EndedRecord at its end, and the bytes written per transaction are what a durable commit
// pays for. A FlatBuffers TxnRecord was about 250 bytes for a 100-byte body; these are
// about 170 and 70. Decoding checks every length against the value's size, so a damaged
// record is refused, never read past its end.

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "broker/storage/keys.h"
#include "broker/storage/store.h"

namespace txmq::broker::storage {

// The state a record's first byte names, if it is one a record of its kind may hold (a
// HalfRecord: prepared or parked; an EndedRecord: committed or rolled back); nullopt for
// any other byte, which only a damaged record holds.
inline std::optional<TxnState> half_state(std::uint8_t b) {
  const auto s = static_cast<TxnState>(b);
  if (s == TxnState::kPrepared || s == TxnState::kParked) return s;
  return std::nullopt;
}
inline std::optional<TxnState> ended_state(std::uint8_t b) {
  const auto s = static_cast<TxnState>(b);
  if (s == TxnState::kCommitted || s == TxnState::kRolledBack) return s;
  return std::nullopt;
}

// A prepared or parked transaction (txn_open, txn_parked) with its half message.
//
//   0 state  2 group length (u16)  4 topic  8 partition  12 checks  16 created ms
//   24 next check ms  32 deliver-at ms  40 key length  44 body length  48 header count
//   52 group, key, headers (each: name length, value length, name, value), body
struct HalfRecord {
  static constexpr std::size_t kFixed = 52;
  static constexpr std::size_t kStateAt = 0, kChecksAt = 12, kNextCheckAt = 24;  // patched in place

  TxnState state = TxnState::kPrepared;  // prepared or parked
  std::uint32_t topic = 0;
  std::uint32_t partition = 0;
  std::uint32_t checks = 0;         // checks sent so far
  std::uint64_t created_ms = 0;     // prepare time; also the message's timestamp
  std::uint64_t next_check_ms = 0;  // 0 once parked
  std::uint64_t deliver_at_ms = 0;  // delayed delivery once committed; 0: none
  std::string_view producer_group;
  std::span<const std::uint8_t> key;
  std::vector<HeaderView> headers;
  std::span<const std::uint8_t> body;

  // Into out (replacing what it held).
  void encode(std::vector<std::uint8_t>& out) const {
    std::size_t size = kFixed + producer_group.size() + key.size() + body.size();
    for (const auto& [name, value] : headers) size += 8 + name.size() + value.size();
    out.resize(size);
    std::uint8_t* p = out.data();
    p[0] = static_cast<std::uint8_t>(state);
    p[1] = 0;
    p[2] = static_cast<std::uint8_t>(producer_group.size() >> 8);
    p[3] = static_cast<std::uint8_t>(producer_group.size());
    put_be32(p + 4, topic);
    put_be32(p + 8, partition);
    put_be32(p + 12, checks);
    put_be64(p + 16, created_ms);
    put_be64(p + 24, next_check_ms);
    put_be64(p + 32, deliver_at_ms);
    put_be32(p + 40, static_cast<std::uint32_t>(key.size()));
    put_be32(p + 44, static_cast<std::uint32_t>(body.size()));
    put_be32(p + 48, static_cast<std::uint32_t>(headers.size()));
    p += kFixed;
    auto copy = [&p](const void* data, std::size_t n) {
      if (n) std::memcpy(p, data, n);
      p += n;
    };
    copy(producer_group.data(), producer_group.size());
    copy(key.data(), key.size());
    for (const auto& [name, value] : headers) {
      put_be32(p, static_cast<std::uint32_t>(name.size()));
      put_be32(p + 4, static_cast<std::uint32_t>(value.size()));
      p += 8;
      copy(name.data(), name.size());
      copy(value.data(), value.size());
    }
    copy(body.data(), body.size());
  }

  // The views point into bytes; nullopt when the lengths do not add up to its size or the
  // state is not prepared or parked. The group name is limited to 65535 bytes, which valid
  // names are far below.
  static std::optional<HalfRecord> decode(std::span<const std::uint8_t> bytes) {
    if (bytes.size() < kFixed) return std::nullopt;
    const std::uint8_t* p = bytes.data();
    HalfRecord r;
    const auto state = half_state(p[0]);
    if (!state) return std::nullopt;
    r.state = *state;
    const std::size_t group = static_cast<std::size_t>(p[2]) << 8 | p[3];
    r.topic = get_be32(p + 4);
    r.partition = get_be32(p + 8);
    r.checks = get_be32(p + 12);
    r.created_ms = get_be64(p + 16);
    r.next_check_ms = get_be64(p + 24);
    r.deliver_at_ms = get_be64(p + 32);
    const std::size_t key = get_be32(p + 40), body = get_be32(p + 44), headers = get_be32(p + 48);
    std::size_t at = kFixed;
    auto take = [&](std::size_t n) -> std::optional<std::span<const std::uint8_t>> {
      if (n > bytes.size() - at) return std::nullopt;
      auto s = bytes.subspan(at, n);
      at += n;
      return s;
    };
    auto g = take(group);
    auto k = take(key);
    if (!g || !k) return std::nullopt;
    r.producer_group = std::string_view(reinterpret_cast<const char*>(g->data()), g->size());
    r.key = *k;
    if (headers > (bytes.size() - at) / 8) return std::nullopt;
    r.headers.reserve(headers);
    for (std::size_t i = 0; i < headers; ++i) {
      auto lengths = take(8);
      if (!lengths) return std::nullopt;
      auto name = take(get_be32(lengths->data()));
      if (!name) return std::nullopt;
      auto value = take(get_be32(lengths->data() + 4));
      if (!value) return std::nullopt;
      r.headers.emplace_back(std::string_view(reinterpret_cast<const char*>(name->data()), name->size()), *value);
    }
    auto b = take(body);
    if (!b || at != bytes.size()) return std::nullopt;
    r.body = *b;
    return r;
  }

  OwnedTxn owned(TxnId id) const {
    OwnedTxn t;
    t.id = id;
    t.state = state;
    t.topic = TopicId(topic);
    t.partition = PartitionId(partition);
    t.producer_group = std::string(producer_group);
    OwnedMessage m;
    m.timestamp_ms = created_ms;
    m.key.assign(key.begin(), key.end());
    for (const auto& [name, value] : headers) m.headers.emplace_back(std::string(name), std::string(value.begin(), value.end()));
    m.body.assign(body.begin(), body.end());
    t.message = std::move(m);
    t.deliver_at_ms = deliver_at_ms;
    t.created_ms = created_ms;
    t.checks = checks;
    t.next_check_ms = next_check_ms;
    return t;
  }
};

// A committed or rolled back transaction (txn_ended): its outcome, not its message.
//
//   0 state  1 resolution length  4 topic  8 partition  12 checks  16 offset  24 created ms
//   32 ended ms  40 deliver-at ms  48 resolution, then the producer group
struct EndedRecord {
  static constexpr std::size_t kFixed = 48;

  TxnState state = TxnState::kCommitted;  // committed or rolled back
  std::uint32_t topic = 0;
  std::uint32_t partition = 0;
  std::uint32_t checks = 0;         // checks sent while it was open
  std::uint64_t offset = 0;         // where the commit appended it
  std::uint64_t created_ms = 0;
  std::uint64_t ended_ms = 0;
  std::uint64_t deliver_at_ms = 0;  // a delayed commit's delivery time
  std::string_view resolution;      // who decided: producer, check, operator (at most 255 bytes)
  std::string_view producer_group;

  // Into out (replacing what it held).
  void encode(std::vector<std::uint8_t>& out) const {
    const std::size_t r = std::min<std::size_t>(resolution.size(), 255);
    out.assign(kFixed + r + producer_group.size(), 0);
    std::uint8_t* p = out.data();
    p[0] = static_cast<std::uint8_t>(state);
    p[1] = static_cast<std::uint8_t>(r);
    put_be32(p + 4, topic);
    put_be32(p + 8, partition);
    put_be32(p + 12, checks);
    put_be64(p + 16, offset);
    put_be64(p + 24, created_ms);
    put_be64(p + 32, ended_ms);
    put_be64(p + 40, deliver_at_ms);
    if (r) std::memcpy(p + kFixed, resolution.data(), r);
    if (!producer_group.empty()) std::memcpy(p + kFixed + r, producer_group.data(), producer_group.size());
  }

  // The views point into bytes; nullopt when it is too short to be one or the state is
  // not committed or rolled back.
  static std::optional<EndedRecord> decode(std::span<const std::uint8_t> bytes) {
    const std::uint8_t* p = bytes.data();
    if (bytes.size() < kFixed || bytes.size() < kFixed + p[1]) return std::nullopt;
    const auto state = ended_state(p[0]);
    if (!state) return std::nullopt;
    EndedRecord e;
    e.state = *state;
    e.topic = get_be32(p + 4);
    e.partition = get_be32(p + 8);
    e.checks = get_be32(p + 12);
    e.offset = get_be64(p + 16);
    e.created_ms = get_be64(p + 24);
    e.ended_ms = get_be64(p + 32);
    e.deliver_at_ms = get_be64(p + 40);
    const char* names = reinterpret_cast<const char*>(p + kFixed);
    e.resolution = std::string_view(names, p[1]);
    e.producer_group = std::string_view(names + p[1], bytes.size() - kFixed - p[1]);
    return e;
  }

  OwnedTxn owned(TxnId id) const {
    OwnedTxn t;
    t.id = id;
    t.state = state;
    t.topic = TopicId(topic);
    t.partition = PartitionId(partition);
    t.producer_group = std::string(producer_group);
    t.deliver_at_ms = deliver_at_ms;
    t.created_ms = created_ms;
    t.checks = checks;
    t.ended_ms = ended_ms;
    t.resolution = std::string(resolution);
    t.offset = Offset(offset);
    return t;
  }
};

}  // namespace txmq::broker::storage
