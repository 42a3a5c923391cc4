#include "metrics/registry.h"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

using txmq::metrics::Registry;

TEST_CASE("counter, gauge and histogram render exactly in the text format") {
  Registry registry;
  registry.counter("txmq_messages_total", "Messages produced.").inc(3);
  auto& depth = registry.gauge_family("txmq_queue_depth", "Messages waiting.", {"topic"});
  depth.with({"b"}).set(2);
  depth.with({"a"}).set(1.5);
  auto& latency = registry.histogram("txmq_latency_seconds", "Produce latency.", {0.1, 1});
  latency.observe(0.25);
  latency.observe(0.5);
  latency.observe(2);

  CHECK(registry.render() ==
        "# HELP txmq_messages_total Messages produced.\n"
        "# TYPE txmq_messages_total counter\n"
        "txmq_messages_total 3\n"
        "# HELP txmq_queue_depth Messages waiting.\n"
        "# TYPE txmq_queue_depth gauge\n"
        "txmq_queue_depth{topic=\"a\"} 1.5\n"
        "txmq_queue_depth{topic=\"b\"} 2\n"
        "# HELP txmq_latency_seconds Produce latency.\n"
        "# TYPE txmq_latency_seconds histogram\n"
        "txmq_latency_seconds_bucket{le=\"0.1\"} 0\n"
        "txmq_latency_seconds_bucket{le=\"1\"} 2\n"
        "txmq_latency_seconds_bucket{le=\"+Inf\"} 3\n"
        "txmq_latency_seconds_sum 2.75\n"
        "txmq_latency_seconds_count 3\n");
}

TEST_CASE("unlabelled metrics render zero before their first update") {
  Registry registry;
  registry.counter("txmq_retries_total", "Retries.");
  registry.gauge("txmq_leases", "Leases held.");
  CHECK(registry.render() ==
        "# HELP txmq_retries_total Retries.\n"
        "# TYPE txmq_retries_total counter\n"
        "txmq_retries_total 0\n"
        "# HELP txmq_leases Leases held.\n"
        "# TYPE txmq_leases gauge\n"
        "txmq_leases 0\n");
}

