// Transactions (half messages) and the idempotent producer against the real txmq-broker:
// visibility of prepared, committed and rolled-back messages; check-back to the producer
// group, also after the producer process or the broker was killed; no checks while nobody
// of the group can answer; parking when checks run out and the operator's way out
// (`txmq txn`); idempotent ends; the per-group check rate limit under a backlog; and an
// idempotent producer's resent batch stored once, also across a broker restart.
//
// Every test starts its own broker on 127.0.0.1 port 0 with a fresh data directory and
// short transaction timings (from a TOML config), so tests share nothing. Producer
// processes that must die with SIGKILL are txn_producer_tool ($TXMQ_TXN_TOOL); answers
// that must be lost after the broker stored a batch are lost on purpose by LossyProxy.
// Tests whose comment says "Regression (fixed)" reproduced a bug that has since been fixed.

#include <doctest/doctest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/version.h"
#include "tests/support/broker_process.h"
#include "tests/support/client_fixtures.h"
#include "tests/support/group_consumer.h"
#include "txmq/client.h"
#include "txmq_generated.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using txmq::ErrorCode;
using namespace txmq::client;  // the public API under test
using txmq::test::BrokerProcess;
using txmq::test::GroupConsumer;
using txmq::test::RawConnection;
using txmq::test::TempDir;
using txmq::test::client_options;
using txmq::test::create_topic;
using txmq::test::describe;
using txmq::test::kAckAll;
using txmq::test::kQuiet;
using txmq::test::kWait;
using txmq::test::start;
using txmq::test::text;
using txmq::test::wait_until;
using txmq::test::wall_ms;

// A check delay no test reaches: the transaction stays prepared until the test ends it.
constexpr Millis kNoCheck = 60s;

// -- broker ------------------------------------------------------------------------------

// The [transactions] section of a broker config. Defaults are short so that a check-back
// arrives within a test, and max_checks high so that nothing parks unless a test wants it.
struct TxnTimings {
  int timeout_ms = 300;  // first check after prepare when the producer names none
  int check_backoff_initial_ms = 200;
  int check_backoff_max_ms = 400;
  int max_checks = 50;
  double checks_per_second = 100;

  std::string toml() const {
    std::ostringstream s;
    s << "[transactions]\ntimeout_ms = " << timeout_ms << "\ncheck_backoff_initial_ms = " << check_backoff_initial_ms
      << "\ncheck_backoff_max_ms = " << check_backoff_max_ms << "\nmax_checks = " << max_checks
      << "\nchecks_per_second = " << checks_per_second << "\n";
    return s.str();
  }
};

txmq::test::BrokerOptions broker_options(const TxnTimings& timings = {}) {
  txmq::test::BrokerOptions o;
  o.config_toml = timings.toml();
  o.metrics_listen = "";
  return o;
}

TransactionalProducer::Options txn_options(const std::string& address, const std::string& group, Millis check_after) {
  TransactionalProducer::Options o;
  static_cast<ClientOptions&>(o) = client_options(address);
  o.producer_group = group;
  o.check_after = check_after;
  return o;
}

// A plain message sent after the one under test: once a consumer has it, the consumer was
// live and caught up, so a half message it did not get was really not delivered.
void send_sentinel(const std::string& address, const std::string& topic) {
  txmq::test::produce_one(address, topic, text("sentinel"));
}

// -- transactions ------------------------------------------------------------------------

// A checker that records every check it is asked and answers what the test set.
class RecordingChecker {
 public:
  struct Seen {
    TransactionCheck check;
    Clock::time_point at;  // when the checker was called
  };

  explicit RecordingChecker(LocalTransactionState answer) : answer_(answer) {}

  // The checker to give a TransactionalProducer; this object must outlive it.
  TransactionalProducer::Checker checker() {
    return [this](const TransactionCheck& c) {
      std::lock_guard lock(mu_);
      seen_.push_back({c, Clock::now()});
      return answer_;
    };
  }

  void set_answer(LocalTransactionState answer) {
    std::lock_guard lock(mu_);
    answer_ = answer;
  }
  std::size_t count() {
    std::lock_guard lock(mu_);
    return seen_.size();
  }
  std::vector<Seen> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }
  std::vector<TransactionCheck> checks() {
    std::vector<TransactionCheck> out;
    for (auto& s : seen()) out.push_back(std::move(s.check));
    return out;
  }

 private:
  std::mutex mu_;
  LocalTransactionState answer_;  // guarded by mu_
  std::vector<Seen> seen_;        // guarded by mu_: in arrival order
};

std::uint64_t prepare(TransactionalProducer& producer, const std::string& topic, Message m) {
  auto id = producer.prepare(topic, std::move(m), kWait);
  REQUIRE_MESSAGE(id.ok(), describe(id));
  REQUIRE(*id != 0);
  return *id;
}

TransactionInfo show(Admin& admin, std::uint64_t id) {
  auto t = admin.show_transaction(id, kWait);
  REQUIRE_MESSAGE(t.ok(), describe(t));
  return *t;
}

// True once the transaction is in `state`; polls show_transaction until the deadline.
bool wait_for_state(Admin& admin, std::uint64_t id, TxnState state, Millis timeout = kWait) {
  return wait_until(
      [&] {
        auto t = admin.show_transaction(id, kWait);
        return t.ok() && t->state == state;
      },
      timeout, 20ms);
}

std::optional<std::string> header(const Delivery& d, const std::string& name) {
  for (const auto& h : d.headers)
    if (h.name == name) return h.value;
  return std::nullopt;
}

// A consumer of `group` that acknowledges every delivery, subscribed once constructed.
struct TestConsumer : GroupConsumer {
  TestConsumer(const std::string& address, const std::string& topic, const std::string& group = "readers")
      : GroupConsumer(address, topic, group, kAckAll) {
    require_subscribed();
  }
};

// Every message stored in partition 0 of a single-partition topic, oldest first.
std::vector<Delivery> stored(const std::string& address, const std::string& topic) {
  Admin admin(client_options(address));
  auto r = admin.fetch(topic, 0, 0, 10000, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  return *r;
}

// -- child processes ---------------------------------------------------------------------

std::string binary_from_env(const char* variable) {
  const char* bin = std::getenv(variable);
  REQUIRE_MESSAGE((bin != nullptr && *bin != '\0'), variable << " is not set (ctest sets it)");
  return bin;
}

// A child process (txn_producer_tool or the txmq tool) whose stdout the test reads; its
// stderr goes to the test's. It dies with the test (PR_SET_PDEATHSIG) and is SIGKILLed by
// the destructor if still running.
class ChildProcess {
 public:
  ChildProcess(const std::string& binary, const std::vector<std::string>& args) {
    // Everything is built before fork: the test process has other threads.
    std::vector<std::string> strings{binary};
    strings.insert(strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);
    const pid_t parent = getpid();
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      execv(argv[0], argv.data());
      _exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    kill9();
    if (out_ >= 0) ::close(out_);
  }

  // The next line of stdout (without its newline); nullopt at EOF or when none was complete
  // within timeout.
  std::optional<std::string> read_line(Millis timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (auto nl = buffered_.find('\n'); nl != std::string::npos) {
        std::string line = buffered_.substr(0, nl);
        buffered_.erase(0, nl + 1);
        return line;
      }
      if (!fill(deadline)) return std::nullopt;
    }
  }

  // Every line until EOF (the child exited or closed stdout) or the deadline.
  std::string read_all(Millis timeout) {
    const auto deadline = Clock::now() + timeout;
    while (fill(deadline)) {
    }
    return std::exchange(buffered_, {});
  }

  // The exit code, 128 + signal when a signal ended it, or -1 when it did not exit in time.
  int wait_exit(Millis timeout) {
    if (pid_ < 0) return status_;
    int status = 0;
    if (!wait_until([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, timeout)) return -1;
    pid_ = -1;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return status_;
  }

  int terminate(Millis timeout = kWait) {
    if (pid_ > 0) ::kill(pid_, SIGTERM);
    return wait_exit(timeout);
  }

  void kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    status_ = 128 + SIGKILL;
  }

 private:
  // Reads what stdout has into buffered_; false at EOF or when nothing came by the deadline.
  bool fill(Clock::time_point deadline) {
    for (;;) {
      auto left = std::chrono::ceil<Millis>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p{out_, POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(left));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) return false;
      char buf[4096];
      ssize_t n = ::read(out_, buf, sizeof(buf));
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) return false;
      buffered_.append(buf, static_cast<std::size_t>(n));
      return true;
    }
  }

  pid_t pid_ = -1;
  int status_ = -1;
  int out_ = -1;
  std::string buffered_;  // read from stdout, not yet returned
};

