// txmq: the command-line tool for people and scripts.
//
// Exit codes: 0 success; 1 the broker answered with an error, could not be reached (within
// about a second: refused, unreachable, name not found) or a message was not confirmed;
// 2 bad usage. Errors go to stderr as "txmq: Code: message".

#include <CLI/CLI.hpp>

#include <atomic>
#include <csignal>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <algorithm>
#include <mutex>
#include <sstream>
#include <thread>
#include <optional>
#include <string>

#include "common/version.h"
#include "txmq/client.h"

namespace {

using txmq::client::Millis;

// How long the tool waits for a broker it has not reached yet (one that answers slowly
// once connected still gets --request-timeout-ms per request).
constexpr Millis kFirstConnectTimeout{1000};

int fail(const txmq::Error& e) {
  std::cerr << "txmq: " << e.describe() << "\n";
  return 1;
}

std::string broker_address(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("TXMQ_BROKER"); env && *env) return env;
  return std::string(txmq::kDefaultBrokerAddress);
}

std::string format_time_ms(std::uint64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// "250ms", "5s", "2m", "1h", or a bare number of milliseconds.
std::optional<Millis> parse_duration(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0) return std::nullopt;
  const long long n = std::stoll(s.substr(0, i));
  const std::string unit = s.substr(i);
  if (unit.empty() || unit == "ms") return Millis(n);
  if (unit == "s") return Millis(n * 1000);
  if (unit == "m") return Millis(n * 60'000);
  if (unit == "h") return Millis(n * 3'600'000);
  return std::nullopt;
}

std::string format_duration(Millis d) {
  auto ms = d.count();
  if (ms % 3'600'000 == 0 && ms) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0 && ms) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0 && ms) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

// Validates a duration option as CLI11 parses it.
const auto kDuration = CLI::Validator(
    [](std::string& s) { return parse_duration(s) ? std::string() : "not a duration (250ms, 5s, 2m, 1h): " + s; },
    "DURATION");

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

const std::string* find_header(const txmq::client::Delivery& d, std::string_view name) {
  for (const auto& h : d.headers)
    if (h.name == name) return &h.value;
  return nullptr;
}

void print_dead_letter(const txmq::client::Delivery& d, bool detail) {
  auto h = [&](const char* name) {
    const std::string* v = find_header(d, name);
    return v ? *v : std::string("?");
  };
  std::string last_reason;
  for (const auto& hd : d.headers)
    if (hd.name == "txmq-reason") last_reason = hd.value;
  std::printf("%llu  origin=%s deliveries=%s reason=%s  %s\n", static_cast<unsigned long long>(d.offset),
              h("txmq-origin-message-id").c_str(), h("txmq-delivery-count").c_str(),
              last_reason.empty() ? "-" : last_reason.c_str(), detail ? "" : d.body.substr(0, 60).c_str());
  if (!detail) return;
  for (const auto& hd : d.headers) std::printf("  %s: %s\n", hd.name.c_str(), hd.value.c_str());
  std::printf("  key: %s\n  body: %s\n", d.key.c_str(), d.body.c_str());
}

