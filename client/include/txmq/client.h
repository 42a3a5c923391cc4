#pragma once
// txmq client library: the only header an application includes.
//
// Caveats first:
//  - Every object here (Producer, Consumer, Admin) owns one TCP connection and one I/O
//    thread. Create one per role and keep it; do not create one per message.
//  - A send is confirmed only when the broker has committed the message to disk. A send
//    that fails with a retryable error (kConnectionLost, kTimeout, ...) may or may not have
//    been stored: retrying it can store it twice. An idempotent producer
//    (Producer::Options::idempotent) removes this caveat for its own resends: a batch whose
//    connection dropped is sent again by the producer and stored once. A send the
//    application repeats itself is a new message.
//  - Consumers get each message at least once: a message whose ack did not reach the
//    broker is delivered again, to this or another consumer of the group.
//  - Callbacks (send_async's callback, the Consumer's handler, the TransactionalProducer's
//    checker and async callbacks) run on the object's I/O thread. They must not block for
//    long, and must not call the blocking methods of the same object: those (send, flush,
//    wait_subscribed, flush_acks, send_in_transaction, prepare, end, and send_async or
//    send_in_transaction_async when they would wait for room) fail at once with
//    kInvalidArgument there. Local transactions of send_in_transaction_async run on the
//    producer's worker threads instead.
//
// Thread safety: every public method of every class may be called from any thread.
// Errors are values: Result<T> holds a T or an Error whose code comes from the shared
// table in common/errors.h; Error::retryable() says whether trying again can help.
// Connections reconnect by themselves with exponential backoff.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/errors.h"
#include "common/result.h"
#include "common/well_known.h"

