// libFuzzer target: the broker's request dispatcher, end to end over TCP, against a real
// store. One Broker runs in this process for the whole fuzzing session (inproc_broker.h);
// each input becomes a sequence of frames sent over one loopback connection, followed by
// a sentinel whose answer proves that every frame before it was read, verified and
// dispatched, and every write it caused was committed. The sentinel is a produce of one
// empty message to "fuzz-sentinel" (retention 64 KiB): the storage writer applies its
// operations in order, so its ProduceOk comes after every earlier write's completion. (A
// read-only sentinel such as GetStats proves only dispatch; the writer then falls behind
// by thousands of operations and crashes in them surface inputs later.)
//
// An input is one flags byte, then chunks, each a 2-byte little-endian length and that
// many bytes; each chunk goes out as one frame with a correct 4-byte length prefix, so
// that it reaches verification and dispatch instead of dying in the framing. A last chunk
// shorter than its length is sent with what there is.
//
//   flags bit 0: send on a fresh connection that has not said Hello (the handshake path),
//                closed afterwards. Otherwise the frames go on the long-lived session,
//                which says Hello (producer group "fuzz-producers") ahead of the first
//                input after each connect, and is reconnected whenever the broker closes
//                it after a fatal error.
//   flags bit 1: send the bytes after the flags verbatim, unframed, on a fresh connection,
//                then hang up: the broker's own framing (FrameTooLarge, empty frames,
//                frames cut short by the peer leaving).
//
// State carries over from input to input (topics, groups, transactions), as on a real
// broker; a crash report names the input that crashed, and reproducing it may need the
// inputs before it (run the crash directory as a corpus).
//
// Environment: TXMQ_FUZZ_LOG=debug shows the broker's log; TXMQ_FUZZ_KEEP_DATA=1 keeps
// the data directory at exit.

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "broker/config.h"
#include "fuzz/inproc_broker.h"
#include "fuzz/loopback_session.h"
#include "fuzz/requests.h"

