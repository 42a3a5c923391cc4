// txmq-bench: durable produce throughput and confirm latency over one connection,
// printed beside a raw LMDB baseline measured in the same run.
//
//   txmq-bench --broker-bin build/broker/txmq-broker          # starts its own broker
//   txmq-bench --broker 127.0.0.1:7411 --topic bench          # uses a running one
//
// Every run is bounded: --messages caps the count and --max-seconds the time.

#include <CLI/CLI.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "lmdb_baseline.h"
#include "txmq/client.h"

namespace {

using Clock = std::chrono::steady_clock;
using txmq::client::Millis;

// A broker started for the run in a temporary directory, killed at exit.
struct SpawnedBroker {
  pid_t pid = -1;
  std::string address;
  std::string dir;

  bool start(const std::string& bin, const std::vector<std::string>& extra) {
    char tmpl[] = "/tmp/txmq-bench-XXXXXX";
    if (!mkdtemp(tmpl)) return false;
    dir = tmpl;
    int out[2];
    if (pipe(out) != 0) return false;
    pid = fork();
    if (pid == 0) {
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      std::vector<std::string> args = {bin, "--data", dir + "/data", "--listen", "127.0.0.1:0", "--log-level", "warn"};
      args.insert(args.end(), extra.begin(), extra.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    FILE* f = fdopen(out[0], "r");
    char line[256];
    while (std::fgets(line, sizeof(line), f)) {
      std::string s(line);
      if (s.rfind("listening on ", 0) == 0) {
        address = s.substr(13);
        while (!address.empty() && (address.back() == '\n' || address.back() == '\r')) address.pop_back();
        // Keep the pipe open but unread: the broker prints nothing more to stdout.
        return true;
      }
    }
    return false;
  }

  ~SpawnedBroker() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
};

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"txmq-bench: durable produce throughput and latency"};
  std::string broker = "127.0.0.1:7411", broker_bin, topic = "bench";
  std::size_t messages = 1'000'000, size = 100, batch = 1000, baseline_per_txn = 1000, in_flight = 20'000;
  double max_seconds = 60;
  bool skip_baseline = false;
  std::vector<std::string> broker_args;
  app.add_option("--broker", broker, "broker HOST:PORT (ignored with --broker-bin)");
  app.add_option("--broker-bin", broker_bin, "start this txmq-broker binary in a temp dir for the run");
  app.add_option("--broker-arg", broker_args, "extra argument for the started broker (repeatable)");
  app.add_option("--topic", topic, "topic to produce to (created if missing)");
  app.add_option("-n,--messages", messages, "messages to send")->check(CLI::Range(1ul, 100'000'000ul));
  app.add_option("-s,--size", size, "message body size in bytes");
  app.add_option("--batch", batch, "messages per produce request");
  app.add_option("--in-flight", in_flight, "messages sent but not yet confirmed, at most (approximate)");
  app.add_option("--max-seconds", max_seconds, "stop sending after this long");
  app.add_option("--baseline-per-txn", baseline_per_txn, "LMDB baseline: puts per durable transaction");
  app.add_flag("--skip-baseline", skip_baseline, "do not run the raw LMDB baseline");
  CLI11_PARSE(app, argc, argv);

  SpawnedBroker spawned;
  if (!broker_bin.empty()) {
    if (!spawned.start(broker_bin, broker_args)) {
      std::fprintf(stderr, "txmq-bench: could not start %s\n", broker_bin.c_str());
      return 1;
    }
    broker = spawned.address;
  }

  txmq::client::ClientOptions co;
  co.broker = broker;
  co.client_name = "txmq-bench";
  {
    txmq::client::Admin admin(co);
    auto created = admin.create_topic(topic, 1, Millis(10000));
    if (!created && created.error().code != txmq::ErrorCode::kTopicExists) {
      std::fprintf(stderr, "txmq-bench: %s\n", created.error().describe().c_str());
      return 1;
    }
  }

  txmq::client::Producer::Options po;
  static_cast<txmq::client::ClientOptions&>(po) = co;
  po.max_batch_messages = batch;
  po.max_batch_bytes = 4u << 20;
  // The producer blocks send_async past this many buffered bytes (a message counts as its
  // body plus 64 bytes), which bounds what is in flight and so what latency measures:
  // the pipeline, not an ever-growing queue.
  po.max_buffered_bytes = in_flight * (size + 64);
  txmq::client::Producer producer(po);

  std::vector<double> latencies_us(messages);
  std::atomic<std::size_t> confirmed{0}, failed{0};
  std::string body(size, 'x');
  std::printf("txmq-bench: producing %zu x %zu-byte messages to %s (topic %s, batch %zu, in flight %zu)\n",
              messages, size, broker.c_str(), topic.c_str(), batch, in_flight);
  const auto start = Clock::now();
  const auto stop_at = start + std::chrono::duration<double>(max_seconds);
  std::size_t sent = 0;
  std::size_t report_every = std::max<std::size_t>(messages / 10, 1);
  for (; sent < messages && Clock::now() < stop_at; ++sent) {
    const auto t0 = Clock::now();
    producer.send_async(topic, txmq::client::Message{{}, {}, body, -1},
                        [&, i = sent, t0](const txmq::Result<txmq::client::SendReceipt>& r) {
                          latencies_us[i] = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
                          if (r)
                            confirmed.fetch_add(1, std::memory_order_relaxed);
                          else
                            failed.fetch_add(1, std::memory_order_relaxed);
                        });
    if ((sent + 1) % report_every == 0)
      std::fprintf(stderr, "  sent %zu, confirmed %zu\n", sent + 1, confirmed.load());
  }
  auto st = producer.flush(Millis(120000));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  latencies_us.resize(sent);
  if (!st || failed > 0) {
    std::fprintf(stderr, "txmq-bench: %zu failed, flush: %s\n", failed.load(),
                 st ? "ok" : st.error().describe().c_str());
    return 1;
  }
  const double rate = static_cast<double>(confirmed) / seconds;
  double p50 = percentile(latencies_us, 0.50), p99 = percentile(latencies_us, 0.99),
         p999 = percentile(latencies_us, 0.999);
  std::printf("produce (durable): %zu msgs in %.2f s = %.0f msg/s, %.1f MB/s; confirm latency p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n",
              confirmed.load(), seconds, rate, rate * static_cast<double>(size) / 1e6, p50 / 1000, p99 / 1000,
              p999 / 1000);

  if (!skip_baseline) {
    char tmpl[] = "/tmp/txmq-bench-lmdb-XXXXXX";
    std::string dir = mkdtemp(tmpl) ? tmpl : "/tmp/txmq-bench-lmdb";
    auto base = txmq::bench::run_lmdb_baseline(dir, confirmed, size, baseline_per_txn);
    std::filesystem::remove_all(dir);
    if (!base.error.empty()) {
      std::fprintf(stderr, "txmq-bench: baseline failed: %s\n", base.error.c_str());
      return 1;
    }
    std::printf("raw LMDB baseline (%zu puts per durable txn): %.0f msg/s\n", baseline_per_txn,
                base.messages_per_second);
    std::printf("ratio txmq/baseline: %.2f\n", rate / base.messages_per_second);
  }
  return 0;
}