struct CliRun {
  int exit_code = -1;
  std::string out;
};

// Runs `txmq --broker ADDRESS args...` to completion.
CliRun run_cli(const std::string& address, std::vector<std::string> args) {
  args.insert(args.begin(), {"--broker", address});
  ChildProcess cli(binary_from_env("TXMQ_CLI_BIN"), args);
  CliRun run;
  run.out = cli.read_all(kWait);
  run.exit_code = cli.wait_exit(kWait);
  return run;
}

// txn_producer_tool, started and past its first line: the prepared transaction's id in
// prepare-and-hang mode, "ready" in answer mode.
struct ProducerTool {
  std::unique_ptr<ChildProcess> process;
  std::string first_line;
};

ProducerTool start_tool(const std::string& address, const std::string& group, const std::string& topic,
                        const std::string& mode, const std::string& state_file) {
  ProducerTool tool;
  tool.process = std::make_unique<ChildProcess>(binary_from_env("TXMQ_TXN_TOOL"),
                                                std::vector<std::string>{address, group, topic, mode, state_file});
  auto line = tool.process->read_line(kWait);
  REQUIRE_MESSAGE(line.has_value(), "txn_producer_tool " << mode << " printed nothing");
  tool.first_line = *line;
  return tool;
}

void write_file(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::trunc);
  out << contents;
  out.close();
  REQUIRE(out.good());
}

// -- raw frames for the idempotent producer ----------------------------------------------

flatbuffers::FlatBufferBuilder hello_frame(std::uint64_t rid) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = txmq::wire::CreateHello(fbb, txmq::kProtocolVersion, fbb.CreateString("transactions-test-raw"));
  fbb.FinishSizePrefixed(txmq::wire::CreateFrame(fbb, rid, txmq::wire::Body::Hello, body.Union()));
  return fbb;
}

// One Produce request as an idempotent producer builds it: the batch carries the
// producer's id and the batch's sequence number.
flatbuffers::FlatBufferBuilder idempotent_produce(std::uint64_t rid, const std::string& topic,
                                                  const std::vector<std::string>& bodies, std::uint64_t producer_id,
                                                  std::uint64_t sequence) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<txmq::wire::Message>> msgs;
  for (const auto& b : bodies)
    msgs.push_back(txmq::wire::CreateMessage(
        fbb, 0, 0, fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(b.data()), b.size())));
  auto body = txmq::wire::CreateProduce(fbb, fbb.CreateString(topic), fbb.CreateVector(msgs), producer_id, sequence);
  fbb.FinishSizePrefixed(txmq::wire::CreateFrame(fbb, rid, txmq::wire::Body::Produce, body.Union()));
  return fbb;
}

RawConnection raw_connect(const std::string& address) {
  auto conn = RawConnection::connect(address, kWait);
  REQUIRE_MESSAGE(conn.ok(), describe(conn));
  auto st = conn->send_frame(hello_frame(1), kWait);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  auto f = conn->read_frame(kWait);
  REQUIRE_MESSAGE(f.ok(), describe(f));
  REQUIRE(f->type() == txmq::wire::Body::HelloOk);
  return std::move(*conn);
}

using Refs = std::vector<std::pair<std::uint32_t, std::uint64_t>>;  // (partition, offset) per message

// Sends the batch and returns the offsets its ProduceOk carries.
Refs produce_raw(RawConnection& conn, std::uint64_t rid, const std::string& topic,
                 const std::vector<std::string>& bodies, std::uint64_t producer_id, std::uint64_t sequence) {
  auto st = conn.send_frame(idempotent_produce(rid, topic, bodies, producer_id, sequence), kWait);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  auto f = conn.read_frame(kWait);
  REQUIRE_MESSAGE(f.ok(), describe(f));
  REQUIRE_MESSAGE(f->type() == txmq::wire::Body::ProduceOk, "got " << txmq::wire::EnumNameBody(f->type()));
  CHECK(f->request_id() == rid);
  Refs refs;
  const auto* ok = f->frame().body_as_ProduceOk();
  if (ok && ok->offsets())
    for (const auto* r : *ok->offsets()) refs.emplace_back(r->partition(), r->offset());
  return refs;
}

}  // namespace

// -- visibility --------------------------------------------------------------------------

TEST_CASE("a prepared message that was not ended is never delivered to consumers") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  prepare(producer, "orders", text("half"));

  send_sentinel(broker.address(), "orders");
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK_FALSE(consumer.wait_for(2, kQuiet));
  CHECK(consumer.bodies() == std::vector<std::string>{"sentinel"});
  // Not stored in the topic either: the sentinel took the first offset.
  auto all = stored(broker.address(), "orders");
  REQUIRE(all.size() == 1);
  CHECK(all[0].body == "sentinel");
  CHECK(all[0].offset == 0);
}

TEST_CASE("commit makes the prepared message visible: a consumer receives it with key and headers") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  Message m = text("order-1", "customer-7");
  m.headers = {Header{"trace", "t-1"}};
  const std::uint64_t id = prepare(producer, "orders", std::move(m));

  auto r = producer.end(id, LocalTransactionState::kCommit, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->transaction_id == id);
  CHECK(r->state == TxnState::kCommitted);
  CHECK(r->changed);

  REQUIRE(consumer.wait_for(1, kWait));
  CHECK_FALSE(consumer.wait_for(2, kQuiet));
  const Delivery d = consumer.deliveries()[0];
  CHECK(d.body == "order-1");
  CHECK(d.key == "customer-7");
  CHECK(header(d, "trace") == std::optional<std::string>("t-1"));
  CHECK_FALSE(header(d, "txmq-resolved-by").has_value());  // the producer ended it, not an operator
  Admin admin(client_options(broker.address()));
  auto t = show(admin, id);
  CHECK(t.state == TxnState::kCommitted);
  CHECK(t.resolution == "producer");
  CHECK(t.offset == d.offset);
  CHECK(checker.count() == 0);
}

TEST_CASE("rollback discards the prepared message: nothing is delivered") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  const std::uint64_t id = prepare(producer, "orders", text("doomed"));

  auto r = producer.end(id, LocalTransactionState::kRollback, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->state == TxnState::kRolledBack);
  CHECK(r->changed);

  send_sentinel(broker.address(), "orders");
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK_FALSE(consumer.wait_for(2, kQuiet));
  CHECK(consumer.bodies() == std::vector<std::string>{"sentinel"});
  CHECK(stored(broker.address(), "orders").size() == 1);
}

