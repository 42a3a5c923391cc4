#pragma once
// The stored message (StoredMessage in schema/storage.fbs): its one encoder, which the log
// and the delayed key space share, and the two ways it is read back. Internal to the
// store's files.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "broker/storage/store.h"
#include "storage_generated.h"

namespace txmq::broker::storage::internal {

// Builds a message in fbb and returns it unfinished: the log finishes it as the root of
// its value, the delayed key space inside a DelayedRecord. An empty key is left out; the
// body is always written; dead_letter only by WriteTxn::append_dead_letter.
inline flatbuffers::Offset<StoredMessage> build_message(flatbuffers::FlatBufferBuilder& fbb,
                                                        std::uint64_t timestamp_ms,
                                                        std::span<const std::uint8_t> key,
                                                        std::span<const HeaderView> headers,
                                                        std::span<const std::uint8_t> body,
                                                        bool dead_letter = false) {
  std::vector<flatbuffers::Offset<StoredHeader>> hs;
  hs.reserve(headers.size());
  for (const auto& [name, value] : headers)
    hs.push_back(CreateStoredHeader(fbb, fbb.CreateString(name.data(), name.size()),
                                    fbb.CreateVector(value.data(), value.size())));
  return CreateStoredMessage(fbb, timestamp_ms, key.empty() ? 0 : fbb.CreateVector(key.data(), key.size()),
                             hs.empty() ? 0 : fbb.CreateVector(hs), fbb.CreateVector(body.data(), body.size()),
                             dead_letter);
}

inline std::span<const std::uint8_t> span_of(const flatbuffers::Vector<std::uint8_t>* v) {
  return v ? std::span<const std::uint8_t>(v->data(), v->size()) : std::span<const std::uint8_t>{};
}

// A message's parts as views into its bytes, to be stored again (build_message) while
// those bytes live.
struct MessageParts {
  std::span<const std::uint8_t> key;
  std::vector<HeaderView> headers;
  std::span<const std::uint8_t> body;
};

inline MessageParts parts_of(const StoredMessage& m) {
  MessageParts out{span_of(m.key()), {}, span_of(m.body())};
  if (m.headers()) {
    out.headers.reserve(m.headers()->size());
    for (const auto* h : *m.headers())
      out.headers.emplace_back(h->name() ? h->name()->string_view() : std::string_view{}, span_of(h->value()));
  }
  return out;
}

// A copy, to outlive the transaction that read it.
inline OwnedMessage owned_message(const StoredMessage& m) {
  auto text = [](std::span<const std::uint8_t> b) { return std::string(b.begin(), b.end()); };
  OwnedMessage out;
  out.timestamp_ms = m.timestamp_ms();
  out.key = text(span_of(m.key()));
  out.body = text(span_of(m.body()));
  if (m.headers())
    for (const auto* h : *m.headers()) out.headers.emplace_back(h->name() ? h->name()->str() : "", text(span_of(h->value())));
  out.dead_letter = m.dead_letter();
  return out;
}

}  // namespace txmq::broker::storage::internal
