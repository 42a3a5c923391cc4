#include "broker/dead_letter.h"

#include <charconv>

#include "common/well_known.h"

namespace txmq::broker {
namespace {

std::span<const std::uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

const std::string* header(const storage::OwnedMessage& m, std::string_view name) {
  for (const auto& [n, v] : m.headers)
    if (n == name) return &v;
  return nullptr;
}

std::optional<std::uint64_t> number(const std::string* s) {
  if (!s) return std::nullopt;
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
  if (ec != std::errc() || end != s->data() + s->size()) return std::nullopt;
  return v;
}

}  // namespace

std::string dead_letter_topic(std::string_view group) { return txmq::dead_letter_topic(group); }

std::vector<std::string> merge_reasons(std::vector<std::string> older, const std::vector<std::string>& newer) {
  older.insert(older.end(), newer.begin(), newer.end());
  if (older.size() > kMaxReasons)
    older.erase(older.begin(), older.end() - static_cast<std::ptrdiff_t>(kMaxReasons));
  return older;
}

std::vector<std::pair<std::string, std::string>> dead_letter_headers(const FailureOrigin& origin, PartitionId partition,
                                                                     Offset offset, const storage::OwnedPending& record,
                                                                     std::uint64_t origin_timestamp_ms,
                                                                     std::uint64_t now_ms) {
  std::vector<std::pair<std::string, std::string>> out = {
      {kOriginTopicHeader, origin.topic},
      {kOriginPartitionHeader, std::to_string(partition.value())},
      {kOriginOffsetHeader, std::to_string(offset.value())},
      {kOriginMessageIdHeader,
       origin.topic + "/" + std::to_string(partition.value()) + "/" + std::to_string(offset.value())},
      {kOriginTimestampHeader, std::to_string(origin_timestamp_ms)},
      {kGroupHeader, origin.group},
      {kDeliveryCountHeader, std::to_string(record.delivery_count)},
      {kFirstDeliveryHeader, std::to_string(record.first_delivery_ms)},
      {kLastDeliveryHeader, std::to_string(record.last_delivery_ms)},
      {kDeadLetteredHeader, std::to_string(now_ms)},
  };
  for (const auto& r : record.reasons) out.emplace_back(kReasonHeader, r);
  return out;
}

std::optional<LetterOrigin> letter_origin(const storage::OwnedMessage& letter) {
  const std::string* group = header(letter, kGroupHeader);
  const std::string* topic = header(letter, kOriginTopicHeader);
  auto partition = number(header(letter, kOriginPartitionHeader));
  auto offset = number(header(letter, kOriginOffsetHeader));
  if (!group || !topic || !partition || !offset) return std::nullopt;
  LetterOrigin out{*group, *topic, PartitionId(static_cast<std::uint32_t>(*partition)), Offset(*offset), {}};
  for (const auto& [n, v] : letter.headers)
    if (n == kReasonHeader) out.reasons.push_back(v);
  return out;
}

Status write_failure(storage::WriteTxn& txn, const FailureOrigin& origin, const Failure& failure,
                     std::uint64_t now_ms, std::optional<storage::TopicMeta>& dlq, std::optional<Offset>& dlq_offset) {
  storage::OwnedPending record = failure.record;
  if (failure.had_record) {
    // Keep the history: the first delivery time and the reasons given so far.
    auto old = txn.get_pending(origin.group_id, origin.topic_id, failure.partition, failure.offset);
    if (!old) return old.error();
    if (*old) {
      if ((*old)->first_delivery_ms) record.first_delivery_ms = (*old)->first_delivery_ms;
      record.reasons = merge_reasons(std::move((*old)->reasons), record.reasons);
    }
  }
  if (!failure.dead_letter)
    return txn.put_pending(origin.group_id, origin.topic_id, failure.partition, failure.offset, record);

  const Offset o = failure.offset;
  if (auto st = txn.clear_pending(origin.group_id, origin.topic_id, failure.partition, o); !st) return st;
  auto message = txn.read_message(origin.topic_id, failure.partition, o);
  if (!message) {
    if (message.error().code == ErrorCode::kInvalidArgument) return {};  // gone with retention
    return message.error();
  }
  const std::string dlq_name = dead_letter_topic(origin.group);
  auto found = txn.find_topic(dlq_name);
  if (!found) return found.error();
  if (!*found) {
    auto created = txn.create_topic(dlq_name, 1, now_ms, 0, 0, storage::Growth::kVerdict);
    if (!created) return created.error();
    *found = *created;
  }
  dlq = **found;

  const auto extra = dead_letter_headers(origin, failure.partition, o, record, message->timestamp_ms, now_ms);
  std::vector<storage::HeaderView> headers;
  for (const auto& [n, v] : message->headers)
    if (n.rfind(kReservedHeaderPrefix, 0) != 0) headers.emplace_back(n, bytes(v));  // a redriven letter's old history goes
  for (const auto& [n, v] : extra) headers.emplace_back(n, bytes(v));
  // Part of a verdict, which a full store still records (storage::Store explains the
  // reserve), and marked as the broker's own letter, which redrive requires.
  auto offset =
      txn.append_dead_letter(dlq->id, PartitionId(0), now_ms, bytes(message->key), headers, bytes(message->body));
  if (!offset) return offset.error();
  dlq_offset = *offset;
  return {};
}

Result<Redriven> redrive_one(storage::WriteTxn& txn, const std::string& group, storage::GroupId group_id,
                             TopicId dlq_topic, Offset dlq_offset, std::uint64_t now_ms, bool trust_unmarked) {
  auto letter = txn.read_message(dlq_topic, PartitionId(0), dlq_offset);
  if (!letter) return letter.error();
  if (!letter->dead_letter && !trust_unmarked)
    return Error(ErrorCode::kForbidden, "dead letter " + std::to_string(dlq_offset.value()) +
                                            " lacks the broker's mark (stored by a broker from before the mark, or "
                                            "not by the broker): redrive it only if you trust it (trust_unmarked)");
  auto from = letter_origin(*letter);
  if (!from || from->group != group)
    return Error(ErrorCode::kInvalidArgument, "not a dead letter of group '" + group + "'");
  auto topic = txn.find_topic(from->topic);
  if (!topic) return topic.error();
  if (!*topic) return Error(ErrorCode::kUnknownTopic, "origin topic '" + from->topic + "' no longer exists");
  Redriven out{(*topic)->id, from->partition, from->offset};
  if (auto origin = txn.read_message(out.topic, out.partition, out.offset); !origin)
    return Error(ErrorCode::kInvalidArgument, "origin message " + from->topic + "/" +
                                                  std::to_string(from->partition.value()) + "/" +
                                                  std::to_string(from->offset.value()) + " is gone (retention)");
  storage::OwnedPending record;
  record.due_ms = now_ms;
  record.reasons = std::move(from->reasons);
  record.reasons.push_back("redriven");
  if (auto st = txn.put_pending(group_id, out.topic, out.partition, out.offset, record); !st) return st.error();
  if (auto st = txn.delete_message(dlq_topic, PartitionId(0), dlq_offset); !st) return st.error();
  return out;
}

}  // namespace txmq::broker
