// broker/acl: the ACL file's rules, their patterns and users, and a connection's cached
// answers.

#include "broker/acl.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "tests/support/broker_process.h"

using namespace txmq;
using namespace txmq::broker;

namespace {

AccessControl parsed(const std::string& toml) {
  auto acl = AccessControl::parse(toml, "test.toml");
  REQUIRE_MESSAGE(acl.ok(), (acl.ok() ? "" : acl.error().message));
  return std::move(*acl);
}

// The parse error of toml, which must fail.
std::string parse_error(const std::string& toml) {
  auto acl = AccessControl::parse(toml, "test.toml");
  REQUIRE(!acl.ok());
  CHECK(acl.error().code == ErrorCode::kInvalidArgument);
  return acl.error().message;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::shared_ptr<const AccessControl> shared(const std::string& toml) {
  return std::make_shared<const AccessControl>(parsed(toml));
}

}  // namespace

TEST_CASE("names of operations and resource types are the ACL file's words") {
  CHECK(name(Operation::kProduce) == "produce");
  CHECK(name(Operation::kDeadLetters) == "dead-letters");
  CHECK(name(Operation::kTransact) == "transact");
  CHECK(name(Operation::kResolve) == "resolve");
  CHECK(name(ResourceType::kTopic) == "topic");
  CHECK(name(ResourceType::kProducerGroup) == "producer-group");
  CHECK(name(ResourceType::kCluster) == "cluster");
}

TEST_CASE("an empty ACL file allows nothing") {
  const AccessControl acl = parsed("");
  CHECK(acl.rule_count() == 0);
  CHECK(!acl.allows("orders", Operation::kProduce, ResourceType::kTopic, "orders"));
}

TEST_CASE("a rule allows its operations on its resources to its users, and nothing else") {
  const AccessControl acl = parsed(R"(
[[allow]]
users = ["orders"]
topics = ["orders"]
operations = ["produce", "describe"]
)");
  CHECK(acl.rule_count() == 1);
  CHECK(acl.allows("orders", Operation::kProduce, ResourceType::kTopic, "orders"));
  CHECK(acl.allows("orders", Operation::kDescribe, ResourceType::kTopic, "orders"));
  CHECK(!acl.allows("orders", Operation::kConsume, ResourceType::kTopic, "orders"));   // operation
  CHECK(!acl.allows("orders", Operation::kProduce, ResourceType::kTopic, "payments"));  // resource
  CHECK(!acl.allows("warehouse", Operation::kProduce, ResourceType::kTopic, "orders"));  // user
  CHECK(!acl.allows("orders", Operation::kDescribe, ResourceType::kGroup, "orders"));  // resource type
}

TEST_CASE("patterns: an exact name, a prefix ending in '*', or '*' alone") {
  const AccessControl acl = parsed(R"(
[[allow]]
users = ["u"]
topics = ["orders", "audit.*"]
operations = ["consume"]

[[allow]]
users = ["u"]
groups = ["*"]
operations = ["describe"]
)");
  CHECK(acl.allows("u", Operation::kConsume, ResourceType::kTopic, "orders"));
  CHECK(!acl.allows("u", Operation::kConsume, ResourceType::kTopic, "orders2"));  // exact is exact
  CHECK(!acl.allows("u", Operation::kConsume, ResourceType::kTopic, "order"));
  CHECK(acl.allows("u", Operation::kConsume, ResourceType::kTopic, "audit.logins"));
  CHECK(acl.allows("u", Operation::kConsume, ResourceType::kTopic, "audit."));
  CHECK(!acl.allows("u", Operation::kConsume, ResourceType::kTopic, "audit"));
  CHECK(!acl.allows("u", Operation::kConsume, ResourceType::kTopic, "xaudit.logins"));
  CHECK(acl.allows("u", Operation::kDescribe, ResourceType::kGroup, "anything"));
  CHECK(acl.allows("u", Operation::kDescribe, ResourceType::kGroup, ""));
}

TEST_CASE("users: '*' is every authenticated user, never anonymous; anonymous is named") {
  const AccessControl acl = parsed(R"(
[[allow]]
users = ["*"]
topics = ["public"]
operations = ["consume"]

[[allow]]
users = ["anonymous"]
topics = ["dev.*"]
operations = ["produce"]
)");
  CHECK(acl.allows("orders", Operation::kConsume, ResourceType::kTopic, "public"));
  CHECK(acl.allows("warehouse", Operation::kConsume, ResourceType::kTopic, "public"));
  CHECK(!acl.allows("anonymous", Operation::kConsume, ResourceType::kTopic, "public"));
  CHECK(acl.allows("anonymous", Operation::kProduce, ResourceType::kTopic, "dev.scratch"));
  CHECK(!acl.allows("orders", Operation::kProduce, ResourceType::kTopic, "dev.scratch"));
}

TEST_CASE("\"all\" is every operation of the rule's resource") {
  const AccessControl acl = parsed(R"(
[[allow]]
users = ["admin"]
topics = ["*"]
operations = ["all"]

[[allow]]
users = ["ops"]
producer_groups = ["*"]
operations = ["all"]

[[allow]]
users = ["ops"]
cluster = true
operations = ["all"]
)");
  for (Operation op : {Operation::kProduce, Operation::kConsume, Operation::kDescribe, Operation::kCreate,
                       Operation::kDelete, Operation::kConfigure})
    CHECK(acl.allows("admin", op, ResourceType::kTopic, "t"));
  // Only the topics': not a group's operation on a group.
  CHECK(!acl.allows("admin", Operation::kDeadLetters, ResourceType::kGroup, "g"));
  for (Operation op : {Operation::kTransact, Operation::kDescribe, Operation::kResolve})
    CHECK(acl.allows("ops", op, ResourceType::kProducerGroup, "orders"));
  CHECK(acl.allows("ops", Operation::kDescribe, ResourceType::kCluster, "ignored"));
  CHECK(!acl.allows("admin", Operation::kDescribe, ResourceType::kCluster, ""));
}

TEST_CASE("parse errors name the file, the rule and the problem") {
  SUBCASE("an unknown key in a rule") {
    auto e = parse_error("[[allow]]\nusers = [\"u\"]\ntopics = [\"t\"]\noperations = [\"produce\"]\ncolour = 1\n");
    CHECK(contains(e, "test.toml"));
    CHECK(contains(e, "rule 1"));
    CHECK(contains(e, "unknown key 'colour'"));
  }
  SUBCASE("an unknown key at the top") {
    auto e = parse_error("[deny]\nusers = [\"u\"]\n");
    CHECK(contains(e, "test.toml"));
    CHECK(contains(e, "unknown key 'deny'"));
  }
  SUBCASE("an unknown operation, in the second rule") {
    auto e = parse_error(R"(
[[allow]]
users = ["u"]
topics = ["t"]
operations = ["produce"]

[[allow]]
users = ["u"]
topics = ["t"]
operations = ["publish"]
)");
    CHECK(contains(e, "rule 2"));
    CHECK(contains(e, "unknown operation 'publish'"));
  }
  SUBCASE("an operation that does not apply to the rule's resource") {
    auto e = parse_error("[[allow]]\nusers = [\"u\"]\ngroups = [\"g\"]\noperations = [\"produce\"]\n");
    CHECK(contains(e, "rule 1"));
    CHECK(contains(e, "'produce' does not apply to groups"));
    e = parse_error("[[allow]]\nusers = [\"u\"]\ntopics = [\"t\"]\noperations = [\"transact\"]\n");
    CHECK(contains(e, "'transact' does not apply to topics"));
    e = parse_error("[[allow]]\nusers = [\"u\"]\ncluster = true\noperations = [\"delete\"]\n");
    CHECK(contains(e, "'delete' does not apply to cluster"));
  }
  SUBCASE("no resource") {
    auto e = parse_error("[[allow]]\nusers = [\"u\"]\noperations = [\"produce\"]\n");
    CHECK(contains(e, "rule 1"));
    CHECK(contains(e, "no resource"));
  }
  SUBCASE("two resources") {
    auto e = parse_error(
        "[[allow]]\nusers = [\"u\"]\ntopics = [\"t\"]\ngroups = [\"g\"]\noperations = [\"consume\"]\n");
    CHECK(contains(e, "rule 1"));
    CHECK(contains(e, "two resources"));
  }
  SUBCASE("a '*' anywhere but at the end") {
    auto e = parse_error("[[allow]]\nusers = [\"u\"]\ntopics = [\"a*b\"]\noperations = [\"consume\"]\n");
    CHECK(contains(e, "rule 1"));
    CHECK(contains(e, "'a*b'"));
    e = parse_error("[[allow]]\nusers = [\"u\"]\ntopics = [\"**\"]\noperations = [\"consume\"]\n");
    CHECK(contains(e, "'**'"));
    e = parse_error("[[allow]]\nusers = [\"ord*\"]\ntopics = [\"t\"]\noperations = [\"consume\"]\n");
    CHECK(contains(e, "'ord*'"));
  }
  SUBCASE("no users, or no operations") {
    CHECK(contains(parse_error("[[allow]]\ntopics = [\"t\"]\noperations = [\"consume\"]\n"), "no users"));
    CHECK(contains(parse_error("[[allow]]\nusers = [\"u\"]\ntopics = [\"t\"]\n"), "no operations"));
  }
  SUBCASE("values of the wrong type, and empty lists") {
    CHECK(contains(parse_error("[[allow]]\nusers = \"u\"\ntopics = [\"t\"]\noperations = [\"consume\"]\n"),
                   "users must be an array of strings"));
    CHECK(contains(parse_error("[[allow]]\nusers = [\"u\"]\ntopics = []\noperations = [\"consume\"]\n"),
                   "topics is empty"));
    CHECK(contains(parse_error("[[allow]]\nusers = [\"u\"]\ncluster = false\noperations = [\"describe\"]\n"),
                   "cluster must be true"));
  }
  SUBCASE("TOML that does not parse") {
    auto e = parse_error("[[allow]\nusers = [\n");
    CHECK(contains(e, "test.toml"));
  }
}

TEST_CASE("load reads the file and names it in errors") {
  txmq::test::TempDir dir;
  const std::string path = dir.file("acl.toml");
  std::ofstream(path) << "[[allow]]\nusers = [\"u\"]\ntopics = [\"t\"]\noperations = [\"consume\"]\n";
  auto acl = AccessControl::load(path);
  REQUIRE(acl.ok());
  CHECK(acl->allows("u", Operation::kConsume, ResourceType::kTopic, "t"));
  auto missing = AccessControl::load(dir.file("absent.toml"));
  REQUIRE(!missing.ok());
  CHECK(missing.error().code == ErrorCode::kInvalidArgument);
  CHECK(contains(missing.error().message, "absent.toml"));
}

TEST_CASE("an unrestricted access allows everything") {
  Access access;
  CHECK(!access.restricted());
  CHECK(access.user().empty());
  CHECK(access.allows(Operation::kDelete, ResourceType::kTopic, "orders"));
  CHECK(access.check(Operation::kDescribe, ResourceType::kCluster, {}).ok());
}

TEST_CASE("a restricted access without rules loaded allows nothing") {
  AccessRules rules;
  Access access("orders", rules);
  CHECK(access.restricted());
  CHECK(!access.allows(Operation::kProduce, ResourceType::kTopic, "orders"));
}

TEST_CASE("a restricted access answers from the rules in force") {
  AccessRules rules;
  rules.replace(shared("[[allow]]\nusers = [\"orders\"]\ntopics = [\"orders\"]\noperations = [\"produce\"]\n"));
  Access access("orders", rules);
  CHECK(access.user() == "orders");
  CHECK(access.allows(Operation::kProduce, ResourceType::kTopic, "orders"));
  CHECK(!access.allows(Operation::kProduce, ResourceType::kTopic, "payments"));
  // Asked again, from the cache: the same answers.
  CHECK(access.allows(Operation::kProduce, ResourceType::kTopic, "orders"));
  CHECK(!access.allows(Operation::kProduce, ResourceType::kTopic, "payments"));
  // The cache key holds the operation and the type as well as the name.
  CHECK(!access.allows(Operation::kConsume, ResourceType::kTopic, "orders"));
  CHECK(!access.allows(Operation::kProduce, ResourceType::kGroup, "orders"));
}

TEST_CASE("a reload changes the cached answers") {
  AccessRules rules;
  rules.replace(shared("[[allow]]\nusers = [\"orders\"]\ntopics = [\"orders\"]\noperations = [\"produce\"]\n"));
  Access access("orders", rules);
  REQUIRE(access.allows(Operation::kProduce, ResourceType::kTopic, "orders"));
  REQUIRE(!access.allows(Operation::kProduce, ResourceType::kTopic, "payments"));
  const auto before = rules.generation();
  rules.replace(shared("[[allow]]\nusers = [\"orders\"]\ntopics = [\"payments\"]\noperations = [\"produce\"]\n"));
  CHECK(rules.generation() != before);
  CHECK(!access.allows(Operation::kProduce, ResourceType::kTopic, "orders"));
  CHECK(access.allows(Operation::kProduce, ResourceType::kTopic, "payments"));
  // Rules taken away altogether: nothing is allowed.
  rules.replace(nullptr);
  CHECK(!access.allows(Operation::kProduce, ResourceType::kTopic, "payments"));
}

TEST_CASE("a refusal names the user, the operation and the resource") {
  AccessRules rules;
  rules.replace(shared(""));
  Access access("orders", rules);
  Status st = access.check(Operation::kConsume, ResourceType::kTopic, "payments");
  REQUIRE(!st.ok());
  CHECK(st.error().code == ErrorCode::kNotAuthorized);
  CHECK(st.error().message == "user 'orders' may not consume topic 'payments'");
  CHECK(access.refusal(Operation::kDeadLetters, ResourceType::kGroup, "billing").message ==
        "user 'orders' may not dead-letters group 'billing'");
  CHECK(access.refusal(Operation::kResolve, ResourceType::kProducerGroup, "orders").message ==
        "user 'orders' may not resolve producer-group 'orders'");
  CHECK(access.refusal(Operation::kDescribe, ResourceType::kCluster, {}).message ==
        "user 'orders' may not describe the cluster");
  Access anonymous("anonymous", rules);
  CHECK(anonymous.check(Operation::kProduce, ResourceType::kTopic, "t").error().message ==
        "user 'anonymous' may not produce topic 't'");
}

TEST_CASE("the example ACL file parses and gives each service only its permissions") {
  const char* src = std::getenv("TXMQ_SOURCE_DIR");
  auto acl = AccessControl::load(std::string(src ? src : "/work/main") + "/config/txmq-acl.toml");
  REQUIRE_MESSAGE(acl.ok(), (acl.ok() ? "" : acl.error().message));
  CHECK(acl->allows("order-service", Operation::kProduce, ResourceType::kTopic, "orders"));
  CHECK(acl->allows("order-service", Operation::kTransact, ResourceType::kProducerGroup, "order-service"));
  CHECK(!acl->allows("order-service", Operation::kConsume, ResourceType::kTopic, "orders"));
  CHECK(acl->allows("warehouse", Operation::kConsume, ResourceType::kGroup, "warehouse"));
  CHECK(!acl->allows("warehouse", Operation::kProduce, ResourceType::kTopic, "orders"));
  CHECK(acl->allows("ops", Operation::kResolve, ResourceType::kProducerGroup, "order-service"));
  CHECK(!acl->allows("ops", Operation::kProduce, ResourceType::kTopic, "orders"));
  CHECK(!acl->allows("anonymous", Operation::kDescribe, ResourceType::kTopic, "orders"));
}
