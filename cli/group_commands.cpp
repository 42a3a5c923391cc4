// txmq group list|describe|configure: consumer groups' lag, deliveries in flight, retries,
// dead letters and policy.

#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>

#include "cli/command.h"
#include "cli/durations.h"

namespace txmq::cli {
namespace {

struct GroupOptions {
  std::string group;                // describe and configure; "" with --topic: its default
  std::string topic;                // configure --topic
  std::string mode;                 // configure --mode: "shared", "ordered" or "" (unchanged)
  std::string ack_wait;             // configure --ack-wait, a duration; "": unchanged
  std::uint32_t max_deliveries = 0; // configure --max-deliveries; 0: unchanged
  std::string delays;               // configure --delays "1s,5s,30s"; "": unchanged
  std::string exponential;          // configure --exponential "INITIAL,FACTOR,MAX"; "": unchanged
  double jitter = -1;               // configure --jitter; negative: unchanged

  bool changes_retry() const { return max_deliveries || !delays.empty() || !exponential.empty() || jitter >= 0; }
};

void print_group(const txmq::client::GroupInfo& g, bool detail) {
  std::printf("%-24s %-24s mode=%s consumers=%u lag=%llu in_flight=%llu waiting_retry=%llu redeliveries=%llu "
              "dead_letters=%llu\n",
              g.group.c_str(), g.topic.empty() ? "-" : g.topic.c_str(),
              g.mode == txmq::client::GroupMode::kOrdered ? "ordered" : "shared", g.consumers,
              static_cast<unsigned long long>(g.lag), static_cast<unsigned long long>(g.in_flight),
              static_cast<unsigned long long>(g.waiting_retry), static_cast<unsigned long long>(g.redeliveries),
              static_cast<unsigned long long>(g.dead_letters));
  if (!detail) return;
  std::printf("  ack_wait %s, max_deliveries %u, retry ", format_duration(g.ack_wait).c_str(), g.retry.max_deliveries);
  if (!g.retry.delays.empty()) {
    for (std::size_t i = 0; i < g.retry.delays.size(); ++i)
      std::printf("%s%s", i ? "," : "", format_duration(g.retry.delays[i]).c_str());
  } else {
    std::printf("exponential %s x%.2f up to %s", format_duration(g.retry.exponential_initial).c_str(),
                g.retry.exponential_factor, format_duration(g.retry.exponential_max).c_str());
  }
  if (g.retry.jitter > 0) std::printf(" (jitter %.0f%%)", g.retry.jitter * 100);
  std::printf("\n");
}

// Applies the retry flags to the schedule in force; false (after saying why) for a bad one.
bool apply_retry_flags(const GroupOptions& o, txmq::client::RetrySchedule& retry) {
  if (o.max_deliveries) retry.max_deliveries = o.max_deliveries;
  if (o.jitter >= 0) retry.jitter = o.jitter;
  if (!o.delays.empty()) {
    retry.delays.clear();
    std::stringstream ss(o.delays);
    for (std::string item; std::getline(ss, item, ',');) {
      auto d = parse_duration(item);
      if (!d) {
        std::cerr << "txmq: --delays: '" << item << "' is not a duration\n";
        return false;
      }
      retry.delays.push_back(*d);
    }
  }
  if (!o.exponential.empty()) {
    std::stringstream ss(o.exponential);
    std::string init, factor, max;
    std::getline(ss, init, ',');
    std::getline(ss, factor, ',');
    std::getline(ss, max, ',');
    auto i = parse_duration(init), m = parse_duration(max);
    if (!i || !m || factor.empty()) {
      std::cerr << "txmq: --exponential takes INITIAL,FACTOR,MAX (1s,2,10m)\n";
      return false;
    }
    retry.delays.clear();
    retry.exponential_initial = *i;
    retry.exponential_factor = std::stod(factor);
    retry.exponential_max = *m;
  }
  return true;
}

class GroupCommands final : public CommandGroup {
 public:
  explicit GroupCommands(CLI::App& app)
      : CommandGroup(add_group_of_commands(app, "group",
                                           "consumer groups: lag, in flight, retries, dead letters, policy")) {
    command_->add_subcommand("list", "every group, per topic it consumes");
    describe_ = command_->add_subcommand("describe", "one group, with its retry policy");
    describe_->add_option("group", o_.group, "group")->required();
    configure_ = command_->add_subcommand(
        "configure", "set a group's policy, or with --topic and no group the default of that topic's groups");
    configure_->add_option("group", o_.group, "group (omit with --topic for the topic's default)");
    configure_->add_option("--topic", o_.topic, "the topic whose default to set (without a group)");
    configure_->add_option("--mode", o_.mode, "shared or ordered")->check(CLI::IsMember({"shared", "ordered"}));
    configure_->add_option("--ack-wait", o_.ack_wait, "the lease of each delivery")->check(duration_validator());
    configure_->add_option("--max-deliveries", o_.max_deliveries, "dead-letter after this many deliveries");
    configure_->add_option("--delays", o_.delays, "retry delays, comma-separated: 1s,5s,30s (the last repeats)");
    configure_->add_option("--exponential", o_.exponential,
                           "INITIAL,FACTOR,MAX, e.g. 1s,2,10m (instead of --delays)");
    configure_->add_option("--jitter", o_.jitter, "vary each delay by up to this fraction (0.2 = 20%)");
  }

  int run(const GlobalOptions& global) override {
    txmq::client::Admin admin(global.client_options());
    if (configure_->parsed()) return configure(admin, global.timeout());
    auto r = admin.describe_groups(describe_->parsed() ? o_.group : "", global.timeout());
    if (!r) return fail(r.error());
    for (const auto& g : *r) print_group(g, describe_->parsed());
    return 0;
  }

 private:
  int configure(txmq::client::Admin& admin, Millis timeout) {
    if (o_.group.empty() && o_.topic.empty()) {
      std::cerr << "txmq: name a group, or --topic for the topic's default\n";
      return 2;
    }
    const std::string default_of = o_.group.empty() ? o_.topic : "";
    txmq::client::GroupConfig config;
    if (!o_.mode.empty())
      config.mode = o_.mode == "ordered" ? txmq::client::GroupMode::kOrdered : txmq::client::GroupMode::kShared;
    if (!o_.ack_wait.empty()) config.ack_wait = *parse_duration(o_.ack_wait);
    if (o_.changes_retry()) {
      // Start from what is in force (asking changes nothing), so that changing one setting
      // keeps the others.
      auto current = admin.configure_group(o_.group, default_of, {}, timeout);
      if (!current) return fail(current.error());
      txmq::client::RetrySchedule retry = current->retry;
      if (!apply_retry_flags(o_, retry)) return 2;
      config.retry = retry;
    }
    auto r = admin.configure_group(o_.group, default_of, config, timeout);
    if (!r) return fail(r.error());
    print_group(*r, true);
    return 0;
  }

  GroupOptions o_;
  CLI::App* describe_;
  CLI::App* configure_;
};

}  // namespace

std::unique_ptr<CommandGroup> add_group_commands(CLI::App& app) { return std::make_unique<GroupCommands>(app); }

}  // namespace txmq::cli
