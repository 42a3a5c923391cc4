// Prints a registry that holds every kind of metric txmq_metrics offers, with labels, values
// that need escaping and the process metrics, so that ctest can run `promtool check metrics`
// over real output (the metrics_promtool_check test).

#include <cstdio>
#include <string>

#include "metrics/names.h"
#include "metrics/process_collector.h"
#include "metrics/registry.h"

int main() {
  using txmq::metrics::metric_name;
  txmq::metrics::Registry registry;

  auto& produced =
      registry.counter_family(metric_name("broker", "messages_produced_total"),
                              "Messages appended to a partition.", {"topic", "partition"});
  produced.with({"orders", "0"}).inc(42);
  produced.with({"odd \"topic\" \\ with\nnewline", "1"}).inc();
  produced.with({"not UTF-8: \xff\xfe", "2"}).inc();  // written with U+FFFD

  registry
      .counter(metric_name("broker", "transactions_committed_total"),
               "Transactions committed.\nHelp text may span \\ lines.")
      .inc(7);

  auto& pending = registry.gauge_family(metric_name("broker", "pending_deliveries"),
                                        "Deliveries sent and not yet acked.", {"consumer_group"});
  pending.with({"billing"}).set(3);
  pending.with({"audit"}).set(0);

  auto& commit = registry.histogram_family(metric_name("storage", "commit_duration_seconds"),
                                           "Time to commit one write batch to LMDB.", {"partition"},
                                           txmq::metrics::exponential_buckets(0.0001, 4, 8));
  for (double seconds : {0.00005, 0.0003, 0.002, 0.002, 0.5, 3.0}) {
    commit.with({"0"}).observe(seconds);
  }
  registry
      .histogram(metric_name("broker", "produce_latency_seconds"),
                 "Time from receiving a produce request to its acknowledgement.")
      .observe(0.004);

  registry.callback_gauge(metric_name("storage", "map_size_bytes"), "LMDB map size.",
                          [] { return 1073741824.0; });
  registry.callback_counter(metric_name("storage", "written_bytes_total"), "Bytes written to LMDB.",
                            [] { return 123456.0; });

  txmq::metrics::register_process_metrics(registry);

  const std::string text = registry.render();
  return std::fwrite(text.data(), 1, text.size(), stdout) == text.size() ? 0 : 1;
}
