// txmq topic create|list|describe|delete

#include <cstdio>

#include "cli/command.h"
#include "cli/durations.h"

namespace txmq::cli {
namespace {

struct TopicOptions {
  std::string name;                  // the topic of create, describe and delete
  std::uint32_t partitions = 1;      // create --partitions
  std::string retention;             // create --retention, a duration; "": the broker's
  std::uint64_t retention_bytes = 0; // create --retention-bytes; 0: no limit
};

void print_topic(const txmq::client::TopicInfo& t, bool detail) {
  std::uint64_t messages = 0;
  for (const auto& p : t.partitions) messages += p.next_offset - p.first_offset;
  std::printf("%-32s partitions=%zu messages=%llu\n", t.name.c_str(), t.partitions.size(),
              static_cast<unsigned long long>(messages));
  if (!detail) return;
  std::printf("  created %s\n", format_time_ms(t.created_at_ms).c_str());
  for (const auto& p : t.partitions)
    std::printf("  partition %u: first_offset=%llu next_offset=%llu\n", p.partition,
                static_cast<unsigned long long>(p.first_offset), static_cast<unsigned long long>(p.next_offset));
}

class TopicCommands final : public CommandGroup {
 public:
  explicit TopicCommands(CLI::App& app)
      : CommandGroup(add_group_of_commands(app, "topic", "create, list, describe and delete topics")) {
    create_ = command_->add_subcommand("create", "create a topic");
    create_->add_option("name", o_.name, "topic name")->required();
    create_->add_option("-p,--partitions", o_.partitions, "partition count")->check(CLI::Range(1, 1024));
    create_->add_option("--retention", o_.retention, "delete messages older than this (default: the broker's)")
        ->check(duration_validator());
    create_->add_option("--retention-bytes", o_.retention_bytes, "keep at most this many bytes per partition");
    list_ = command_->add_subcommand("list", "list topics");
    describe_ = command_->add_subcommand("describe", "show a topic's partitions and offsets");
    describe_->add_option("name", o_.name, "topic name")->required();
    delete_ = command_->add_subcommand("delete", "delete a topic and all its messages");
    delete_->add_option("name", o_.name, "topic name")->required();
  }

  int run(const GlobalOptions& global) override {
    txmq::client::Admin admin(global.client_options());
    const Millis timeout = global.timeout();
    if (create_->parsed()) {
      txmq::client::TopicOptions to;
      to.partitions = o_.partitions;
      if (!o_.retention.empty()) to.retention_ms = static_cast<std::uint64_t>(parse_duration(o_.retention)->count());
      to.retention_bytes = o_.retention_bytes;
      auto r = admin.create_topic(o_.name, to, timeout);
      if (!r) return fail(r.error());
      std::printf("created topic %s with %zu partition(s)\n", r->name.c_str(), r->partitions.size());
    } else if (list_->parsed()) {
      auto r = admin.list_topics(timeout);
      if (!r) return fail(r.error());
      for (const auto& t : *r) print_topic(t, false);
    } else if (describe_->parsed()) {
      auto r = admin.describe_topic(o_.name, timeout);
      if (!r) return fail(r.error());
      print_topic(*r, true);
    } else if (delete_->parsed()) {
      if (auto st = admin.delete_topic(o_.name, timeout); !st) return fail(st.error());
      std::printf("deleted topic %s\n", o_.name.c_str());
    }
    return 0;
  }

 private:
  TopicOptions o_;
  CLI::App* create_;
  CLI::App* list_;
  CLI::App* describe_;
  CLI::App* delete_;
};

}  // namespace

std::unique_ptr<CommandGroup> add_topic_commands(CLI::App& app) { return std::make_unique<TopicCommands>(app); }

}  // namespace txmq::cli
