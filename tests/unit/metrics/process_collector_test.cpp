#include "metrics/process_collector.h"

#include <doctest/doctest.h>

#include <chrono>
#include <string>

using txmq::metrics::Registry;

TEST_CASE("process snapshot values are plausible for a running test") {
  const auto snapshot = txmq::metrics::read_process_snapshot();
  REQUIRE(snapshot.has_value());
  CHECK(snapshot->resident_memory_bytes > 0);
  CHECK(snapshot->virtual_memory_bytes >= snapshot->resident_memory_bytes);
  CHECK(snapshot->cpu_seconds >= 0);
  CHECK(snapshot->open_fds >= 3);  // stdin, stdout, stderr
  CHECK(snapshot->max_fds >= snapshot->open_fds);

  // The process started before now and, being a unit test, not long before. Boot time is
  // whole seconds and start time is in clock ticks, so allow a second of rounding.
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  CHECK(snapshot->start_time_seconds <= now + 1);
  CHECK(snapshot->start_time_seconds > now - 3600);
}

TEST_CASE("process metrics register with their standard names and types") {
  Registry registry;
  txmq::metrics::register_process_metrics(registry);
  const std::string text = registry.render();
  for (const char* line :
       {"# TYPE process_cpu_seconds_total counter\n",
        "# TYPE process_resident_memory_bytes gauge\n",
        "# TYPE process_virtual_memory_bytes gauge\n", "# TYPE process_open_fds gauge\n",
        "# TYPE process_max_fds gauge\n", "# TYPE process_start_time_seconds gauge\n"}) {
    CAPTURE(line);
    CHECK(text.find(line) != std::string::npos);
  }
  CHECK(text.find("NaN") == std::string::npos);
}

TEST_CASE("registering the process metrics twice in one registry throws") {
  Registry registry;
  txmq::metrics::register_process_metrics(registry);
  CHECK_THROWS_AS(txmq::metrics::register_process_metrics(registry), std::invalid_argument);
}
