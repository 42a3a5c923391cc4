#pragma once
// Conversions between the public client types and their wire form, shared by the
// producers, the consumer and the admin client.

#include <string>

#include "txmq/client.h"
#include "txmq_generated.h"

namespace txmq::client::detail {

inline flatbuffers::Offset<flatbuffers::Vector<std::uint8_t>> wire_bytes(flatbuffers::FlatBufferBuilder& fbb,
                                                                         const std::string& s) {
  return fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

inline std::string owned_bytes(const flatbuffers::Vector<std::uint8_t>* v) {
  return v ? std::string(reinterpret_cast<const char*>(v->data()), v->size()) : std::string();
}

inline flatbuffers::Offset<wire::Message> build_message(flatbuffers::FlatBufferBuilder& fbb, const Message& m) {
  std::vector<flatbuffers::Offset<wire::Header>> headers;
  headers.reserve(m.headers.size());
  for (const auto& h : m.headers)
    headers.push_back(wire::CreateHeader(fbb, fbb.CreateString(h.name), wire_bytes(fbb, h.value)));
  return wire::CreateMessage(fbb, m.key.empty() ? 0 : wire_bytes(fbb, m.key),
                             headers.empty() ? 0 : fbb.CreateVector(headers), wire_bytes(fbb, m.body), m.partition,
                             m.deliver_at_ms, static_cast<std::uint64_t>(m.delay.count()));
}

}  // namespace txmq::client::detail