// -- check-back after the producer process died ------------------------------------------

namespace {

// The producer process that prepared is SIGKILLed; a second process of the same group
// answers the check-back with `answer` from its own state file. Returns the transaction.
std::uint64_t crash_and_answer(BrokerProcess& broker, TempDir& dir, const std::string& answer) {
  auto hung = start_tool(broker.address(), "payments", "orders", "prepare-and-hang", dir.file("unused"));
  const std::uint64_t id = std::stoull(hung.first_line);
  hung.process->kill9();

  write_file(dir.file("state"), answer + "\n");
  auto answering = start_tool(broker.address(), "payments", "orders", "answer", dir.file("state"));
  REQUIRE(answering.first_line == "ready");
  // The check reaches the new process, which answers from its state file.
  std::optional<std::string> line;
  for (int i = 0; i < 20; ++i) {
    line = answering.process->read_line(kWait);
    if (!line || *line == "answered " + std::to_string(id) + " " + answer) break;
  }
  CHECK(line == std::optional<std::string>("answered " + std::to_string(id) + " " + answer));
  CHECK(answering.process->terminate() == 0);
  return id;
}

}  // namespace

TEST_CASE("after the producer process is killed, a second process of the group answers commit and the message is delivered") {
  TempDir dir("txmq-txn-crash");
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");

  const std::uint64_t id = crash_and_answer(broker, dir, "commit");

  Admin admin(client_options(broker.address()));
  CHECK(wait_for_state(admin, id, TxnState::kCommitted));
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK_FALSE(consumer.wait_for(2, kQuiet));
  CHECK(consumer.bodies() == std::vector<std::string>{"half message from txn_producer_tool"});
  CHECK(show(admin, id).checks >= 1);
}

TEST_CASE("after the producer process is killed, a second process of the group answers rollback and nothing is delivered") {
  TempDir dir("txmq-txn-crash");
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");

  const std::uint64_t id = crash_and_answer(broker, dir, "rollback");

  Admin admin(client_options(broker.address()));
  CHECK(wait_for_state(admin, id, TxnState::kRolledBack));
  send_sentinel(broker.address(), "orders");
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK_FALSE(consumer.wait_for(2, kQuiet));
  CHECK(consumer.bodies() == std::vector<std::string>{"sentinel"});
}

// -- who is asked ------------------------------------------------------------------------

TEST_CASE("no check is counted while no producer of the group is connected; checks start when one connects") {
  TxnTimings timings;
  timings.check_backoff_initial_ms = 100;
  timings.check_backoff_max_ms = 200;
  BrokerProcess broker(broker_options(timings));
  start(broker);
  create_topic(broker.address(), "orders");
  Admin admin(client_options(broker.address()));

  // Checks would come 400 ms after prepare, then every 100-200 ms: the producer is gone
  // well before the first.
  std::uint64_t id = 0;
  {
    RecordingChecker gone(LocalTransactionState::kUnknown);
    TransactionalProducer producer(txn_options(broker.address(), "lonely", 400ms), gone.checker());
    id = prepare(producer, "orders", text("waiting"));
    REQUIRE(gone.count() == 0);
  }

  // 1.5 s with nobody of the group to ask: by the backoff that is the first check and
  // several more. A producer of another group is connected meanwhile and is not asked.
  RecordingChecker bystander(LocalTransactionState::kCommit);
  TransactionalProducer other(txn_options(broker.address(), "other", kNoCheck), bystander.checker());
  CHECK_FALSE(wait_until(
      [&] {
        auto t = show(admin, id);
        return t.state != TxnState::kPrepared || t.checks != 0;
      },
      1500ms, 50ms));
  // It was due all along: only the absence of anyone to ask kept the count at 0.
  auto due = show(admin, id);
  CHECK(due.checks == 0);
  CHECK(due.next_check_ms > 0);
  CHECK(due.next_check_ms < wall_ms());
  CHECK(bystander.count() == 0);

  RecordingChecker present(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "lonely", kNoCheck), present.checker());
  REQUIRE(wait_until([&] { return present.count() >= 3; }, kWait));
  auto checks = present.checks();
  CHECK(checks[0].transaction_id == id);
  CHECK(checks[0].checks == 1);  // numbering starts at the first check actually asked
  CHECK(checks[0].message.body == "waiting");
  CHECK(checks[0].producer_group == "lonely");
  CHECK(checks[0].topic == "orders");
  // The broker records a check just after sending it.
  CHECK(wait_until([&] { return show(admin, id).checks >= 3; }, kWait, 20ms));
}

TEST_CASE("the check goes to the connection that prepared while it is connected, not to others of the group") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  RecordingChecker other_checker(LocalTransactionState::kUnknown);
  TransactionalProducer other(txn_options(broker.address(), "pair", kNoCheck), other_checker.checker());
  RecordingChecker origin_checker(LocalTransactionState::kUnknown);
  TransactionalProducer origin(txn_options(broker.address(), "pair", 100ms), origin_checker.checker());
  const std::uint64_t id = prepare(origin, "orders", text("mine"));

  REQUIRE(wait_until([&] { return origin_checker.count() >= 3; }, kWait));
  CHECK(other_checker.count() == 0);
  for (const auto& c : origin_checker.checks()) CHECK(c.transaction_id == id);
}

TEST_CASE("a checker that throws counts as unknown: the broker asks again and the next answer settles it") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  std::atomic<int> calls{0};
  TransactionalProducer producer(txn_options(broker.address(), "shop", 100ms), [&](const TransactionCheck&) {
    if (++calls == 1) throw std::runtime_error("local database unavailable");
    return LocalTransactionState::kCommit;
  });
  const std::uint64_t id = prepare(producer, "orders", text("second-time-lucky"));
  Admin admin(client_options(broker.address()));
  CHECK(wait_for_state(admin, id, TxnState::kCommitted));
  CHECK(calls.load() == 2);
  CHECK(show(admin, id).checks == 2);
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK(consumer.bodies() == std::vector<std::string>{"second-time-lucky"});
}

TEST_CASE("a group with no producer connected does not hold back the checks of another group") /* Regression (fixed): Broker::run_checks reads the first kChecksPerRound (1000) due
                             transactions by due time and skips those of a group with nobody
                             connected without rescheduling them, so every round reads the same
                             1000 and a later-due transaction of a live group is never checked. */ {
  TxnTimings timings;
  timings.checks_per_second = 100000;  // the rate limit is not what is tested here
  BrokerProcess broker(broker_options(timings));
  start(broker);
  create_topic(broker.address(), "orders");
  constexpr int kOrphans = 1000;  // broker/transaction_coordinator.cpp kChecksPerRound
  {
    RecordingChecker gone(LocalTransactionState::kUnknown);
    // Due 500 ms after prepare, when this producer is long gone.
    TransactionalProducer orphans(txn_options(broker.address(), "orphans", 500ms), gone.checker());
    std::atomic<int> done{0}, failed{0};
    for (int i = 0; i < kOrphans; ++i)
      orphans.prepare_async("orders", text("orphan-" + std::to_string(i)), [&](const txmq::Result<std::uint64_t>& r) {
        if (!r) ++failed;
        ++done;
      });
    REQUIRE(wait_until([&] { return done.load() == kOrphans; }, kWait));
    REQUIRE(failed.load() == 0);
  }
  RecordingChecker live(LocalTransactionState::kCommit);
  // Due after every orphan: behind 1000 due transactions nobody can be asked about.
  TransactionalProducer producer(txn_options(broker.address(), "live", 1000ms), live.checker());
  const std::uint64_t id = prepare(producer, "orders", text("live"));
  Admin admin(client_options(broker.address()));
  CHECK(wait_for_state(admin, id, TxnState::kCommitted));
  CHECK(live.count() >= 1);
}

