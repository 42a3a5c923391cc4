// txn_producer_tool: a transactional producer in a process of its own, for the tests that
// kill one (transactions_test.cpp). A producer that crashes after prepare cannot be
// simulated inside the test process: its connection, its I/O thread and its checker must
// vanish together, which only SIGKILL of a real process does.
//
// Usage: txn_producer_tool BROKER PRODUCER_GROUP TOPIC MODE STATE_FILE
//   prepare-and-hang: prepares one half message (body "half message from txn_producer_tool")
//     with the broker's default check delay (transactions.timeout_ms), prints its
//     transaction id on one line, then blocks until killed. Its checker answers unknown.
//   answer: joins the producer group with a checker that answers every check from
//     STATE_FILE ("commit" or "rollback"; anything else, or no file, is unknown), prints
//     "ready" once the broker knows it as a member of the group, then prints one line
//     "answered ID commit|rollback|unknown" per check, until SIGTERM or SIGINT (exit 0).
// Exit codes: 0 after SIGTERM/SIGINT, 2 for bad arguments, 1 when the broker cannot be
// reached or refuses the prepare.

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "txmq/client.h"

namespace {

using namespace std::chrono_literals;
using txmq::client::LocalTransactionState;
using txmq::client::TransactionalProducer;

constexpr txmq::client::Millis kTimeout = 10s;

std::mutex stdout_mu;  // the checker prints from the I/O thread, main from its own
// Answer mode: a check already due can reach the checker before main has said "ready"
// (the broker asks as soon as the connection joins the group); its line waits here, so
// that "ready" is always the first line, as the usage says.
bool said_ready = false;             // guarded by stdout_mu
std::vector<std::string> held_lines;  // guarded by stdout_mu

void print(const std::string& line) {
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

void say(const std::string& line) {
  std::lock_guard lock(stdout_mu);
  print(line);
}

void say_answer(const std::string& line) {
  std::lock_guard lock(stdout_mu);
  if (said_ready)
    print(line);
  else
    held_lines.push_back(line);
}

void say_ready() {
  std::lock_guard lock(stdout_mu);
  print("ready");
  said_ready = true;
  for (const auto& line : held_lines) print(line);
  held_lines.clear();
}

TransactionalProducer::Options options(const std::string& broker, const std::string& group) {
  TransactionalProducer::Options o;
  o.broker = broker;
  o.producer_group = group;
  o.client_name = "txn-producer-tool";
  o.request_timeout = kTimeout;
  o.reconnect_initial = 20ms;
  o.reconnect_max = 200ms;
  return o;
}

// What the local database says: the state file, read afresh on every check.
LocalTransactionState read_state(const std::string& path) {
  std::ifstream in(path);
  std::string word;
  in >> word;
  if (word == "commit") return LocalTransactionState::kCommit;
  if (word == "rollback") return LocalTransactionState::kRollback;
  return LocalTransactionState::kUnknown;
}

const char* name_of(LocalTransactionState s) {
  switch (s) {
    case LocalTransactionState::kCommit: return "commit";
    case LocalTransactionState::kRollback: return "rollback";
    default: return "unknown";
  }
}

// Blocks until SIGTERM or SIGINT (blocked in every thread since main started).
void wait_for_stop_signal(const sigset_t& stop) {
  int sig = 0;
  while (sigwait(&stop, &sig) != 0) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s BROKER PRODUCER_GROUP TOPIC prepare-and-hang|answer STATE_FILE\n", argv[0]);
    return 2;
  }
  const std::string broker = argv[1], group = argv[2], topic = argv[3], mode = argv[4], state_file = argv[5];

  // Blocked before any thread starts, so that only sigwait sees them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  if (mode == "prepare-and-hang") {
    TransactionalProducer producer(options(broker, group),
                                   [](const txmq::client::TransactionCheck&) { return LocalTransactionState::kUnknown; });
    txmq::client::Message m;
    m.body = "half message from txn_producer_tool";
    auto id = producer.prepare(topic, std::move(m), kTimeout);
    if (!id) {
      std::fprintf(stderr, "prepare: %s\n", id.error().describe().c_str());
      return 1;
    }
    say(std::to_string(*id));
    // The crash under test is a SIGKILL now; a polite stop is allowed too.
    wait_for_stop_signal(stop);
    return 0;
  }

  if (mode == "answer") {
    TransactionalProducer producer(options(broker, group), [&state_file](const txmq::client::TransactionCheck& c) {
      const LocalTransactionState answer = read_state(state_file);
      say_answer("answered " + std::to_string(c.transaction_id) + " " + name_of(answer));
      return answer;
    });
    // A round trip proves the hello (which registers this connection in the group) was
    // answered: ending transaction 0 reaches the broker, which knows no such transaction.
    auto probe = producer.end(0, LocalTransactionState::kUnknown, kTimeout);
    if (!probe && probe.error().code != txmq::ErrorCode::kInvalidArgument) {
      std::fprintf(stderr, "connect: %s\n", probe.error().describe().c_str());
      return 1;
    }
    say_ready();
    wait_for_stop_signal(stop);
    return 0;
  }

  std::fprintf(stderr, "unknown mode '%s'\n", mode.c_str());
  return 2;
}