namespace {

using namespace std::chrono_literals;
using txmq::fuzz::InprocBroker;
using txmq::fuzz::LoopbackSession;

// Generous: the broker runs under ASan and UBSan on a shared machine, where one sentinel
// once went unanswered for 10 s and the input did not reproduce it (the store was on disk
// then; a writer's fsync queued behind other I/O is the likely cause). Only a hang waits
// this long, and then it is a finding. (scripts/fuzz.sh's -timeout=60 is the backstop.)
constexpr auto kAnswerTimeout = 30s;
// Request ids the fuzzer's own frames are unlikely to use: 0x5e... then a round counter.
constexpr std::uint64_t kSentinelBase = 0x5e00'0000'0000'0000ull;
constexpr const char* kSentinelTopic = "fuzz-sentinel";
// Retention keeps the sentinel topic from filling the store over millions of inputs.
constexpr std::uint64_t kSentinelRetentionBytes = 64 * 1024;

struct Harness {
  InprocBroker broker;
  LoopbackSession session;  // said Hello; reused across inputs while the broker keeps it
  LoopbackSession fresh;    // one input's connection without Hello
  std::uint64_t next_rid = kSentinelBase;
  bool sentinel_topic_created = false;
  std::vector<std::uint8_t> out;  // reused for every input's bytes
};

Harness* harness = nullptr;

txmq::broker::BrokerConfig fuzz_config() {
  txmq::broker::BrokerConfig c;
  // Nothing here tests durability: relaxed mode skips the meta page's sync per commit
  // (the data directory is on tmpfs, where the data pages' sync is free too).
  c.sync = txmq::broker::storage::SyncMode::kRelaxed;
  // Small enough that a long run reaches StorageFull and the paths that free space.
  c.storage_max_bytes = 256ull << 20;
  c.auto_create_topics = true;
  // Short transaction and retention timers, so check-backs, parking and retention run
  // during fuzzing rather than never.
  c.txn_timeout = 200ms;
  c.txn_check_initial = 200ms;
  c.txn_check_max = 2000ms;
  c.txn_max_checks = 3;
  c.retention_check_interval = 1000ms;
  c.max_frame_bytes = 1u << 20;
  c.max_message_bytes = 64u << 10;
  return c;
}

void stop_at_exit() {
  if (!harness) return;
  harness->session.close();
  harness->fresh.close();
  harness->broker.stop();
}

void connect_or_die(LoopbackSession& conn) {
  if (conn.connect(harness->broker.port())) return;
  std::fprintf(stderr, "dispatch harness: cannot connect; the broker %s\n",
               harness->broker.running() ? "refuses connections" : "stopped");
  std::abort();
}

// Sends one frame of the harness's own on the session and waits for its answer.
void session_request(const std::vector<std::uint8_t>& frame, std::uint64_t rid, const char* what) {
  if (harness->session.exchange(frame, rid, kAnswerTimeout) != LoopbackSession::Outcome::kAnswered) {
    std::fprintf(stderr, "dispatch harness: the broker closed the session on a valid %s\n", what);
    std::abort();
  }
}

// Connects the session. Returns the Hello to send ahead of the input's frames: after a
// fatal error (most mutated inputs end in one) a separate Hello round trip per reconnect
// would cost as much as the input itself, and the broker handles frames in order anyway.
// The first session also creates the sentinel topic, once, with its retention; an input
// may delete it, and the sentinel's produce then creates it again (topics.auto_create)
// without retention, which is fine: deleting it freed the space.
std::vector<std::uint8_t> open_session() {
  connect_or_die(harness->session);
  if (!harness->sentinel_topic_created) {
    std::uint64_t rid = harness->next_rid++;
    session_request(txmq::fuzz::hello_frame(rid), rid, "Hello");
    rid = harness->next_rid++;
    session_request(txmq::fuzz::create_topic_frame(rid, kSentinelTopic, kSentinelRetentionBytes), rid, "CreateTopic");
    harness->sentinel_topic_created = true;
    return {};
  }
  return txmq::fuzz::hello_frame(harness->next_rid++);
}

// The chunks of the input as frames with their length prefix, into out.
void frame_chunks(const std::uint8_t* data, std::size_t size, std::vector<std::uint8_t>& out) {
  std::size_t pos = 0;
  while (pos + 2 <= size) {
    std::size_t len = static_cast<std::size_t>(data[pos]) | static_cast<std::size_t>(data[pos + 1]) << 8;
    pos += 2;
    len = std::min(len, size - pos);
    const std::uint8_t prefix[4] = {static_cast<std::uint8_t>(len), static_cast<std::uint8_t>(len >> 8), 0, 0};
    out.insert(out.end(), prefix, prefix + 4);
    out.insert(out.end(), data + pos, data + pos + len);
    pos += len;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (!harness) {
    harness = new Harness;
    harness->broker.start(fuzz_config());
    std::atexit(stop_at_exit);
  }
  if (size < 1) return 0;
  const std::uint8_t flags = data[0];
  ++data;
  --size;
  auto& out = harness->out;
  out.clear();

  if (flags & 2) {
    connect_or_die(harness->fresh);
    out.assign(data, data + size);
    harness->fresh.send_and_hang_up(out, kAnswerTimeout);
    return 0;
  }

  if (!(flags & 1) && !harness->session.connected()) out = open_session();
  frame_chunks(data, size, out);
  const std::uint64_t rid = harness->next_rid++;
  auto sentinel = txmq::fuzz::produce_frame(rid, kSentinelTopic);
  out.insert(out.end(), sentinel.begin(), sentinel.end());
  if (flags & 1) {
    connect_or_die(harness->fresh);
    harness->fresh.exchange(out, rid, kAnswerTimeout);
    harness->fresh.close();
    return 0;
  }
  harness->session.exchange(out, rid, kAnswerTimeout);  // kClosed: reconnect next time
  return 0;
}
