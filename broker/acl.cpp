#include "broker/acl.h"

#include <toml.hpp>

#include <array>
#include <fstream>
#include <sstream>

#include "common/users_file.h"

namespace txmq::broker {
namespace {

constexpr std::uint32_t bit(Operation op) { return 1u << static_cast<unsigned>(op); }

// The operations that apply to each resource type, and the rule key that names the type.
struct ResourceKind {
  ResourceType type;
  const char* key;  // in a rule: topics, groups, producer_groups, cluster
  std::uint32_t operations;
};
constexpr std::array<ResourceKind, 4> kKinds{{
    {ResourceType::kTopic, "topics",
     bit(Operation::kProduce) | bit(Operation::kConsume) | bit(Operation::kDescribe) | bit(Operation::kCreate) |
         bit(Operation::kDelete) | bit(Operation::kConfigure)},
    {ResourceType::kGroup, "groups",
     bit(Operation::kConsume) | bit(Operation::kDescribe) | bit(Operation::kConfigure) | bit(Operation::kDeadLetters)},
    {ResourceType::kProducerGroup, "producer_groups",
     bit(Operation::kTransact) | bit(Operation::kDescribe) | bit(Operation::kResolve)},
    // describe: Stats, cluster status, digests; replicate: a follower's fetches;
    // configure: promoting a follower.
    {ResourceType::kCluster, "cluster", bit(Operation::kDescribe) | bit(Operation::kReplicate) | bit(Operation::kConfigure)},
}};

constexpr std::array<Operation, 10> kOperations{
    Operation::kProduce,     Operation::kConsume,  Operation::kDescribe, Operation::kCreate,  Operation::kDelete,
    Operation::kConfigure, Operation::kDeadLetters, Operation::kTransact, Operation::kResolve, Operation::kReplicate};

// "produce, consume, describe": the operations of a mask, for error messages.
std::string operation_list(std::uint32_t mask) {
  std::string out;
  for (Operation op : kOperations)
    if (mask & bit(op)) out += (out.empty() ? "" : ", ") + std::string(name(op));
  return out;
}

// An error the parse turns into kInvalidArgument naming the origin and the rule.
struct RuleError {
  std::string what;
};

// A rule key's value: a non-empty array of non-empty strings.
std::vector<std::string> string_list(const toml::value& v, const std::string& key) {
  if (!v.is_array()) throw RuleError{key + " must be an array of strings"};
  std::vector<std::string> out;
  for (const auto& item : v.as_array()) {
    if (!item.is_string()) throw RuleError{key + " must be an array of strings"};
    out.push_back(item.as_string());
    if (out.back().empty()) throw RuleError{key + " holds an empty name"};
  }
  if (out.empty()) throw RuleError{key + " is empty: the rule would allow nothing"};
  return out;
}

// Patterns may end in '*' (a prefix) and hold no other '*'.
void check_patterns(const std::vector<std::string>& patterns, const std::string& key) {
  for (const auto& p : patterns)
    if (auto star = p.find('*'); star != std::string::npos && star != p.size() - 1)
      throw RuleError{key + ": '" + p + "' has a '*' before its end (only a trailing '*' is a pattern)"};
}

bool matches(std::string_view pattern, std::string_view name) {
  if (!pattern.empty() && pattern.back() == '*') return name.starts_with(pattern.substr(0, pattern.size() - 1));
  return pattern == name;
}

// "*" is every authenticated user: an anonymous connection is only ever let in by name.
bool matches_user(std::string_view rule_user, std::string_view user) {
  if (rule_user == "*") return user != common::kAnonymousUser;
  return rule_user == user;
}

}  // namespace

std::string_view name(Operation op) {
  switch (op) {
    case Operation::kProduce: return "produce";
    case Operation::kConsume: return "consume";
    case Operation::kDescribe: return "describe";
    case Operation::kCreate: return "create";
    case Operation::kDelete: return "delete";
    case Operation::kConfigure: return "configure";
    case Operation::kDeadLetters: return "dead-letters";
    case Operation::kTransact: return "transact";
    case Operation::kResolve: return "resolve";
    case Operation::kReplicate: return "replicate";
  }
  return "?";
}

std::string_view name(ResourceType type) {
  switch (type) {
    case ResourceType::kTopic: return "topic";
    case ResourceType::kGroup: return "group";
    case ResourceType::kProducerGroup: return "producer-group";
    case ResourceType::kCluster: return "cluster";
  }
  return "?";
}

Result<AccessControl> AccessControl::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(ErrorCode::kInvalidArgument, "acl file " + path + ": cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

Result<AccessControl> AccessControl::parse(std::string_view toml_text, std::string_view origin) {
  const std::string where = "acl file " + std::string(origin);
  toml::value root;
  try {
    std::istringstream in{std::string(toml_text)};
    root = toml::parse(in, std::string(origin));
  } catch (const std::exception& e) {
    return Error(ErrorCode::kInvalidArgument, where + ": " + e.what());
  }
  AccessControl acl;
  for (const auto& [key, value] : root.as_table())
    if (key != "allow")
      return Error(ErrorCode::kInvalidArgument, where + ": unknown key '" + key + "' (rules are [[allow]] tables)");
  if (!root.contains("allow")) return acl;  // no rule: everything is denied
  const auto& allow = root.at("allow");
  if (!allow.is_array())
    return Error(ErrorCode::kInvalidArgument, where + ": 'allow' must be an array of tables ([[allow]])");
  std::size_t index = 0;
  for (const auto& entry : allow.as_array()) {
    ++index;
    try {
      if (!entry.is_table()) throw RuleError{"not a table"};
      Rule rule;
      const ResourceKind* kind = nullptr;
      std::vector<std::string> operations;
      bool has_users = false;
      for (const auto& [key, value] : entry.as_table()) {
        if (key == "users") {
          rule.users = string_list(value, key);
          for (const auto& u : rule.users)
            if (u != "*" && u.find('*') != std::string::npos)
              throw RuleError{"users: '" + u + "' is not a user name (\"*\" alone means every authenticated user)"};
          has_users = true;
        } else if (key == "operations") {
          operations = string_list(value, key);
        } else {
          const ResourceKind* k = nullptr;
          for (const auto& candidate : kKinds)
            if (key == candidate.key) k = &candidate;
          if (!k)
            throw RuleError{"unknown key '" + key +
                            "' (a rule has users, operations, and one of topics, groups, producer_groups, cluster)"};
          if (kind)
            throw RuleError{std::string("names two resources, ") + kind->key + " and " + k->key +
                            " (write one rule for each)"};
          kind = k;
          if (k->type == ResourceType::kCluster) {
            if (!value.is_boolean() || !value.as_boolean()) throw RuleError{"cluster must be true"};
          } else {
            rule.patterns = string_list(value, key);
            check_patterns(rule.patterns, key);
          }
        }
      }
      if (!has_users) throw RuleError{"no users"};
      if (!kind) throw RuleError{"no resource (one of topics, groups, producer_groups, cluster = true)"};
      if (operations.empty()) throw RuleError{"no operations"};
      rule.type = kind->type;
      for (const auto& op_name : operations) {
        if (op_name == "all") {
          rule.operations |= kind->operations;
          continue;
        }
        const Operation* op = nullptr;
        for (const auto& candidate : kOperations)
          if (op_name == name(candidate)) op = &candidate;
        if (!op)
          throw RuleError{"unknown operation '" + op_name + "' (operations are " + operation_list(~0u) + ", all)"};
        if (!(kind->operations & bit(*op)))
          throw RuleError{"operation '" + op_name + "' does not apply to " + kind->key + " (theirs: " +
                          operation_list(kind->operations) + ")"};
        rule.operations |= bit(*op);
      }
      acl.rules_.push_back(std::move(rule));
    } catch (const RuleError& e) {
      return Error(ErrorCode::kInvalidArgument, where + ": rule " + std::to_string(index) + ": " + e.what);
    }
  }
  return acl;
}

bool AccessControl::allows(std::string_view user, Operation op, ResourceType type, std::string_view resource) const {
  for (const Rule& rule : rules_) {
    if (rule.type != type || !(rule.operations & bit(op))) continue;
    bool user_matches = false;
    for (const auto& u : rule.users) user_matches = user_matches || matches_user(u, user);
    if (!user_matches) continue;
    if (type == ResourceType::kCluster) return true;
    for (const auto& p : rule.patterns)
      if (matches(p, resource)) return true;
  }
  return false;
}

bool Access::allows(Operation op, ResourceType type, std::string_view resource) {
  if (!rules_) return true;
  const AccessControl* rules = rules_->current();
  if (!rules) return false;  // authentication on and no rules loaded: nothing is allowed
  // Answers hold until the rules are replaced: a reload may allow or deny anything.
  if (generation_ != rules_->generation()) {
    cache_.clear();
    generation_ = rules_->generation();
  }
  if (type == ResourceType::kCluster) resource = {};
  std::string key;
  key.reserve(2 + resource.size());
  key += static_cast<char>(op);
  key += static_cast<char>(type);
  key += resource;
  if (auto it = cache_.find(key); it != cache_.end()) return it->second;
  // Names come from the client, so a connection that asks about ever new names must not
  // grow its cache without end; past this many it starts over.
  constexpr std::size_t kMaxCached = 4096;
  if (cache_.size() >= kMaxCached) cache_.clear();
  const bool allowed = rules->allows(user_, op, type, resource);
  cache_.emplace(std::move(key), allowed);
  return allowed;
}

Error Access::refusal(Operation op, ResourceType type, std::string_view resource) const {
  std::string what = type == ResourceType::kCluster ? std::string("the cluster")
                                                    : std::string(name(type)) + " '" + std::string(resource) + "'";
  return Error(ErrorCode::kNotAuthorized,
               "user '" + user_ + "' may not " + std::string(name(op)) + " " + what);
}

Status Access::check(Operation op, ResourceType type, std::string_view resource) {
  if (allows(op, type, resource)) return {};
  return refusal(op, type, resource);
}

}  // namespace txmq::broker
