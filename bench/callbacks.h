// The notifier benchmark: callbacks per second from txmq-notifier to a local receiver that
// answers 204 at once, beside the receiver's own capacity measured by wrk in the same run.
#pragma once

#include <cstddef>
#include <string>

namespace txmq::bench {

struct CallbacksConfig {
  std::string broker;        // HOST:PORT of a running broker
  std::string notifier_bin;  // the txmq-notifier binary to start
  std::size_t messages = 200'000;
  std::size_t size = 100;
  unsigned concurrency = 64;  // requests in flight (the notifier's, and wrk's connections)
  int max_seconds = 60;      // per round
  int rounds = 3;            // each a wrk run and a notifier run, alternating
  unsigned processes = 1;    // notifier processes of one group, sharing the concurrency
};

// Prints its report; returns a process exit code.
int run_callbacks(const CallbacksConfig& config);

}  // namespace txmq::bench