namespace txmq::client {

using Millis = std::chrono::milliseconds;

// TLS to the broker, whose protocol port must have tls.enabled (see the README's "TLS").
struct TlsOptions {
  bool enabled = false;
  // PEM file of the CA(s) to verify the broker's certificate with; "" uses the system's
  // trusted CAs. The certificate must also name the host of ClientOptions::broker: a name
  // among its DNS names, an address among its IP addresses.
  std::string ca_file;
  // A client certificate and its private key (PEM), for a broker that asks for one
  // (tls.client_auth); both or neither.
  std::string cert_file;
  std::string key_file;
};

struct ClientOptions {
  // The broker: "host:port" (a name, resolved with getaddrinfo on the connection's I/O
  // thread before each connection round), "a.b.c.d:port" or "[v6]:port". Each address a
  // name resolves to is tried in turn until one connects. A name that does not resolve is
  // retried like a refused connection; its error (kNotConnected) names the host and gives
  // the resolver's reason. Text that is not an address fails every request with
  // kInvalidArgument.
  //
  // Or the brokers of a replicated cluster, comma-separated: "h1:p1,h2:p2,h3:p3". A round
  // tries them in turn (each one's resolved addresses first), starting from the one that
  // last answered; when all fail, the backoff, then the next round. A follower refuses
  // requests with kNotLeader naming its leader: the connection is then dropped as if lost
  // and the next one goes to that leader, listed or not. Requests the object may resend
  // (an idempotent producer's batches, acks, transaction ends) go out again to the leader;
  // the one refused gets kNotLeader, the others in flight kConnectionLost, both retryable.
  // A Consumer subscribes again and a TransactionalProducer says hello again with its
  // producer group there, as after any reconnect.
  std::string broker = "127.0.0.1:7411";
  std::string client_name = "txmq-client";
  Millis request_timeout{30000};    // default deadline of calls that take no timeout
  Millis reconnect_initial{100};    // first backoff after a lost connection
  Millis reconnect_max{5000};       // backoff doubles up to this
  // 0 (the default): requests made before the first connection wait for it until their own
  // deadlines, while the connection retries. Otherwise, until the broker first answers the
  // hello, requests fail at once with kNotConnected and the reason when an attempt fails
  // (name not found, every address refused or unreachable), and every request still waiting
  // fails this long after the object was created; the connection keeps retrying in the
  // background either way. A follower's NotLeader, which sends the connection on to the
  // leader, is not such a failure. For tools that must report an unreachable broker quickly (the
  // txmq tool uses 1000 ms). A Consumer's subscription is not a request: it keeps waiting.
  Millis first_connect_timeout{0};
  // Heartbeats: the client asks the broker for this interval in its hello (a broker may
  // raise it to its limits.heartbeat_min_interval_ms). Each side then sends a heartbeat
  // when it has sent nothing else for the interval, and drops the connection when it has
  // heard nothing for three intervals: a broker whose machine died or whose network was cut
  // is found in seconds (requests in flight fail with kConnectionLost and the client
  // reconnects, to the new leader in a cluster), and the broker gives a vanished client's
  // deliveries and transaction checks to live connections. 0: none (the broker then never
  // closes this connection for silence). A handler that holds the I/O thread longer than
  // the interval does not count as the broker's silence; but it holds this client's
  // heartbeats back too, so one that holds it for three intervals is taken for gone by the
  // broker (its deliveries go to other consumers): handlers must not block for long.
  Millis heartbeat_interval{2000};
  // Set by TransactionalProducer: the broker sends this group's transaction checks here.
  std::string producer_group;
  // With tls.enabled every connection is TLS 1.2 or newer. Files that cannot be loaded
  // fail every request with kInvalidArgument naming the file. A failed handshake is an
  // attempt that failed (kNotConnected, "TLS handshake failed: " and OpenSSL's reason:
  // "certificate verify failed (...)", "tlsv13 alert certificate required"), retried like
  // a refused connection; so is a broker that does not speak TLS on that port ("the broker
  // did not answer with TLS"). A client without TLS on a TLS port gets kInvalidArgument
  // from the broker.
  TlsOptions tls;
  // For a broker with authentication on: a user and password, proved with SCRAM-SHA-256
  // (the password never crosses the wire, and the client checks that the broker holds the
  // user's keys). Empty user: none given; a broker that authenticates then takes the
  // client certificate's name, or anonymous access if it allows that. Wrong credentials
  // fail requests with kAuthenticationFailed ("authentication failed", the same for an
  // unknown user), retried like a refused connection; so does a broker that does not
  // authenticate when a user was given (it could be anyone).
  std::string user;
  std::string password;
};

struct Header {
  std::string name;
  std::string value;
};

struct Message {
  std::string key;              // empty: no key; otherwise picks the partition by hash
  std::vector<Header> headers;
  std::string body;
  int partition = -1;           // >= 0 forces a partition
  // Delayed delivery: invisible to every group until deliver_at_ms (ms since the epoch),
  // or until delay after the broker stored it. Survives broker restarts.
  std::uint64_t deliver_at_ms = 0;
  Millis delay{0};
};

// The offset a delayed message reports: it gets its real one when it comes due.
inline constexpr std::uint64_t kDelayedOffset = UINT64_MAX;

struct SendReceipt {
  std::uint32_t partition = 0;
  std::uint64_t offset = 0;     // kDelayedOffset for a delayed message
  bool delayed() const { return offset == kDelayedOffset; }
};

// A message handed to a Consumer's handler. Owns its data. A dead letter carries its
// history in headers named txmq-* (see the README's "Dead letters").
struct Delivery {
  std::string topic;
  std::string group;
  std::uint32_t partition = 0;
  std::uint64_t offset = 0;
  std::uint64_t timestamp_ms = 0;    // when the broker stored it
  std::uint32_t delivery_count = 1;  // 1 on the first delivery
  std::string key;
  std::vector<Header> headers;
  std::string body;
  // The reasons given with this message's earlier nacks and terminates in this group, and
  // "lease expired" for deliveries nobody settled in time; oldest first, the last 64. Kept
  // by the broker, so a consumer that crashed and restarted still sees them.
  std::vector<std::string> history;
};

struct PartitionInfo {
  std::uint32_t partition = 0;
  std::uint64_t first_offset = 0;  // oldest stored
  std::uint64_t next_offset = 0;   // the next message's offset
};

struct TopicInfo {
  std::string name;
  std::uint64_t created_at_ms = 0;
  std::vector<PartitionInfo> partitions;
  std::uint64_t retention_ms = 0;     // 0: the broker's default
  std::uint64_t retention_bytes = 0;  // per partition; 0: the broker's default
};

struct TopicOptions {
  std::uint32_t partitions = 1;
  std::uint64_t retention_ms = 0;     // 0: the broker's default (retention.max_age_ms)
  std::uint64_t retention_bytes = 0;  // 0: the broker's default (retention.max_partition_bytes)
};

enum class GroupMode {
  kShared,   // any consumer, any order (default)
  kOrdered,  // per partition: in order, one at a time, to one consumer
};

// How failed deliveries are retried: `delays` (one per retry, the last repeating) or, when
// it is empty, exponential from exponential_initial by exponential_factor up to
// exponential_max; each varied by +-jitter (0.2 = 20%). Past max_deliveries a message goes
// to the group's dead-letter topic.
struct RetrySchedule {
  std::uint32_t max_deliveries = 16;
  // The broker's default: RocketMQ's levels.
  std::vector<Millis> delays = {Millis(1000),    Millis(5000),    Millis(10000),   Millis(30000),  Millis(60000),
                                Millis(120000),  Millis(180000),  Millis(240000),  Millis(300000), Millis(360000),
                                Millis(420000),  Millis(480000),  Millis(540000),  Millis(600000), Millis(1200000),
                                Millis(1800000), Millis(3600000), Millis(7200000)};
  Millis exponential_initial{1000};
  double exponential_factor = 2.0;
  Millis exponential_max{3600000};
  double jitter = 0.0;
};

// What configure_group changes; absent fields stay as they are.
struct GroupConfig {
  std::optional<GroupMode> mode;
  std::optional<Millis> ack_wait;  // the lease of each delivery
  std::optional<RetrySchedule> retry;
};

struct GroupInfo {
  std::string group;
  std::string topic;
  GroupMode mode = GroupMode::kShared;
  std::uint32_t consumers = 0;
  std::uint64_t lag = 0;            // messages not yet acknowledged
  std::uint64_t in_flight = 0;      // delivered, awaiting a verdict
  std::uint64_t waiting_retry = 0;  // failed, waiting for their retry time
  std::uint64_t redeliveries = 0;   // since the broker started
  std::uint64_t dead_letters = 0;   // in the group's dead-letter topic (from this topic)
  Millis ack_wait{0};
  RetrySchedule retry;
};

struct RedriveResult {
  std::vector<std::uint64_t> redriven;  // dead-letter offsets moved back
  std::vector<std::uint64_t> failed;    // not this group's, or their origin is gone, or unmarked
  std::vector<std::uint64_t> unmarked;  // of failed: without the broker's mark (see redrive)
};

// What redrive does with a letter that lacks the mark the broker stores with each dead
// letter it writes: one stored by a broker from before the mark (or not by the broker).
enum class RedriveUnmarked {
  kRefuse,  // leave it (listed in RedriveResult::unmarked)
  kTrust,   // move it too: the operator vouches for its txmq-* headers
};

// The dead-letter topic of a consumer group ("<group>.dlq"); the headers each dead letter
// carries are named in common/well_known.h (txmq::kReasonHeader, ...).
using txmq::dead_letter_topic;

struct BrokerStats {
  std::string broker_version;
  std::uint64_t uptime_ms = 0;
  std::uint32_t connections = 0;
  std::uint32_t topics = 0;
  std::uint64_t messages_produced = 0;
  std::uint64_t bytes_produced = 0;
  std::uint64_t messages_delivered = 0;
  std::uint64_t messages_acked = 0;
  std::uint64_t storage_used_bytes = 0;
  std::uint64_t storage_max_bytes = 0;
  std::uint64_t commits = 0;
};

// A follower as the leader sees it (txmq cluster status).
struct ReplicaInfo {
  std::string id;                        // its replication.id
  std::string address;                   // its client address, from replication.peers
  std::uint64_t durable_index = 0;       // its acknowledgement: its log is on its disk up to here
  bool in_sync = false;                  // counts towards min_insync and the commit index
  std::uint64_t lag_records = 0;         // records of the leader's log it does not hold yet
  std::uint64_t lag_bytes = 0;           // and their bytes
  Millis lag{0};                         // since its log last held the leader's whole log
  std::optional<Millis> last_fetch_ago;  // since its last fetch; nullopt: it never fetched
};

// The cluster's keys in etcd ([cluster]: automatic failover), as one broker last read them.
struct EtcdView {
  std::string endpoint;              // the etcd endpoint the broker uses now
  bool lease_held = false;           // the broker holds its lease: it is a registered member
  std::string leader;                // the leader etcd names ("" when none)
  std::uint64_t epoch = 0;
  std::vector<std::string> in_sync;  // who may be elected
  std::uint32_t min_insync = 0;
  std::vector<std::string> members;  // registered brokers (their leases alive)
};

// A broker's view of replication (broker/replication.h); answered by leaders and
// followers alike.
struct ClusterInfo {
  std::string id;                  // this broker's replication.id; "" when replication is off
  std::string role;                // "leader", "follower" or "standalone"
  std::uint64_t epoch = 0;         // the newest leadership epoch this broker holds
  std::string leader;              // the leader's id as this broker knows it
  std::string leader_address;      // and its client address
  std::string mode;                // "sync" (confirm once on min_insync brokers) or "async"
  std::uint32_t min_insync = 0;    // leader included
  std::uint64_t first_index = 0;   // this broker's replication log: the oldest record kept
  std::uint64_t last_index = 0;    //   and the newest
  std::uint64_t commit_index = 0;  // durable on min_insync brokers up to here
  std::vector<std::string> in_sync;    // ids, leader included
  std::vector<ReplicaInfo> replicas;   // the leader's view of each follower; empty on a follower
  std::string fetching_from;       // a follower: the address it fetches from ("" while it finds none)
  // A follower installing a snapshot of the leader's store: it cannot be promoted until
  // the install finishes.
  bool installing_snapshot = false;
  std::optional<EtcdView> etcd;    // [cluster] only
};

// What one key space of a broker's store holds: equal digests, equal contents.
struct KeySpaceDigest {
  std::string key_space;
  std::uint64_t entries = 0;
  std::string sha256;  // hex, over its keys and values in order
};

// A broker's store, key space by key space, as of its replication log's last record.
struct StoreDigest {
  std::uint64_t last_index = 0;  // the log's last record the store reflects
  std::uint64_t epoch = 0;       // that record's epoch
  std::vector<KeySpaceDigest> key_spaces;
};

enum class TxnState { kPrepared, kCommitted, kRolledBack, kParked };

// What the local transaction (or the check of one) says.
enum class LocalTransactionState {
  kCommit,    // the local transaction committed: make the message visible
  kRollback,  // it rolled back: discard the message
  kUnknown,   // cannot tell yet: the broker checks again later
};

// The broker asks what became of a transaction this producer group prepared.
struct TransactionCheck {
  std::uint64_t transaction_id = 0;
  std::string topic;
  std::string producer_group;
  Message message;
  std::uint32_t checks = 0;  // this is check number `checks`
};

struct TransactionResult {
  std::uint64_t transaction_id = 0;
  TxnState state = TxnState::kPrepared;  // its state after the request
  bool changed = false;                  // false: it had ended already (the state says how)
  // send_in_transaction(_async) only: when state is kPrepared, why it was left for the
  // check-back ("the local transaction threw: <what()>", "... said unknown", "end failed:
  // <error>"); empty otherwise.
  std::string why_prepared;
};

struct TransactionInfo {
  std::uint64_t transaction_id = 0;
  TxnState state = TxnState::kPrepared;
  std::string topic;
  std::string producer_group;
  std::uint64_t created_ms = 0;
  std::uint32_t checks = 0;
  std::uint64_t next_check_ms = 0;
  std::uint64_t ended_ms = 0;
  std::string resolution;  // producer, operator
  std::uint32_t partition = 0;
  std::uint64_t offset = 0;  // once committed
  Message message;           // show_transaction of an open one only
};

namespace detail {
class ProducerImpl;
class TransactionalProducerImpl;
class ConsumerImpl;
class AdminImpl;
}  // namespace detail

// Sends messages. Messages given to send/send_async are batched per topic: a batch goes
// out when it reaches max_batch_messages or max_batch_bytes, after linger, or as soon as
// the I/O thread is free when linger is zero; many batches are in flight at once.
class Producer {
 public:
  struct Options : ClientOptions {
    Millis linger{0};                       // wait this long to fill a batch
    std::size_t max_batch_messages = 1000;  // per produce request
    std::size_t max_batch_bytes = 1u << 20; // per produce request
    // Back-pressure: messages given to send_async and not yet answered ("in flight") take
    // room; send_async waits while a message would not fit, up to max_block, and never
    // queues past either limit. One message larger than max_buffered_bytes is let through
    // alone.
    std::size_t max_buffered_bytes = 64u << 20;     // bytes in flight, at most
    std::size_t max_in_flight_messages = 100'000;   // messages in flight, at most; 0: no limit
    Millis max_block{30000};                        // how long send_async waits for room
    // Idempotent: each batch carries this producer's id and a sequence number, and a batch
    // whose connection dropped is sent again on the next one instead of failing; the broker
    // appends it once and answers with the original offsets. The broker remembers the last
    // producers.idempotence_window (64) batches of each producer, across restarts; a resent
    // batch older than that is refused (kInvalidArgument) rather than stored twice.
    bool idempotent = false;
    // With idempotent: batches sent and not yet answered, at most. Keep it at or below the
    // broker's producers.idempotence_window, so that every resent batch is recognised.
    std::size_t max_in_flight_batches = 32;
  };

