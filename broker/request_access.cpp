#include "broker/request_access.h"

#include "common/well_known.h"

namespace txmq::broker {
namespace {

std::string_view text(const flatbuffers::String* s) { return s ? s->string_view() : std::string_view(); }

// Reading a topic's messages: consume on the topic, except for a dead-letter topic
// "G.dlq", whose letters are group G's (dead-letters on G): an operator given them may
// read them without consume on every topic, and consume on "*" does not reach them.
Status read_topic(Access& access, std::string_view topic) {
  if (is_dead_letter_topic(topic)) {
    topic.remove_suffix(std::string_view(kDeadLetterTopicSuffix).size());
    return access.check(Operation::kDeadLetters, ResourceType::kGroup, topic);
  }
  return access.check(Operation::kConsume, ResourceType::kTopic, topic);
}

// Subscribe and Settle: reading the topic as a member of the group.
Status consume_as(Access& access, std::string_view topic, std::string_view group) {
  if (auto st = read_topic(access, topic); !st) return st;
  return access.check(Operation::kConsume, ResourceType::kGroup, group);
}

}  // namespace

Status authorize(Access& access, std::string_view hello_producer_group, const wire::Frame& frame) {
  using Op = Operation;
  using Type = ResourceType;
  switch (frame.body_type()) {
    case wire::Body::Produce:
      return access.check(Op::kProduce, Type::kTopic, text(frame.body_as_Produce()->topic()));
    case wire::Body::CreateTopic:
      return access.check(Op::kCreate, Type::kTopic, text(frame.body_as_CreateTopic()->name()));
    case wire::Body::DeleteTopic:
      return access.check(Op::kDelete, Type::kTopic, text(frame.body_as_DeleteTopic()->name()));
    case wire::Body::DescribeTopic:
      return access.check(Op::kDescribe, Type::kTopic, text(frame.body_as_DescribeTopic()->name()));
    case wire::Body::Subscribe: {
      const auto* req = frame.body_as_Subscribe();
      return consume_as(access, text(req->topic()), text(req->group()));
    }
    case wire::Body::Settle: {
      const auto* req = frame.body_as_Settle();
      return consume_as(access, text(req->topic()), text(req->group()));
    }
    case wire::Body::ConfigureGroup: {
      // A group's own policy, or (no group) the topic's default for groups without one.
      const auto* req = frame.body_as_ConfigureGroup();
      if (!text(req->group()).empty()) return access.check(Op::kConfigure, Type::kGroup, text(req->group()));
      return access.check(Op::kConfigure, Type::kTopic, text(req->topic()));
    }
    case wire::Body::DescribeGroups: {
      const std::string_view group = text(frame.body_as_DescribeGroups()->group());
      return group.empty() ? Status() : access.check(Op::kDescribe, Type::kGroup, group);
    }
    case wire::Body::Fetch: return read_topic(access, text(frame.body_as_Fetch()->topic()));
    case wire::Body::Redrive:
      return access.check(Op::kDeadLetters, Type::kGroup, text(frame.body_as_Redrive()->group()));
    case wire::Body::Prepare: {
      const auto* req = frame.body_as_Prepare();
      const std::string_view group = req->producer_group() ? text(req->producer_group()) : hello_producer_group;
      if (auto st = access.check(Op::kTransact, Type::kProducerGroup, group); !st) return st;
      return access.check(Op::kProduce, Type::kTopic, text(req->topic()));
    }
    case wire::Body::GetStats:
    case wire::Body::ClusterStatus:
    case wire::Body::GetDigest: return access.check(Op::kDescribe, Type::kCluster, {});
    case wire::Body::ReplicaFetch:
    case wire::Body::SnapshotFetch: return access.check(Op::kReplicate, Type::kCluster, {});
    case wire::Body::Promote: return access.check(Op::kConfigure, Type::kCluster, {});
    // Checked in the components (see the header).
    case wire::Body::ListTopics:
    case wire::Body::EndTransactions:
    case wire::Body::ListTransactions: return {};
    // Not requests (a second hello, an answer's body): answered as such.
    default: return {};
  }
}

}  // namespace txmq::broker
