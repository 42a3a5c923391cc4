#include "callbacks.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "child_process.h"
#include "http_sink.h"
#include "txmq/client.h"

namespace txmq::bench {
namespace {

using Clock = std::chrono::steady_clock;

// wrk's "Requests/sec" against url for `seconds`, or a negative number when wrk is missing
// or failed. Its connections match the notifier's concurrency, so both fill the receiver
// the same way.
double wrk_rate(const std::string& url, unsigned connections, int seconds) {
  const std::string cmd = "wrk -t2 -c" + std::to_string(connections) + " -d" + std::to_string(seconds) + "s " + url +
                          " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  double rate = -1;
  char line[512];
  while (std::fgets(line, sizeof line, p))
    if (std::sscanf(line, "Requests/sec: %lf", &rate) == 1) break;
  while (std::fgets(line, sizeof line, p)) {
  }
  pclose(p);
  return rate;
}

// One round: a fresh group of the notifier delivers the whole backlog to the sink.
// Returns callbacks per second, or a negative number on failure.
double notifier_round(const CallbacksConfig& c, HttpSink& sink, const std::string& topic, int round) {
  char dir_template[] = "/tmp/txmq-bench-notifier-XXXXXX";
  if (!mkdtemp(dir_template)) return -1;
  sink.reset();
  // Processes of one group share the backlog, each with its part of the concurrency; all
  // are started before any is waited for, so that they join the group about together.
  std::vector<ChildProcess> notifiers(c.processes);
  for (unsigned i = 0; i < c.processes; ++i) {
    const unsigned share = c.concurrency / c.processes + (i < c.concurrency % c.processes ? 1 : 0);
    const std::string config = std::string(dir_template) + "/notifier-" + std::to_string(i) + ".toml";
    std::ofstream(config) << "[notifier]\nbroker = \"" << c.broker
                          << "\"\nmetrics_listen = \"\"\nlog_level = \"warn\"\n\n"
                          << "[[subscription]]\nname = \"bench\"\ntopic = \"" << topic << "\"\ngroup = \"bench-notifier-"
                          << round << "\"\nurl = \"" << sink.url() << "\"\nconcurrency = " << std::max(1u, share)
                          << "\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";
    if (!notifiers[i].spawn({c.notifier_bin, "--config", config})) return -1;
  }
  for (ChildProcess& notifier : notifiers) {
    if (!notifier.wait_for_line("ready", 30)) {
      std::fprintf(stderr, "callbacks: %s did not start\n", c.notifier_bin.c_str());
      return -1;
    }
  }
  const auto deadline = Clock::now() + std::chrono::seconds(c.max_seconds);
  while (sink.requests() < c.messages && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // poll interval of a bounded wait
  const auto end_ns = Clock::now().time_since_epoch().count();
  const std::uint64_t done = sink.requests();
  const double seconds = static_cast<double>(end_ns - sink.first_request_ns()) / 1e9;
  int code = 0;
  for (ChildProcess& notifier : notifiers) code = std::max(code, notifier.stop());
  std::filesystem::remove_all(dir_template);
  if (done < c.messages || code != 0) {
    std::fprintf(stderr, "callbacks: round %d: %llu of %zu delivered within %d s, notifier exit %d\n", round,
                 static_cast<unsigned long long>(done), c.messages, c.max_seconds, code);
    return -1;
  }
  return static_cast<double>(done) / seconds;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int run_callbacks(const CallbacksConfig& c) {
  HttpSink sink;
  std::printf("callbacks: receiver %s (answers 204 at once); %zu signed POSTs of %zu bytes per round, "
              "concurrency %u, %d rounds alternating wrk and %u notifier process%s\n",
              sink.url().c_str(), c.messages, c.size, c.concurrency, c.rounds, c.processes,
              c.processes == 1 ? "" : "es of one group");

  // The backlog first, so the notifier's rate is not bounded by a producer; each round
  // delivers it again through a new group.
  client::ClientOptions options;
  options.broker = c.broker;
  client::Admin admin(options);
  const std::string topic = "bench.callbacks";
  if (auto r = admin.create_topic(topic, 1, std::chrono::seconds(10)); !r && r.error().code != ErrorCode::kTopicExists) {
    std::fprintf(stderr, "callbacks: create topic: %s\n", r.error().message.c_str());
    return 1;
  }
  {
    client::Producer::Options po;
    po.broker = c.broker;
    client::Producer producer(po);
    const std::string body(c.size, 'x');
    for (std::size_t i = 0; i < c.messages; ++i)
      producer.send_async(topic, client::Message{"", {}, body}, [](const Result<client::SendReceipt>&) {});
    if (auto st = producer.flush(std::chrono::seconds(c.max_seconds)); !st) {
      std::fprintf(stderr, "callbacks: produce: %s\n", st.error().message.c_str());
      return 1;
    }
  }

  // Rounds alternate so that both see the same machine: a shared one is noisy.
  std::vector<double> baselines, rates;
  for (int round = 1; round <= c.rounds; ++round) {
    const double baseline = wrk_rate(sink.url(), c.concurrency, 5);
    if (baseline <= 0) {
      std::printf("callbacks: wrk not found or failed; no baseline (install the wrk package)\n");
    } else {
      baselines.push_back(baseline);
    }
    const double rate = notifier_round(c, sink, topic, round);
    if (rate < 0) return 1;
    rates.push_back(rate);
    std::printf("callbacks: round %d: wrk %.0f req/s, notifier %.0f callbacks/s\n", round, baseline, rate);
  }
  std::printf("callbacks: median %.0f callbacks/s", median(rates));
  if (!baselines.empty())
    std::printf(", wrk median %.0f req/s: %.2fx the receiver's capacity", median(baselines),
                median(rates) / median(baselines));
  std::printf("\n");
  return 0;
}

}  // namespace txmq::bench