  // Starts connecting in the background; never fails (errors surface on sends).
  explicit Producer(Options options);
  // Fails sends not yet confirmed with kClosed; waits for nothing. Call flush() first to
  // wait for them.
  ~Producer();
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

  // Sends one message and waits until it is durable. Errors: kUnknownTopic,
  // kMessageTooLarge, kStorageFull, kTimeout, kConnectionLost, kClosed, kInvalidArgument
  // (called from the I/O thread), kForbidden (to a dead-letter topic, or with a txmq-*
  // header: only the broker writes those), kNotLeader (a follower refused a batch that is
  // not idempotent; the producer has moved to the leader, so a retry goes there),
  // kNotEnoughReplicas (a leader in sync mode with fewer than replication.min_insync
  // brokers in sync: nothing was stored; retryable like kStorageFull, and the producer,
  // idempotent or not, does not retry it by itself), or any code the broker returned.
  Result<SendReceipt> send(std::string_view topic, Message message, Millis timeout);
  Result<SendReceipt> send(std::string_view topic, Message message) {
    return send(topic, std::move(message), options_request_timeout_);
  }
  // send's timeout covers its wait for room too (up to max_block, as send_async's).

  using SendCallback = std::function<void(const Result<SendReceipt>&)>;
  // Queues one message; callback runs once on the I/O thread with the receipt or the
  // error, at the latest request_timeout after the batch went out. Blocks while there is
  // no room (see max_in_flight_messages, max_buffered_bytes); when none comes within
  // max_block the message is not queued and the callback gets kTimeout, saying what is in
  // flight. From the I/O thread (a callback) it never blocks: with no room the callback
  // gets kInvalidArgument. A callback's own message no longer takes room, so a callback
  // may send the next one. Errors (through the callback): those of send, kTimeout as
  // above, kClosed.
  void send_async(std::string_view topic, Message message, SendCallback callback);

