// broker/request_access: the permission each request needs, request by request: refused
// without it (naming the operation and the resource), allowed with it.

#include "broker/request_access.h"

#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

using namespace txmq;
using namespace txmq::broker;

namespace {

// One request as a client sends it.
struct Request {
  flatbuffers::FlatBufferBuilder fbb;
  const wire::Frame* frame = nullptr;
};

using BodyBuilder = std::function<std::pair<wire::Body, flatbuffers::Offset<void>>(flatbuffers::FlatBufferBuilder&)>;

std::unique_ptr<Request> request(const BodyBuilder& build) {
  auto r = std::make_unique<Request>();
  auto [type, body] = build(r->fbb);
  r->fbb.Finish(wire::CreateFrame(r->fbb, 1, type, body));
  r->frame = wire::GetFrame(r->fbb.GetBufferPointer());
  return r;
}

// The answer for user "u" under exactly these rules (TOML).
Status judged(const std::string& rules_toml, const wire::Frame& frame, std::string_view hello_group = {}) {
  auto acl = AccessControl::parse(rules_toml, "test.toml");
  REQUIRE_MESSAGE(acl.ok(), (acl.ok() ? "" : acl.error().message));
  AccessRules rules;
  rules.replace(std::make_shared<const AccessControl>(std::move(*acl)));
  Access access("u", rules);
  return authorize(access, hello_group, frame);
}

std::string rule(const std::string& resource, const std::string& operation) {
  return "[[allow]]\nusers = [\"u\"]\n" + resource + "\noperations = [\"" + operation + "\"]\n";
}

// Refused with no rule (the message naming the refusal), allowed with `rules`.
void needs(const wire::Frame& frame, const std::string& rules, const std::string& refusal,
           std::string_view hello_group = {}) {
  Status none = judged("", frame, hello_group);
  REQUIRE(!none.ok());
  CHECK(none.error().code == ErrorCode::kNotAuthorized);
  CHECK(none.error().message == "user 'u' may not " + refusal);
  Status with = judged(rules, frame, hello_group);
  CHECK_MESSAGE(with.ok(), (with.ok() ? "" : with.error().message));
}

}  // namespace

TEST_CASE("Produce needs produce on the topic") {
  auto r = request([](auto& fbb) {
    return std::pair{wire::Body::Produce, wire::CreateProduceDirect(fbb, "orders").Union()};
  });
  needs(*r->frame, rule("topics = [\"orders\"]", "produce"), "produce topic 'orders'");
  CHECK(!judged(rule("topics = [\"orders\"]", "consume"), *r->frame).ok());
  CHECK(!judged(rule("topics = [\"other\"]", "produce"), *r->frame).ok());
}

TEST_CASE("CreateTopic, DeleteTopic and DescribeTopic need create, delete and describe on the topic") {
  auto create = request([](auto& fbb) {
    return std::pair{wire::Body::CreateTopic, wire::CreateCreateTopicDirect(fbb, "orders").Union()};
  });
  needs(*create->frame, rule("topics = [\"orders\"]", "create"), "create topic 'orders'");
  auto remove = request([](auto& fbb) {
    return std::pair{wire::Body::DeleteTopic, wire::CreateDeleteTopicDirect(fbb, "orders").Union()};
  });
  needs(*remove->frame, rule("topics = [\"orders\"]", "delete"), "delete topic 'orders'");
  CHECK(!judged(rule("topics = [\"orders\"]", "create"), *remove->frame).ok());
  auto describe = request([](auto& fbb) {
    return std::pair{wire::Body::DescribeTopic, wire::CreateDescribeTopicDirect(fbb, "orders").Union()};
  });
  needs(*describe->frame, rule("topics = [\"orders\"]", "describe"), "describe topic 'orders'");
}

TEST_CASE("Subscribe and Settle need consume on the topic and on the group") {
  auto subscribe = request([](auto& fbb) {
    return std::pair{wire::Body::Subscribe, wire::CreateSubscribeDirect(fbb, "orders", "warehouse").Union()};
  });
  auto settle = request([](auto& fbb) {
    return std::pair{wire::Body::Settle, wire::CreateSettleDirect(fbb, "orders", "warehouse").Union()};
  });
  const std::string both = rule("topics = [\"orders\"]", "consume") + rule("groups = [\"warehouse\"]", "consume");
  for (const auto* frame : {subscribe->frame, settle->frame}) {
    needs(*frame, both, "consume topic 'orders'");
    Status topic_only = judged(rule("topics = [\"orders\"]", "consume"), *frame);
    REQUIRE(!topic_only.ok());
    CHECK(topic_only.error().message == "user 'u' may not consume group 'warehouse'");
    CHECK(!judged(rule("groups = [\"warehouse\"]", "consume"), *frame).ok());
  }
}

