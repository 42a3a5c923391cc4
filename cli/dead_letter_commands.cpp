// txmq dlq list|show|redrive: a consumer group's dead letters, and moving them back.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "cli/command.h"
#include "common/well_known.h"

namespace txmq::cli {
namespace {

using txmq::client::Delivery;

struct DeadLetterOptions {
  std::string group;                 // --group
  long max = 1000;                   // list/redrive --max: read at most this many letters
  std::uint64_t offset = 0;          // show: offset in the dead-letter topic
  std::vector<std::string> filters;  // redrive --filter HEADER=VALUE, all must match
  double rate = 0;                   // redrive --rate: messages per second; 0: no limit
  bool dry_run = false;              // redrive --dry-run
  bool trust_unmarked = false;       // redrive --trust-unmarked
};

const std::string* find_header(const Delivery& d, std::string_view name) {
  for (const auto& h : d.headers)
    if (h.name == name) return &h.value;
  return nullptr;
}

void print_dead_letter(const Delivery& d, bool detail) {
  auto h = [&](const char* name) {
    const std::string* v = find_header(d, name);
    return v ? *v : std::string("?");
  };
  std::string last_reason;
  for (const auto& hd : d.headers)
    if (hd.name == kReasonHeader) last_reason = hd.value;
  std::printf("%llu  origin=%s deliveries=%s reason=%s  %s\n", static_cast<unsigned long long>(d.offset),
              h(kOriginMessageIdHeader).c_str(), h(kDeliveryCountHeader).c_str(),
              last_reason.empty() ? "-" : last_reason.c_str(), detail ? "" : d.body.substr(0, 60).c_str());
  if (!detail) return;
  for (const auto& hd : d.headers) std::printf("  %s: %s\n", hd.name.c_str(), hd.value.c_str());
  std::printf("  key: %s\n  body: %s\n", d.key.c_str(), d.body.c_str());
}

// Reads every message of a group's dead-letter topic, in offset order.
txmq::Result<std::vector<Delivery>> read_dead_letters(txmq::client::Admin& admin, const std::string& group,
                                                      std::size_t max, Millis timeout) {
  std::vector<Delivery> out;
  std::uint64_t from = 0;
  while (out.size() < max) {
    auto batch = admin.fetch(dead_letter_topic(group), 0, from,
                             static_cast<std::uint32_t>(std::min<std::size_t>(max - out.size(), 500)), timeout);
    if (!batch) {
      if (batch.error().code == txmq::ErrorCode::kUnknownTopic) return out;  // no dead letters yet
      return batch.error();
    }
    if (batch->empty()) break;
    from = batch->back().offset + 1;
    for (auto& d : *batch) out.push_back(std::move(d));
  }
  return out;
}

// The offsets of the letters whose headers match every HEADER=VALUE filter; nullopt (after
// saying why) for a filter without a name or '='.
std::optional<std::vector<std::uint64_t>> choose(const std::vector<Delivery>& letters,
                                                 const std::vector<std::string>& filters) {
  std::vector<std::pair<std::string, std::string>> wanted;
  for (const auto& f : filters) {
    auto eq = f.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "txmq: --filter takes HEADER=VALUE, got '" << f << "'\n";
      return std::nullopt;
    }
    wanted.emplace_back(f.substr(0, eq), f.substr(eq + 1));
  }
  std::vector<std::uint64_t> chosen;
  for (const auto& d : letters) {
    bool match = std::all_of(wanted.begin(), wanted.end(), [&](const auto& w) {
      return std::any_of(d.headers.begin(), d.headers.end(),
                         [&](const auto& h) { return h.name == w.first && h.value == w.second; });
    });
    if (match) chosen.push_back(d.offset);
  }
  return chosen;
}

class DeadLetterCommands final : public CommandGroup {
 public:
  explicit DeadLetterCommands(CLI::App& app)
      : CommandGroup(add_group_of_commands(app, "dlq", "inspect and redrive a group's dead letters")) {
    list_ = command_->add_subcommand("list", "the group's dead letters: offset, origin, deliveries, last reason");
    list_->add_option("-g,--group", o_.group, "group")->required();
    list_->add_option("-n,--max", o_.max, "list at most this many");
    show_ = command_->add_subcommand("show", "one dead letter with its whole history");
    show_->add_option("-g,--group", o_.group, "group")->required();
    show_->add_option("offset", o_.offset, "offset in the dead-letter topic")->required();
    auto* redrive = command_->add_subcommand("redrive", "move dead letters back to their origin for this group only");
    redrive->add_option("-g,--group", o_.group, "group")->required();
    redrive->add_option("--filter", o_.filters,
                        "only letters whose HEADER=VALUE matches (txmq-origin-topic=orders, txmq-reason=...); "
                        "repeatable, all must match");
    redrive->add_option("--rate", o_.rate, "at most this many messages per second (0: no limit)");
    redrive->add_flag("--dry-run", o_.dry_run, "print what would be redriven and change nothing");
    redrive->add_option("-n,--max", o_.max, "redrive at most this many");
    redrive->add_flag("--trust-unmarked", o_.trust_unmarked,
                      "also letters without the broker's mark (stored by a broker from before it marked its dead "
                      "letters): only when you trust their txmq-* headers");
  }

