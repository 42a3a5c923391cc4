#pragma once
// Authorization: which user may do what to which resource. Deny by default: with
// authentication on, a request is served only when a rule of the ACL file allows it.
//
// Resources and the operations that apply to each (the only pairs a rule may name):
//   topic           produce, consume, describe, create, delete, configure
//   group           consume, describe, configure, dead-letters
//   producer-group  transact, describe, resolve
//   cluster         describe
// What each request needs is the table in the README ("Permissions"); in short: Produce
// needs produce on the topic; Subscribe and Settle consume on the topic and the group;
// Fetch consume on the topic (a dead-letter topic G.dlq: dead-letters on group G);
// Redrive dead-letters on the group; a hello naming a producer group, and Prepare,
// transact on it (and Prepare produce on the topic); EndTransactions transact on each
// transaction's producer group, or resolve when sent as an operator; ListTransactions and
// DescribeGroups and ListTopics show only what describe allows; GetStats describe on the
// cluster.
//
// The ACL file (TOML), reloaded with the users file on SIGHUP:
//   [[allow]]
//   users = ["orders"]            # user names; "*": every authenticated user;
//                                 # "anonymous": connections that did not authenticate
//   topics = ["orders", "audit.*"] # one of topics, groups, producer_groups, cluster = true
//   operations = ["produce", "describe"]   # or ["all"]: every operation of the resource
// Patterns: an exact name, a prefix ending in '*' ("audit.*"), or "*" alone.
//
// Errors: load and parse give kInvalidArgument naming the file, the rule (its index, from
// 1) and the problem: an unknown key or operation, an operation that does not apply to the
// rule's resource, no resource or two, a '*' anywhere but at the end.
// Concurrency: AccessControl is immutable once parsed and may be shared; an Access belongs
// to one connection on the loop thread.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"

namespace txmq::broker {

enum class Operation : std::uint8_t {
  kProduce,
  kConsume,
  kDescribe,
  kCreate,
  kDelete,
  kConfigure,
  kDeadLetters,
  kTransact,
  kResolve,
  kReplicate,  // cluster: fetch the replication log (a follower's user)
};

enum class ResourceType : std::uint8_t { kTopic, kGroup, kProducerGroup, kCluster };

// "produce", "dead-letters"; "topic", "producer-group". Any thread.
std::string_view name(Operation op);
std::string_view name(ResourceType type);

// The rules of one ACL file.
class AccessControl {
 public:
  static Result<AccessControl> load(const std::string& path);
  static Result<AccessControl> parse(std::string_view toml, std::string_view origin);

  // Whether user may do op to the resource named `resource` of this type (for the
  // cluster, resource is ignored).
  bool allows(std::string_view user, Operation op, ResourceType type, std::string_view resource) const;
  std::size_t rule_count() const { return rules_.size(); }

 private:
  struct Rule {
    std::vector<std::string> users;
    ResourceType type = ResourceType::kTopic;
    std::vector<std::string> patterns;  // empty for the cluster
    std::uint32_t operations = 0;       // bit (1 << Operation)
  };
  std::vector<Rule> rules_;
};

// The rules in force, replaced as a whole on reload; generation() tells caches that they
// changed. Owned by the Broker. Loop thread.
class AccessRules {
 public:
  void replace(std::shared_ptr<const AccessControl> rules) {
    rules_ = std::move(rules);
    ++generation_;
  }
  const AccessControl* current() const { return rules_.get(); }
  std::uint64_t generation() const { return generation_; }

 private:
  std::shared_ptr<const AccessControl> rules_;
  std::uint64_t generation_ = 0;
};

// What one connection may do. Unrestricted (authentication off) unless made with a
// principal and the broker's rules; then each (operation, resource) answer is cached until
// the rules are reloaded, so a request pays a hash lookup, not a walk over the rules.
class Access {
 public:
  Access() = default;  // unrestricted: authentication is off
  Access(std::string user, const AccessRules& rules) : user_(std::move(user)), rules_(&rules) {}

  bool restricted() const { return rules_ != nullptr; }
  // The authenticated user, "anonymous", or "" when authentication is off.
  const std::string& user() const { return user_; }

  bool allows(Operation op, ResourceType type, std::string_view resource);
  // kNotAuthorized: "user 'orders' may not consume topic 'payments'".
  Error refusal(Operation op, ResourceType type, std::string_view resource) const;
  // allows() or its refusal, for handlers: `if (auto st = conn.access.check(...); !st) ...`.
  Status check(Operation op, ResourceType type, std::string_view resource);

 private:
  std::string user_;
  const AccessRules* rules_ = nullptr;
  std::uint64_t generation_ = 0;
  std::unordered_map<std::string, bool> cache_;  // key: op, type, resource
};

}  // namespace txmq::broker
