#pragma once
// Distinct strong types for distinct ids, so that passing an offset where a partition is
// expected does not compile.

#include <compare>
#include <cstdint>
#include <functional>

namespace txmq {

template <typename Tag, typename Rep>
class StrongId {
 public:
  using rep_type = Rep;
  constexpr StrongId() = default;
  constexpr explicit StrongId(Rep v) : v_(v) {}
  constexpr Rep value() const { return v_; }
  constexpr auto operator<=>(const StrongId&) const = default;

 private:
  Rep v_{};
};

using TopicId = StrongId<struct TopicIdTag, std::uint32_t>;        // assigned at topic creation, never reused
using PartitionId = StrongId<struct PartitionIdTag, std::uint32_t>;
using Offset = StrongId<struct OffsetTag, std::uint64_t>;          // position in a partition's log
using DeliveryCount = StrongId<struct DeliveryCountTag, std::uint32_t>;
using RequestId = StrongId<struct RequestIdTag, std::uint64_t>;    // per connection, chosen by the client
// A transaction (half message): the store's counter shifted left 20 bits, or'ed with the
// low 20 bits of the prepare time in ms, so ids grow with time (storage/layout.h).
using TxnId = StrongId<struct TxnIdTag, std::uint64_t>;
using ProducerId = StrongId<struct ProducerIdTag, std::uint64_t>;  // an idempotent producer, chosen at random by it
using Sequence = StrongId<struct SequenceTag, std::uint64_t>;      // an idempotent producer's batch, growing

// The next offset after `o`.
constexpr Offset next(Offset o) { return Offset(o.value() + 1); }

}  // namespace txmq

template <typename Tag, typename Rep>
struct std::hash<txmq::StrongId<Tag, Rep>> {
  std::size_t operator()(const txmq::StrongId<Tag, Rep>& id) const noexcept {
    return std::hash<Rep>{}(id.value());
  }
};