  // Waits until every message queued before the call was confirmed or failed. kTimeout;
  // kInvalidArgument at once when called from the I/O thread (a send callback).
  Status flush(Millis timeout);

  // The largest message the broker accepts (its limits.max_message_bytes: key and body
  // bytes, and each header's name and value bytes plus 32 for its encoding), as its answer to this producer's last hello said; 0 until the producer
  // first connected. Larger sends fail with kMessageTooLarge. Thread: any. Errors: none.
  std::uint32_t max_message_bytes() const;

 private:
  std::unique_ptr<detail::ProducerImpl> impl_;
  Millis options_request_timeout_;
};

// Sends half messages: prepare, run the local transaction, then commit or roll back. If
// the producer never says (it crashed), the broker asks the producer group — the
// connection that prepared, else any connection of the group — through the checker.
//
// Threads: send_in_transaction runs the executor on the calling thread,
// send_in_transaction_async on the producer's worker threads. The checker runs
// on this object's I/O thread; it must answer from durable local state (the local
// database), quickly; if it throws, the answer is kUnknown and the broker asks again later.
class TransactionalProducer {
 public:
  struct Options : ClientOptions {
    Millis check_after{0};  // first check this long after prepare; 0: the broker's default (6 s)
    // send_in_transaction_async: the threads that run local transactions (at least 1), the
    // transactions begun and not yet finished at most, and how long a call waits for room.
    std::size_t executor_threads = 4;
    std::size_t max_in_flight_transactions = 20'000;
    Millis max_block{30000};
  };
  using Checker = std::function<LocalTransactionState(const TransactionCheck&)>;
  // Runs the local transaction for the prepared message with this transaction id.
  using Executor = std::function<LocalTransactionState(std::uint64_t transaction_id)>;
  using TransactionCallback = std::function<void(const Result<TransactionResult>&)>;