TEST_CASE("a group at its check rate limit does not hold back the checks of another group") /* Regression (fixed): same cause as the test above. Broker::run_checks reads the
                             first kChecksPerRound (1000) due transactions and skips those whose
                             group has no budget left, so a group with more than 1000 due
                             transactions keeps every other group's later-due checks waiting
                             until its own backlog drains (here 1500 / 50 per s = 30 s). */ {
  constexpr int kBacklog = 1500;
  TxnTimings timings;
  timings.checks_per_second = 50;
  timings.check_backoff_initial_ms = 60000;
  timings.check_backoff_max_ms = 60000;
  BrokerProcess broker(broker_options(timings));
  start(broker);
  create_topic(broker.address(), "orders");
  RecordingChecker busy_checker(LocalTransactionState::kUnknown);
  TransactionalProducer busy(txn_options(broker.address(), "busy", 300ms), busy_checker.checker());
  std::atomic<int> done{0}, failed{0};
  for (int i = 0; i < kBacklog; ++i)
    busy.prepare_async("orders", text("busy-" + std::to_string(i)), [&](const txmq::Result<std::uint64_t>& r) {
      if (!r) ++failed;
      ++done;
    });
  REQUIRE(wait_until([&] { return done.load() == kBacklog; }, kWait));
  REQUIRE(failed.load() == 0);

  RecordingChecker quiet_checker(LocalTransactionState::kCommit);
  TransactionalProducer quiet(txn_options(broker.address(), "quiet", 1000ms), quiet_checker.checker());
  const std::uint64_t id = prepare(quiet, "orders", text("quiet"));
  Admin admin(client_options(broker.address()));
  // Its own group's budget is untouched: it is due in 1 s and should be asked at once then.
  CHECK(wait_for_state(admin, id, TxnState::kCommitted, 5s));
}

// -- send_in_transaction ---------------------------------------------------------------

TEST_CASE("send_in_transaction commits when the executor says commit") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  std::uint64_t executed = 0;
  auto r = producer.send_in_transaction(
      "orders", text("paid"),
      [&](std::uint64_t id) {
        executed = id;
        return LocalTransactionState::kCommit;
      },
      kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->transaction_id == executed);
  CHECK(r->state == TxnState::kCommitted);
  CHECK(r->changed);
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK(consumer.bodies() == std::vector<std::string>{"paid"});
}

TEST_CASE("prepare_async and end_async: a batch of transactions ends each as asked") {
  constexpr int kTxns = 6;
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());

  std::mutex mu;
  std::condition_variable cv;
  std::map<int, std::uint64_t> ids;                                          // guarded by mu
  std::map<int, txmq::Result<txmq::client::TransactionResult>> ends;          // guarded by mu
  std::vector<std::string> errors;                                           // guarded by mu
  for (int i = 0; i < kTxns; ++i)
    producer.prepare_async("orders", text("t" + std::to_string(i)), [&, i](const txmq::Result<std::uint64_t>& r) {
      std::lock_guard lock(mu);
      if (r.ok())
        ids[i] = *r;
      else
        errors.push_back(r.error().describe());
      cv.notify_all();
    });
  {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, kWait, [&] { return ids.size() + errors.size() == kTxns; }));
    REQUIRE_MESSAGE(errors.empty(), errors.front());
    CHECK(std::set<std::uint64_t>{[&] {
            std::set<std::uint64_t> s;
            for (auto [i, id] : ids) s.insert(id);
            return s;
          }()}.size() == kTxns);
  }
  // Even ones commit, odd ones roll back.
  for (int i = 0; i < kTxns; ++i)
    producer.end_async(ids[i], i % 2 == 0 ? LocalTransactionState::kCommit : LocalTransactionState::kRollback,
                       [&, i](const txmq::Result<txmq::client::TransactionResult>& r) {
                         std::lock_guard lock(mu);
                         ends.emplace(i, r);
                         cv.notify_all();
                       });
  {
    std::unique_lock lock(mu);
    REQUIRE(cv.wait_for(lock, kWait, [&] { return ends.size() == kTxns; }));
    for (int i = 0; i < kTxns; ++i) {
      INFO("transaction " << i);
      const auto& r = ends.at(i);
      REQUIRE_MESSAGE(r.ok(), describe(r));
      CHECK(r->transaction_id == ids[i]);
      CHECK(r->changed);
      CHECK(r->state == (i % 2 == 0 ? TxnState::kCommitted : TxnState::kRolledBack));
    }
  }
  REQUIRE(consumer.wait_for(kTxns / 2, kWait));
  CHECK_FALSE(consumer.wait_for(kTxns / 2 + 1, kQuiet));
  auto bodies = consumer.bodies();
  std::sort(bodies.begin(), bodies.end());
  CHECK(bodies == std::vector<std::string>{"t0", "t2", "t4"});
}

TEST_CASE("send_in_transaction with an executor that throws leaves the transaction prepared for the check-back") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kCommit);
  TransactionalProducer producer(txn_options(broker.address(), "shop", 100ms), checker.checker());
  auto r = producer.send_in_transaction(
      "orders", text("settled-later"),
      [](std::uint64_t) -> LocalTransactionState { throw std::runtime_error("crashed mid-transaction"); }, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->state == TxnState::kPrepared);
  CHECK_FALSE(r->changed);

  Admin admin(client_options(broker.address()));
  CHECK(wait_for_state(admin, r->transaction_id, TxnState::kCommitted));
  CHECK(checker.count() >= 1);
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK(consumer.bodies() == std::vector<std::string>{"settled-later"});
}

TEST_CASE("committing a transaction whose topic was deleted ends it rolled back") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "short-lived");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  const std::uint64_t id = prepare(producer, "short-lived", text("orphaned"));
  Admin admin(client_options(broker.address()));
  auto st = admin.delete_topic("short-lived", kWait);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));

  auto r = producer.end(id, LocalTransactionState::kCommit, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->changed);
  CHECK(r->state == TxnState::kRolledBack);
}

// -- parking and the operator ------------------------------------------------------------

namespace {

TxnTimings parking_timings() {
  TxnTimings t;
  t.check_backoff_initial_ms = 100;
  t.check_backoff_max_ms = 200;
  t.max_checks = 3;
  return t;
}

// Prepares one transaction whose checker keeps answering unknown until it is parked.
std::uint64_t prepare_until_parked(const std::string& address, TransactionalProducer& producer,
                                   RecordingChecker& checker) {
  const std::uint64_t id = prepare(producer, "orders", text("stuck", "k"));
  Admin admin(client_options(address));
  REQUIRE(wait_for_state(admin, id, TxnState::kParked));
  REQUIRE(checker.count() == 3);
  return id;
}

}  // namespace