// Reads every message of a group's dead-letter topic, in offset order.
txmq::Result<std::vector<txmq::client::Delivery>> read_dead_letters(txmq::client::Admin& admin, const std::string& group,
                                                                    std::size_t max, Millis timeout) {
  std::vector<txmq::client::Delivery> out;
  std::uint64_t from = 0;
  while (out.size() < max) {
    auto batch = admin.fetch(txmq::client::dead_letter_topic(group), 0, from,
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

}  // namespace

int main(int argc, char** argv) {
  // A broker that goes away must surface as an error message, not a silent SIGPIPE exit.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"txmq: talk to a txmq broker"};
  app.set_version_flag("--version", std::string(txmq::kVersion));
  app.require_subcommand(1);
  std::string broker_flag;
  long timeout_ms = 10000;
  app.add_option("--broker", broker_flag, "broker host:port, a.b.c.d:port or [v6]:port (default: $TXMQ_BROKER, else 127.0.0.1:7411)");
  app.add_option("--request-timeout-ms", timeout_ms, "how long to wait for each answer")->check(CLI::PositiveNumber);

  auto options = [&] {
    txmq::client::ClientOptions o;
    o.broker = broker_address(broker_flag);
    o.client_name = "txmq-cli";
    o.request_timeout = Millis(timeout_ms);
    // A person or script waiting on the tool wants "connection refused" or "name not
    // found" now, not after the request timeout; the libraries' default keeps waiting.
    o.first_connect_timeout = std::min(Millis(timeout_ms), kFirstConnectTimeout);
    return o;
  };

  // txmq topic create|list|describe|delete
  auto* topic = app.add_subcommand("topic", "create, list, describe and delete topics");
  topic->require_subcommand(1);
  std::string topic_name;
  std::uint32_t partitions = 1;
  auto* t_create = topic->add_subcommand("create", "create a topic");
  t_create->add_option("name", topic_name, "topic name")->required();
  t_create->add_option("-p,--partitions", partitions, "partition count")->check(CLI::Range(1, 1024));
  std::string retention;
  std::uint64_t retention_bytes = 0;
  t_create->add_option("--retention", retention, "delete messages older than this (default: the broker's)")
      ->check(kDuration);
  t_create->add_option("--retention-bytes", retention_bytes, "keep at most this many bytes per partition");
  auto* t_list = topic->add_subcommand("list", "list topics");
  auto* t_describe = topic->add_subcommand("describe", "show a topic's partitions and offsets");
  t_describe->add_option("name", topic_name, "topic name")->required();
  auto* t_delete = topic->add_subcommand("delete", "delete a topic and all its messages");
  t_delete->add_option("name", topic_name, "topic name")->required();

  // txmq produce TOPIC
  auto* produce = app.add_subcommand("produce", "send each line of standard input as one message");
  std::string key;
  std::vector<std::string> header_flags;
  produce->add_option("topic", topic_name, "topic")->required();
  produce->add_option("-k,--key", key, "message key (picks the partition)");
  produce->add_option("-H,--header", header_flags, "header NAME=VALUE (repeatable)");
  std::string produce_delay;
  std::uint64_t deliver_at_ms = 0;
  produce->add_option("--delay", produce_delay, "deliver no earlier than this after it is stored")->check(kDuration);
  produce->add_option("--deliver-at", deliver_at_ms, "deliver no earlier than this time (ms since the epoch)");

  // txmq consume TOPIC --group G
  auto* consume = app.add_subcommand("consume", "print messages, one body per line, and ack each");
  std::string group;
  long max_messages = 0;
  long idle_timeout_ms = 5000;
  bool show_meta = false;
  consume->add_option("topic", topic_name, "topic")->required();
  consume->add_option("-g,--group", group, "consumer group")->required();
  consume->add_option("-n,--max", max_messages, "exit after this many messages (0: no limit)");
  consume->add_option("--timeout-ms", idle_timeout_ms, "exit when nothing arrived for this long");
  consume->add_flag("--show-meta", show_meta, "prefix each line with partition:offset and delivery count");
  bool nack = false, term = false;
  std::string nack_delay, reason;
  consume->add_flag("--nack", nack, "nack each message instead of acking it (it is retried)");
  consume->add_flag("--term", term, "terminate each message instead of acking it (to the dead-letter topic)");
  consume->add_option("--delay", nack_delay, "with --nack: retry after this instead of the schedule's delay")
      ->check(kDuration);
  consume->add_option("--reason", reason, "with --nack or --term: the reason kept in the message's history");

  // txmq group list|describe|configure
  auto* group_cmd = app.add_subcommand("group", "consumer groups: lag, in flight, retries, dead letters, policy");
  group_cmd->require_subcommand(1);
  group_cmd->add_subcommand("list", "every group, per topic it consumes");
  auto* g_describe = group_cmd->add_subcommand("describe", "one group, with its retry policy");
  g_describe->add_option("group", group, "group")->required();
  auto* g_configure = group_cmd->add_subcommand(
      "configure", "set a group's policy, or with --topic and no group the default of that topic's groups");
  g_configure->add_option("group", group, "group (omit with --topic for the topic's default)");
  std::string mode, ack_wait, delays, exponential;
  std::uint32_t max_deliveries = 0;
  double jitter = -1;
  g_configure->add_option("--topic", topic_name, "the topic whose default to set (without a group)");
  g_configure->add_option("--mode", mode, "shared or ordered")->check(CLI::IsMember({"shared", "ordered"}));
  g_configure->add_option("--ack-wait", ack_wait, "the lease of each delivery")->check(kDuration);
  g_configure->add_option("--max-deliveries", max_deliveries, "dead-letter after this many deliveries");
  g_configure->add_option("--delays", delays, "retry delays, comma-separated: 1s,5s,30s (the last repeats)");
  g_configure->add_option("--exponential", exponential, "INITIAL,FACTOR,MAX, e.g. 1s,2,10m (instead of --delays)");
  g_configure->add_option("--jitter", jitter, "vary each delay by up to this fraction (0.2 = 20%)");

  // txmq dlq list|show|redrive
  auto* dlq = app.add_subcommand("dlq", "inspect and redrive a group's dead letters");
  dlq->require_subcommand(1);
  long dlq_max = 1000;
  std::uint64_t dlq_offset = 0;
  std::vector<std::string> filters;
  double rate = 0;
  bool dry_run = false;
  auto* d_list = dlq->add_subcommand("list", "the group's dead letters: offset, origin, deliveries, last reason");
  d_list->add_option("-g,--group", group, "group")->required();
  d_list->add_option("-n,--max", dlq_max, "list at most this many");
  auto* d_show = dlq->add_subcommand("show", "one dead letter with its whole history");
  d_show->add_option("-g,--group", group, "group")->required();
  d_show->add_option("offset", dlq_offset, "offset in the dead-letter topic")->required();
  auto* d_redrive = dlq->add_subcommand("redrive", "move dead letters back to their origin for this group only");
  d_redrive->add_option("-g,--group", group, "group")->required();
  d_redrive->add_option("--filter", filters,
                        "only letters whose HEADER=VALUE matches (txmq-origin-topic=orders, txmq-reason=...); "
                        "repeatable, all must match");
  d_redrive->add_option("--rate", rate, "at most this many messages per second (0: no limit)");
  d_redrive->add_flag("--dry-run", dry_run, "print what would be redriven and change nothing");
  d_redrive->add_option("-n,--max", dlq_max, "redrive at most this many");

  // txmq txn list|show|commit|rollback
  auto* txn = app.add_subcommand("txn", "transactions: list, inspect, and resolve parked ones");
  txn->require_subcommand(1);
  std::string txn_state_flag;
  std::uint64_t txn_id = 0;
  std::uint32_t txn_max = 100;
  auto* x_list = txn->add_subcommand("list", "transactions, newest first");
  x_list->add_option("--state", txn_state_flag, "prepared, committed, rolled-back or parked")
      ->check(CLI::IsMember({"prepared", "committed", "rolled-back", "parked"}));
  x_list->add_option("-n,--max", txn_max, "list at most this many");
  auto* x_show = txn->add_subcommand("show", "one transaction, with its message while it is open");
  x_show->add_option("id", txn_id, "transaction id")->required();
  auto* x_commit = txn->add_subcommand("commit", "commit a prepared or parked transaction (an operator decision)");
  x_commit->add_option("id", txn_id, "transaction id")->required();
  auto* x_rollback = txn->add_subcommand("rollback", "roll back a prepared or parked transaction (an operator decision)");
  x_rollback->add_option("id", txn_id, "transaction id")->required();

  auto* stats = app.add_subcommand("stats", "show broker statistics");

  CLI11_PARSE(app, argc, argv);
  const Millis timeout(timeout_ms);

  if (topic->parsed()) {
    txmq::client::Admin admin(options());
    if (t_create->parsed()) {
      txmq::client::TopicOptions to;
      to.partitions = partitions;
      if (!retention.empty()) to.retention_ms = static_cast<std::uint64_t>(parse_duration(retention)->count());
      to.retention_bytes = retention_bytes;
      auto r = admin.create_topic(topic_name, to, timeout);
      if (!r) return fail(r.error());
      std::printf("created topic %s with %zu partition(s)\n", r->name.c_str(), r->partitions.size());
    } else if (t_list->parsed()) {
      auto r = admin.list_topics(timeout);
      if (!r) return fail(r.error());
      for (const auto& t : *r) print_topic(t, false);
    } else if (t_describe->parsed()) {
      auto r = admin.describe_topic(topic_name, timeout);
      if (!r) return fail(r.error());
      print_topic(*r, true);
    } else if (t_delete->parsed()) {
      if (auto st = admin.delete_topic(topic_name, timeout); !st) return fail(st.error());
      std::printf("deleted topic %s\n", topic_name.c_str());
    }
    return 0;
  }

  if (produce->parsed()) {
    std::vector<txmq::client::Header> headers;
    for (const auto& h : header_flags) {
      auto eq = h.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::cerr << "txmq: --header takes NAME=VALUE, got '" << h << "'\n";
        return 2;
      }
      headers.push_back({h.substr(0, eq), h.substr(eq + 1)});
    }
    txmq::client::Producer::Options po;
    static_cast<txmq::client::ClientOptions&>(po) = options();
    po.linger = Millis(5);
    txmq::client::Producer producer(po);
    std::mutex mu;
    std::optional<txmq::Error> first_error;
    std::atomic<std::uint64_t> confirmed{0};
    std::uint64_t sent = 0;
    std::string line;
    while (std::getline(std::cin, line)) {
      txmq::client::Message m{key, headers, line, -1};
      m.deliver_at_ms = deliver_at_ms;
      if (!produce_delay.empty()) m.delay = *parse_duration(produce_delay);
      producer.send_async(topic_name, std::move(m), [&](const txmq::Result<txmq::client::SendReceipt>& r) {
        if (r) {
          ++confirmed;
          return;
        }
        std::lock_guard lock(mu);
        if (!first_error) first_error = r.error();
      });
      ++sent;
    }
    // Every line is confirmed or failed within the request timeout; flush waits for that.
    auto st = producer.flush(timeout + Millis(1000));
    std::lock_guard lock(mu);
    if (first_error) {
      std::cerr << "txmq: " << (sent - confirmed) << " of " << sent << " message(s) not confirmed\n";
      return fail(*first_error);
    }
    if (!st) return fail(st.error());
    std::fprintf(stderr, "txmq: %llu message(s) confirmed durable\n", static_cast<unsigned long long>(confirmed.load()));
    return 0;
  }

  if (consume->parsed()) {
    if (nack && term) {
      std::cerr << "txmq: --nack and --term exclude each other\n";
      return 2;
    }
    const Millis verdict_delay = nack_delay.empty() ? Millis(0) : *parse_duration(nack_delay);
    {
      // A subscription waits for the broker however long it takes; a request fails fast
      // (first_connect_timeout). One request first, so an unreachable broker or a missing
      // topic is reported at once instead of after the whole timeout.
      txmq::client::Admin probe(options());
      if (auto r = probe.describe_topic(topic_name, timeout); !r) return fail(r.error());
    }
    txmq::client::Consumer::Options co;
    static_cast<txmq::client::ClientOptions&>(co) = options();
    co.topic = topic_name;
    co.group = group;
    // Never take more than we will print: with --max N the window is at most N, so no
    // extra messages sit unacknowledged with us when we exit.
    co.window = max_messages > 0 ? static_cast<std::uint32_t>(std::min<long>(max_messages, 1000)) : 1000;
    std::mutex mu;
    std::condition_variable cv;
    long printed = 0;
    auto last_activity = std::chrono::steady_clock::now();
    txmq::client::Consumer consumer(co, [&](txmq::client::Consumer& self, const txmq::client::Delivery& d) {
      std::lock_guard lock(mu);
      if (max_messages > 0 && printed >= max_messages) return;  // not acked: redelivered later
      if (show_meta)
        std::printf("%u:%llu #%u %s\n", d.partition, static_cast<unsigned long long>(d.offset), d.delivery_count,
                    d.body.c_str());
      else
        std::printf("%s\n", d.body.c_str());
      std::fflush(stdout);
      ++printed;
      last_activity = std::chrono::steady_clock::now();
      // The last one we take: stop deliveries before its verdict frees room for another
      // message we would neither print nor settle.
      if (max_messages > 0 && printed == max_messages) self.pause();
      if (nack)
        self.nack(d, verdict_delay, reason);
      else if (term)
        self.terminate(d, reason);
      else
        self.ack(d);
      cv.notify_all();
    });
    if (auto st = consumer.wait_subscribed(timeout); !st) return fail(st.error());
    {
      std::unique_lock lock(mu);
      for (;;) {
        if (max_messages > 0 && printed >= max_messages) break;
        auto deadline = last_activity + Millis(idle_timeout_ms);
        if (std::chrono::steady_clock::now() >= deadline) break;
        cv.wait_until(lock, deadline);
      }
    }
    if (auto st = consumer.flush_acks(timeout); !st) return fail(st.error());
    return 0;
  }

  if (group_cmd->parsed()) {
    txmq::client::Admin admin(options());
    if (g_configure->parsed()) {
      if (group.empty() && topic_name.empty()) {
        std::cerr << "txmq: name a group, or --topic for the topic's default\n";
        return 2;
      }
      txmq::client::GroupConfig config;
      if (!mode.empty()) config.mode = mode == "ordered" ? txmq::client::GroupMode::kOrdered : txmq::client::GroupMode::kShared;
      if (!ack_wait.empty()) config.ack_wait = *parse_duration(ack_wait);
      if (max_deliveries || !delays.empty() || !exponential.empty() || jitter >= 0) {
        // Start from what is in force (asking changes nothing), so that changing one setting
        // keeps the others.
        auto current = admin.configure_group(group, group.empty() ? topic_name : "", {}, timeout);
        if (!current) return fail(current.error());
        txmq::client::RetrySchedule retry = current->retry;
        if (max_deliveries) retry.max_deliveries = max_deliveries;
        if (jitter >= 0) retry.jitter = jitter;
        if (!delays.empty()) {
          retry.delays.clear();
          std::stringstream ss(delays);
          for (std::string item; std::getline(ss, item, ',');) {
            auto d = parse_duration(item);
            if (!d) {
              std::cerr << "txmq: --delays: '" << item << "' is not a duration\n";
              return 2;
            }
            retry.delays.push_back(*d);
          }
        }
        if (!exponential.empty()) {
          std::stringstream ss(exponential);
          std::string init, factor, max;
          std::getline(ss, init, ',');
          std::getline(ss, factor, ',');
          std::getline(ss, max, ',');
          auto i = parse_duration(init), m = parse_duration(max);
          if (!i || !m || factor.empty()) {
            std::cerr << "txmq: --exponential takes INITIAL,FACTOR,MAX (1s,2,10m)\n";
            return 2;
          }
          retry.delays.clear();
          retry.exponential_initial = *i;
          retry.exponential_factor = std::stod(factor);
          retry.exponential_max = *m;
        }
        config.retry = retry;
      }
      auto r = admin.configure_group(group, group.empty() ? topic_name : "", config, timeout);
      if (!r) return fail(r.error());
      print_group(*r, true);
      return 0;
    }
    auto r = admin.describe_groups(g_describe->parsed() ? group : "", timeout);
    if (!r) return fail(r.error());
    for (const auto& g : *r) print_group(g, g_describe->parsed());
    return 0;
  }

  if (dlq->parsed()) {
    txmq::client::Admin admin(options());
    if (d_show->parsed()) {
      auto r = admin.fetch(txmq::client::dead_letter_topic(group), 0, dlq_offset, 1, timeout);
      if (!r) return fail(r.error());
      if (r->empty() || r->front().offset != dlq_offset) {
        std::cerr << "txmq: no dead letter at offset " << dlq_offset << " for group " << group << "\n";
        return 1;
      }
      print_dead_letter(r->front(), true);
      return 0;
    }
    auto letters = read_dead_letters(admin, group, static_cast<std::size_t>(dlq_max), timeout);
    if (!letters) return fail(letters.error());
    if (d_list->parsed()) {
      for (const auto& d : *letters) print_dead_letter(d, false);
      std::fprintf(stderr, "txmq: %zu dead letter(s) for group %s\n", letters->size(), group.c_str());
      return 0;
    }
    // redrive
    std::vector<std::pair<std::string, std::string>> wanted;
    for (const auto& f : filters) {
      auto eq = f.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::cerr << "txmq: --filter takes HEADER=VALUE, got '" << f << "'\n";
        return 2;
      }
      wanted.emplace_back(f.substr(0, eq), f.substr(eq + 1));
    }
    std::vector<std::uint64_t> chosen;
    for (const auto& d : *letters) {
      bool match = std::all_of(wanted.begin(), wanted.end(), [&](const auto& w) {
        return std::any_of(d.headers.begin(), d.headers.end(),
                           [&](const auto& h) { return h.name == w.first && h.value == w.second; });
      });
      if (match) chosen.push_back(d.offset);
    }
    if (dry_run) {
      for (const auto& d : *letters)
        if (std::find(chosen.begin(), chosen.end(), d.offset) != chosen.end()) print_dead_letter(d, false);
      std::fprintf(stderr, "txmq: dry run: %zu of %zu dead letter(s) would be redriven\n", chosen.size(),
                   letters->size());
      return 0;
    }
    // Batches of up to 100, paced so that on average no more than --rate go per second.
    std::size_t done = 0, failed = 0;
    const auto started = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < chosen.size();) {
      std::size_t batch = rate > 0 ? std::max<std::size_t>(1, std::min<std::size_t>(100, static_cast<std::size_t>(rate))) : 100;
      std::vector<std::uint64_t> part(chosen.begin() + static_cast<std::ptrdiff_t>(i),
                                      chosen.begin() + static_cast<std::ptrdiff_t>(std::min(chosen.size(), i + batch)));
      if (rate > 0) {
        auto due = started + std::chrono::duration<double>(static_cast<double>(i) / rate);
        std::this_thread::sleep_until(due);
      }
      auto r = admin.redrive(group, part, timeout);
      if (!r) return fail(r.error());
      done += r->redriven.size();
      failed += r->failed.size();
      for (auto o : r->failed) std::fprintf(stderr, "txmq: dead letter %llu not redriven\n", static_cast<unsigned long long>(o));
      i += part.size();
      std::fprintf(stderr, "txmq: redriven %zu of %zu\n", done, chosen.size());
    }
    std::printf("redriven %zu dead letter(s) for group %s, %zu failed\n", done, group.c_str(), failed);
    return failed ? 1 : 0;
  }

  if (txn->parsed()) {
    txmq::client::Admin admin(options());
    auto state_name = [](txmq::client::TxnState s) {
      switch (s) {
        case txmq::client::TxnState::kCommitted: return "committed";
        case txmq::client::TxnState::kRolledBack: return "rolled-back";
        case txmq::client::TxnState::kParked: return "parked";
        default: return "prepared";
      }
    };
    auto print_txn = [&](const txmq::client::TransactionInfo& t) {
      std::printf("%llu  %-11s topic=%s group=%s created=%s checks=%u%s%s\n",
                  static_cast<unsigned long long>(t.transaction_id), state_name(t.state), t.topic.c_str(),
                  t.producer_group.c_str(), format_time_ms(t.created_ms).c_str(), t.checks,
                  t.resolution.empty() ? "" : (" resolved-by=" + t.resolution).c_str(),
                  t.state == txmq::client::TxnState::kCommitted
                      ? (" at=" + std::to_string(t.partition) + ":" + std::to_string(t.offset)).c_str()
                      : "");
    };
    if (x_list->parsed()) {
      std::optional<txmq::client::TxnState> state;
      if (txn_state_flag == "prepared") state = txmq::client::TxnState::kPrepared;
      if (txn_state_flag == "committed") state = txmq::client::TxnState::kCommitted;
      if (txn_state_flag == "rolled-back") state = txmq::client::TxnState::kRolledBack;
      if (txn_state_flag == "parked") state = txmq::client::TxnState::kParked;
      auto r = admin.list_transactions(state, txn_max, timeout);
      if (!r) return fail(r.error());
      for (const auto& t : *r) print_txn(t);
      return 0;
    }
    if (x_show->parsed()) {
      auto r = admin.show_transaction(txn_id, timeout);
      if (!r) return fail(r.error());
      print_txn(*r);
      if (r->state == txmq::client::TxnState::kPrepared || r->state == txmq::client::TxnState::kParked) {
        for (const auto& h : r->message.headers) std::printf("  %s: %s\n", h.name.c_str(), h.value.c_str());
        std::printf("  key: %s\n  body: %s\n", r->message.key.c_str(), r->message.body.c_str());
      }
      return 0;
    }
    auto r = admin.end_transaction(txn_id, x_commit->parsed(), timeout);
    if (!r) return fail(r.error());
    if (r->changed)
      std::printf("transaction %llu %s\n", static_cast<unsigned long long>(txn_id), state_name(r->state));
    else
      std::printf("transaction %llu was already %s; nothing changed\n", static_cast<unsigned long long>(txn_id),
                  state_name(r->state));
    const bool wanted = x_commit->parsed() ? r->state == txmq::client::TxnState::kCommitted
                                           : r->state == txmq::client::TxnState::kRolledBack;
    return wanted ? 0 : 1;
  }

  if (stats->parsed()) {
    txmq::client::Admin admin(options());
    auto r = admin.stats(timeout);
    if (!r) return fail(r.error());
    const auto& s = *r;
    std::printf("broker_version      %s\n", s.broker_version.c_str());
    std::printf("uptime_seconds      %.1f\n", s.uptime_ms / 1000.0);
    std::printf("connections         %u\n", s.connections);
    std::printf("topics              %u\n", s.topics);
    std::printf("messages_produced   %llu\n", static_cast<unsigned long long>(s.messages_produced));
    std::printf("bytes_produced      %llu\n", static_cast<unsigned long long>(s.bytes_produced));
    std::printf("messages_delivered  %llu\n", static_cast<unsigned long long>(s.messages_delivered));
    std::printf("messages_acked      %llu\n", static_cast<unsigned long long>(s.messages_acked));
    std::printf("storage_used_bytes  %llu\n", static_cast<unsigned long long>(s.storage_used_bytes));
    std::printf("storage_max_bytes   %llu\n", static_cast<unsigned long long>(s.storage_max_bytes));
    std::printf("storage_commits     %llu\n", static_cast<unsigned long long>(s.commits));
    return 0;
  }
  return 2;
}
