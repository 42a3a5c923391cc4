// txmq-bench: durable produce throughput and confirm latency over one connection,
// printed beside a raw LMDB baseline measured in the same run.
//
//   txmq-bench --broker-bin build/broker/txmq-broker          # starts its own broker
//   txmq-bench --broker 127.0.0.1:7411 --topic bench          # uses a running one
//   txmq-bench --broker 127.0.0.1:7411 --tls-ca ca.pem        # ...that serves TLS
//
// Every run is bounded: --messages caps the count and --max-seconds the time.

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "callbacks.h"
#include "child_process.h"
#include "lmdb_baseline.h"
#include "common/address.h"
#include "common/command_line.h"
#include "txmq/client.h"

namespace {

using Clock = std::chrono::steady_clock;
using txmq::client::Millis;

// A broker started for the run in a temporary directory, stopped (SIGTERM) at exit.
struct SpawnedBroker {
  txmq::bench::ChildProcess process;
  std::string address;
  std::string metrics_address;  // empty when the broker serves no metrics
  std::string dir;

  bool start(const std::string& bin, const std::vector<std::string>& extra) {
    char tmpl[] = "/tmp/txmq-bench-XXXXXX";
    if (!mkdtemp(tmpl)) return false;
    dir = tmpl;
    std::vector<std::string> args = {bin, "--data", dir + "/data", "--listen", "127.0.0.1:0",
                                     "--metrics-listen", "127.0.0.1:0", "--log-level", "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    if (!process.spawn(args)) return false;
    // "metrics on" (unless metrics are off) comes first; after "listening on" the broker
    // prints nothing more to stdout, and the pipe stays open unread.
    while (auto line = process.next_line()) {
      if (line->starts_with("metrics on ")) metrics_address = line->substr(11);
      if (line->starts_with("listening on ")) {
        address = line->substr(13);
        return true;
      }
    }
    return false;
  }
  pid_t pid() const { return process.pid(); }

  ~SpawnedBroker() {
    process.stop();
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
};

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

struct ProduceConfig {
  std::string topic;
  std::size_t messages, size, batch, in_flight;
  double max_seconds;
  bool progress;
};

struct ProduceResult {
  std::size_t confirmed = 0;
  double seconds = 0;
  double rate = 0;
  double p50_ms = 0, p99_ms = 0, p999_ms = 0;
  std::string error;  // empty on success
};

ProduceResult run_produce(const txmq::client::ClientOptions& co, const ProduceConfig& cfg) {
  ProduceResult out;
  {
    txmq::client::Admin admin(co);
    auto created = admin.create_topic(cfg.topic, 1, Millis(10000));
    if (!created && created.error().code != txmq::ErrorCode::kTopicExists) {
      out.error = created.error().describe();
      return out;
    }
  }
  txmq::client::Producer::Options po;
  static_cast<txmq::client::ClientOptions&>(po) = co;
  po.max_batch_messages = cfg.batch;
  po.max_batch_bytes = 4u << 20;
  // The producer blocks send_async past this many buffered bytes (a message counts as its
  // body plus 64 bytes), which bounds what is in flight and so what latency measures:
  // the pipeline, not an ever-growing queue.
  po.max_buffered_bytes = cfg.in_flight * (cfg.size + 64);
  txmq::client::Producer producer(po);

  std::vector<double> latencies_us(cfg.messages);
  std::atomic<std::size_t> confirmed{0}, failed{0};
  std::string body(cfg.size, 'x');
  const auto start = Clock::now();
  const auto stop_at = start + std::chrono::duration<double>(cfg.max_seconds);
  std::size_t sent = 0;
  const std::size_t report_every = std::max<std::size_t>(cfg.messages / 10, 1);
  for (; sent < cfg.messages && Clock::now() < stop_at; ++sent) {
    const auto t0 = Clock::now();
    producer.send_async(cfg.topic, txmq::client::Message{{}, {}, body, -1},
                        [&, i = sent, t0](const txmq::Result<txmq::client::SendReceipt>& r) {
                          latencies_us[i] = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
                          (r ? confirmed : failed).fetch_add(1, std::memory_order_relaxed);
                        });
    if (cfg.progress && (sent + 1) % report_every == 0)
      std::fprintf(stderr, "  sent %zu, confirmed %zu\n", sent + 1, confirmed.load());
  }
  auto st = producer.flush(Millis(120000));
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  latencies_us.resize(sent);
  if (!st || failed > 0) {
    out.error = std::to_string(failed.load()) + " failed; flush: " + (st ? "ok" : st.error().describe());
    return out;
  }
  out.confirmed = confirmed;
  out.rate = static_cast<double>(out.confirmed) / out.seconds;
  out.p50_ms = percentile(latencies_us, 0.50) / 1000;
  out.p99_ms = percentile(latencies_us, 0.99) / 1000;
  out.p999_ms = percentile(latencies_us, 0.999) / 1000;
  return out;
}

struct ConsumeResult {
  std::size_t acked = 0;
  double seconds = 0;
  double rate = 0;
  std::string error;
};

// Consumes `messages` with one consumer (a fresh group), acking each, and waits until the
// broker confirmed every ack durable.
ConsumeResult run_consume(const txmq::client::ClientOptions& connection, const std::string& topic,
                          std::size_t messages, std::uint32_t window, double max_seconds) {
  ConsumeResult out;
  txmq::client::Consumer::Options co;
  static_cast<txmq::client::ClientOptions&>(co) = connection;
  co.topic = topic;
  co.group = "bench-" + std::to_string(Clock::now().time_since_epoch().count());
  co.window = window;
  std::atomic<std::size_t> received{0};
  std::mutex mu;
  std::condition_variable cv;
  const auto start = Clock::now();
  txmq::client::Consumer consumer(co, [&](txmq::client::Consumer& self, const txmq::client::Delivery& d) {
    self.ack(d);
    if (received.fetch_add(1, std::memory_order_relaxed) + 1 == messages) cv.notify_all();
  });
  if (auto st = consumer.wait_subscribed(Millis(10000)); !st) {
    out.error = st.error().describe();
    return out;
  }
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::duration<double>(max_seconds), [&] { return received.load() >= messages; });
  }
  if (auto st = consumer.flush_acks(Millis(60000)); !st) {
    out.error = st.error().describe();
    return out;
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  out.acked = received.load();
  out.rate = static_cast<double>(out.acked) / out.seconds;
  return out;
}

struct TxnResult {
  std::size_t committed = 0;
  double seconds = 0;
  double rate = 0;
  double p50_ms = 0, p99_ms = 0;
  std::string error;
};

// What both transaction pipelines count: each one's latency by index, how many are done,
// and the first failure. done() from any thread (the producer's I/O thread).
class TxnTally {
 public:
  explicit TxnTally(std::size_t count) : latencies_ms_(count), start_(Clock::now()) {}