TEST_CASE("after max_checks unknown answers the transaction is parked, no longer checked, and listed as parked") {
  BrokerProcess broker(broker_options(parking_timings()));
  start(broker);
  create_topic(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", 100ms), checker.checker());
  const std::uint64_t id = prepare_until_parked(broker.address(), producer, checker);

  auto checks = checker.checks();
  for (std::uint32_t i = 0; i < checks.size(); ++i) {
    CHECK(checks[i].transaction_id == id);
    CHECK(checks[i].checks == i + 1);
  }
  Admin admin(client_options(broker.address()));
  auto t = show(admin, id);
  CHECK(t.checks == 3);
  CHECK(t.message.body == "stuck");  // an open transaction keeps its message
  auto parked = admin.list_transactions(TxnState::kParked, 100, kWait);
  REQUIRE_MESSAGE(parked.ok(), describe(parked));
  REQUIRE(parked->size() == 1);
  CHECK((*parked)[0].transaction_id == id);
  auto prepared = admin.list_transactions(TxnState::kPrepared, 100, kWait);
  REQUIRE_MESSAGE(prepared.ok(), describe(prepared));
  CHECK(prepared->empty());

  auto cli = run_cli(broker.address(), {"txn", "list", "--state", "parked"});
  CHECK(cli.exit_code == 0);
  INFO("txmq txn list --state parked printed:\n" << cli.out);
  CHECK(cli.out.find(std::to_string(id)) != std::string::npos);
  CHECK(cli.out.find("parked") != std::string::npos);
  auto shown = run_cli(broker.address(), {"txn", "show", std::to_string(id)});
  CHECK(shown.exit_code == 0);
  INFO("txmq txn show printed:\n" << shown.out);
  CHECK(shown.out.find("body: stuck") != std::string::npos);

  // Parked means no more checks: a backoff of at most 200 ms would have asked again.
  CHECK_FALSE(wait_until([&] { return checker.count() > 3; }, 600ms));
}

TEST_CASE("an operator's `txmq txn commit` of a parked transaction delivers it with txmq-resolved-by: operator") {
  BrokerProcess broker(broker_options(parking_timings()));
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", 100ms), checker.checker());
  const std::uint64_t id = prepare_until_parked(broker.address(), producer, checker);
  CHECK_FALSE(consumer.wait_for(1, 0ms));

  auto cli = run_cli(broker.address(), {"txn", "commit", std::to_string(id)});
  INFO("txmq txn commit printed:\n" << cli.out);
  CHECK(cli.exit_code == 0);
  CHECK(cli.out.find("transaction " + std::to_string(id) + " committed") != std::string::npos);

  REQUIRE(consumer.wait_for(1, kWait));
  CHECK_FALSE(consumer.wait_for(2, kQuiet));
  const Delivery d = consumer.deliveries()[0];
  CHECK(d.body == "stuck");
  CHECK(d.key == "k");
  CHECK(header(d, "txmq-resolved-by") == std::optional<std::string>("operator"));
  Admin admin(client_options(broker.address()));
  auto t = show(admin, id);
  CHECK(t.state == TxnState::kCommitted);
  CHECK(t.resolution == "operator");
  auto parked = admin.list_transactions(TxnState::kParked, 100, kWait);
  REQUIRE_MESSAGE(parked.ok(), describe(parked));
  CHECK(parked->empty());
}

TEST_CASE("an operator rollback of a parked transaction through Admin::end_transaction discards it") {
  BrokerProcess broker(broker_options(parking_timings()));
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", 100ms), checker.checker());
  const std::uint64_t id = prepare_until_parked(broker.address(), producer, checker);

  Admin admin(client_options(broker.address()));
  auto r = admin.end_transaction(id, /*commit=*/false, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->changed);
  CHECK(r->state == TxnState::kRolledBack);
  CHECK(show(admin, id).resolution == "operator");
  send_sentinel(broker.address(), "orders");
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK_FALSE(consumer.wait_for(2, kQuiet));
  CHECK(consumer.bodies() == std::vector<std::string>{"sentinel"});
}

TEST_CASE("a producer's late commit of a parked transaction still commits it") {
  BrokerProcess broker(broker_options(parking_timings()));
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", 100ms), checker.checker());
  const std::uint64_t id = prepare_until_parked(broker.address(), producer, checker);

  auto r = producer.end(id, LocalTransactionState::kCommit, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->changed);
  CHECK(r->state == TxnState::kCommitted);
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK(consumer.bodies() == std::vector<std::string>{"stuck"});
  CHECK_FALSE(header(consumer.deliveries()[0], "txmq-resolved-by").has_value());
}

// -- broker crash ------------------------------------------------------------------------

TEST_CASE("a transaction prepared before a broker crash is committed by an end after the restart") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  std::uint64_t id = 0;
  {
    RecordingChecker checker(LocalTransactionState::kUnknown);
    TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
    Message m = text("survivor", "key-1");
    m.headers = {Header{"h", "v"}};
    id = prepare(producer, "orders", std::move(m));
    broker.kill9();
  }
  start(broker);

  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  auto r = producer.end(id, LocalTransactionState::kCommit, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));
  CHECK(r->changed);
  CHECK(r->state == TxnState::kCommitted);
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK_FALSE(consumer.wait_for(2, kQuiet));
  const Delivery d = consumer.deliveries()[0];
  CHECK(d.body == "survivor");
  CHECK(d.key == "key-1");
  CHECK(header(d, "h") == std::optional<std::string>("v"));
}

TEST_CASE("a transaction prepared before a broker crash is resolved by a check-back after the restart") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  std::uint64_t id = 0;
  {
    RecordingChecker checker(LocalTransactionState::kUnknown);
    TransactionalProducer producer(txn_options(broker.address(), "shop", 300ms), checker.checker());
    id = prepare(producer, "orders", text("checked-after-restart"));
    broker.kill9();
  }
  start(broker);

  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kCommit);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  Admin admin(client_options(broker.address()));
  CHECK(wait_for_state(admin, id, TxnState::kCommitted));
  REQUIRE(checker.count() >= 1);
  const auto first = checker.checks()[0];
  CHECK(first.transaction_id == id);
  CHECK(first.message.body == "checked-after-restart");
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK_FALSE(consumer.wait_for(2, kQuiet));
  CHECK(consumer.bodies() == std::vector<std::string>{"checked-after-restart"});
}

TEST_CASE("a producer that outlives a broker crash reconnects and answers the check-back after the restart") {
  TempDir data("txmq-txn-restart");
  txmq::test::BrokerOptions options = broker_options();
  options.data_dir = data.path();
  BrokerProcess first(options);
  start(first);
  const std::string address = first.address();
  create_topic(address, "orders");
  TestConsumer consumer(address, "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(address, "shop", 300ms), checker.checker());
  const std::uint64_t id = prepare(producer, "orders", text("outlived"));

  first.kill9();
  checker.set_answer(LocalTransactionState::kCommit);
  options.listen = address;  // the clients know only this address
  BrokerProcess second(options);
  start(second);

  Admin admin(client_options(address));
  CHECK(wait_for_state(admin, id, TxnState::kCommitted));
  CHECK(checker.count() >= 1);
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK(consumer.bodies() == std::vector<std::string>{"outlived"});
}

// -- duplicate and contradicting ends ----------------------------------------------------

TEST_CASE("committing twice: the second end changes nothing and says committed") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  const std::uint64_t id = prepare(producer, "orders", text("once"));

  auto first = producer.end(id, LocalTransactionState::kCommit, kWait);
  REQUIRE_MESSAGE(first.ok(), describe(first));
  CHECK(first->changed);
  auto second = producer.end(id, LocalTransactionState::kCommit, kWait);
  REQUIRE_MESSAGE(second.ok(), describe(second));
  CHECK(second->transaction_id == id);
  CHECK_FALSE(second->changed);
  CHECK(second->state == TxnState::kCommitted);

  send_sentinel(broker.address(), "orders");
  REQUIRE(consumer.wait_for(2, kWait));
  CHECK_FALSE(consumer.wait_for(3, kQuiet));
  CHECK(consumer.bodies() == std::vector<std::string>{"once", "sentinel"});
}

