#pragma once
// An etcd v3 client on a libuv loop: leases, gets, puts, transactions and watches, over
// etcd's JSON gateway (POST /v3/...) with libcurl's multi interface (http/http_client.h).
// No thread per request and nothing blocks the loop; the broker's cluster membership and
// election run on it. Brokers talk to etcd; clients never do.
//
// The gateway of etcd 3.4 has traps, each handled here so that callers see plain values:
//   - int64 fields arrive as JSON strings, keys and values as base64;
//   - default values are omitted: a failed transaction has no "succeeded", a put event no
//     "type", a keep-alive of a lease etcd no longer has answers with no TTL and no error
//     (keep_alive gives 0 for it);
//   - several keep-alives in one streamed request are broken, so each is a request of its
//     own;
//   - a watch on a member cut off from its quorum stays open and silent unless it asks
//     with "Grpc-Metadata-hasleader: true", which every watch here does (the stream then
//     ends with "etcdserver: no leader").
//
// Endpoints: calls go to one endpoint of the list until it fails; then to the next. A call
// whose connection could not be made is sent to the next endpoint at once (nothing was
// sent); one that timed out is not resent: it may have taken effect (kTimeout says so).
// When an endpoint fails a call, the watches on it end too (on_end): a member that froze
// or was cut off leaves its streams open and silent.
// Errors: kNotConnected (no endpoint could be reached, or etcd has no leader: nothing was
// done), kTimeout (no answer in time: it may have been done), kInvalidArgument (etcd
// refused the request as malformed), kInternal (any other refusal, or an answer that could
// not be read); the message names the endpoint and says what etcd said.
// Thread: the loop's, for every call and callback.
// Lifecycle: close() before destruction; no callback but close's runs after close().

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "http/http_client.h"

namespace txmq::etcd {

struct KeyValue {
  std::string key;
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;
  std::int64_t lease = 0;
};

struct Range {
  std::vector<KeyValue> kvs;
  std::int64_t revision = 0;  // the store's revision when it was read
};

struct Lease {
  std::int64_t id = 0;
  std::int64_t ttl_s = 0;  // as granted (etcd raises a TTL below its minimum, 2 s by default)
};

// One condition of a transaction.
struct Compare {
  enum class Target { kCreate, kMod, kVersion, kValue };
  enum class Result { kEqual, kNotEqual, kGreater, kLess };
  std::string key;
  Target target = Target::kCreate;
  Result result = Result::kEqual;
  std::int64_t number = 0;  // the revision or version compared with
  std::string value;        // kValue

  // The key does not exist (its create_revision is 0).
  static Compare absent(std::string key) { return {std::move(key), Target::kCreate, Result::kEqual, 0, {}}; }
  // The key was last written at this revision (0: it does not exist).
  static Compare mod_revision(std::string key, std::int64_t revision) {
    return {std::move(key), Target::kMod, Result::kEqual, revision, {}};
  }
  static Compare created_at(std::string key, std::int64_t revision) {
    return {std::move(key), Target::kCreate, Result::kEqual, revision, {}};
  }
  static Compare value_is(std::string key, std::string value) {
    return {std::move(key), Target::kValue, Result::kEqual, 0, std::move(value)};
  }
};

// One request of a transaction's branch.
struct Operation {
  enum class Kind { kPut, kDelete, kGet };
  Kind kind = Kind::kGet;
  std::string key;
  std::string value;
  std::int64_t lease = 0;  // kPut: the key goes when the lease does (0: never)
  bool prefix = false;     // kGet, kDelete: every key that starts with `key`

  static Operation put(std::string key, std::string value, std::int64_t lease = 0) {
    return {Kind::kPut, std::move(key), std::move(value), lease, false};
  }
  static Operation remove(std::string key) { return {Kind::kDelete, std::move(key), {}, 0, false}; }
  static Operation get(std::string key, bool prefix = false) { return {Kind::kGet, std::move(key), {}, 0, prefix}; }
};

struct Txn {
  std::vector<Compare> compare;      // all must hold for `success` to run
  std::vector<Operation> success;
  std::vector<Operation> failure;
};

struct TxnResult {
  bool succeeded = false;
  std::int64_t revision = 0;  // the store's revision after it: a successful write's own
  std::vector<Range> ranges;  // one for each kGet of the branch that ran, in order
};

struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;  // a delete's has only the key and the deleting revision (mod_revision)
};

struct ClientOptions {
  std::vector<std::string> endpoints;       // "http://host:port", tried in this order
  std::chrono::milliseconds timeout{2000};  // each call, on each endpoint it is sent to
};

class Client {
 public:
  template <typename T>
  using Done = std::function<void(Result<T>)>;
  // A batch of events, and the store's revision after them.
  using OnEvents = std::function<void(std::vector<WatchEvent> events, std::int64_t revision)>;
  using WatchId = std::uint64_t;

  Client(uv_loop_t* loop, ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void grant(std::int64_t ttl_s, Done<Lease> done);
  // The lease's TTL after this keep-alive, or 0 when etcd no longer has the lease (it
  // expired or was revoked): whatever was put on it is gone.
  void keep_alive(std::int64_t lease, Done<std::int64_t> done);
  // Revoking a lease etcd no longer has is not an error.
  void revoke(std::int64_t lease, Done<void> done);

  void get(std::string key, bool prefix, Done<Range> done);
  // The revision of the put.
  void put(std::string key, std::string value, std::int64_t lease, Done<std::int64_t> done);
  void txn(const Txn& txn, Done<TxnResult> done);

  // Events on `key` (every key under it, with prefix) from start_revision on (0: from
  // now). on_end runs once, when the watch ends for any reason but cancel_watch: the
  // stream broke, the member lost its quorum, or etcd cancelled it (a start_revision
  // already compacted). A watch is never restarted here: its caller reads again and
  // watches from that read's revision + 1, so that nothing between is missed.
  WatchId watch(std::string key, bool prefix, std::int64_t start_revision, OnEvents on_events,
                std::function<void(Error)> on_end);
  // Ends a watch; its on_end does not run.
  void cancel_watch(WatchId id);

  // The endpoint calls go to now.
  const std::string& endpoint() const { return options_.endpoints[current_]; }

  // Ends every call and watch without running their callbacks, then runs done.
  void close(std::function<void()> done);

 private:
  struct Watch;
  using OnAnswer = std::function<void(Result<std::string>)>;  // the body of a 200 answer

  // POSTs body to `path` on the current endpoint; a connection that could not be made is
  // retried on the next, up to once per endpoint.
  void call(std::string path, std::string body, OnAnswer done, std::size_t attempt = 0);
  void rotate(std::size_t from);  // the endpoint at `from` failed: move past it
  void on_watch_bytes(WatchId id, std::string_view bytes);
  void end_watch(WatchId id, Error error);

  ClientOptions options_;
  std::unique_ptr<http::HttpClient> http_;
  std::size_t current_ = 0;
  bool closing_ = false;
  WatchId next_watch_ = 0;
  std::map<WatchId, std::unique_ptr<Watch>> watches_;
};

}  // namespace txmq::etcd