  Clock::time_point start() const { return start_; }

  // Transaction i, begun at t0, is over: committed (ok) or not, and why.
  void done(std::size_t i, Clock::time_point t0, bool ok, const std::string& why) {
    latencies_ms_[i] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::lock_guard lock(mu_);
    ++done_;
    if (!ok && failed_++ == 0) first_error_ = why;
    cv_.notify_all();
  }

  // Waits until fewer than `limit` of the `started` are still open.
  void wait_open_below(std::size_t started, std::size_t limit) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return started - done_ < limit; });
  }

  // Waits (up to 120 s) for all `started` to be done; the run's figures.
  TxnResult result(std::size_t started) {
    TxnResult out;
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(120), [&] { return done_ == started; });
      if (done_ != started) out.error = "transactions did not finish";
      if (failed_) out.error = std::to_string(failed_) + " failed: " + first_error_;
      out.committed = started - failed_;
    }
    out.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    out.rate = static_cast<double>(out.committed) / out.seconds;
    latencies_ms_.resize(started);
    out.p50_ms = percentile(latencies_ms_, 0.5);
    out.p99_ms = percentile(latencies_ms_, 0.99);
    return out;
  }

 private:
  std::vector<double> latencies_ms_;  // written by index, each once, before done_ counts it
  const Clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t done_ = 0, failed_ = 0;  // guarded by mu_
  std::string first_error_;            // guarded by mu_
};