  int run(const GlobalOptions& global) override {
    txmq::client::Admin admin(global.client_options());
    const Millis timeout = global.timeout();
    if (show_->parsed()) return show(admin, timeout);
    auto letters = read_dead_letters(admin, o_.group, static_cast<std::size_t>(o_.max), timeout);
    if (!letters) return fail(letters.error());
    if (list_->parsed()) {
      for (const auto& d : *letters) print_dead_letter(d, false);
      std::fprintf(stderr, "txmq: %zu dead letter(s) for group %s\n", letters->size(), o_.group.c_str());
      return 0;
    }
    auto chosen = choose(*letters, o_.filters);
    if (!chosen) return 2;
    if (o_.dry_run) {
      for (const auto& d : *letters)
        if (std::find(chosen->begin(), chosen->end(), d.offset) != chosen->end()) print_dead_letter(d, false);
      std::fprintf(stderr, "txmq: dry run: %zu of %zu dead letter(s) would be redriven\n", chosen->size(),
                   letters->size());
      return 0;
    }
    return redrive(admin, *chosen, timeout);
  }

 private:
  int show(txmq::client::Admin& admin, Millis timeout) {
    auto r = admin.fetch(dead_letter_topic(o_.group), 0, o_.offset, 1, timeout);
    if (!r) return fail(r.error());
    if (r->empty() || r->front().offset != o_.offset) {
      std::cerr << "txmq: no dead letter at offset " << o_.offset << " for group " << o_.group << "\n";
      return 1;
    }
    print_dead_letter(r->front(), true);
    return 0;
  }

  // Batches of up to 100, paced so that on average no more than --rate go per second.
  int redrive(txmq::client::Admin& admin, const std::vector<std::uint64_t>& chosen, Millis timeout) {
    std::size_t done = 0, failed = 0;
    const auto started = std::chrono::steady_clock::now();
    const double rate = o_.rate;
    for (std::size_t i = 0; i < chosen.size();) {
      std::size_t batch =
          rate > 0 ? std::max<std::size_t>(1, std::min<std::size_t>(100, static_cast<std::size_t>(rate))) : 100;
      std::vector<std::uint64_t> part(chosen.begin() + static_cast<std::ptrdiff_t>(i),
                                      chosen.begin() + static_cast<std::ptrdiff_t>(std::min(chosen.size(), i + batch)));
      if (rate > 0) {
        auto due = started + std::chrono::duration<double>(static_cast<double>(i) / rate);
        std::this_thread::sleep_until(due);
      }
      auto r = admin.redrive(o_.group, part, timeout,
                             o_.trust_unmarked ? txmq::client::RedriveUnmarked::kTrust
                                               : txmq::client::RedriveUnmarked::kRefuse);
      if (!r) return fail(r.error());
      done += r->redriven.size();
      failed += r->failed.size();
      for (auto o : r->failed) {
        const bool unmarked = std::find(r->unmarked.begin(), r->unmarked.end(), o) != r->unmarked.end();
        std::fprintf(stderr, "txmq: dead letter %llu not redriven%s\n", static_cast<unsigned long long>(o),
                     unmarked ? ": it lacks the broker's mark (forged, or stored by a broker from before the "
                                "mark); inspect it with `txmq dlq show`, and pass --trust-unmarked only if you "
                                "trust it"
                              : "");
      }
      i += part.size();
      std::fprintf(stderr, "txmq: redriven %zu of %zu\n", done, chosen.size());
    }
    std::printf("redriven %zu dead letter(s) for group %s, %zu failed\n", done, o_.group.c_str(), failed);
    return failed ? 1 : 0;
  }

  DeadLetterOptions o_;
  CLI::App* list_;
  CLI::App* show_;
};

}  // namespace

std::unique_ptr<CommandGroup> add_dead_letter_commands(CLI::App& app) {
  return std::make_unique<DeadLetterCommands>(app);
}

}  // namespace txmq::cli