TEST_CASE("reading a dead-letter topic needs dead-letters on its group, not consume on the topic") {
  auto fetch = request([](auto& fbb) {
    return std::pair{wire::Body::Fetch, wire::CreateFetchDirect(fbb, "billing.dlq").Union()};
  });
  needs(*fetch->frame, rule("groups = [\"billing\"]", "dead-letters"), "dead-letters group 'billing'");
  CHECK(!judged(rule("topics = [\"*\"]", "consume"), *fetch->frame).ok());
  auto subscribe = request([](auto& fbb) {
    return std::pair{wire::Body::Subscribe, wire::CreateSubscribeDirect(fbb, "billing.dlq", "compensation").Union()};
  });
  needs(*subscribe->frame,
        rule("groups = [\"billing\"]", "dead-letters") + rule("groups = [\"compensation\"]", "consume"),
        "dead-letters group 'billing'");
  CHECK(!judged(rule("topics = [\"*\"]", "consume") + rule("groups = [\"compensation\"]", "consume"),
                *subscribe->frame)
             .ok());
}

TEST_CASE("Fetch of an ordinary topic needs consume on it") {
  auto fetch = request([](auto& fbb) {
    return std::pair{wire::Body::Fetch, wire::CreateFetchDirect(fbb, "orders").Union()};
  });
  needs(*fetch->frame, rule("topics = [\"orders\"]", "consume"), "consume topic 'orders'");
}

TEST_CASE("ConfigureGroup needs configure on the group, or on the topic for its default policy") {
  auto group = request([](auto& fbb) {
    return std::pair{wire::Body::ConfigureGroup, wire::CreateConfigureGroupDirect(fbb, "warehouse", "orders").Union()};
  });
  needs(*group->frame, rule("groups = [\"warehouse\"]", "configure"), "configure group 'warehouse'");
  CHECK(!judged(rule("topics = [\"orders\"]", "configure"), *group->frame).ok());
  auto topic_default = request([](auto& fbb) {
    return std::pair{wire::Body::ConfigureGroup, wire::CreateConfigureGroupDirect(fbb, nullptr, "orders").Union()};
  });
  needs(*topic_default->frame, rule("topics = [\"orders\"]", "configure"), "configure topic 'orders'");
}

TEST_CASE("Redrive needs dead-letters on the group") {
  auto redrive = request([](auto& fbb) {
    return std::pair{wire::Body::Redrive, wire::CreateRedriveDirect(fbb, "billing").Union()};
  });
  needs(*redrive->frame, rule("groups = [\"billing\"]", "dead-letters"), "dead-letters group 'billing'");
  CHECK(!judged(rule("groups = [\"billing\"]", "consume"), *redrive->frame).ok());
}

TEST_CASE("DescribeGroups naming a group needs describe on it; listing all is filtered instead") {
  auto one = request([](auto& fbb) {
    return std::pair{wire::Body::DescribeGroups, wire::CreateDescribeGroupsDirect(fbb, "billing").Union()};
  });
  needs(*one->frame, rule("groups = [\"billing\"]", "describe"), "describe group 'billing'");
  auto all = request([](auto& fbb) {
    return std::pair{wire::Body::DescribeGroups, wire::CreateDescribeGroupsDirect(fbb).Union()};
  });
  CHECK(judged("", *all->frame).ok());
}

TEST_CASE("Prepare needs transact on its producer group and produce on the topic") {
  auto named = request([](auto& fbb) {
    return std::pair{wire::Body::Prepare, wire::CreatePrepareDirect(fbb, "orders", "order-service").Union()};
  });
  const std::string both =
      rule("producer_groups = [\"order-service\"]", "transact") + rule("topics = [\"orders\"]", "produce");
  needs(*named->frame, both, "transact producer-group 'order-service'");
  Status group_only = judged(rule("producer_groups = [\"order-service\"]", "transact"), *named->frame);
  REQUIRE(!group_only.ok());
  CHECK(group_only.error().message == "user 'u' may not produce topic 'orders'");
  // Without its own producer group, a Prepare is its hello's.
  auto unnamed = request([](auto& fbb) {
    return std::pair{wire::Body::Prepare, wire::CreatePrepareDirect(fbb, "orders").Union()};
  });
  needs(*unnamed->frame, both, "transact producer-group 'order-service'", "order-service");
  CHECK(!judged(both, *unnamed->frame, "other").ok());
}

TEST_CASE("GetStats needs describe on the cluster") {
  auto stats = request([](auto& fbb) {
    return std::pair{wire::Body::GetStats, wire::CreateGetStats(fbb).Union()};
  });
  needs(*stats->frame, "[[allow]]\nusers = [\"u\"]\ncluster = true\noperations = [\"describe\"]\n",
        "describe the cluster");
}

TEST_CASE("requests judged by their component pass the request layer") {
  // ListTopics, ListTransactions (filtered) and EndTransactions (each transaction's
  // producer group) are checked where their records are.
  auto list = request([](auto& fbb) {
    return std::pair{wire::Body::ListTopics, wire::CreateListTopics(fbb).Union()};
  });
  CHECK(judged("", *list->frame).ok());
  auto txns = request([](auto& fbb) {
    return std::pair{wire::Body::ListTransactions, wire::CreateListTransactions(fbb).Union()};
  });
  CHECK(judged("", *txns->frame).ok());
  auto end = request([](auto& fbb) {
    return std::pair{wire::Body::EndTransactions, wire::CreateEndTransactionsDirect(fbb).Union()};
  });
  CHECK(judged("", *end->frame).ok());
}
