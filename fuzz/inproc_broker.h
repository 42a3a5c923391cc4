#pragma once
// A real Broker (txmq_broker) inside the fuzz process, on its own thread, listening on
// 127.0.0.1 with a port the kernel picks, metrics off, on a fresh data directory under
// $TMPDIR (else /dev/shm, else /tmp).
//
// Lifecycle: start() once; stop() (also run from the destructor) sends the process
// SIGTERM, which the broker's own signal watcher turns into its normal shutdown, waits for
// run() to return, and removes the data directory unless $TXMQ_FUZZ_KEEP_DATA is set.
// A crash leaves the directory behind: it is what the broker had stored.
// Signals: the broker watches SIGINT and SIGTERM; start() gives SIGINT back to whoever
// had it before (libFuzzer), so Ctrl-C still stops the fuzzer with its summary.
// Concurrency: start() and stop() from one thread; the broker's loop runs on its own.

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "broker/config.h"

namespace txmq::broker {
class Broker;
}

namespace txmq::fuzz {

class InprocBroker {
 public:
  InprocBroker();
  InprocBroker(const InprocBroker&) = delete;
  InprocBroker& operator=(const InprocBroker&) = delete;
  ~InprocBroker();

  // Starts the broker and returns once it listens. Aborts the process (with a reason on
  // stderr) when it cannot: a fuzz target without its broker has nothing to run.
  void start(broker::BrokerConfig config);
  void stop();

  std::uint16_t port() const { return port_; }
  const std::string& data_dir() const { return data_dir_; }
  // False once run() returned (a shutdown nobody asked for: SIGTERM from outside).
  bool running();

 private:
  std::unique_ptr<broker::Broker> broker_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool finished_ = false;  // guarded by mu_: run() returned
  int exit_code_ = 0;      // guarded by mu_
  std::string data_dir_;
  std::uint16_t port_ = 0;
};

}  // namespace txmq::fuzz