txmq::client::TransactionalProducer::Options bench_txn_options(const txmq::client::ClientOptions& connection) {
  txmq::client::TransactionalProducer::Options to;
  static_cast<txmq::client::ClientOptions&>(to) = connection;
  to.producer_group = "bench-transactions";
  return to;
}

// Prepares and commits `count` transactions of one message each through
// TransactionalProducer::send_in_transaction_async, whose workers run the (empty) local
// transactions and which keeps up to `in_flight` open at once; latency is from the call to
// done with the commit confirmed.
TxnResult run_transactions_api(const txmq::client::ClientOptions& connection, const std::string& topic,
                               std::size_t count, std::size_t size, std::size_t in_flight, std::size_t executor_threads,
                               double max_seconds) {
  auto to = bench_txn_options(connection);
  to.max_in_flight_transactions = in_flight;
  to.executor_threads = executor_threads;
  txmq::client::TransactionalProducer producer(
      to, [](const txmq::client::TransactionCheck&) { return txmq::client::LocalTransactionState::kCommit; });
  TxnTally tally(count);
  std::string body(size, 't');
  const auto stop_at = tally.start() + std::chrono::duration<double>(max_seconds);
  std::size_t started = 0;
  for (; started < count && Clock::now() < stop_at; ++started) {
    const auto t0 = Clock::now();
    producer.send_in_transaction_async(
        topic, txmq::client::Message{{}, {}, body, -1},
        [](std::uint64_t) { return txmq::client::LocalTransactionState::kCommit; },
        [&tally, i = started, t0](const txmq::Result<txmq::client::TransactionResult>& r) {
          const bool ok = r && r->state == txmq::client::TxnState::kCommitted;
          tally.done(i, t0, ok, ok ? "" : r ? "not committed: " + r->why_prepared : r.error().describe());
        });
  }
  return tally.result(started);
}

// The pipeline the bench used before send_in_transaction_async, kept (--txn-pipeline
// manual) to compare with it: prepare_async, then end_async from its callback on the I/O
// thread, `in_flight` open at once.
TxnResult run_transactions_manual(const txmq::client::ClientOptions& connection, const std::string& topic,
                                  std::size_t count, std::size_t size, std::size_t in_flight, double max_seconds) {
  txmq::client::TransactionalProducer producer(
      bench_txn_options(connection),
      [](const txmq::client::TransactionCheck&) { return txmq::client::LocalTransactionState::kCommit; });
  TxnTally tally(count);
  std::string body(size, 't');
  const auto stop_at = tally.start() + std::chrono::duration<double>(max_seconds);
  std::size_t started = 0;
  for (; started < count && Clock::now() < stop_at; ++started) {
    tally.wait_open_below(started, in_flight);
    const auto t0 = Clock::now();
    producer.prepare_async(topic, txmq::client::Message{{}, {}, body, -1},
                           [&, i = started, t0](const txmq::Result<std::uint64_t>& id) {
                             if (!id) return tally.done(i, t0, false, id.error().describe());
                             producer.end_async(*id, txmq::client::LocalTransactionState::kCommit,
                                                [&tally, i, t0](const txmq::Result<txmq::client::TransactionResult>& r) {
                                                  const bool ok = r && r->state == txmq::client::TxnState::kCommitted;
                                                  tally.done(i, t0, ok, r ? "not committed" : r.error().describe());
                                                });
                           });
  }
  return tally.result(started);
}

// A process's anonymous resident memory (heap and stacks: not LMDB's file-backed map)
// and its file-backed resident memory, in bytes, from /proc/PID/status.
std::pair<std::uint64_t, std::uint64_t> process_rss(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "r");
  std::uint64_t anon = 0, file = 0;
  if (!f) return {0, 0};
  char line[256];
  while (std::fgets(line, sizeof(line), f)) {
    unsigned long long kb;
    if (std::sscanf(line, "RssAnon: %llu kB", &kb) == 1) anon = kb * 1024;
    if (std::sscanf(line, "RssFile: %llu kB", &kb) == 1) file = kb * 1024;
  }
  std::fclose(f);
  return {anon, file};
}