  // options.producer_group is required. Starts connecting in the background.
  TransactionalProducer(Options options, Checker checker);
  // Waits for the local transactions running on its workers (their ends are queued);
  // those not yet started are reported prepared through their done, on this thread. Then
  // closes the connection: requests in flight fail with kClosed. Not from a callback.
  ~TransactionalProducer();
  TransactionalProducer(const TransactionalProducer&) = delete;
  TransactionalProducer& operator=(const TransactionalProducer&) = delete;

  // Prepare, execute, end. When the executor says kUnknown, or throws, or the end cannot be
  // sent, the transaction stays prepared and the broker will check back; the result then
  // says kPrepared. Errors: those of prepare (kUnknownTopic, kForbidden as send's, kTimeout, ...);
  // kInvalidArgument at once, running nothing, when called from the I/O thread (the
  // checker or an async callback).
  Result<TransactionResult> send_in_transaction(std::string_view topic, Message message, const Executor& executor,
                                                Millis timeout);

  // send_in_transaction for many transactions at once: prepares (batched with others),
  // runs the executor on one of executor_threads worker threads of this producer (never on
  // the I/O thread), then ends. done runs once, on the I/O thread, with the final state as
  // this producer knows it: kCommitted or kRolledBack when the end was confirmed; kPrepared,
  // with why_prepared, when the executor said kUnknown or threw or the end failed (the
  // broker checks back). An error means nothing was prepared: those of prepare; kTimeout
  // when no room among max_in_flight_transactions came within max_block; kInvalidArgument
  // when called from the I/O thread with no room (it cannot wait there); kClosed.
  // Blocks while max_in_flight_transactions are unfinished. A transaction still waiting for
  // its worker when the producer is destroyed is left prepared (done says so).
  void send_in_transaction_async(std::string_view topic, Message message, Executor executor,
                                 TransactionCallback done);

