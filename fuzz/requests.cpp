#include "fuzz/requests.h"

#include <string_view>

#include "common/version.h"
#include "txmq_generated.h"

namespace txmq::fuzz {
namespace {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

Bytes finish(FlatBufferBuilder& fbb, std::uint64_t rid, wire::Body type, Offset<void> body) {
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, type, body));
  return Bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

Offset<flatbuffers::Vector<std::uint8_t>> bytes(FlatBufferBuilder& fbb, std::string_view s) {
  return fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

Offset<flatbuffers::Vector<Offset<wire::Header>>> headers(FlatBufferBuilder& fbb) {
  std::vector<Offset<wire::Header>> hs{
      wire::CreateHeader(fbb, fbb.CreateString("content-type"), bytes(fbb, "application/json")),
      wire::CreateHeader(fbb, fbb.CreateString("source"), bytes(fbb, "fuzz"))};
  return fbb.CreateVector(hs);
}

enum class MessageShape { kPlain, kKeyHeaders, kDelayed, kDeliverAt, kPartition };

Offset<wire::Message> message(FlatBufferBuilder& fbb, MessageShape shape, std::string_view body) {
  switch (shape) {
    case MessageShape::kPlain:
      return wire::CreateMessage(fbb, 0, 0, bytes(fbb, body));
    case MessageShape::kKeyHeaders:
      return wire::CreateMessage(fbb, bytes(fbb, "customer-7"), headers(fbb), bytes(fbb, body));
    case MessageShape::kDelayed:
      return wire::CreateMessage(fbb, 0, 0, bytes(fbb, body), -1, 0, 30000);
    case MessageShape::kDeliverAt:
      return wire::CreateMessage(fbb, bytes(fbb, "k"), 0, bytes(fbb, body), -1, 1, 0);
    case MessageShape::kPartition:
      return wire::CreateMessage(fbb, 0, 0, bytes(fbb, body), 1);
  }
  return {};
}

Bytes produce(std::uint64_t rid, std::vector<MessageShape> shapes, std::uint64_t producer = 0,
              std::uint64_t sequence = 0) {
  FlatBufferBuilder fbb;
  std::vector<Offset<wire::Message>> ms;
  for (auto s : shapes) ms.push_back(message(fbb, s, "{\"order\":42}"));
  auto body = wire::CreateProduce(fbb, fbb.CreateString("fuzz-t"), fbb.CreateVector(ms), producer, sequence);
  return finish(fbb, rid, wire::Body::Produce, body.Union());
}

Offset<wire::RetryPolicy> delays_policy(FlatBufferBuilder& fbb) {
  std::vector<std::uint64_t> delays{1000, 5000, 10000};
  return wire::CreateRetryPolicy(fbb, 3, fbb.CreateVector(delays));
}

Offset<wire::RetryPolicy> exponential_policy(FlatBufferBuilder& fbb) {
  return wire::CreateRetryPolicy(fbb, 5, 0, 100, 2.0, 60000, 0.2);
}

Offset<wire::Delivery> delivery(FlatBufferBuilder& fbb, std::string_view group) {
  std::vector<Offset<flatbuffers::String>> history{fbb.CreateString("lease expired"),
                                                   fbb.CreateString("nack: db down")};
  return wire::CreateDelivery(fbb, fbb.CreateString("fuzz-t"), fbb.CreateString(group), 1, 7, 1764150000000,
                              bytes(fbb, "customer-7"), headers(fbb), bytes(fbb, "{\"order\":42}"), 3,
                              fbb.CreateVector(history));
}

Offset<wire::TopicInfo> topic_info(FlatBufferBuilder& fbb) {
  std::vector<Offset<wire::PartitionInfo>> ps{wire::CreatePartitionInfo(fbb, 0, 0, 12),
                                              wire::CreatePartitionInfo(fbb, 1, 3, 9)};
  return wire::CreateTopicInfo(fbb, fbb.CreateString("fuzz-t"), fbb.CreateVector(ps), 1764150000000, 0, 0);
}

}  // namespace

Bytes hello_frame(std::uint64_t rid, const std::string& producer_group) {
  FlatBufferBuilder fbb;
  auto body = wire::CreateHello(fbb, kProtocolVersion, fbb.CreateString("txmq-fuzz"),
                                producer_group.empty() ? 0 : fbb.CreateString(producer_group));
  return finish(fbb, rid, wire::Body::Hello, body.Union());
}

Bytes get_stats_frame(std::uint64_t rid) {
  FlatBufferBuilder fbb(64);
  return finish(fbb, rid, wire::Body::GetStats, wire::CreateGetStats(fbb).Union());
}

Bytes create_topic_frame(std::uint64_t rid, const std::string& topic, std::uint64_t retention_bytes) {
  FlatBufferBuilder fbb(128);
  auto body = wire::CreateCreateTopic(fbb, fbb.CreateString(topic), 1, 0, retention_bytes);
  return finish(fbb, rid, wire::Body::CreateTopic, body.Union());
}

Bytes produce_frame(std::uint64_t rid, const std::string& topic) {
  FlatBufferBuilder fbb(128);
  std::vector<Offset<wire::Message>> ms{wire::CreateMessage(fbb)};
  auto body = wire::CreateProduce(fbb, fbb.CreateString(topic), fbb.CreateVector(ms));
  return finish(fbb, rid, wire::Body::Produce, body.Union());
}

std::vector<NamedFrame> request_frames(std::uint64_t rid) {
  std::vector<NamedFrame> out;
  auto add = [&](std::string name, Bytes frame) { out.push_back({std::move(name), std::move(frame)}); };
  using S = MessageShape;

  add("hello", hello_frame(rid++));
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateCreateTopic(fbb, fbb.CreateString("fuzz-t"), 2);
    add("create-topic", finish(fbb, rid++, wire::Body::CreateTopic, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateCreateTopic(fbb, fbb.CreateString("fuzz-r"), 1, 60000, 4096);
    add("create-topic-retention", finish(fbb, rid++, wire::Body::CreateTopic, body.Union()));
  }
  add("produce", produce(rid++, {S::kPlain}));
  add("produce-keys-headers", produce(rid++, {S::kKeyHeaders, S::kKeyHeaders, S::kPlain}));
  add("produce-delayed", produce(rid++, {S::kDelayed, S::kDeliverAt}));
  add("produce-partition", produce(rid++, {S::kPartition}));
  add("produce-idempotent", produce(rid++, {S::kKeyHeaders}, 0xfeed, 1));
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateDescribeTopic(fbb, fbb.CreateString("fuzz-t"));
    add("describe-topic", finish(fbb, rid++, wire::Body::DescribeTopic, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    add("list-topics", finish(fbb, rid++, wire::Body::ListTopics, wire::CreateListTopics(fbb).Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateSubscribe(fbb, fbb.CreateString("fuzz-t"), fbb.CreateString("fuzz-g"), 16);
    add("subscribe", finish(fbb, rid++, wire::Body::Subscribe, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<wire::MessageRef> refs{{0, 0}, {1, 0}};
    auto body = wire::CreateAck(fbb, fbb.CreateString("fuzz-t"), fbb.CreateString("fuzz-g"),
                                fbb.CreateVectorOfStructs(refs));
    add("ack", finish(fbb, rid++, wire::Body::Ack, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<Offset<wire::SettleItem>> items{
        wire::CreateSettleItem(fbb, 0, 0, wire::SettleVerb::Ack),
        wire::CreateSettleItem(fbb, 0, 1, wire::SettleVerb::Nack, 100, fbb.CreateString("db down")),
        wire::CreateSettleItem(fbb, 1, 0, wire::SettleVerb::InProgress),
        wire::CreateSettleItem(fbb, 1, 1, wire::SettleVerb::Terminate, 0, fbb.CreateString("poison"))};
    auto body = wire::CreateSettle(fbb, fbb.CreateString("fuzz-t"), fbb.CreateString("fuzz-g"),
                                   fbb.CreateVector(items));
    add("settle", finish(fbb, rid++, wire::Body::Settle, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateConfigureGroup(fbb, fbb.CreateString("fuzz-g"), 0, wire::GroupMode::Ordered, true,
                                           5000, delays_policy(fbb));
    add("configure-group-delays", finish(fbb, rid++, wire::Body::ConfigureGroup, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateConfigureGroup(fbb, 0, fbb.CreateString("fuzz-t"), wire::GroupMode::Shared, false, 0,
                                           exponential_policy(fbb));
    add("configure-topic-exponential", finish(fbb, rid++, wire::Body::ConfigureGroup, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateDescribeGroups(fbb, fbb.CreateString("fuzz-g"));
    add("describe-groups", finish(fbb, rid++, wire::Body::DescribeGroups, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateDescribeGroups(fbb);
    add("describe-groups-all", finish(fbb, rid++, wire::Body::DescribeGroups, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateFetch(fbb, fbb.CreateString("fuzz-t"), 0, 0, 10);
    add("fetch", finish(fbb, rid++, wire::Body::Fetch, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateFetch(fbb, fbb.CreateString("fuzz-g.dlq"), 0, 0);
    add("fetch-dead-letters", finish(fbb, rid++, wire::Body::Fetch, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<std::uint64_t> offsets{0, 1, 2};
    auto body = wire::CreateRedrive(fbb, fbb.CreateString("fuzz-g"), fbb.CreateVector(offsets));
    add("redrive", finish(fbb, rid++, wire::Body::Redrive, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<Offset<wire::Message>> ms{message(fbb, S::kKeyHeaders, "half"), message(fbb, S::kPlain, "half 2")};
    auto body = wire::CreatePrepare(fbb, fbb.CreateString("fuzz-t"), fbb.CreateString("fuzz-producers"),
                                    fbb.CreateVector(ms), 100);
    add("prepare", finish(fbb, rid++, wire::Body::Prepare, body.Union()));
  }
  {
    // Small, consecutive ids: the ids of the first transactions a fresh broker prepares.
    FlatBufferBuilder fbb;
    std::vector<wire::TxnEnd> items{{1, wire::TxnAction::Commit}, {2, wire::TxnAction::Rollback},
                                    {3, wire::TxnAction::Unknown}};
    auto body = wire::CreateEndTransactions(fbb, fbb.CreateVectorOfStructs(items));
    add("end-transactions", finish(fbb, rid++, wire::Body::EndTransactions, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<wire::TxnEnd> items{{4, wire::TxnAction::Commit}};
    auto body = wire::CreateEndTransactions(fbb, fbb.CreateVectorOfStructs(items), true);
    add("end-transactions-operator", finish(fbb, rid++, wire::Body::EndTransactions, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateListTransactions(fbb);
    add("list-transactions", finish(fbb, rid++, wire::Body::ListTransactions, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateListTransactions(fbb, wire::TxnState::Prepared, false, 1, 10);
    add("list-transactions-one", finish(fbb, rid++, wire::Body::ListTransactions, body.Union()));
  }
  add("get-stats", get_stats_frame(rid++));
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateDeleteTopic(fbb, fbb.CreateString("fuzz-r"));
    add("delete-topic", finish(fbb, rid++, wire::Body::DeleteTopic, body.Union()));
  }
  return out;
}

std::vector<NamedFrame> answer_frames() {
  std::vector<NamedFrame> out;
  auto add = [&](std::string name, Bytes frame) { out.push_back({std::move(name), std::move(frame)}); };
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateHelloOk(fbb, kProtocolVersion, fbb.CreateString(std::string(kVersion)), 16u << 20, 1u << 20);
    add("hello-ok", finish(fbb, 1, wire::Body::HelloOk, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateError(fbb, 3, fbb.CreateString("unknown topic 'x'"));
    add("error", finish(fbb, 2, wire::Body::Error, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    add("ok", finish(fbb, 3, wire::Body::Ok, wire::CreateOk(fbb).Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<wire::MessageRef> refs{{0, 1}, {1, 5}, {0, UINT64_MAX}};
    add("produce-ok", finish(fbb, 4, wire::Body::ProduceOk, wire::CreateProduceOk(fbb, fbb.CreateVectorOfStructs(refs)).Union()));
  }
  {
    FlatBufferBuilder fbb;
    add("topic-info", finish(fbb, 5, wire::Body::TopicInfo, topic_info(fbb).Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<Offset<wire::TopicInfo>> ts{topic_info(fbb), topic_info(fbb)};
    add("topic-list", finish(fbb, 6, wire::Body::TopicList, wire::CreateTopicList(fbb, fbb.CreateVector(ts)).Union()));
  }
  {
    FlatBufferBuilder fbb;
    add("delivery", finish(fbb, 0, wire::Body::Delivery, delivery(fbb, "fuzz-g").Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateStats(fbb, fbb.CreateString(std::string(kVersion)), 1000, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    add("stats", finish(fbb, 7, wire::Body::Stats, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    add("settle-ok", finish(fbb, 8, wire::Body::SettleOk, wire::CreateSettleOk(fbb, 2).Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<Offset<wire::GroupInfo>> gs{
        wire::CreateGroupInfo(fbb, fbb.CreateString("fuzz-g"), fbb.CreateString("fuzz-t"), wire::GroupMode::Ordered,
                              1, 2, 3, 4, 5, 6, 30000, delays_policy(fbb)),
        wire::CreateGroupInfo(fbb, fbb.CreateString("fuzz-h"), 0, wire::GroupMode::Shared, 0, 0, 0, 0, 0, 0, 30000,
                              exponential_policy(fbb))};
    add("group-list", finish(fbb, 9, wire::Body::GroupList, wire::CreateGroupList(fbb, fbb.CreateVector(gs)).Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<Offset<wire::Delivery>> ds{delivery(fbb, ""), delivery(fbb, "")};
    add("fetch-ok", finish(fbb, 10, wire::Body::FetchOk, wire::CreateFetchOk(fbb, fbb.CreateVector(ds)).Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<std::uint64_t> ok{1, 2}, failed{3};
    auto body = wire::CreateRedriveOk(fbb, fbb.CreateVector(ok), fbb.CreateVector(failed));
    add("redrive-ok", finish(fbb, 11, wire::Body::RedriveOk, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<std::uint64_t> ids{1, 2};
    add("prepare-ok", finish(fbb, 12, wire::Body::PrepareOk, wire::CreatePrepareOk(fbb, fbb.CreateVector(ids)).Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<wire::TxnResult> rs{{1, wire::TxnState::Committed, true, true},
                                    {2, wire::TxnState::RolledBack, false, true},
                                    {9, wire::TxnState::Prepared, false, false}};
    auto body = wire::CreateEndTransactionsOk(fbb, fbb.CreateVectorOfStructs(rs));
    add("end-transactions-ok", finish(fbb, 13, wire::Body::EndTransactionsOk, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    auto body = wire::CreateCheckTransaction(fbb, 1, fbb.CreateString("fuzz-t"), fbb.CreateString("fuzz-producers"),
                                             bytes(fbb, "customer-7"), headers(fbb), bytes(fbb, "half"), 2);
    add("check-transaction", finish(fbb, 0, wire::Body::CheckTransaction, body.Union()));
  }
  {
    FlatBufferBuilder fbb;
    std::vector<Offset<wire::TransactionInfo>> ts{
        wire::CreateTransactionInfo(fbb, 1, wire::TxnState::Committed, fbb.CreateString("fuzz-t"),
                                    fbb.CreateString("fuzz-producers"), 1, 2, 3, 4, fbb.CreateString("producer"), 0,
                                    5, bytes(fbb, "k"), headers(fbb), bytes(fbb, "half")),
        wire::CreateTransactionInfo(fbb, 2, wire::TxnState::Parked)};
    auto body = wire::CreateTransactionList(fbb, fbb.CreateVector(ts));
    add("transaction-list", finish(fbb, 14, wire::Body::TransactionList, body.Union()));
  }
  return out;
}

}  // namespace txmq::fuzz