void print_produce(const char* label, const ProduceResult& r, std::size_t size) {
  std::printf("%s: %zu msgs in %.2f s = %.0f msg/s, %.1f MB/s; confirm latency p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms\n",
              label, r.confirmed, r.seconds, r.rate, r.rate * static_cast<double>(size) / 1e6, r.p50_ms, r.p99_ms,
              r.p999_ms);
}

// Scrapes a metrics endpoint every second while a run is going, as Prometheus would.
class Scraper {
 public:
  explicit Scraper(std::string address) : address_(std::move(address)) {
    thread_ = std::thread([this] {
      std::unique_lock lock(mu_);
      while (!cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stop_; })) {
        lock.unlock();
        scrape();
        lock.lock();
      }
    });
  }
  ~Scraper() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  int scrapes() const { return scrapes_; }

 private:
  void scrape() {
    // The broker prints the address it bound: an IPv4 or IPv6 literal, never a name.
    auto hp = txmq::common::parse_host_port(address_);
    sockaddr_storage addr{};
    if (!hp || (uv_ip4_addr(hp->host.c_str(), hp->port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
                uv_ip6_addr(hp->host.c_str(), hp->port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0))
      return;
    int fd = socket(addr.ss_family, SOCK_STREAM, 0);
    const socklen_t len = addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0) {
      const char req[] = "GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n";
      if (write(fd, req, sizeof(req) - 1) > 0) {
        char buf[16384];
        while (read(fd, buf, sizeof(buf)) > 0) {
        }
        ++scrapes_;
      }
    }
    close(fd);
  }

  std::string address_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::atomic<int> scrapes_{0};
};

