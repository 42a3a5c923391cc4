// txmq consume TOPIC --group G: prints each message, one body per line, and settles it.

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>

#include "cli/command.h"
#include "cli/durations.h"

namespace txmq::cli {
namespace {

struct ConsumeOptions {
  std::string topic;
  std::string group;             // --group
  long max_messages = 0;         // --max: exit after this many; 0: no limit
  long idle_timeout_ms = 5000;   // --timeout-ms: exit when nothing arrived for this long
  bool show_meta = false;        // --show-meta: "partition:offset #delivery_count body"
  bool nack = false;             // --nack instead of ack (retried)
  bool term = false;             // --term instead of ack (dead-lettered)
  std::string nack_delay;        // --delay with --nack, a duration; "": the schedule's
  std::string reason;            // --reason with --nack or --term
};

class ConsumeCommand final : public CommandGroup {
 public:
  explicit ConsumeCommand(CLI::App& app)
      : CommandGroup(app.add_subcommand("consume", "print messages, one body per line, and ack each")) {
    command_->add_option("topic", o_.topic, "topic")->required();
    command_->add_option("-g,--group", o_.group, "consumer group")->required();
    command_->add_option("-n,--max", o_.max_messages, "exit after this many messages (0: no limit)");
    command_->add_option("--timeout-ms", o_.idle_timeout_ms, "exit when nothing arrived for this long");
    command_->add_flag("--show-meta", o_.show_meta, "prefix each line with partition:offset and delivery count");
    command_->add_flag("--nack", o_.nack, "nack each message instead of acking it (it is retried)");
    command_->add_flag("--term", o_.term,
                       "terminate each message instead of acking it (to the dead-letter topic)");
    command_->add_option("--delay", o_.nack_delay, "with --nack: retry after this instead of the schedule's delay")
        ->check(duration_validator());
    command_->add_option("--reason", o_.reason,
                         "with --nack or --term: the reason kept in the message's history");
  }

  int run(const GlobalOptions& global) override {
    if (o_.nack && o_.term) {
      std::cerr << "txmq: --nack and --term exclude each other\n";
      return 2;
    }
    verdict_delay_ = o_.nack_delay.empty() ? Millis(0) : *parse_duration(o_.nack_delay);
    {
      // A subscription waits for the broker however long it takes; a request fails fast
      // (first_connect_timeout). One request first, so an unreachable broker or a missing
      // topic is reported at once instead of after the whole timeout.
      txmq::client::Admin probe(global.client_options());
      if (auto r = probe.describe_topic(o_.topic, global.timeout()); !r) return fail(r.error());
    }
    txmq::client::Consumer::Options co;
    static_cast<txmq::client::ClientOptions&>(co) = global.client_options();
    co.topic = o_.topic;
    co.group = o_.group;
    // Never take more than we will print: with --max N the window is at most N, so no
    // extra messages sit unacknowledged with us when we exit.
    co.window = o_.max_messages > 0 ? static_cast<std::uint32_t>(std::min<long>(o_.max_messages, 1000)) : 1000;
    last_activity_ = std::chrono::steady_clock::now();
    txmq::client::Consumer consumer(
        co, [this](txmq::client::Consumer& self, const txmq::client::Delivery& d) { on_delivery(self, d); });
    if (auto st = consumer.wait_subscribed(global.timeout()); !st) return fail(st.error());
    wait_until_done();
    if (auto st = consumer.flush_acks(global.timeout()); !st) return fail(st.error());
    return 0;
  }

 private:
  // On the consumer's I/O thread.
  void on_delivery(txmq::client::Consumer& self, const txmq::client::Delivery& d) {
    std::lock_guard lock(mu_);
    if (o_.max_messages > 0 && printed_ >= o_.max_messages) return;  // not acked: redelivered later
    if (o_.show_meta)
      std::printf("%u:%llu #%u %s\n", d.partition, static_cast<unsigned long long>(d.offset), d.delivery_count,
                  d.body.c_str());
    else
      std::printf("%s\n", d.body.c_str());
    std::fflush(stdout);
    ++printed_;
    last_activity_ = std::chrono::steady_clock::now();
    // The last one we take: stop deliveries before its verdict frees room for another
    // message we would neither print nor settle.
    if (o_.max_messages > 0 && printed_ == o_.max_messages) self.pause();
    if (o_.nack)
      self.nack(d, verdict_delay_, o_.reason);
    else if (o_.term)
      self.terminate(d, o_.reason);
    else
      self.ack(d);
    cv_.notify_all();
  }

  // Until --max messages are printed or nothing arrived for --timeout-ms.
  void wait_until_done() {
    std::unique_lock lock(mu_);
    for (;;) {
      if (o_.max_messages > 0 && printed_ >= o_.max_messages) break;
      auto deadline = last_activity_ + Millis(o_.idle_timeout_ms);
      if (std::chrono::steady_clock::now() >= deadline) break;
      cv_.wait_until(lock, deadline);
    }
  }

  ConsumeOptions o_;
  Millis verdict_delay_{0};
  std::mutex mu_;  // guards printed_ and last_activity_ (and stdout) against the I/O thread
  std::condition_variable cv_;
  long printed_ = 0;
  std::chrono::steady_clock::time_point last_activity_;
};

}  // namespace

std::unique_ptr<CommandGroup> add_consume_command(CLI::App& app) { return std::make_unique<ConsumeCommand>(app); }

}  // namespace txmq::cli
