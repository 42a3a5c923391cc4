// txmq produce TOPIC: each line of standard input is one message; exits 0 once all are durable.

#include <atomic>
#include <cstdio>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>

#include "cli/command.h"
#include "cli/durations.h"

namespace txmq::cli {
namespace {

struct ProduceOptions {
  std::string topic;
  std::string key;                  // --key: picks the partition
  std::vector<std::string> headers; // --header NAME=VALUE, repeatable
  std::string delay;                // --delay, a duration; "": none
  std::uint64_t deliver_at_ms = 0;  // --deliver-at; 0: none
};

// NAME=VALUE flags as headers; nullopt (after saying why) for one without a name or '='.
std::optional<std::vector<txmq::client::Header>> parse_headers(const std::vector<std::string>& flags) {
  std::vector<txmq::client::Header> headers;
  for (const auto& h : flags) {
    auto eq = h.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "txmq: --header takes NAME=VALUE, got '" << h << "'\n";
      return std::nullopt;
    }
    headers.push_back({h.substr(0, eq), h.substr(eq + 1)});
  }
  return headers;
}

class ProduceCommand final : public CommandGroup {
 public:
  explicit ProduceCommand(CLI::App& app)
      : CommandGroup(app.add_subcommand("produce", "send each line of standard input as one message")) {
    command_->add_option("topic", o_.topic, "topic")->required();
    command_->add_option("-k,--key", o_.key, "message key (picks the partition)");
    command_->add_option("-H,--header", o_.headers, "header NAME=VALUE (repeatable)");
    command_->add_option("--delay", o_.delay, "deliver no earlier than this after it is stored")
        ->check(duration_validator());
    command_->add_option("--deliver-at", o_.deliver_at_ms, "deliver no earlier than this time (ms since the epoch)");
  }

  int run(const GlobalOptions& global) override {
    auto headers = parse_headers(o_.headers);
    if (!headers) return 2;
    txmq::client::Producer::Options po;
    static_cast<txmq::client::ClientOptions&>(po) = global.client_options();
    po.linger = Millis(5);
    txmq::client::Producer producer(po);
    std::mutex mu;
    std::optional<txmq::Error> first_error;
    std::atomic<std::uint64_t> confirmed{0};
    std::uint64_t sent = 0;
    // A message refused with NotLeader was not stored (a follower, or a leader that cannot
    // renew its etcd lease, refuses before writing anything): it is sent again, to the
    // leader the refusal named, up to kLeaderRetries times. Any other failure is final.
    constexpr int kLeaderRetries = 10;
    std::function<void(txmq::client::Message, int)> send = [&](txmq::client::Message m, int retries) {
      producer.send_async(o_.topic, m, [&, m, retries](const txmq::Result<txmq::client::SendReceipt>& r) {
        if (r) {
          ++confirmed;
          return;
        }
        if (r.error().code == txmq::ErrorCode::kNotLeader && retries > 0) return send(m, retries - 1);
        std::lock_guard lock(mu);
        if (!first_error) first_error = r.error();
      });
    };
    std::string line;
    while (std::getline(std::cin, line)) {
      txmq::client::Message m{o_.key, *headers, line, -1};
      m.deliver_at_ms = o_.deliver_at_ms;
      if (!o_.delay.empty()) m.delay = *parse_duration(o_.delay);
      send(std::move(m), kLeaderRetries);
      ++sent;
    }
    // Every line is confirmed or failed within the request timeout; flush waits for that.
    auto st = producer.flush(global.timeout() + Millis(1000));
    std::lock_guard lock(mu);
    if (first_error) {
      std::cerr << "txmq: " << (sent - confirmed) << " of " << sent << " message(s) not confirmed\n";
      return fail(*first_error);
    }
    if (!st) return fail(st.error());
    std::fprintf(stderr, "txmq: %llu message(s) confirmed durable\n",
                 static_cast<unsigned long long>(confirmed.load()));
    return 0;
  }

 private:
  ProduceOptions o_;
};

}  // namespace

std::unique_ptr<CommandGroup> add_produce_command(CLI::App& app) { return std::make_unique<ProduceCommand>(app); }

}  // namespace txmq::cli