TEST_CASE("rollback after commit changes nothing: the state stays committed and the message is delivered once") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  const std::uint64_t id = prepare(producer, "orders", text("kept"));

  auto commit = producer.end(id, LocalTransactionState::kCommit, kWait);
  REQUIRE_MESSAGE(commit.ok(), describe(commit));
  REQUIRE(commit->changed);
  auto rollback = producer.end(id, LocalTransactionState::kRollback, kWait);
  REQUIRE_MESSAGE(rollback.ok(), describe(rollback));
  CHECK_FALSE(rollback->changed);
  CHECK(rollback->state == TxnState::kCommitted);
  // An operator cannot take it back either.
  Admin admin(client_options(broker.address()));
  auto op = admin.end_transaction(id, /*commit=*/false, kWait);
  REQUIRE_MESSAGE(op.ok(), describe(op));
  CHECK_FALSE(op->changed);
  CHECK(op->state == TxnState::kCommitted);
  auto t = show(admin, id);
  CHECK(t.state == TxnState::kCommitted);
  CHECK(t.resolution == "producer");

  send_sentinel(broker.address(), "orders");
  REQUIRE(consumer.wait_for(2, kWait));
  CHECK_FALSE(consumer.wait_for(3, kQuiet));
  CHECK(consumer.bodies() == std::vector<std::string>{"kept", "sentinel"});
  CHECK(stored(broker.address(), "orders").size() == 2);
}

TEST_CASE("commit after rollback changes nothing: the state stays rolled back and nothing is delivered") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  TestConsumer consumer(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  const std::uint64_t id = prepare(producer, "orders", text("gone"));

  auto rollback = producer.end(id, LocalTransactionState::kRollback, kWait);
  REQUIRE_MESSAGE(rollback.ok(), describe(rollback));
  REQUIRE(rollback->changed);
  auto commit = producer.end(id, LocalTransactionState::kCommit, kWait);
  REQUIRE_MESSAGE(commit.ok(), describe(commit));
  CHECK_FALSE(commit->changed);
  CHECK(commit->state == TxnState::kRolledBack);

  send_sentinel(broker.address(), "orders");
  REQUIRE(consumer.wait_for(1, kWait));
  CHECK_FALSE(consumer.wait_for(2, kQuiet));
  CHECK(consumer.bodies() == std::vector<std::string>{"sentinel"});
}

TEST_CASE("a commit and a rollback of one transaction in one batch: the first wins, the second changes nothing") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  const std::uint64_t id = prepare(producer, "orders", text("first-wins"));

  std::mutex mu;
  std::condition_variable cv;
  std::vector<txmq::Result<txmq::client::TransactionResult>> results;  // guarded by mu
  auto record = [&](const txmq::Result<txmq::client::TransactionResult>& r) {
    std::lock_guard lock(mu);
    results.push_back(r);
    cv.notify_all();
  };
  // Queued together, they go out as one request.
  producer.end_async(id, LocalTransactionState::kCommit, record);
  producer.end_async(id, LocalTransactionState::kRollback, record);
  std::unique_lock lock(mu);
  REQUIRE(cv.wait_for(lock, kWait, [&] { return results.size() == 2; }));
  REQUIRE_MESSAGE(results[0].ok(), describe(results[0]));
  REQUIRE_MESSAGE(results[1].ok(), describe(results[1]));
  CHECK(results[0]->changed);
  CHECK(results[0]->state == TxnState::kCommitted);
  CHECK_FALSE(results[1]->changed);
  CHECK(results[1]->state == TxnState::kCommitted);
  CHECK(stored(broker.address(), "orders").size() == 1);
}

TEST_CASE("`txmq txn rollback` of a committed transaction changes nothing, says so and exits 1") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  const std::uint64_t id = prepare(producer, "orders", text("done"));
  auto r = producer.end(id, LocalTransactionState::kCommit, kWait);
  REQUIRE_MESSAGE(r.ok(), describe(r));

  auto cli = run_cli(broker.address(), {"txn", "rollback", std::to_string(id)});
  INFO("txmq txn rollback printed:\n" << cli.out);
  CHECK(cli.exit_code == 1);
  CHECK(cli.out.find("already committed") != std::string::npos);
  CHECK(stored(broker.address(), "orders").size() == 1);
}

TEST_CASE("ending a transaction the broker does not know fails with kInvalidArgument") {
  BrokerProcess broker(broker_options());
  start(broker);
  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "shop", kNoCheck), checker.checker());
  auto r = producer.end(123456789, LocalTransactionState::kCommit, kWait);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
}

// -- check rate limit --------------------------------------------------------------------

TEST_CASE("a backlog of 10000 due transactions is checked at no more than checks_per_second") {
  constexpr int kBacklog = 10000;
  constexpr int kCap = 50;  // transactions.checks_per_second
  TxnTimings timings;
  timings.checks_per_second = kCap;
  // Each transaction is asked once in the window: a re-check would come after a minute.
  timings.check_backoff_initial_ms = 60000;
  timings.check_backoff_max_ms = 60000;
  BrokerProcess broker(broker_options(timings));
  start(broker);
  create_topic(broker.address(), "orders");

  // One producer prepares the backlog and leaves (normally before the first is due); checks
  // wait for the next one of the group, which then finds all 10000 due at once, the group's
  // budget full, and nothing else to do but count checks.
  constexpr Millis kCheckAfter = 1000ms;
  {
    RecordingChecker preparer(LocalTransactionState::kUnknown);
    TransactionalProducer producer(txn_options(broker.address(), "backlog", kCheckAfter), preparer.checker());
    std::atomic<int> done{0}, failed{0};
    for (int i = 0; i < kBacklog; ++i)
      producer.prepare_async("orders", text("b" + std::to_string(i)), [&](const txmq::Result<std::uint64_t>& r) {
        if (!r) ++failed;
        ++done;
      });
    REQUIRE(wait_until([&] { return done.load() == kBacklog; }, 30s, 20ms));
    REQUIRE(failed.load() == 0);
  }
  const std::uint64_t all_due_at = wall_ms() + static_cast<std::uint64_t>(kCheckAfter.count());
  REQUIRE(wait_until([&] { return wall_ms() > all_due_at; }, kWait, 20ms));

  RecordingChecker checker(LocalTransactionState::kUnknown);
  TransactionalProducer producer(txn_options(broker.address(), "backlog", kNoCheck), checker.checker());
  REQUIRE(wait_until([&] { return checker.count() > 0; }, kWait));
  const auto t0 = checker.seen()[0].at;
  REQUIRE(wait_until([&] { return Clock::now() >= t0 + 3100ms; }, kWait, 20ms));
  const auto seen = checker.seen();
  // Checks received before the end of each second of the window, counted from its start.
  std::vector<int> by_end_of(3, 0);
  std::set<std::uint64_t> ids;
  for (const auto& s : seen) {
    ids.insert(s.check.transaction_id);
    const auto second = std::chrono::duration_cast<std::chrono::seconds>(s.at - t0).count();
    for (auto k = std::max<long>(second, 0); k < 3; ++k) ++by_end_of[static_cast<std::size_t>(k)];
  }
  INFO("checks by the end of seconds 1, 2, 3 of the window: " << by_end_of[0] << ", " << by_end_of[1] << ", "
                                                              << by_end_of[2] << "; " << seen.size() << " in all");
  // A token bucket lets through at most its burst (the cap) plus the rate times the time
  // passed. Counted cumulatively, checks that reached this process late (a loaded machine
  // delays some and bunches them with later ones) cannot make the count look too high; the
  // slack covers the first check's own delay (5 = 100 ms at 50 per second).
  constexpr int kSlack = kCap / 10;
  CHECK(by_end_of[0] <= 2 * kCap + kSlack);
  CHECK(by_end_of[1] <= 3 * kCap + kSlack);
  CHECK(by_end_of[2] <= 4 * kCap + kSlack);
  // Checks keep flowing at about the rate rather than stopping after the burst.
  CHECK(by_end_of[2] - by_end_of[0] >= kCap);
  CHECK(seen.size() < static_cast<std::size_t>(kBacklog) / 10);
  // Each check so far asked about a different transaction.
  CHECK(ids.size() == seen.size());
}

