// txmq: the command-line tool for people and scripts.
//
// Exit codes: 0 success; 1 the broker answered with an error or a message was not
// confirmed; 2 bad usage. Errors go to stderr as "txmq: Code: message".

#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>

#include "common/version.h"
#include "txmq/client.h"

namespace {

using txmq::client::Millis;

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
  CLI::App app{"txmq: talk to a txmq broker"};
  app.set_version_flag("--version", std::string(txmq::kVersion));
  app.require_subcommand(1);
  std::string broker_flag;
  long timeout_ms = 10000;
  app.add_option("--broker", broker_flag, "broker HOST:PORT (default: $TXMQ_BROKER, else 127.0.0.1:7411)");
  app.add_option("--request-timeout-ms", timeout_ms, "how long to wait for each answer")->check(CLI::PositiveNumber);

  auto options = [&] {
    txmq::client::ClientOptions o;
    o.broker = broker_address(broker_flag);
    o.client_name = "txmq-cli";
    o.request_timeout = Millis(timeout_ms);
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

  auto* stats = app.add_subcommand("stats", "show broker statistics");

  CLI11_PARSE(app, argc, argv);
  const Millis timeout(timeout_ms);

  if (topic->parsed()) {
    txmq::client::Admin admin(options());
    if (t_create->parsed()) {
      auto r = admin.create_topic(topic_name, partitions, timeout);
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
    txmq::client::Consumer* self = nullptr;
    txmq::client::Consumer consumer(co, [&](const txmq::client::Delivery& d) {
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
      if (self) self->ack(d);
      cv.notify_all();
    });
    {
      std::lock_guard lock(mu);
      self = &consumer;
    }
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
