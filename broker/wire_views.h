#pragma once
// Views of a verified wire message as the storage layer takes them: no copies.

#include <span>
#include <vector>

#include "broker/storage/store.h"
#include "common/frame.h"
#include "txmq_generated.h"

namespace txmq::broker {

inline std::span<const std::uint8_t> bytes_of(const flatbuffers::Vector<std::uint8_t>* v) {
  return v ? std::span<const std::uint8_t>(v->data(), v->size()) : std::span<const std::uint8_t>{};
}

// The message's headers as (name, value) views, into out (cleared first).
inline void header_views(const wire::Message& m, std::vector<storage::HeaderView>& out) {
  out.clear();
  if (!m.headers()) return;
  for (const auto* h : *m.headers())
    out.emplace_back(h->name() ? h->name()->string_view() : std::string_view{}, bytes_of(h->value()));
}

// What a Delivery costs beyond its message and topic name: its table, the scalar fields,
// the vectors' lengths and padding.
inline constexpr std::size_t kDeliveryOverheadBytes = 128;

// Key, header and body bytes, each header with its overhead: what limits.max_message_bytes
// limits. Works on the wire message and the stored one (the same fields).
template <typename M>
std::size_t message_size(const M& m) {
  std::size_t n = bytes_of(m.key()).size() + bytes_of(m.body()).size();
  if (m.headers())
    for (const auto* h : *m.headers())
      n += (h->name() ? h->name()->size() : 0) + bytes_of(h->value()).size() + common::kHeaderOverheadBytes;
  return n;
}

}  // namespace txmq::broker