TEST_CASE("a checks_per_second below 1 still lets checks through, slowly") /* Regression (fixed): Broker::run_checks caps the group's token bucket at `rate`
                             tokens but sends only when it holds >= 1, so with
                             transactions.checks_per_second < 1 (accepted by validate()) no
                             check is ever sent and nothing ever parks. */ {
  TxnTimings timings;
  timings.checks_per_second = 0.5;  // one check every 2 s
  BrokerProcess broker(broker_options(timings));
  start(broker);
  create_topic(broker.address(), "orders");
  RecordingChecker checker(LocalTransactionState::kCommit);
  TransactionalProducer producer(txn_options(broker.address(), "slow", 100ms), checker.checker());
  const std::uint64_t id = prepare(producer, "orders", text("eventually"));
  Admin admin(client_options(broker.address()));
  CHECK(wait_for_state(admin, id, TxnState::kCommitted, 5s));
  CHECK(checker.count() == 1);
}

// -- a proxy that loses answers ----------------------------------------------------------

namespace {

// A TCP proxy between a client and the broker that can swallow the broker's answers and
// then cut the connections: it makes "the broker stored the batch, but its answer was lost
// with the connection" happen on purpose instead of by a lucky kill -9.
// Lifecycle: the constructor listens on 127.0.0.1 port 0 and starts one thread, which
// accepts clients and opens one broker connection for each; the destructor stops it and
// closes everything. Concurrency: drop_answers() and cut() from the test thread.
class LossyProxy {
 public:
  explicit LossyProxy(std::uint16_t broker_port) : broker_port_(broker_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in a = loopback(0);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof(a);
    REQUIRE(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    address_ = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    REQUIRE(::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) == 0);
    thread_ = std::thread([this] { run(); });
  }
  LossyProxy(const LossyProxy&) = delete;
  LossyProxy& operator=(const LossyProxy&) = delete;
  ~LossyProxy() {
    stop_ = true;
    wake();
    thread_.join();
    for (auto& [c, b] : pairs_) close_pair(c, b);
    for (int fd : {listen_fd_, wake_[0], wake_[1]}) ::close(fd);
  }

  const std::string& address() const { return address_; }
  // While on, whatever the broker sends is read and thrown away.
  void drop_answers(bool on) { drop_ = on; }
  // Closes every proxied connection and returns once they are closed.
  void cut() {
    const int before = cuts_done_.load();
    ++cuts_requested_;
    wake();
    REQUIRE(wait_until([&] { return cuts_done_.load() > before; }, kWait));
  }

 private:
  static sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
  }
  void wake() { (void)!::write(wake_[1], "x", 1); }
  static void close_pair(int c, int b) {
    ::close(c);
    ::close(b);
  }
  // Writes all of it (blocking: both peers are local and keep reading). False on error.
  static bool write_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
      ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }

  void run() {
    int cuts_seen = 0;
    while (!stop_) {
      if (cuts_requested_.load() != cuts_seen) {
        cuts_seen = cuts_requested_.load();
        for (auto& [c, b] : pairs_) close_pair(c, b);
        pairs_.clear();
        cuts_done_ = cuts_seen;
      }
      std::vector<pollfd> fds{{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      for (auto& [c, b] : pairs_) {
        fds.push_back({c, POLLIN, 0});
        fds.push_back({b, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
      if (fds[0].revents) {
        char buf[64];
        while (::read(wake_[0], buf, sizeof(buf)) > 0) {
        }
        continue;  // stop or cut first, with a fresh view of the connections
      }
      std::vector<std::size_t> dead;
      for (std::size_t i = 0; 2 + 2 * i < fds.size(); ++i) {
        auto [c, b] = pairs_[i];
        bool ok = true;
        if (fds[2 + 2 * i].revents) ok = pump(c, b, false);
        if (ok && fds[3 + 2 * i].revents) ok = pump(b, c, drop_.load());
        if (!ok) dead.push_back(i);
      }
      for (auto it = dead.rbegin(); it != dead.rend(); ++it) {
        close_pair(pairs_[*it].first, pairs_[*it].second);
        pairs_.erase(pairs_.begin() + static_cast<std::ptrdiff_t>(*it));
      }
      if (fds[1].revents & POLLIN) accept_one();
    }
  }

  void accept_one() {
    int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    int b = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(broker_port_);
    if (b < 0 || ::connect(b, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      ::close(c);
      if (b >= 0) ::close(b);
      return;
    }
    int one = 1;
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pairs_.emplace_back(c, b);
  }

  // Moves what `from` has to `to` (or nowhere, when dropping). False once either is done.
  static bool pump(int from, int to, bool drop) {
    char buf[64 * 1024];
    ssize_t n = ::recv(from, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) return true;
    if (n <= 0) return false;
    return drop || write_all(to, buf, static_cast<std::size_t>(n));
  }

  std::uint16_t broker_port_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::string address_;
  std::thread thread_;
  std::vector<std::pair<int, int>> pairs_;  // proxy thread only: (client side, broker side)
  std::atomic<bool> stop_{false};
  std::atomic<bool> drop_{false};
  std::atomic<int> cuts_requested_{0};
  std::atomic<int> cuts_done_{0};
};

// Sends `count` one-message batches through an idempotent Producer connected via the
// proxy: the first is confirmed normally, the rest reach the broker and are stored, but
// their answers are lost and the connection is cut; the producer resends them on the next
// connection. Returns the stored bodies' copy counts; every send must succeed.
std::map<std::string, int> send_through_lost_answers(BrokerProcess& broker, int count) {
  create_topic(broker.address(), "events");
  LossyProxy proxy(broker.port());
  Producer::Options po;
  static_cast<ClientOptions&>(po) = client_options(proxy.address());
  po.idempotent = true;
  po.max_in_flight_batches = 8;  // the broker below remembers 8: every resend is recognised
  po.max_batch_messages = 1;  // one batch per message: `count` batches in flight
  Producer producer(po);
  auto first = producer.send("events", text("m0"), kWait);
  REQUIRE_MESSAGE(first.ok(), describe(first));

  proxy.drop_answers(true);
  std::mutex mu;
  std::vector<txmq::Result<SendReceipt>> results;  // guarded by mu
  for (int i = 1; i < count; ++i)
    producer.send_async("events", text("m" + std::to_string(i)), [&](const txmq::Result<SendReceipt>& r) {
      std::lock_guard lock(mu);
      results.push_back(r);
    });
  // As many as the producer lets be unanswered are stored (seen directly, not through the
  // proxy), none answered; the rest wait in the producer.
  const auto in_flight = std::min<std::uint64_t>(static_cast<std::uint64_t>(count - 1), po.max_in_flight_batches);
  Admin admin(client_options(broker.address()));
  REQUIRE(wait_until(
      [&] {
        auto d = admin.describe_topic("events", kWait);
        return d.ok() && d->partitions[0].next_offset == 1 + in_flight;
      },
      kWait, 10ms));
  {
    std::lock_guard lock(mu);
    REQUIRE(results.empty());
  }
  proxy.cut();
  proxy.drop_answers(false);

  auto st = producer.flush(kWait);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  {
    std::lock_guard lock(mu);
    REQUIRE(results.size() == static_cast<std::size_t>(count - 1));
    for (const auto& r : results) CHECK_MESSAGE(r.ok(), describe(r));
  }
  std::map<std::string, int> copies;
  for (const auto& d : stored(broker.address(), "events")) ++copies[d.body];
  CHECK(copies.size() == static_cast<std::size_t>(count));
  return copies;
}

}  // namespace

// -- idempotent producer -----------------------------------------------------------------

TEST_CASE("a batch sent again with the same producer id and sequence is appended once and answered with the first offsets") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "events");
  const std::vector<std::string> batch{"e0", "e1", "e2"};
  Refs first, again;
  {
    RawConnection conn = raw_connect(broker.address());
    first = produce_raw(conn, 2, "events", batch, /*producer_id=*/0xfeed, /*sequence=*/1);
  }
  // As after a reconnect: a new connection resends the same batch.
  RawConnection conn = raw_connect(broker.address());
  again = produce_raw(conn, 2, "events", batch, 0xfeed, 1);
  CHECK(first == Refs{{0, 0}, {0, 1}, {0, 2}});
  CHECK(again == first);
  auto all = stored(broker.address(), "events");
  REQUIRE(all.size() == 3);
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i].body == batch[i]);

  // The next sequence is a new batch.
  auto next = produce_raw(conn, 3, "events", {"e3"}, 0xfeed, 2);
  CHECK(next == Refs{{0, 3}});
  CHECK(stored(broker.address(), "events").size() == 4);
}