TEST_CASE(
    "label values escape backslash, double quote and newline; help escapes backslash "
    "and newline") {
  Registry registry;
  registry.counter_family("txmq_odd_total", "Path C:\\tmp\nsecond \"line\"", {"topic"})
      .with({"a\\b\"c\nd"})
      .inc();
  CHECK(registry.render() ==
        "# HELP txmq_odd_total Path C:\\\\tmp\\nsecond \"line\"\n"
        "# TYPE txmq_odd_total counter\n"
        "txmq_odd_total{topic=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST_CASE("histogram buckets are cumulative and a value on a bound counts in that bucket") {
  Registry registry;
  auto& sizes =
      registry.histogram_family("txmq_batch_messages", "Batch sizes.", {"topic"}, {1, 10, 100});
  auto& histogram = sizes.with({"t"});
  for (double value : {0.5, 1.0, 10.0, 50.0, 100.0, 1000.0}) histogram.observe(value);
  CHECK(registry.render() ==
        "# HELP txmq_batch_messages Batch sizes.\n"
        "# TYPE txmq_batch_messages histogram\n"
        "txmq_batch_messages_bucket{topic=\"t\",le=\"1\"} 2\n"
        "txmq_batch_messages_bucket{topic=\"t\",le=\"10\"} 3\n"
        "txmq_batch_messages_bucket{topic=\"t\",le=\"100\"} 5\n"
        "txmq_batch_messages_bucket{topic=\"t\",le=\"+Inf\"} 6\n"
        "txmq_batch_messages_sum{topic=\"t\"} 1161.5\n"
        "txmq_batch_messages_count{topic=\"t\"} 6\n");
}

TEST_CASE("children render sorted by label values, whatever their creation order") {
  Registry registry;
  auto& family = registry.counter_family("txmq_acks_total", "Acks.", {"topic", "group"});
  family.with({"b", "x"}).inc();
  family.with({"a", "y"}).inc();
  family.with({"a", "x"}).inc();
  CHECK(registry.render() ==
        "# HELP txmq_acks_total Acks.\n"
        "# TYPE txmq_acks_total counter\n"
        "txmq_acks_total{topic=\"a\",group=\"x\"} 1\n"
        "txmq_acks_total{topic=\"a\",group=\"y\"} 1\n"
        "txmq_acks_total{topic=\"b\",group=\"x\"} 1\n");
}

TEST_CASE("label values that are not valid UTF-8 render with U+FFFD, as one series") {
  Registry registry;
  auto& family = registry.counter_family("txmq_bytes_total", "Bytes.", {"endpoint"});
  family.with({"http://\xff"}).inc();
  family.with({"http://\xfe"}).inc();  // differs only in an invalid byte: the same series
  family.with({"caf\xc3\xa9 \xc0\xaf"}).inc();  // valid é kept, overlong '/' replaced
  CHECK(&family.with({"http://\xff"}) == &family.with({"http://\xef\xbf\xbd"}));
  CHECK(registry.render() ==
        "# HELP txmq_bytes_total Bytes.\n"
        "# TYPE txmq_bytes_total counter\n"
        "txmq_bytes_total{endpoint=\"caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd\"} 1\n"
        "txmq_bytes_total{endpoint=\"http://\xef\xbf\xbd\"} 2\n");
}

TEST_CASE("with() returns the same child for the same label values") {
  Registry registry;
  auto& family = registry.gauge_family("txmq_pending", "Pending.", {"topic"});
  CHECK(&family.with({"a"}) == &family.with({"a"}));
  CHECK(&family.with({"a"}) != &family.with({"b"}));
}

TEST_CASE("with() throws when the number of label values is wrong") {
  Registry registry;
  auto& family = registry.counter_family("txmq_acks_total", "Acks.", {"topic", "group"});
  CHECK_THROWS_AS(family.with({"only-topic"}), std::invalid_argument);
}

TEST_CASE("gauges render special values as the format spells them") {
  Registry registry;
  auto& family = registry.gauge_family("txmq_special", "Special.", {"kind"});
  family.with({"inf"}).set(std::numeric_limits<double>::infinity());
  family.with({"minus_inf"}).set(-std::numeric_limits<double>::infinity());
  family.with({"nan"}).set(std::numeric_limits<double>::quiet_NaN());
  family.with({"tiny"}).set(1e-9);
  CHECK(registry.render() ==
        "# HELP txmq_special Special.\n"
        "# TYPE txmq_special gauge\n"
        "txmq_special{kind=\"inf\"} +Inf\n"
        "txmq_special{kind=\"minus_inf\"} -Inf\n"
        "txmq_special{kind=\"nan\"} NaN\n"
        "txmq_special{kind=\"tiny\"} 1e-09\n");
}

TEST_CASE("values render as plain decimals from 1e-4 to 1e21 and scientific outside") {
  Registry registry;
  auto& family = registry.gauge_family("txmq_sizes", "Sizes.", {"kind"});
  family.with({"a"}).set(0.0001);
  family.with({"b"}).set(1000);
  family.with({"c"}).set(-2.5);
  family.with({"d"}).set(1073741824);
  family.with({"e"}).set(1e21);
  family.with({"f"}).set(0.1 + 0.2);
  CHECK(registry.render() ==
        "# HELP txmq_sizes Sizes.\n"
        "# TYPE txmq_sizes gauge\n"
        "txmq_sizes{kind=\"a\"} 0.0001\n"
        "txmq_sizes{kind=\"b\"} 1000\n"
        "txmq_sizes{kind=\"c\"} -2.5\n"
        "txmq_sizes{kind=\"d\"} 1073741824\n"
        "txmq_sizes{kind=\"e\"} 1e+21\n"
        "txmq_sizes{kind=\"f\"} 0.30000000000000004\n");
}

TEST_CASE("concurrent updates from several threads sum exactly") {
  Registry registry;
  auto& counter = registry.counter("txmq_produced_total", "Produced.");
  auto& gauge = registry.gauge("txmq_in_flight", "In flight.");
  auto& histogram = registry.histogram("txmq_wait_seconds", "Wait.", {0.5});
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        counter.inc();
        gauge.inc(2);
        gauge.dec();
        histogram.observe(i % 2 == 0 ? 0.25 : 1.0);
      }
    });
  }
  // Rendering concurrently must be safe too; its values are whatever it sees.
  for (int i = 0; i < 10; ++i) CHECK_FALSE(registry.render().empty());
  for (auto& thread : threads) thread.join();

  constexpr std::uint64_t kTotal = std::uint64_t{kThreads} * kPerThread;
  CHECK(counter.value() == kTotal);
  CHECK(gauge.value() == static_cast<double>(kTotal));
  CHECK(histogram.bucket_count(0) == kTotal / 2);
  CHECK(histogram.bucket_count(1) == kTotal / 2);
  CHECK(histogram.sum() == 0.625 * static_cast<double>(kTotal));
}