// Opens connections one after another, each up to its first answer (TCP, TLS, the hello and
// its authentication, one ListTopics), and prints the set-up time's median and p99.
int run_connects(const txmq::client::ClientOptions& options, int rounds) {
  std::vector<double> ms;
  for (int i = 0; i < rounds; ++i) {
    const auto start = Clock::now();
    txmq::client::Admin admin(options);
    if (auto listed = admin.list_topics(Millis(10000)); !listed) {
      std::fprintf(stderr, "txmq-bench: connection %d: %s\n", i + 1, listed.error().describe().c_str());
      return 1;
    }
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::printf("connection set-up (%s%s, %d connections): median %.2f ms, p99 %.2f ms\n",
              options.tls.enabled ? "TLS" : "plain", options.user.empty() ? "" : " + SCRAM-SHA-256", rounds,
              percentile(ms, 0.5), percentile(ms, 0.99));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"txmq-bench: durable produce throughput and latency"};
  std::string broker = "127.0.0.1:7411", broker_bin;
  ProduceConfig cfg{"bench", 1'000'000, 100, 1000, 20'000, 60, true};
  std::size_t baseline_per_txn = 1000;
  int compare_rounds = 0;
  bool skip_baseline = false;
  std::size_t consume_messages = 0;
  std::uint32_t window = 1000;
  bool report_rss = false;
  // As many transactions open as produce has messages in flight, so that the two rates are
  // compared at the same concurrency: each transaction waits for two group commits (prepare,
  // then end), so with fewer open the rate is bounded by commit latency, not by the broker.
  std::size_t transactions = 0, txn_in_flight = 20'000;
  std::size_t txn_executor_threads = txmq::client::TransactionalProducer::Options{}.executor_threads;
  std::vector<std::string> broker_args;
  app.add_option("--broker", broker, "broker host:port, a.b.c.d:port or [v6]:port (ignored with --broker-bin)");
  app.add_option("--broker-bin", broker_bin, "start this txmq-broker binary in a temp dir for the run");
  app.add_option("--broker-arg", broker_args, "extra argument for the started broker (repeatable)");
  // TLS for the bench's clients (not for --callbacks' notifier), as the txmq tool's flags.
  // A broker started with --broker-bin serves TLS when given a config with a [tls] table:
  // --broker-arg=--config=FILE.
  txmq::client::TlsOptions tls;
  app.add_flag("--tls", tls.enabled, "connect with TLS (implied by --tls-ca or --tls-cert)");
  app.add_option("--tls-ca", tls.ca_file,
                 "PEM file of the CA that signed the broker's certificate (default: the system's CAs)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", tls.cert_file, "PEM client certificate, for a broker that asks for one")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", tls.key_file, "PEM private key of --tls-cert")->check(CLI::ExistingFile);
  // Authentication for a broker with auth.enabled (SCRAM-SHA-256), as the txmq tool's.
  std::string user, password_file;
  app.add_option("--user", user, "user to authenticate as (SCRAM-SHA-256)");
  app.add_option("--password-file", password_file, "file whose first line is --user's password")
      ->check(CLI::ExistingFile);
  int connect_rounds = 0;
  app.add_option("--connect-rounds", connect_rounds,
                 "instead of produce: open this many connections one after another (TCP, TLS and the hello "
                 "with its authentication) and print the set-up time's median and p99")
      ->check(CLI::Range(1, 10000));
  app.add_option("--topic", cfg.topic, "topic to produce to (created if missing)");
  app.add_option("-n,--messages", cfg.messages, "messages to send")->check(CLI::Range(1ul, 100'000'000ul));
  app.add_option("-s,--size", cfg.size, "message body size in bytes");
  app.add_option("--batch", cfg.batch, "messages per produce request");
  app.add_option("--in-flight", cfg.in_flight, "messages sent but not yet confirmed, at most (approximate)");
  app.add_option("--max-seconds", cfg.max_seconds, "stop sending after this long");
  app.add_option("--baseline-per-txn", baseline_per_txn, "LMDB baseline: puts per durable transaction");
  app.add_flag("--skip-baseline", skip_baseline, "do not run the raw LMDB baseline");
  app.add_option("--compare-metrics", compare_rounds,
                 "with --broker-bin: run N rounds each of metrics off and on (scraped every second), "
                 "alternating, and print both medians");
  app.add_option("--consume", consume_messages,
                 "after producing, consume and ack this many (0: skip) with one consumer of a fresh group");
  app.add_option("--window", window, "the consumer's window of unacknowledged deliveries");
  app.add_flag("--report-rss", report_rss,
               "with --broker-bin: print the broker's resident memory outside LMDB's map after producing and "
               "while consuming");
  app.add_option("--transactions", transactions,
                 "after producing, prepare and commit this many transactions (one message each)");
  app.add_option("--txn-in-flight", txn_in_flight, "transactions open at once (default 20000, like --in-flight)");
  app.add_option("--txn-executor-threads", txn_executor_threads,
                 "with --txn-pipeline api: the producer's executor_threads (its default unless given)");
  std::string txn_pipeline = "api";
  int txn_compare_rounds = 0;
  app.add_option("--txn-pipeline", txn_pipeline,
                 "with --transactions: api (send_in_transaction_async) or manual (prepare_async, then end_async "
                 "from its callback)")
      ->check(CLI::IsMember({"api", "manual"}));
  app.add_option("--txn-compare-rounds", txn_compare_rounds,
                 "with --transactions: N rounds of each pipeline, alternating, and the ratio of their medians");
  txmq::bench::CallbacksConfig callbacks;
  callbacks.messages = 0;
  app.add_option("--callbacks", callbacks.messages,
                 "instead of produce: deliver this many messages through txmq-notifier to a local 204 receiver, "
                 "beside wrk's rate against the same receiver");
  app.add_option("--notifier-bin", callbacks.notifier_bin, "with --callbacks: the txmq-notifier binary")
      ->check(CLI::ExistingFile);
  app.add_option("--callback-concurrency", callbacks.concurrency,
                 "with --callbacks: requests in flight (the notifier's concurrency and wrk's connections)");
  app.add_option("--callback-rounds", callbacks.rounds, "with --callbacks: rounds of wrk, then the notifier")
      ->check(CLI::Range(1, 20));
  app.add_option("--callback-processes", callbacks.processes,
                 "with --callbacks: notifier processes of one consumer group, splitting the concurrency")
      ->check(CLI::Range(1, 16));
  if (auto code = txmq::common::parse_command_line(app, argc, argv)) return *code;
  // A CA or a certificate means TLS: nobody gives one to talk in plain text.
  if (!tls.ca_file.empty() || !tls.cert_file.empty()) tls.enabled = true;
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    std::fprintf(stderr, "txmq-bench: --tls-cert and --tls-key go together\n");
    return 2;
  }
  if (tls.enabled && callbacks.messages > 0) {
    std::fprintf(stderr, "txmq-bench: --callbacks runs its notifier without TLS; drop the --tls flags\n");
    return 2;
  }
  std::string password;
  if (!user.empty()) {
    std::ifstream in(password_file);
    if (password_file.empty() || !std::getline(in, password) || password.empty()) {
      std::fprintf(stderr, "txmq-bench: --user needs --password-file with the password on its first line\n");
      return 2;
    }
  }
  // Every client the bench makes connects to `address` this way.
  auto connection_to = [&tls, &user, &password](const std::string& address) {
    txmq::client::ClientOptions o;
    o.broker = address;
    o.client_name = "txmq-bench";
    o.tls = tls;
    o.user = user;
    o.password = password;
    return o;
  };

  if (compare_rounds > 0) {
    if (broker_bin.empty()) {
      std::fprintf(stderr, "txmq-bench: --compare-metrics needs --broker-bin\n");
      return 2;
    }
    cfg.progress = false;
    std::vector<double> off, on;
    for (int round = 0; round < compare_rounds; ++round) {
      for (bool metrics : {false, true}) {
        std::vector<std::string> args = broker_args;
        if (!metrics) args.push_back("--no-metrics");
        SpawnedBroker b;
        if (!b.start(broker_bin, args)) {
          std::fprintf(stderr, "txmq-bench: could not start %s\n", broker_bin.c_str());
          return 1;
        }
        std::unique_ptr<Scraper> scraper;
        if (metrics) scraper = std::make_unique<Scraper>(b.metrics_address);
        auto r = run_produce(connection_to(b.address), cfg);
        int scrapes = scraper ? scraper->scrapes() : 0;
        scraper.reset();
        if (!r.error.empty()) {
          std::fprintf(stderr, "txmq-bench: %s\n", r.error.c_str());
          return 1;
        }
        (metrics ? on : off).push_back(r.rate);
        std::printf("round %d, metrics %-3s: %.0f msg/s (p99 %.2f ms, %d scrapes)\n", round + 1,
                    metrics ? "on" : "off", r.rate, r.p99_ms, scrapes);
      }
    }
    double off_median = percentile(off, 0.5), on_median = percentile(on, 0.5);
    std::printf("metrics off median %.0f msg/s, on median %.0f msg/s, difference %+.1f%%\n", off_median,
                on_median, (on_median - off_median) / off_median * 100);
    return 0;
  }

  SpawnedBroker spawned;
  if (!broker_bin.empty()) {
    if (!spawned.start(broker_bin, broker_args)) {
      std::fprintf(stderr, "txmq-bench: could not start %s\n", broker_bin.c_str());
      return 1;
    }
    broker = spawned.address;
  }
  if (callbacks.messages > 0) {
    if (callbacks.notifier_bin.empty()) {
      std::fprintf(stderr, "txmq-bench: --callbacks needs --notifier-bin\n");
      return 2;
    }
    callbacks.broker = broker;
    callbacks.size = cfg.size;
    callbacks.max_seconds = cfg.max_seconds;
    return txmq::bench::run_callbacks(callbacks);
  }
  if (connect_rounds > 0) return run_connects(connection_to(broker), connect_rounds);
  std::printf("txmq-bench: producing %zu x %zu-byte messages to %s (topic %s, batch %zu, in flight %zu)\n",
              cfg.messages, cfg.size, broker.c_str(), cfg.topic.c_str(), cfg.batch, cfg.in_flight);
  const auto connection = connection_to(broker);
  auto r = run_produce(connection, cfg);
  if (!r.error.empty()) {
    std::fprintf(stderr, "txmq-bench: %s\n", r.error.c_str());
    return 1;
  }
  print_produce("produce (durable)", r, cfg.size);
  if (report_rss && spawned.pid() > 0) {
    auto [anon, file] = process_rss(spawned.pid());
    std::printf("broker memory with a backlog of %zu: anonymous %.1f MB (LMDB pages mapped: %.1f MB)\n", r.confirmed,
                static_cast<double>(anon) / 1e6, static_cast<double>(file) / 1e6);
  }
  if (transactions > 0) {
    auto run = [&](const std::string& pipeline) {
      auto t = pipeline == "manual"
                   ? run_transactions_manual(connection, cfg.topic, transactions, cfg.size, txn_in_flight, cfg.max_seconds)
                   : run_transactions_api(connection, cfg.topic, transactions, cfg.size, txn_in_flight,
                                          txn_executor_threads, cfg.max_seconds);
      if (!t.error.empty()) {
        std::fprintf(stderr, "txmq-bench: transactions (%s): %s\n", pipeline.c_str(), t.error.c_str());
        std::exit(1);
      }
      std::printf("transactions via %s (prepare + commit, %zu open): %zu in %.2f s = %.0f txn/s (%.2fx the produce "
                  "rate); latency p50 %.2f ms, p99 %.2f ms\n",
                  pipeline == "manual" ? "prepare_async/end_async" : "send_in_transaction_async", txn_in_flight,
                  t.committed, t.seconds, t.rate, t.rate / r.rate, t.p50_ms, t.p99_ms);
      std::fflush(stdout);
      return t.rate;
    };
    if (txn_compare_rounds > 0) {
      // Alternating, so that the broker's growing store and the machine's other load fall
      // on both pipelines alike.
      std::vector<double> manual, api;
      for (int round = 0; round < txn_compare_rounds; ++round) {
        manual.push_back(run("manual"));
        api.push_back(run("api"));
      }
      const double m = percentile(manual, 0.5), a = percentile(api, 0.5);
      std::printf("transactions, median of %d rounds each: send_in_transaction_async %.0f txn/s, "
                  "prepare_async/end_async %.0f txn/s: ratio %.2f\n",
                  txn_compare_rounds, a, m, a / m);
    } else {
      run(txn_pipeline);
    }
  }
  if (consume_messages > 0) {
    auto c = run_consume(connection, cfg.topic, std::min(consume_messages, r.confirmed), window, cfg.max_seconds);
    if (!c.error.empty()) {
      std::fprintf(stderr, "txmq-bench: consume: %s\n", c.error.c_str());
      return 1;
    }
    std::printf("consume + durable ack (window %u): %zu msgs in %.2f s = %.0f msg/s (%.2fx the produce rate)\n",
                window, c.acked, c.seconds, c.rate, c.rate / r.rate);
    if (report_rss && spawned.pid() > 0) {
      auto [anon, file] = process_rss(spawned.pid());
      std::printf("broker memory after consuming: anonymous %.1f MB (LMDB pages mapped: %.1f MB)\n",
                  static_cast<double>(anon) / 1e6, static_cast<double>(file) / 1e6);
    }
  }

  if (!skip_baseline) {
    char tmpl[] = "/tmp/txmq-bench-lmdb-XXXXXX";
    std::string dir = mkdtemp(tmpl) ? tmpl : "/tmp/txmq-bench-lmdb";
    auto base = txmq::bench::run_lmdb_baseline(dir, r.confirmed, cfg.size, baseline_per_txn);
    std::filesystem::remove_all(dir);
    if (!base.error.empty()) {
      std::fprintf(stderr, "txmq-bench: baseline failed: %s\n", base.error.c_str());
      return 1;
    }
    std::printf("raw LMDB baseline (%zu puts per durable txn): %.0f msg/s\n", baseline_per_txn,
                base.messages_per_second);
    std::printf("ratio txmq/baseline: %.2f\n", r.rate / base.messages_per_second);
  }
  return 0;
}