  // The steps on their own. prepare returns the transaction id. Both block: called from
  // the I/O thread they fail at once with kInvalidArgument.
  Result<std::uint64_t> prepare(std::string_view topic, Message message, Millis timeout);
  Result<TransactionResult> end(std::uint64_t transaction_id, LocalTransactionState state, Millis timeout);
  // Non-blocking forms; callbacks run on the I/O thread. Requests queued together go out
  // as one batch.
  void prepare_async(std::string_view topic, Message message, std::function<void(const Result<std::uint64_t>&)> done);
  void end_async(std::uint64_t transaction_id, LocalTransactionState state,
                 std::function<void(const Result<TransactionResult>&)> done);

 private:
  std::unique_ptr<detail::TransactionalProducerImpl> impl_;
};

// Consumes one topic as a member of a consumer group. The handler runs on the I/O thread
// for each delivery, with the consumer to give its verdict with; ack (from any thread)
// confirms it. Unacknowledged deliveries are capped by `window`; the broker sends more as
// acks arrive.
class Consumer {
 public:
  struct Options : ClientOptions {
    std::string topic;
    std::string group;
    std::uint32_t window = 1000;
  };
  // Gets the consumer that received the delivery: usable from the first delivery on,
  // which may arrive before the constructor returned.
  using Handler = std::function<void(Consumer&, const Delivery&)>;
  // The older form, for a handler that settles deliveries elsewhere.
  using DeliveryHandler = std::function<void(const Delivery&)>;