TEST_CASE("collect-time metrics are evaluated at every render") {
  Registry registry;
  double connections = 1;
  registry.callback_gauge("txmq_connections", "Open client connections.",
                          [&connections] { return connections; });
  registry.callback_counter("txmq_lmdb_commits_total", "Commits.", [] { return 7.0; });
  CHECK(registry.render() ==
        "# HELP txmq_connections Open client connections.\n"
        "# TYPE txmq_connections gauge\n"
        "txmq_connections 1\n"
        "# HELP txmq_lmdb_commits_total Commits.\n"
        "# TYPE txmq_lmdb_commits_total counter\n"
        "txmq_lmdb_commits_total 7\n");
  connections = 4;
  CHECK(registry.render().find("txmq_connections 4\n") != std::string::npos);
}

TEST_CASE("invalid metric names are rejected") {
  Registry registry;
  for (const char* name : {"", "1abc", "with-dash", "with space", "colon:name", "caf\xc3\xa9"}) {
    CAPTURE(name);
    CHECK_THROWS_AS(registry.counter(name, "help"), std::invalid_argument);
  }
  CHECK_NOTHROW(registry.counter("_ok_Name_2_total", "help"));
}

TEST_CASE("invalid, reserved and repeated label names are rejected") {
  Registry registry;
  CHECK_THROWS_AS(registry.counter_family("txmq_a_total", "h", {"bad-label"}),
                  std::invalid_argument);
  CHECK_THROWS_AS(registry.counter_family("txmq_b_total", "h", {"__reserved"}),
                  std::invalid_argument);
  CHECK_THROWS_AS(registry.counter_family("txmq_c_total", "h", {"topic", "topic"}),
                  std::invalid_argument);
  CHECK_THROWS_AS(registry.histogram_family("txmq_d_seconds", "h", {"le"}), std::invalid_argument);
  CHECK_NOTHROW(registry.gauge_family("txmq_e", "h", {"le"}));
}

TEST_CASE("registering the same metric again returns the existing family") {
  Registry registry;
  auto& first = registry.counter_family("txmq_acks_total", "Acks.", {"topic"});
  auto& second = registry.counter_family("txmq_acks_total", "Other help.", {"topic"});
  CHECK(&first == &second);
  CHECK(&registry.histogram("txmq_h_seconds", "h") == &registry.histogram("txmq_h_seconds", "h"));
}

TEST_CASE("registering a name again with another type, labels or buckets throws") {
  Registry registry;
  registry.counter_family("txmq_acks_total", "Acks.", {"topic"});
  CHECK_THROWS_AS(registry.gauge_family("txmq_acks_total", "Acks.", {"topic"}),
                  std::invalid_argument);
  CHECK_THROWS_AS(registry.counter_family("txmq_acks_total", "Acks.", {"group"}),
                  std::invalid_argument);
  CHECK_THROWS_AS(registry.callback_counter("txmq_acks_total", "Acks.", [] { return 1.0; }),
                  std::invalid_argument);
  registry.histogram("txmq_h_seconds", "h", {1, 2});
  CHECK_THROWS_AS(registry.histogram("txmq_h_seconds", "h", {1, 3}), std::invalid_argument);
  registry.callback_gauge("txmq_cb", "h", [] { return 1.0; });
  CHECK_THROWS_AS(registry.callback_gauge("txmq_cb", "h", [] { return 2.0; }),
                  std::invalid_argument);
}

TEST_CASE("a metric whose series collide with a histogram's is rejected") {
  Registry registry;
  registry.histogram("txmq_wait_seconds", "Wait.");
  CHECK_THROWS_AS(registry.gauge("txmq_wait_seconds_count", "h"), std::invalid_argument);
  registry.counter("txmq_x_sum", "h");
  CHECK_THROWS_AS(registry.histogram("txmq_x", "h"), std::invalid_argument);
}
