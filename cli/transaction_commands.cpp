// txmq txn list|show|commit|rollback: transactions, and an operator's decision on open ones.

#include <cstdio>
#include <optional>

#include "cli/command.h"
#include "cli/durations.h"

namespace txmq::cli {
namespace {

using txmq::client::TxnState;

struct TransactionOptions {
  std::string state;            // list --state: "prepared", "committed", "rolled-back", "parked"; "": all
  std::uint32_t max = 100;      // list --max
  std::uint64_t id = 0;         // show, commit and rollback: the transaction id
};

const char* state_name(TxnState s) {
  switch (s) {
    case TxnState::kCommitted: return "committed";
    case TxnState::kRolledBack: return "rolled-back";
    case TxnState::kParked: return "parked";
    default: return "prepared";
  }
}

std::optional<TxnState> state_named(const std::string& name) {
  if (name == "prepared") return TxnState::kPrepared;
  if (name == "committed") return TxnState::kCommitted;
  if (name == "rolled-back") return TxnState::kRolledBack;
  if (name == "parked") return TxnState::kParked;
  return std::nullopt;
}

void print_transaction(const txmq::client::TransactionInfo& t) {
  std::printf("%llu  %-11s topic=%s group=%s created=%s checks=%u%s%s\n",
              static_cast<unsigned long long>(t.transaction_id), state_name(t.state), t.topic.c_str(),
              t.producer_group.c_str(), format_time_ms(t.created_ms).c_str(), t.checks,
              t.resolution.empty() ? "" : (" resolved-by=" + t.resolution).c_str(),
              t.state == TxnState::kCommitted
                  ? (" at=" + std::to_string(t.partition) + ":" + std::to_string(t.offset)).c_str()
                  : "");
}

class TransactionCommands final : public CommandGroup {
 public:
  explicit TransactionCommands(CLI::App& app)
      : CommandGroup(add_group_of_commands(app, "txn", "transactions: list, inspect, and resolve parked ones")) {
    list_ = command_->add_subcommand("list", "transactions, newest first");
    list_->add_option("--state", o_.state, "prepared, committed, rolled-back or parked")
        ->check(CLI::IsMember({"prepared", "committed", "rolled-back", "parked"}));
    list_->add_option("-n,--max", o_.max, "list at most this many");
    show_ = command_->add_subcommand("show", "one transaction, with its message while it is open");
    show_->add_option("id", o_.id, "transaction id")->required();
    commit_ = command_->add_subcommand("commit", "commit a prepared or parked transaction (an operator decision)");
    commit_->add_option("id", o_.id, "transaction id")->required();
    auto* rollback =
        command_->add_subcommand("rollback", "roll back a prepared or parked transaction (an operator decision)");
    rollback->add_option("id", o_.id, "transaction id")->required();
  }

  int run(const GlobalOptions& global) override {
    txmq::client::Admin admin(global.client_options());
    const Millis timeout = global.timeout();
    if (list_->parsed()) {
      auto r = admin.list_transactions(state_named(o_.state), o_.max, timeout);
      if (!r) return fail(r.error());
      for (const auto& t : *r) print_transaction(t);
      return 0;
    }
    if (show_->parsed()) {
      auto r = admin.show_transaction(o_.id, timeout);
      if (!r) return fail(r.error());
      print_transaction(*r);
      if (r->state == TxnState::kPrepared || r->state == TxnState::kParked) {
        for (const auto& h : r->message.headers) std::printf("  %s: %s\n", h.name.c_str(), h.value.c_str());
        std::printf("  key: %s\n  body: %s\n", r->message.key.c_str(), r->message.body.c_str());
      }
      return 0;
    }
    return end(admin, commit_->parsed(), timeout);
  }

 private:
  // commit or rollback: exit 0 only if the transaction ends in the state asked for.
  int end(txmq::client::Admin& admin, bool commit, Millis timeout) {
    auto r = admin.end_transaction(o_.id, commit, timeout);
    if (!r) return fail(r.error());
    if (r->changed)
      std::printf("transaction %llu %s\n", static_cast<unsigned long long>(o_.id), state_name(r->state));
    else
      std::printf("transaction %llu was already %s; nothing changed\n", static_cast<unsigned long long>(o_.id),
                  state_name(r->state));
    const bool wanted = commit ? r->state == TxnState::kCommitted : r->state == TxnState::kRolledBack;
    return wanted ? 0 : 1;
  }

  TransactionOptions o_;
  CLI::App* list_;
  CLI::App* show_;
  CLI::App* commit_;
};

}  // namespace

std::unique_ptr<CommandGroup> add_transaction_commands(CLI::App& app) {
  return std::make_unique<TransactionCommands>(app);
}

}  // namespace txmq::cli