  // Starts connecting and subscribing in the background; resubscribes after reconnects.
  Consumer(Options options, Handler handler);
  Consumer(Options options, DeliveryHandler handler);
  // Stops the I/O thread (waiting for a handler that is running), then frees everything;
  // verdicts not yet sent are dropped (call flush_acks first to wait for them).
  ~Consumer();
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  // Waits until the broker accepted the subscription. kUnknownTopic, kTimeout,
  // kInvalidArgument (called from the I/O thread: the handler), ... After
  // kUnknownTopic the consumer keeps asking (every reconnect_max) and receives once the
  // topic exists, as a consumer of a dead-letter topic not yet created needs.
  Status wait_subscribed(Millis timeout);

  // The verdicts on a delivery. Each is batched with others and sent by the I/O thread;
  // flush_acks tells when they are durable. A verdict on a delivery this consumer no
  // longer holds (its lease ran out) changes nothing, except an ack, which always counts.
  //   ack: done, never delivered to this group again.
  //   nack: failed; delivered again after `delay`, or the retry schedule's next delay when
  //     delay is 0; after the group's maximum deliveries it goes to the dead-letter topic.
  //   in_progress: still working; the lease starts again from now.
  //   terminate: will never succeed; straight to the dead-letter topic.
  void ack(const Delivery& delivery);
  void ack(std::uint32_t partition, std::uint64_t offset);
  void nack(const Delivery& delivery, Millis delay = Millis(0), std::string reason = {});
  void in_progress(const Delivery& delivery);
  void terminate(const Delivery& delivery, std::string reason = {});

  // Stops deliveries to this consumer (its window becomes 0), keeping what it holds; for
  // a consumer that will take no more. Non-blocking, callable from the handler: verdicts
  // given after it reach the broker after it, so acking then frees no room for more.
  void pause();
  // Undoes pause(): deliveries resume up to the configured window. Non-blocking.
  void resume();

  // Waits until every verdict given before the call was confirmed durable by the broker
  // (verdicts given while it waits are not waited for); verdicts whose connection dropped
  // are sent again after the reconnect. Returns the first error seen, kTimeout, or ok;
  // kInvalidArgument at once when called from the I/O thread (the handler).
  Status flush_acks(Millis timeout);

 private:
  std::unique_ptr<detail::ConsumerImpl> impl_;
};

// Topic administration and broker statistics. Every call blocks up to its timeout (and
// runs no user code on the I/O thread, so the kInvalidArgument of a call from it cannot
// arise). With a list of brokers (ClientOptions::broker), a call a follower refuses with
// kNotLeader moves the Admin to the leader for the calls after it; the cluster calls are
// answered by followers too, so they stay with the broker the Admin is connected to.
class Admin {
 public:
  explicit Admin(ClientOptions options);
  ~Admin();
  Admin(const Admin&) = delete;
  Admin& operator=(const Admin&) = delete;

