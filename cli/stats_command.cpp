// txmq stats: the broker's counters, one "name value" line each.

#include <cstdio>

#include "cli/command.h"

namespace txmq::cli {
namespace {

class StatsCommand final : public CommandGroup {
 public:
  explicit StatsCommand(CLI::App& app) : CommandGroup(app.add_subcommand("stats", "show broker statistics")) {}

  int run(const GlobalOptions& global) override {
    txmq::client::Admin admin(global.client_options());
    auto r = admin.stats(global.timeout());
    if (!r) return fail(r.error());
    const auto& s = *r;
    auto u64 = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
    std::printf("broker_version      %s\n", s.broker_version.c_str());
    std::printf("uptime_seconds      %.1f\n", s.uptime_ms / 1000.0);
    std::printf("connections         %u\n", s.connections);
    std::printf("topics              %u\n", s.topics);
    std::printf("messages_produced   %llu\n", u64(s.messages_produced));
    std::printf("bytes_produced      %llu\n", u64(s.bytes_produced));
    std::printf("messages_delivered  %llu\n", u64(s.messages_delivered));
    std::printf("messages_acked      %llu\n", u64(s.messages_acked));
    std::printf("storage_used_bytes  %llu\n", u64(s.storage_used_bytes));
    std::printf("storage_max_bytes   %llu\n", u64(s.storage_max_bytes));
    std::printf("storage_commits     %llu\n", u64(s.commits));
    return 0;
  }
};

}  // namespace

std::unique_ptr<CommandGroup> add_stats_command(CLI::App& app) { return std::make_unique<StatsCommand>(app); }

}  // namespace txmq::cli