TEST_CASE("an idempotent producer's batch resent after a broker crash and restart is not appended again") {
  BrokerProcess broker(broker_options());
  start(broker);
  create_topic(broker.address(), "events");
  const std::vector<std::string> batch{"e0", "e1"};
  Refs first;
  {
    RawConnection conn = raw_connect(broker.address());
    first = produce_raw(conn, 2, "events", batch, 0xbeef, 7);
  }
  broker.kill9();
  start(broker);

  RawConnection conn = raw_connect(broker.address());
  auto again = produce_raw(conn, 2, "events", batch, 0xbeef, 7);
  CHECK(again == first);
  auto all = stored(broker.address(), "events");
  REQUIRE(all.size() == 2);
  CHECK(all[0].body == "e0");
  CHECK(all[1].body == "e1");
}

TEST_CASE("an idempotent producer silent for producers.expiry_ms is forgotten: its resend is appended anew") {
  txmq::test::BrokerOptions options = broker_options();
  options.config_toml += "\n[producers]\nexpiry_ms = 1000\n\n[retention]\ncheck_interval_ms = 50\n";
  BrokerProcess broker(options);
  start(broker);
  create_topic(broker.address(), "events");
  RawConnection conn = raw_connect(broker.address());
  const auto sent = std::chrono::steady_clock::now();
  const Refs first = produce_raw(conn, 2, "events", {"e0"}, 0xfeed, 1);
  REQUIRE(first == Refs{{0, 0}});
  // Remembered for now: the resend gets the first answer and nothing is appended...
  CHECK(produce_raw(conn, 3, "events", {"e0"}, 0xfeed, 1) == first);
  // ...until the producer has been silent for a second; then the same batch is new.
  std::uint64_t rid = 4;
  Refs later;
  REQUIRE(wait_until(
      [&] {
        later = produce_raw(conn, ++rid, "events", {"e0"}, 0xfeed, 1);
        return later != first;
      },
      kWait, 100ms));
  // Stamped and pruned on the wall clock, measured here on the steady one: a little slack.
  CHECK(std::chrono::steady_clock::now() - sent >= 990ms);
  CHECK(later == Refs{{0, 1}});
}

TEST_CASE("an idempotent Producer's sends across a broker crash all succeed and are each stored once") {
  constexpr int kMessages = 400;
  TempDir data("txmq-idempotent");
  txmq::test::BrokerOptions options = broker_options();
  options.data_dir = data.path();
  BrokerProcess first(options);
  start(first);
  const std::string address = first.address();
  create_topic(address, "events");

  Producer::Options po;
  static_cast<ClientOptions&>(po) = client_options(address);
  po.idempotent = true;
  po.request_timeout = 30s;
  po.max_batch_messages = 10;  // many batches, so that some are in flight at the crash
  Producer producer(po);
  std::mutex mu;
  std::vector<std::string> errors;  // guarded by mu
  std::atomic<int> confirmed{0};
  auto send = [&](int i) {
    producer.send_async("events", text("m" + std::to_string(i)), [&](const txmq::Result<SendReceipt>& r) {
      if (r.ok()) {
        ++confirmed;
        return;
      }
      std::lock_guard lock(mu);
      errors.push_back(r.error().describe());
    });
  };
  for (int i = 0; i < kMessages / 2; ++i) send(i);
  // Crash once some, not all, of the first half were confirmed.
  REQUIRE(wait_until([&] { return confirmed.load() > 0; }, kWait, 1ms));
  first.kill9();
  for (int i = kMessages / 2; i < kMessages; ++i) send(i);
  options.listen = address;  // the producer knows only this address
  BrokerProcess second(options);
  start(second);

  auto st = producer.flush(30s);
  REQUIRE_MESSAGE(st.ok(), txmq::test::describe(st));
  {
    std::lock_guard lock(mu);
    CHECK_MESSAGE(errors.empty(), (errors.empty() ? "" : errors.front()));
  }
  CHECK(confirmed.load() == kMessages);
  std::map<std::string, int> copies;
  for (const auto& d : stored(address, "events")) ++copies[d.body];
  CHECK(copies.size() == static_cast<std::size_t>(kMessages));
  for (const auto& [body, n] : copies) {
    INFO("body " << body);
    CHECK(n == 1);
  }
}

TEST_CASE("an idempotent Producer resends batches whose answers were lost, and the broker appends them once") {
  BrokerProcess broker(broker_options());
  start(broker);
  auto copies = send_through_lost_answers(broker, 20);
  for (const auto& [body, n] : copies) {
    INFO("body " << body);
    CHECK(n == 1);
  }
}

TEST_CASE("an idempotent Producer with more unanswered batches than the broker's window still stores each once") /* Regression (fixed): the client (client/src/producer.cpp, ProducerImpl) keeps any
                             number of idempotent batches in flight and resends all of them after
                             a reconnect, but the broker (WriteTxn::record_producer_batch) only
                             remembers the last producers.idempotence_window batches: resent
                             batches older than that are appended a second time, with new
                             offsets, and reported to the caller as ok. */ {
  TxnTimings timings;
  txmq::test::BrokerOptions options = broker_options(timings);
  options.config_toml += "[producers]\nidempotence_window = 8\n";
  BrokerProcess broker(options);
  start(broker);
  auto copies = send_through_lost_answers(broker, 20);  // 19 unanswered, window 8
  int duplicated = 0;
  for (const auto& [body, n] : copies) duplicated += n > 1;
  CHECK(duplicated == 0);
}