  // kTopicExists, kInvalidArgument (name or partition count), kForbidden (a dead-letter
  // topic's name: the broker creates those), kTimeout, ...
  Result<TopicInfo> create_topic(std::string_view name, std::uint32_t partitions, Millis timeout);
  Result<TopicInfo> create_topic(std::string_view name, const TopicOptions& options, Millis timeout);
  // kUnknownTopic, kTimeout, ...
  Status delete_topic(std::string_view name, Millis timeout);
  Result<TopicInfo> describe_topic(std::string_view name, Millis timeout);
  Result<std::vector<TopicInfo>> list_topics(Millis timeout);
  Result<BrokerStats> stats(Millis timeout);

  // Sets a group's delivery and retry policy (for every topic it consumes), or with an
  // empty group the default of a topic's groups that have none. Returns the effective
  // settings. kInvalidArgument (a bad schedule), kUnknownTopic, kTimeout, ...
  Result<GroupInfo> configure_group(std::string_view group, std::string_view topic, const GroupConfig& config,
                                    Millis timeout);
  // Every group (group empty) or one group, per topic it consumes. kInvalidArgument for an
  // unknown group.
  Result<std::vector<GroupInfo>> describe_groups(std::string_view group, Millis timeout);
  // Reads up to max stored messages of a partition from offset, without a group (for
  // inspection: dead letters). Deliveries come back with group empty and count 0.
  Result<std::vector<Delivery>> fetch(std::string_view topic, std::uint32_t partition, std::uint64_t offset,
                                      std::uint32_t max, Millis timeout);
  // Moves dead letters (offsets in the group's dead-letter topic) back to their origin for
  // this group only, each atomically, with a fresh delivery count. Only letters the broker
  // marked as its own unless `unmarked` says kTrust. kInvalidArgument (unknown group),
  // kUnknownTopic (no dead letters), kTimeout, ...
  Result<RedriveResult> redrive(std::string_view group, const std::vector<std::uint64_t>& dlq_offsets, Millis timeout,
                                RedriveUnmarked unmarked = RedriveUnmarked::kRefuse);

  // Transactions, newest first; only those in `state` when given.
  Result<std::vector<TransactionInfo>> list_transactions(std::optional<TxnState> state, std::uint32_t max,
                                                         Millis timeout);
  // One transaction, with its message while it is open. kInvalidArgument when unknown.
  Result<TransactionInfo> show_transaction(std::uint64_t transaction_id, Millis timeout);
  // An operator's decision on a prepared or parked transaction (recorded in the message's
  // txmq-resolved-by header). Ending an ended one changes nothing and says its state.
  Result<TransactionResult> end_transaction(std::uint64_t transaction_id, bool commit, Millis timeout);

  // Replication (txmq cluster): answered by the broker this Admin is connected to, leader
  // or follower, never redirected.
  // This broker's role, epoch, log and commit index; on a leader, each follower's state.
  // kTimeout, kForbidden (a user the broker's ACL does not allow), ...
  Result<ClusterInfo> cluster_status(Millis timeout);
  // Makes this broker, a follower, the leader of a new epoch and returns its new status.
  // Refused (the broker's error says why) on a leader, and on a follower that was not in
  // the last in-sync set it saw unless `unclean`: it may lack confirmed records, and with
  // unclean those are lost. The broker's config still says follower: the operator sets
  // replication.role = "leader" there before its next start.
  Result<ClusterInfo> promote(bool unclean, Millis timeout);
  // A digest per key space of this broker's store, for comparing replicas: brokers whose
  // last_index and epoch are equal hold equal stores exactly when the digests are equal.
  Result<StoreDigest> digest(Millis timeout);

 private:
  std::unique_ptr<detail::AdminImpl> impl_;
};

}  // namespace txmq::client
