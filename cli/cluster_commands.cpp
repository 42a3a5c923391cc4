// txmq cluster status|promote|digest: replication as the broker named by --broker sees it
// (leader or follower: these requests are never redirected), and an operator's promotion.

#include <cstdio>
#include <string>

#include "cli/command.h"
#include "common/json.h"

namespace txmq::cli {
namespace {

using txmq::client::ClusterInfo;
using txmq::client::StoreDigest;
using txmq::common::json_string;

unsigned long long u64(std::uint64_t v) { return static_cast<unsigned long long>(v); }

std::string joined(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

std::string dash_if_empty(const std::string& s) { return s.empty() ? "-" : s; }

void print_status(const ClusterInfo& c) {
  std::printf("id              %s\n", dash_if_empty(c.id).c_str());
  std::printf("role            %s\n", c.role.c_str());
  std::printf("epoch           %llu\n", u64(c.epoch));
  std::printf("leader          %s%s%s\n", dash_if_empty(c.leader).c_str(), c.leader_address.empty() ? "" : " at ",
              c.leader_address.c_str());
  std::printf("mode            %s (min_insync %u)\n", dash_if_empty(c.mode).c_str(), c.min_insync);
  std::printf("log             %llu..%llu\n", u64(c.first_index), u64(c.last_index));
  std::printf("commit_index    %llu\n", u64(c.commit_index));
  std::printf("in_sync         %s\n", dash_if_empty(joined(c.in_sync, ",")).c_str());
  if (c.role == "follower") std::printf("fetching_from   %s\n", dash_if_empty(c.fetching_from).c_str());
  if (c.installing_snapshot) std::printf("snapshot        installing the leader's store\n");
  if (c.etcd) {
    const auto& e = *c.etcd;
    std::printf("\netcd            %s (%s)\n", e.endpoint.c_str(), e.lease_held ? "lease held" : "no lease: not a member");
    std::printf("etcd_leader     %s (epoch %llu)\n", e.leader.empty() ? "none" : e.leader.c_str(), u64(e.epoch));
    std::printf("etcd_in_sync    %s (min_insync %u)\n", dash_if_empty(joined(e.in_sync, ",")).c_str(), e.min_insync);
    std::printf("etcd_members    %s\n", dash_if_empty(joined(e.members, ",")).c_str());
  }
  if (c.replicas.empty()) return;
  std::printf("\n%-16s %-22s %14s %-7s %12s %12s %10s %12s\n", "replica", "address", "durable_index", "in_sync",
              "lag_records", "lag_bytes", "lag_ms", "last_fetch");
  for (const auto& r : c.replicas) {
    const std::string last_fetch =
        r.last_fetch_ago ? std::to_string(r.last_fetch_ago->count()) + " ms ago" : std::string("never");
    std::printf("%-16s %-22s %14llu %-7s %12llu %12llu %10lld %12s\n", r.id.c_str(), r.address.c_str(),
                u64(r.durable_index), r.in_sync ? "yes" : "no", u64(r.lag_records), u64(r.lag_bytes),
                static_cast<long long>(r.lag.count()), last_fetch.c_str());
  }
}

void print_status_json(const ClusterInfo& c) {
  std::string in_sync;
  for (const auto& id : c.in_sync) in_sync += (in_sync.empty() ? "" : ",") + json_string(id);
  std::string replicas;
  for (const auto& r : c.replicas) {
    replicas += replicas.empty() ? "" : ",";
    replicas += "{\"id\":" + json_string(r.id) + ",\"address\":" + json_string(r.address) +
                ",\"durable_index\":" + std::to_string(r.durable_index) +
                ",\"in_sync\":" + (r.in_sync ? "true" : "false") + ",\"lag_records\":" + std::to_string(r.lag_records) +
                ",\"lag_bytes\":" + std::to_string(r.lag_bytes) + ",\"lag_ms\":" + std::to_string(r.lag.count()) +
                ",\"last_fetch_ms_ago\":" + (r.last_fetch_ago ? std::to_string(r.last_fetch_ago->count()) : "null") +
                "}";
  }
  std::string etcd = "null";
  if (c.etcd) {
    auto list = [](const std::vector<std::string>& items) {
      std::string out;
      for (const auto& id : items) out += (out.empty() ? "" : ",") + json_string(id);
      return "[" + out + "]";
    };
    const auto& e = *c.etcd;
    etcd = "{\"endpoint\":" + json_string(e.endpoint) + ",\"lease_held\":" + (e.lease_held ? "true" : "false") +
           ",\"leader\":" + json_string(e.leader) + ",\"epoch\":" + std::to_string(e.epoch) +
           ",\"in_sync\":" + list(e.in_sync) + ",\"min_insync\":" + std::to_string(e.min_insync) +
           ",\"members\":" + list(e.members) + "}";
  }
  std::printf("{\"id\":%s,\"role\":%s,\"epoch\":%llu,\"leader\":%s,\"leader_address\":%s,\"mode\":%s,"
              "\"min_insync\":%u,\"first_index\":%llu,\"last_index\":%llu,\"commit_index\":%llu,"
              "\"in_sync\":[%s],\"replicas\":[%s],\"fetching_from\":%s,\"installing_snapshot\":%s,\"etcd\":%s}\n",
              json_string(c.id).c_str(), json_string(c.role).c_str(), u64(c.epoch), json_string(c.leader).c_str(),
              json_string(c.leader_address).c_str(), json_string(c.mode).c_str(), c.min_insync, u64(c.first_index),
              u64(c.last_index), u64(c.commit_index), in_sync.c_str(), replicas.c_str(),
              json_string(c.fetching_from).c_str(), c.installing_snapshot ? "true" : "false", etcd.c_str());
}

void print_digest(const StoreDigest& d) {
  std::printf("last_index %llu\nepoch      %llu\n", u64(d.last_index), u64(d.epoch));
  for (const auto& k : d.key_spaces)
    std::printf("%-24s %12llu %s\n", k.key_space.c_str(), u64(k.entries), k.sha256.c_str());
}

void print_digest_json(const StoreDigest& d) {
  std::string spaces;
  for (const auto& k : d.key_spaces) {
    spaces += spaces.empty() ? "" : ",";
    spaces += "{\"key_space\":" + json_string(k.key_space) + ",\"entries\":" + std::to_string(k.entries) +
              ",\"sha256\":" + json_string(k.sha256) + "}";
  }
  std::printf("{\"last_index\":%llu,\"epoch\":%llu,\"key_spaces\":[%s]}\n", u64(d.last_index), u64(d.epoch),
              spaces.c_str());
}

class ClusterCommands final : public CommandGroup {
 public:
  explicit ClusterCommands(CLI::App& app)
      : CommandGroup(add_group_of_commands(app, "cluster", "replication: status, promotion, store digests")) {
    status_ = command_->add_subcommand("status", "role, epoch, commit index, in-sync set and each follower's lag");
    status_->add_flag("--json", json_, "one JSON object instead of the table");
    promote_ = command_->add_subcommand("promote", "make this broker (a follower) the leader of a new epoch");
    promote_->add_flag("--unclean", unclean_,
                       "promote even a follower that was not in sync: confirmed records it lacks are lost");
    digest_ = command_->add_subcommand("digest", "a digest per key space of the broker's store");
    digest_->add_flag("--json", json_, "one JSON object instead of lines");
  }

  int run(const GlobalOptions& global) override {
    txmq::client::Admin admin(global.client_options());
    if (digest_->parsed()) {
      auto r = admin.digest(global.timeout());
      if (!r) return fail(r.error());
      json_ ? print_digest_json(*r) : print_digest(*r);
      return 0;
    }
    auto r = promote_->parsed() ? admin.promote(unclean_, global.timeout()) : admin.cluster_status(global.timeout());
    if (!r) return fail(r.error());
    if (json_) {
      print_status_json(*r);
      return 0;
    }
    print_status(*r);
    if (promote_->parsed()) {
      // The promotion holds until this broker restarts: its config still says follower.
      std::printf("\npromoted: this broker leads epoch %llu. Set replication.role = \"leader\" in its config before "
                  "it restarts, and point clients at it (list it in their broker addresses).\n",
                  u64(r->epoch));
    }
    return 0;
  }

 private:
  CLI::App* status_;
  CLI::App* promote_;
  CLI::App* digest_;
  bool json_ = false;     // status, digest --json
  bool unclean_ = false;  // promote --unclean
};

}  // namespace

std::unique_ptr<CommandGroup> add_cluster_commands(CLI::App& app) { return std::make_unique<ClusterCommands>(app); }

}  // namespace txmq::cli
