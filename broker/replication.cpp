#include "broker/replication.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "broker/storage/layout.h"
#include "broker/wall_clock.h"
#include "client/src/connection.h"

namespace txmq::broker {
namespace {

using Clock = std::chrono::steady_clock;

// How often the leader looks at its followers' lag and at held fetches' deadlines.
constexpr std::uint64_t kTimerMs = 50;
// A follower that cannot reach anyone waits this long before it tries the next peer; one
// whose log diverged (which it cannot mend by itself yet) asks again this much later.
constexpr auto kRetryDelay = std::chrono::milliseconds(200);
constexpr auto kDivergedRetryDelay = std::chrono::seconds(10);
// What `status` reads of the log to tell a follower's lag in bytes, at most.
constexpr std::size_t kLagBytesScan = 4u << 20;
// The meta key of the in-sync set: the ids, comma-separated.
constexpr std::string_view kInSyncKey = "in_sync";
// A leader's snapshot session nobody asked for more of in this long is closed: its read
// transaction keeps LMDB from reusing the pages freed since it began.
constexpr auto kSnapshotIdle = std::chrono::seconds(30);
// A snapshot chunk's size, whatever a follower asks for: small ones cost a round trip and
// a commit each, large ones a frame the client must hold whole (its connection takes
// frames up to 64 MiB: a chunk of 16 MiB leaves room for one entry past it).
constexpr std::uint32_t kSnapshotChunkMin = 4u << 10;
constexpr std::uint32_t kSnapshotChunkMax = 16u << 20;
// How often an install in progress is logged, at most.
constexpr auto kSnapshotReportEvery = std::chrono::seconds(5);

// Which requests write: refused below min_insync on a sync leader.
bool writes(wire::Body type) {
  switch (type) {
    case wire::Body::Produce:
    case wire::Body::CreateTopic:
    case wire::Body::DeleteTopic:
    case wire::Body::Settle:
    case wire::Body::ConfigureGroup:
    case wire::Body::Redrive:
    case wire::Body::Prepare:
    case wire::Body::EndTransactions:
      return true;
    default:
      return false;
  }
}

std::string join(const std::set<std::string>& ids) {
  std::string out;
  for (const auto& id : ids) out += (out.empty() ? "" : ",") + id;
  return out;
}

std::set<std::string> split(std::string_view text) {
  std::set<std::string> out;
  while (!text.empty()) {
    auto comma = text.find(',');
    if (auto id = text.substr(0, comma); !id.empty()) out.emplace(id);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
  }
  return out;
}

// -- the write ops of replication ---------------------------------------------------------

// The in-sync set, stored so that it is a record like any state: followers learn it, and a
// promotion can tell whether this broker was in it.
class InSyncOp final : public storage::WriteOp {
 public:
  InSyncOp(std::set<std::string> members, std::function<void(const Status&)> done)
      : members_(std::move(members)), done_(std::move(done)) {}
  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kInSync; }
  Status apply(storage::WriteTxn& txn) override { return txn.put_meta(kInSyncKey, join(members_)); }
  void complete(const Status& status) override { done_(status); }
  bool gated() const override { return false; }

 private:
  std::set<std::string> members_;
  std::function<void(const Status&)> done_;
};

// A new epoch led by this broker, with itself as the whole in-sync set.
class BeginEpochOp final : public storage::WriteOp {
 public:
  BeginEpochOp(std::uint64_t epoch, std::string leader, std::function<void(const Status&)> done)
      : epoch_(epoch), leader_(std::move(leader)), done_(std::move(done)) {}
  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kBeginEpoch; }
  Status apply(storage::WriteTxn& txn) override {
    if (auto st = txn.begin_epoch(epoch_, leader_); !st) return st;
    return txn.put_meta(kInSyncKey, leader_);
  }
  void complete(const Status& status) override { done_(status); }
  bool gated() const override { return false; }

 private:
  std::uint64_t epoch_;
  std::string leader_;
  std::function<void(const Status&)> done_;
};

// A follower's: the leader's records, applied in order in one transaction.
class ApplyRecordsOp final : public storage::WriteOp {
 public:
  ApplyRecordsOp(std::vector<storage::LogRecord> records, std::function<void(const Status&)> done)
      : records_(std::move(records)), done_(std::move(done)) {
    for (const auto& r : records_) bytes_ += r.bytes.size();
  }
  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kApplyRecords; }
  Status apply(storage::WriteTxn& txn) override {
    for (const auto& r : records_)
      if (auto st = txn.apply_record(r.index, r.bytes); !st) return st;
    return {};
  }
  void complete(const Status& status) override { done_(status); }
  std::size_t bytes() const override { return bytes_; }
  bool gated() const override { return false; }

 private:
  std::vector<storage::LogRecord> records_;
  std::size_t bytes_ = 0;
  std::function<void(const Status&)> done_;
};

// A follower's whose log diverged from the leader's: drops its records from `from` on,
// undoing them, in one transaction (WriteTxn::truncate_log).
class TruncateOp final : public storage::WriteOp {
 public:
  TruncateOp(std::uint64_t from, std::function<void(const Status&, const storage::Truncation&)> done)
      : from_(from), done_(std::move(done)) {}
  storage::WriteOpKind kind() const override { return storage::WriteOpKind::kTruncate; }
  Status apply(storage::WriteTxn& txn) override {
    auto t = txn.truncate_log(from_);
    if (!t) return t.error();
    result_ = *t;
    return {};
  }
  void complete(const Status& status) override { done_(status, result_); }
  bool gated() const override { return false; }

 private:
  std::uint64_t from_;
  storage::Truncation result_;
  std::function<void(const Status&, const storage::Truncation&)> done_;
};

// A follower's snapshot install, one step per op (store.h, "installing a snapshot"): begin
// (the store emptied), each chunk's entries, finish (the log position at the snapshot's
// index). Nothing of it is recorded in the log.
class SnapshotInstallOp final : public storage::WriteOp {
 public:
  enum class Step { kBegin, kChunk, kFinish };
  SnapshotInstallOp(Step step, std::vector<storage::SnapshotEntry> entries, std::uint64_t index, std::uint64_t epoch,
                    std::function<void(const Status&)> done)
      : step_(step), entries_(std::move(entries)), index_(index), epoch_(epoch), done_(std::move(done)) {
    for (const auto& e : entries_) bytes_ += e.key.size() + e.value.size();
  }
  storage::WriteOpKind kind() const override {
    switch (step_) {
      case Step::kBegin: return storage::WriteOpKind::kSnapshotBegin;
      case Step::kChunk: return storage::WriteOpKind::kSnapshotChunk;
      case Step::kFinish: return storage::WriteOpKind::kSnapshotFinish;
    }
    return storage::WriteOpKind::kSnapshotChunk;
  }
  Status apply(storage::WriteTxn& txn) override {
    switch (step_) {
      case Step::kBegin: return txn.begin_snapshot_install();
      case Step::kChunk: return txn.put_snapshot_entries(entries_);
      case Step::kFinish: return txn.finish_snapshot_install(index_, epoch_);
    }
    return {};
  }
  void complete(const Status& status) override { done_(status); }
  std::size_t bytes() const override { return bytes_; }
  bool gated() const override { return false; }

 private:
  Step step_;
  std::vector<storage::SnapshotEntry> entries_;  // kChunk
  std::uint64_t index_, epoch_;                  // kFinish: the snapshot's position
  std::size_t bytes_ = 0;
  std::function<void(const Status&)> done_;
};

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

// -- metrics ----------------------------------------------------------------------------

struct Replication::Probe {
  explicit Probe(metrics::Registry& r)
      : leader(r.gauge("txmq_replication_leader", "1 while this broker leads its epoch, 0 while it follows")),
        epoch(r.gauge("txmq_replication_epoch", "The newest epoch this broker holds")),
        last_index(r.gauge("txmq_replication_last_index", "The newest record of this broker's replication log")),
        commit_index(r.gauge("txmq_replication_commit_index",
                             "Leader: records durable on min_insync replicas up to here")),
        in_sync(r.gauge("txmq_replication_in_sync_replicas", "Leader: members of the in-sync set, itself included")),
        lag_records(r.gauge_family("txmq_replication_follower_lag_records",
                                   "Leader: records a follower has not acknowledged", {"replica"})),
        lag_ms(r.gauge_family("txmq_replication_follower_lag_ms",
                              "Leader: ms since a follower last held the leader's whole log", {"replica"})),
        fetch_bytes(r.counter("txmq_replication_fetch_bytes_total", "Leader: record bytes sent to followers")),
        applied(r.counter("txmq_replication_applied_records_total", "Follower: leader's records applied")),
        fetches(r.counter("txmq_replication_fetches_total", "Follower: fetches sent to the leader")),
        truncated(r.counter("txmq_replication_truncated_records_total",
                            "Follower: records undone and dropped because they diverged from the leader's log")),
        refused(r.counter_family("txmq_replication_refusals_total",
                                 "Client requests refused: not_leader, not_enough_replicas", {"reason"})),
        in_sync_changes(r.counter("txmq_replication_in_sync_changes_total", "Leader: changes of the in-sync set")),
        snapshots(r.counter("txmq_replication_snapshots_total", "Follower: snapshots of the leader's store installed")),
        snapshot_bytes(r.counter("txmq_replication_snapshot_bytes_total",
                                 "Follower: snapshot entry bytes (keys and values) installed")),
        snapshot_installing(r.gauge("txmq_replication_snapshot_installing",
                                    "Follower: 1 while it installs a snapshot (it cannot be promoted)")),
        snapshots_served(r.counter("txmq_replication_snapshots_served_total",
                                   "Leader: snapshots sent to followers to their last chunk")) {}
  metrics::Gauge& leader;
  metrics::Gauge& epoch;
  metrics::Gauge& last_index;
  metrics::Gauge& commit_index;
  metrics::Gauge& in_sync;
  metrics::Family<metrics::Gauge>& lag_records;
  metrics::Family<metrics::Gauge>& lag_ms;
  metrics::Counter& fetch_bytes;
  metrics::Counter& applied;
  metrics::Counter& fetches;
  metrics::Counter& truncated;
  metrics::Family<metrics::Counter>& refused;
  metrics::Counter& in_sync_changes;
  metrics::Counter& snapshots;
  metrics::Counter& snapshot_bytes;
  metrics::Gauge& snapshot_installing;
  metrics::Counter& snapshots_served;
};

// A follower's snapshot install in progress (the Fetcher's; at namespace scope, so that
// clang lets std::optional construct it inside the Fetcher's definition). The resume
// point moves only once a chunk's op committed, so a chunk is never installed twice or in
// part; a broken connection resumes from it, and anything else (a restart, a session the
// leader no longer has) begins again.
struct SnapshotInstall {
  std::uint64_t id = 0;         // which install an op's completion belongs to
  bool begun = false;           // the store was emptied for it
  std::uint64_t session = 0;    // the leader's; 0 until the first chunk
  std::uint64_t index = 0, epoch = 0;  // the snapshot's log position
  std::uint8_t after_space = 0;  // the last entry installed: key space and key
  std::vector<std::uint8_t> after_key;
  std::uint64_t entries = 0, bytes = 0, chunks = 0;
  Clock::time_point started, reported;
};

// -- the follower's fetcher ---------------------------------------------------------------

// A follower's pull loop: one client connection at a time to the peer it takes for the
// leader; fetch, apply (through the writer), fetch again with the new durable index.
// The connection is hosted on the broker's loop, so answers are handled where they
// arrive, with no thread between the socket and the writer. Loop thread.
class Fetcher {
 public:
  Fetcher(uv_loop_t* loop, const BrokerConfig& config, storage::Store& store, storage::StorageWriter& writer,
          Replication::Probe* probe, std::function<void()> applied)
      : loop_(loop),
        config_(config),
        rc_(config.replication),
        store_(store),
        writer_(writer),
        probe_(probe),
        applied_(std::move(applied)) {
    retry_.data = this;
    uv_timer_init(loop_, &retry_);
    for (const auto& [id, address] : rc_.peers)
      if (id != rc_.id) peers_.push_back(id);
    if (!rc_.password_file.empty()) {
      std::ifstream in(rc_.password_file);
      std::getline(in, password_);
    }
  }
  ~Fetcher() { stop_connection(); }

  void start() {
    started_ = true;
    // The leader of the newest epoch this store knows, when that is a peer; else the first.
    if (auto epochs = store_.epochs(); epochs && !epochs->empty())
      for (std::size_t i = 0; i < peers_.size(); ++i)
        if (peers_[i] == epochs->back().leader) next_peer_ = i;
    if (auto pending = store_.snapshot_pending(); pending && *pending)
      begin_snapshot("this store holds a snapshot whose install did not finish");
    connect_next();
  }

  // The one way into a snapshot install: the leader's log cannot bring this store up to
  // date (needs_snapshot), a truncation cannot be undone, or an install did not finish.
  // Empties the store (through the writer), streams the leader's snapshot chunk by chunk,
  // then fetches the log from the snapshot's index on. Calling it during an install starts
  // that one again from scratch.
  void begin_snapshot(const std::string& why) {
    if (closed_) return;
    spdlog::warn("replication: {}: installing a snapshot of the leader's store", why);
    install_.emplace();
    install_->id = ++install_ids_;
    install_->started = install_->reported = Clock::now();
    if (probe_) probe_->snapshot_installing.set(1);
    snapshot_step();
  }
  bool installing() const { return install_.has_value(); }

  // [cluster]: fetch from this address only (the leader etcd names), and take no answer of
  // an epoch below min_epoch (a deposed leader's). Starts fetching if it was not.
  void follow(const std::string& address, std::uint64_t min_epoch) {
    if (closed_) return;
    pinned_ = address;
    min_epoch_ = min_epoch;
    if (address == address_ && conn_) return;
    if (auto pending = store_.snapshot_pending(); !started_ && pending && *pending)
      begin_snapshot("this store holds a snapshot whose install did not finish");
    started_ = true;
    retry_later(address, std::chrono::milliseconds(0));
  }

  // Stops for good; done runs once the handles are closed (at once when they already are).
  void close(std::function<void()> done) {
    if (closed_) return done();
    closed_ = true;
    stop_connection();
    closed_cb_ = std::move(done);
    uv_close(reinterpret_cast<uv_handle_t*>(&retry_), [](uv_handle_t* h) {
      auto* self = static_cast<Fetcher*>(h->data);
      if (self->closed_cb_) self->closed_cb_();
    });
  }

  const std::string& target_address() const { return address_; }
  std::uint64_t leader_epoch() const { return leader_epoch_; }
  std::uint64_t commit_index() const { return commit_index_; }

 private:
  // A SnapshotChunk's contents.
  struct Chunk {
    std::uint64_t session = 0, index = 0, epoch = 0;
    bool done = false;
    std::vector<storage::SnapshotEntry> entries;
  };
  struct Answer {
    std::uint64_t generation;
    Result<std::vector<storage::LogRecord>> records{std::vector<storage::LogRecord>()};
    std::uint64_t epoch = 0, commit_index = 0, truncate_to = 0;
    bool needs_snapshot = false;
    bool snapshot = false;  // the answer to a SnapshotFetch: chunk, or the error in records
    Chunk chunk{};
  };

  // Answers still to come from the connection (its requests fail as it closes) are of an
  // older generation, and dropped.
  void stop_connection() {
    ++generation_;
    client::detail::Connection::dispose(std::move(conn_));
  }

  void connect_to(const std::string& address) {
    stop_connection();
    ++generation_;
    address_ = address;
    client::ClientOptions o;
    o.broker = address;
    o.client_name = "txmq-replica " + rc_.id;
    o.request_timeout = rc_.fetch_wait + std::chrono::seconds(10);
    o.first_connect_timeout = std::chrono::milliseconds(2000);
    o.user = rc_.user;
    o.password = password_;
    if (config_.tls_enabled) {
      o.tls.enabled = true;
      o.tls.ca_file = config_.tls_files.ca_file;
      if (config_.tls_client_auth != common::TlsClientAuth::kNone) {
        o.tls.cert_file = config_.tls_files.cert_file;
        o.tls.key_file = config_.tls_files.key_file;
      }
    }
    conn_ = std::make_unique<client::detail::Connection>(o, client::detail::Connection::Hooks{}, loop_);
    conn_->start();
    spdlog::info("replication: fetching from {}", address);
    if (install_)
      snapshot_step();
    else
      send_fetch();
  }

  void connect_next() {
    if (closed_) return;
    if (!pinned_.empty()) return connect_to(pinned_);
    if (peers_.empty()) return;
    const std::string& id = peers_[next_peer_ % peers_.size()];
    ++next_peer_;
    for (const auto& [peer, address] : rc_.peers)
      if (peer == id) return connect_to(address);
  }

  // The timer, while not connected: connects again, to redirect_ or the next peer.
  void retry_later(const std::string& next_address, std::chrono::milliseconds delay = kRetryDelay) {
    stop_connection();
    address_.clear();
    redirect_ = next_address;
    uv_timer_start(&retry_, [](uv_timer_t* t) {
      auto* self = static_cast<Fetcher*>(t->data);
      if (self->closed_) return;
      if (self->redirect_.empty()) return self->connect_next();
      self->connect_to(self->redirect_);
    }, static_cast<std::uint64_t>(delay.count()), 0);
  }

  // The fetch after an apply: at once, or (fetch_interval_ms, async mode) no sooner than
  // that after the last one was sent. The timer, while connected, paces fetches; a
  // retry_later replaces a paced fetch, whose connection is gone.
  void fetch_again() {
    const auto due = last_fetch_ + rc_.fetch_interval;
    const auto now = Clock::now();
    if (rc_.fetch_interval.count() == 0 || due <= now) return send_fetch();
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(due - now);
    uv_timer_start(&retry_, [](uv_timer_t* t) {
      auto* self = static_cast<Fetcher*>(t->data);
      if (!self->closed_ && self->conn_) self->send_fetch();
    }, static_cast<std::uint64_t>(wait.count()), 0);
  }

  void send_fetch() {
    last_fetch_ = Clock::now();
    if (probe_) probe_->fetches.inc();
    const storage::LogPosition pos = store_.log_position();
    std::uint64_t last_epoch = 0;
    if (pos.last_index > 0)
      if (auto r = store_.read_log_records(pos.last_index, 1); r && !r->empty())
        if (auto h = storage::redo_header(r->front().bytes); h) last_epoch = h->epoch;
    const std::uint64_t generation = generation_;
    const std::string replica = rc_.id;
    const std::uint32_t max_bytes = rc_.fetch_max_bytes;
    const auto wait = static_cast<std::uint32_t>(rc_.fetch_wait.count());
    auto& fbb = conn_->builder();
    fbb.Clear();
    const std::uint64_t rid = conn_->next_request_id();
    auto body = wire::CreateReplicaFetch(fbb, fbb.CreateString(replica), pos.epoch, pos.last_index + 1, last_epoch,
                                         pos.last_index, max_bytes, wait);
    fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::ReplicaFetch, body.Union()));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait) + std::chrono::seconds(10);
    conn_->request(rid, {fbb.GetBufferPointer(), fbb.GetSize()}, deadline,
                   [this, generation](Result<const wire::Frame*> answer) { on_answer(generation, answer); });
  }

  // Copies the answer out of the connection's buffer and handles it.
  void on_answer(std::uint64_t generation, const Result<const wire::Frame*>& answer) {
    Answer a{generation};
    if (!answer) {
      a.records = answer.error();
    } else if (const auto* r = (*answer)->body_as_ReplicaRecords(); !r) {
      a.records = Error(ErrorCode::kMalformedFrame, "the leader answered a fetch with something else");
    } else {
      a.epoch = r->epoch();
      a.commit_index = r->commit_index();
      a.truncate_to = r->truncate_to();
      a.needs_snapshot = r->needs_snapshot();
      std::vector<storage::LogRecord> records;
      if (r->records()) records.reserve(r->records()->size());
      if (r->records())
        for (const auto* rec : *r->records())
          records.push_back({rec->index(), rec->data() ? std::vector<std::uint8_t>(rec->data()->begin(), rec->data()->end())
                                                       : std::vector<std::uint8_t>()});
      a.records = std::move(records);
    }
    handle(a);
  }

  // A NotLeader answer naming another broker: fetch from that one next. True when so.
  bool redirected(const Error& e) {
    // With [cluster] only etcd says who leads.
    if (!pinned_.empty()) return false;
    if (e.code != ErrorCode::kNotLeader || e.leader.empty() || e.leader == address_) return false;
    spdlog::info("replication: {} is not the leader; the leader is {}", address_, e.leader);
    retry_later(e.leader);
    return true;
  }

  void handle(Answer& a) {
    if (a.generation != generation_ || closed_) return;
    if (a.snapshot) return handle_chunk(a);
    if (!a.records) {
      const Error& e = a.records.error();
      if (redirected(e)) return;
      spdlog::warn("replication: fetch from {} failed: {}", address_, e.describe());
      return retry_later("");
    }
    if (a.epoch < min_epoch_) {
      spdlog::warn("replication: {} answered for epoch {}, older than etcd's {}: it no longer leads", address_, a.epoch,
                   min_epoch_);
      return retry_later("");
    }
    if (a.truncate_to != 0) return truncate(a.truncate_to, a.epoch);
    leader_epoch_ = a.epoch;
    commit_index_ = a.commit_index;
    // Records at or below the leader's commit index are never truncated: their undo
    // images may go.
    store_.set_undo_keep_from(a.commit_index + 1);
    if (a.needs_snapshot)
      return begin_snapshot("the leader " + address_ + " no longer holds the records this broker needs next (from " +
                            std::to_string(store_.log_position().last_index + 1) + ")");
    if (a.records->empty()) return send_fetch();
    const std::size_t n = a.records->size();
    const std::uint64_t generation = generation_;
    writer_.submit(std::make_unique<ApplyRecordsOp>(std::move(*a.records), [this, generation, n](const Status& st) {
      if (closed_ || generation != generation_) return;
      if (!st) {
        spdlog::error("replication: applying the leader's records failed: {}", st.error().describe());
        return retry_later("");
      }
      if (probe_) probe_->applied.inc(n);
      applied_();
      fetch_again();
    }));
  }

  // The install's next step: empty the store first, else ask for the next chunk. Nothing
  // while an op of it is in the writer (its completion comes back here) or while there is
  // no connection (connect_to comes back here).
  void snapshot_step() {
    if (closed_ || !install_ || install_op_pending_) return;
    if (!install_->begun) {
      const std::uint64_t id = install_->id;
      install_op_pending_ = true;
      writer_.submit(std::make_unique<SnapshotInstallOp>(
          SnapshotInstallOp::Step::kBegin, std::vector<storage::SnapshotEntry>(), 0, 0, [this, id](const Status& st) {
            install_op_pending_ = false;
            if (closed_) return;
            if (install_ && install_->id == id) {
              if (!st) {
                spdlog::error("replication: cannot empty the store for a snapshot: {}", st.error().describe());
                return retry_later("");
              }
              install_->begun = true;
            }
            snapshot_step();
          }));
      return;
    }
    if (conn_) send_snapshot_fetch();
  }

  void send_snapshot_fetch() {
    const std::uint64_t generation = generation_;
    const std::string replica = rc_.id;
    const std::uint32_t max_bytes = rc_.snapshot_chunk_bytes;
    const std::uint64_t session = install_->session;
    const std::uint8_t after_space = install_->after_space;
    auto& fbb = conn_->builder();
    fbb.Clear();
    const std::uint64_t rid = conn_->next_request_id();
    auto body = wire::CreateSnapshotFetch(fbb, fbb.CreateString(replica), session, after_space,
                                          fbb.CreateVector(install_->after_key), max_bytes);
    fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::SnapshotFetch, body.Union()));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    conn_->request(rid, {fbb.GetBufferPointer(), fbb.GetSize()}, deadline,
                   [this, generation](Result<const wire::Frame*> answer) { on_chunk(generation, answer); });
  }

  // Copies the chunk out of the connection's buffer and handles it.
  void on_chunk(std::uint64_t generation, const Result<const wire::Frame*>& answer) {
    Answer a{generation};
    a.snapshot = true;
    if (!answer) {
      a.records = answer.error();
    } else if (const auto* c = (*answer)->body_as_SnapshotChunk(); !c) {
      a.records = Error(ErrorCode::kMalformedFrame, "the leader answered a snapshot fetch with something else");
    } else {
      a.chunk.session = c->session();
      a.chunk.index = c->index();
      a.chunk.epoch = c->epoch();
      a.chunk.done = c->done();
      if (c->entries())
        for (const auto* e : *c->entries()) {
          storage::SnapshotEntry entry{e->space(), {}, {}};
          if (e->key()) entry.key.assign(e->key()->begin(), e->key()->end());
          if (e->value()) entry.value.assign(e->value()->begin(), e->value()->end());
          a.chunk.entries.push_back(std::move(entry));
        }
    }
    handle(a);
  }

  void handle_chunk(Answer& a) {
    if (!install_) return;
    if (!a.records) {
      const Error& e = a.records.error();
      if (redirected(e)) return;
      spdlog::warn("replication: snapshot fetch from {} failed: {}", address_, e.describe());
      // The leader's own answer (a session it no longer has): this install cannot go on.
      // A lost connection or a timeout resumes where it stopped.
      if (e.code != ErrorCode::kConnectionLost && e.code != ErrorCode::kNotConnected && e.code != ErrorCode::kTimeout &&
          e.code != ErrorCode::kNotLeader)
        restart_install("the leader refused to go on with it");
      return retry_later("");
    }
    Chunk& c = a.chunk;
    SnapshotInstall& in = *install_;
    if (in.session == 0) {
      in.session = c.session;
      in.index = c.index;
      in.epoch = c.epoch;
      spdlog::info("replication: installing a snapshot from {}: the leader's store at index {}, epoch {}", address_,
                   c.index, c.epoch);
    } else if (c.session != in.session || c.index != in.index || c.epoch != in.epoch) {
      restart_install("the leader answered with another snapshot (session " + std::to_string(c.session) + ")");
      return retry_later("");
    }
    if (c.entries.empty() && !c.done) {
      restart_install("the leader sent an empty chunk");
      return retry_later("");
    }
    std::uint8_t last_space = in.after_space;
    std::vector<std::uint8_t> last_key = in.after_key;
    std::uint64_t bytes = 0;
    if (!c.entries.empty()) {
      last_space = c.entries.back().space;
      last_key = c.entries.back().key;
    }
    for (const auto& e : c.entries) bytes += e.key.size() + e.value.size();
    const std::uint64_t id = in.id, n = c.entries.size();
    const bool done = c.done;
    install_op_pending_ = true;
    writer_.submit(std::make_unique<SnapshotInstallOp>(
        SnapshotInstallOp::Step::kChunk, std::move(c.entries), 0, 0,
        [this, id, n, bytes, done, last_space, last_key = std::move(last_key)](const Status& st) mutable {
          install_op_pending_ = false;
          if (closed_) return;
          if (!install_ || install_->id != id) return snapshot_step();
          if (!st) {
            spdlog::error("replication: installing a snapshot chunk failed: {}", st.error().describe());
            restart_install("a chunk could not be installed");
            return retry_later("");
          }
          SnapshotInstall& in = *install_;
          in.after_space = last_space;
          in.after_key = std::move(last_key);
          in.entries += n;
          in.bytes += bytes;
          ++in.chunks;
          if (probe_) probe_->snapshot_bytes.inc(bytes);
          if (Clock::now() - in.reported >= kSnapshotReportEvery) {
            in.reported = Clock::now();
            spdlog::info("replication: snapshot install at {} entries, {} bytes ({} chunks, {:.1f} s)", in.entries,
                         in.bytes, in.chunks, seconds_since(in.started));
          }
          if (done) return finish_install();
          snapshot_step();
        }));
  }

  void finish_install() {
    const std::uint64_t id = install_->id, index = install_->index, epoch = install_->epoch;
    install_op_pending_ = true;
    writer_.submit(std::make_unique<SnapshotInstallOp>(
        SnapshotInstallOp::Step::kFinish, std::vector<storage::SnapshotEntry>(), index, epoch,
        [this, id](const Status& st) {
          install_op_pending_ = false;
          if (closed_) return;
          if (!install_ || install_->id != id) return snapshot_step();
          if (!st) {
            spdlog::error("replication: finishing a snapshot install failed: {}", st.error().describe());
            restart_install("it could not be finished");
            return retry_later("");
          }
          const SnapshotInstall& in = *install_;
          spdlog::info("replication: snapshot installed: the leader's store at index {}, epoch {}: {} entries, {} bytes "
                       "in {} chunks, {:.1f} s; fetching the log from {}",
                       in.index, in.epoch, in.entries, in.bytes, in.chunks, seconds_since(in.started), in.index + 1);
          install_.reset();
          if (probe_) {
            probe_->snapshots.inc();
            probe_->snapshot_installing.set(0);
          }
          applied_();
          if (conn_) send_fetch();
        }));
  }

  // An install that cannot go on: the next one empties the store again.
  void restart_install(const std::string& why) {
    spdlog::warn("replication: the snapshot install starts again from scratch: {}", why);
    install_.emplace();
    install_->id = ++install_ids_;
    install_->started = install_->reported = Clock::now();
  }

  // The leader says this log diverged from its own after from - 1: the records from there
  // on are undone and dropped, in one transaction, and said so; then fetching goes on.
  void truncate(std::uint64_t from, std::uint64_t leader_epoch) {
    const std::uint64_t generation = generation_;
    const std::string leader = address_;
    spdlog::warn("replication: this broker's log diverged from the leader's ({}, epoch {}) after record {}: "
                 "truncating its records from {} to {}",
                 leader, leader_epoch, from - 1, from, store_.log_position().last_index);
    writer_.submit(std::make_unique<TruncateOp>(from, [this, generation, leader, from](const Status& st,
                                                                                   const storage::Truncation& t) {
      if (closed_ || generation != generation_) return;
      if (!st) {
        spdlog::error("replication: truncating the log from {} failed: {}", from, st.error().describe());
        return retry_later("", kDivergedRetryDelay);
      }
      if (!t.undone) return begin_snapshot("record " + std::to_string(t.missing) + " diverged from " + leader +
                                           "'s log but can no longer be undone (its undo image is gone)");
      if (probe_) probe_->truncated.inc(t.count());
      spdlog::warn("replication: truncated {} records ({}..{}) that the leader {} does not hold; the log now ends at "
                   "{} (epoch {})",
                   t.count(), t.first, t.last, leader, store_.log_position().last_index, store_.log_position().epoch);
      applied_();
      send_fetch();
    }));
  }

  uv_loop_t* loop_;
  const BrokerConfig& config_;
  const ReplicationConfig& rc_;
  storage::Store& store_;
  storage::StorageWriter& writer_;
  Replication::Probe* probe_;
  std::function<void()> applied_;  // after each apply committed
  std::vector<std::string> peers_;  // every peer but this broker, in config order
  std::size_t next_peer_ = 0;
  std::string password_;
  std::unique_ptr<client::detail::Connection> conn_;
  std::string address_;   // what conn_ connects to
  std::string redirect_;  // where retry_later goes; "" the next peer
  std::string pinned_;    // [cluster]: the only address fetched from ("" without [cluster])
  std::uint64_t min_epoch_ = 0;  // [cluster]: etcd's epoch; answers of older ones are refused
  bool started_ = false;
  std::uint64_t generation_ = 0;  // answers of an older connection are dropped
  std::uint64_t leader_epoch_ = 0;
  std::uint64_t commit_index_ = 0;
  uv_timer_t retry_{};  // retry_later's, or fetch_again's
  Clock::time_point last_fetch_;
  bool closed_ = false;
  std::function<void()> closed_cb_;
  std::optional<SnapshotInstall> install_;  // while a snapshot is installed
  std::uint64_t install_ids_ = 0;
  bool install_op_pending_ = false;  // an op of the install is in the writer
};

// -- Replication ----------------------------------------------------------------------------

Replication::Replication(uv_loop_t* loop, const BrokerConfig& config, storage::Store& store,
                         storage::StorageWriter& writer, Responder& responder, metrics::Registry* registry, Hooks hooks)
    : loop_(loop),
      config_(config),
      rc_(config.replication),
      store_(store),
      writer_(writer),
      responder_(responder),
      hooks_(std::move(hooks)),
      probe_(registry ? std::make_unique<Probe>(*registry) : nullptr) {
  timer_.data = this;
  for (const auto& [id, address] : rc_.peers)
    if (id != rc_.id) followers_[id].address = address;
  // Without replication nothing is recorded (what is left of an earlier log is trimmed).
  store_.set_logging(rc_.enabled());
  if (rc_.enabled()) store_.set_log_retention(rc_.log_max_bytes, rc_.log_max_age_ms);
}

Replication::~Replication() = default;

Status Replication::start() {
  uv_timer_init(loop_, &timer_);
  auto pending = store_.snapshot_pending();
  if (!pending) return pending.error();
  const bool cluster = config_.cluster.enabled();
  if (*pending && (!rc_.enabled() || (rc_.leader && !cluster)))
    return Error(ErrorCode::kStorageError,
                 "this store holds a snapshot whose install did not finish: it is neither the leader's store nor this "
                 "broker's own, so it cannot serve. Start this broker as a follower (replication.role = \"follower\") "
                 "to install the snapshot again, or start it with an empty data directory");
  if (!rc_.enabled()) {
    if (hooks_.became_leader) hooks_.became_leader();
    return {};
  }
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<Replication*>(t->data)->check_in_sync(); }, kTimerMs,
                 kTimerMs);
  writer_.set_on_committed([this](std::uint64_t last) { log_advanced(last); });
  role_ = Role::kFollower;  // until it leads: clients are told NotLeader meanwhile
  auto epochs = store_.epochs();
  if (!epochs) return epochs.error();
  if (!epochs->empty()) leader_id_ = epochs->back().leader;
  if (cluster) {
    // etcd names the leader (ClusterCoordinator): until then this broker follows no one.
    spdlog::info("replication: {} waits for etcd to name a leader (epoch {}, log at {})", rc_.id,
                 store_.log_position().epoch, store_.log_position().last_index);
    leader_id_.clear();
    fetcher_ = std::make_unique<Fetcher>(loop_, config_, store_, writer_, probe_.get(), [this] { follower_applied(); });
    return {};
  }
  if (!rc_.leader) {
    spdlog::info("replication: {} starts as a follower (epoch {}, log at {})", rc_.id, store_.log_position().epoch,
                 store_.log_position().last_index);
    // Nothing is trimmed on a follower but by its own retention: it serves no fetches.
    fetcher_ = std::make_unique<Fetcher>(loop_, config_, store_, writer_, probe_.get(), [this] { follower_applied(); });
    fetcher_->start();
    return {};
  }
  if (!epochs->empty() && epochs->back().leader == rc_.id) {
    become_leader(epochs->back().epoch);
    return {};
  }
  // A new leader's first epoch, or one configured to lead after another did: a new epoch.
  const std::uint64_t epoch = store_.log_position().epoch + 1;
  writer_.submit(std::make_unique<BeginEpochOp>(epoch, rc_.id, [this, epoch](const Status& st) {
    if (!st) {
      spdlog::error("replication: cannot begin epoch {}: {}", epoch, st.error().describe());
      return;
    }
    become_leader(epoch);
  }));
  return {};
}

void Replication::become_leader(std::uint64_t epoch) {
  role_ = Role::kLeader;
  leader_id_ = rc_.id;
  commit_index_ = 0;
  joining_.clear();
  // A follower joins the in-sync set only once it holds this whole log as it is now, the
  // epoch's first record included: every record an earlier leader may have confirmed.
  epoch_start_index_ = store_.log_position().last_index;
  writer_.set_commit_gate(rc_.sync);
  const auto now = Clock::now();
  if (config_.cluster.enabled()) {
    // etcd's in-sync set, as the election read it: each member holds every committed
    // record, and may win the next election, so none leaves it but by etcd's
    // compare-and-swap. Until one fetches, its lag counts from now.
    in_sync_ = cluster_in_sync_;
    in_sync_.insert(rc_.id);
    for (auto& [id, f] : followers_) f.caught_up = in_sync_.contains(id) ? now : now - rc_.lag_max;
  } else {
    in_sync_ = {rc_.id};
    for (auto& [id, f] : followers_) f.caught_up = now - rc_.lag_max;  // out until it fetches
  }
  spdlog::info("replication: {} leads epoch {} ({} mode, min_insync {}), its log at {}", rc_.id, epoch,
               rc_.sync ? "sync" : "async", rc_.min_insync, store_.log_position().last_index);
  if (probe_) {
    probe_->leader.set(1);
    probe_->epoch.set(static_cast<double>(epoch));
  }
  update_commit_index();
  if (hooks_.became_leader) hooks_.became_leader();
}

void Replication::close(std::function<void()> done) {
  closing_ = true;
  answer_held(true);
  snapshots_.clear();  // their read transactions end before the store does
  close_done_ = std::move(done);
  auto finish = [this] {
    if (!timer_.loop) {  // never started (the broker failed to start before it)
      if (close_done_) close_done_();
      return;
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
      auto* self = static_cast<Replication*>(h->data);
      if (self->close_done_) self->close_done_();
    });
  };
  if (fetcher_)
    fetcher_->close(finish);
  else
    finish();
}

void Replication::follower_applied() {
  // A new epoch's first record names its leader: what NotLeader answers point to.
  const std::uint64_t epoch = store_.log_position().epoch;
  if (epoch == known_epoch_) return;
  known_epoch_ = epoch;
  if (auto epochs = store_.epochs(); epochs && !epochs->empty()) leader_id_ = epochs->back().leader;
  if (probe_) probe_->epoch.set(static_cast<double>(epoch));
}

std::string_view Replication::role_name() const {
  switch (role_) {
    case Role::kStandalone: return "standalone";
    case Role::kLeader: return "leader";
    case Role::kFollower: return "follower";
  }
  return "?";
}

std::string Replication::peer_address(const std::string& id) const {
  for (const auto& [peer, address] : rc_.peers)
    if (peer == id) return address;
  return {};
}

std::string Replication::leader_address() const { return peer_address(leader_id_); }

std::uint64_t Replication::known_leader_epoch() const {
  // etcd's word when it named one; else the newest epoch this store holds (the followed
  // leader's once its first record is applied).
  return std::max(followed_epoch_, store_.log_position().epoch);
}

Error Replication::fenced_refusal() const {
  if (probe_) probe_->refused.with({"not_leader"}).inc();
  return Error(ErrorCode::kNotLeader, "broker " + rc_.id + " cannot reach etcd to renew its leadership (" + fence_why_ +
                                          "): it confirms nothing until it can");
}

std::optional<Error> Replication::refuse_producer_group() const {
  if (role_ == Role::kLeader && fenced()) return fenced_refusal();
  return refuse(wire::Body::Hello);
}

std::optional<Error> Replication::refuse(wire::Body type) const {
  if (role_ == Role::kStandalone) return std::nullopt;
  if (role_ == Role::kFollower) {
    Error e(ErrorCode::kNotLeader, "broker " + rc_.id + " is a follower" +
                                       (leader_id_.empty() ? std::string(" and knows no leader yet")
                                                           : "; the leader is " + leader_id_ + " at " + leader_address()));
    e.leader = leader_address();
    e.leader_epoch = known_leader_epoch();
    if (probe_) probe_->refused.with({"not_leader"}).inc();
    return e;
  }
  if (fenced() && writes(type)) return fenced_refusal();
  if (rc_.sync && writes(type) && in_sync_.size() < rc_.min_insync) {
    if (probe_) probe_->refused.with({"not_enough_replicas"}).inc();
    return Error(ErrorCode::kNotEnoughReplicas, "in sync: " + join(in_sync_) + " (" + std::to_string(in_sync_.size()) +
                                                    "), replication.min_insync is " + std::to_string(rc_.min_insync));
  }
  return std::nullopt;
}

// -- the leader's side --------------------------------------------------------------------

void Replication::fetch(Connection& conn, RequestId rid, const wire::ReplicaFetch& req) {
  if (role_ == Role::kStandalone)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "replication is off on this broker (no replication.id)"));
  const std::string replica = req.replica() ? req.replica()->str() : "";
  auto it = followers_.find(replica);
  if (it == followers_.end())
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument,
                                                   "'" + replica + "' is not a replica of this cluster (replication.peers)"));
  if (role_ != Role::kLeader) {
    Error e(ErrorCode::kNotLeader, "broker " + rc_.id + " is a follower; fetch from the leader");
    e.leader = leader_address();
    e.leader_epoch = known_leader_epoch();
    return responder_.reply_error(conn, rid, e);
  }
  const storage::LogPosition pos = store_.log_position();
  if (req.epoch() > pos.epoch)
    return responder_.reply_error(
        conn, rid, Error(ErrorCode::kStaleEpoch, "replica " + replica + " holds epoch " + std::to_string(req.epoch()) +
                                                      ", newer than this leader's " + std::to_string(pos.epoch) +
                                                      ": broker " + rc_.id + " no longer leads"));
  Follower& f = it->second;
  const auto now = Clock::now();
  f.last_fetch = now;
  // A follower that fetches the log is done with its snapshot (or gave it up).
  snapshots_.erase(replica);
  // Divergence. The follower's records of its last epoch that this log does not have as
  // that epoch's (past where the next epoch began here, or past this log's end) are not
  // the leader's: it drops them (Kafka's leader-epoch truncation, KIP-101). A follower
  // whose last record is of an epoch this log has elsewhere goes back to where that
  // epoch's records here end, and is checked again at its next fetch.
  const std::uint64_t follower_last = req.next_index() > 0 ? req.next_index() - 1 : 0;
  std::uint64_t truncate_to = 0;
  if (follower_last > 0 && req.last_epoch() != 0) {
    const std::uint64_t end = end_of_epoch(req.last_epoch());
    if (follower_last > end) {
      truncate_to = end + 1;
    } else if (auto mine = store_.read_log_records(follower_last, 1);
               mine && !mine->empty() && mine->front().index == follower_last) {
      if (auto h = storage::redo_header(mine->front().bytes); h && h->epoch != req.last_epoch())
        truncate_to = divergence_point(req.last_epoch(), req.next_index());
    }
  } else if (follower_last > pos.last_index) {
    truncate_to = pos.last_index + 1;
  }
  // What a diverged follower holds past the divergence is not this log's: not durable here.
  f.durable_index = truncate_to ? std::min(req.durable_index(), truncate_to - 1) : req.durable_index();
  f.next_index = truncate_to ? truncate_to : req.next_index();
  if (!truncate_to && f.next_index > f.end_at_answer) f.caught_up = now;
  if (truncate_to != 0) {
    spdlog::warn("replication: {}'s log diverged from this one; it must drop its records from {} on", replica,
                 truncate_to);
    auto& fbb = responder_.fbb();
    fbb.Clear();
    auto body = wire::CreateReplicaRecords(fbb, pos.epoch, commit_index_, pos.last_index, 0, truncate_to);
    return responder_.send_frame(conn, rid, wire::Body::ReplicaRecords, body.Union());
  }
  // The records the follower needs next were trimmed, or came before a snapshot this
  // broker installed itself (its log then starts after its log base): only a snapshot of
  // the store can bring the follower up to date.
  auto first = store_.first_log_index();
  if (!first) return responder_.reply_error(conn, rid, first.error());
  const std::uint64_t kept_from = *first != 0 ? *first : pos.last_index + 1;
  if (req.next_index() < kept_from) {
    spdlog::info("replication: {} needs record {}, which this log no longer holds (it keeps {} on): it is sent a snapshot",
                 replica, req.next_index(), kept_from);
    auto& fbb = responder_.fbb();
    fbb.Clear();
    auto body = wire::CreateReplicaRecords(fbb, pos.epoch, commit_index_, pos.last_index, 0, 0, true);
    return responder_.send_frame(conn, rid, wire::Body::ReplicaRecords, body.Union());
  }
  update_commit_index();
  if (req.next_index() <= pos.last_index || req.wait_ms() == 0) {
    f.end_at_answer = pos.last_index;
    return answer_fetch(conn, rid, req.next_index(), req.max_bytes());
  }
  // One held fetch per replica: an earlier one (a replica that gave up waiting, or one
  // that sends many) is answered now, so held fetches stay as many as the peers.
  for (auto h = held_.begin(); h != held_.end(); ++h) {
    if (h->replica != replica) continue;
    HeldFetch old = *h;
    held_.erase(h);
    if (Connection* c = responder_.find(old.connection)) answer_fetch(*c, old.rid, old.next_index, old.max_bytes);
    break;
  }
  held_.push_back({conn.id(), rid, req.next_index(), req.max_bytes(), replica,
                   now + std::chrono::milliseconds(std::min<std::uint32_t>(req.wait_ms(), 60000))});
}

std::uint64_t Replication::end_of_epoch(std::uint64_t epoch) const {
  // The record before the first one of the first epoch after `epoch`, or this log's end.
  if (auto epochs = store_.epochs(); epochs)
    for (const auto& e : *epochs)
      if (e.epoch > epoch) return e.first_index - 1;
  return store_.log_position().last_index;
}

std::uint64_t Replication::divergence_point(std::uint64_t follower_epoch, std::uint64_t follower_next) const {
  // The first record of the first epoch after the follower's, as this log has them.
  auto epochs = store_.epochs();
  if (!epochs) return follower_next - 1;
  for (const auto& e : *epochs)
    if (e.epoch > follower_epoch) return std::min(e.first_index, follower_next - 1);
  return follower_next - 1;
}

void Replication::answer_fetch(Connection& conn, RequestId rid, std::uint64_t next_index, std::uint32_t max_bytes) {
  const storage::LogPosition pos = store_.log_position();
  auto& fbb = responder_.fbb();
  fbb.Clear();
  // Each record is expanded straight into the answer: its messages' bytes are copied once,
  // from the store's pages.
  std::vector<flatbuffers::Offset<wire::ReplicaRecord>> out;
  std::size_t bytes = 0;
  auto placed = store_.place_log_records(
      next_index, std::clamp<std::uint32_t>(max_bytes, 64u << 10, 256u << 20), storage::Store::RecordForm::kExpanded,
      [&](std::uint64_t index, std::size_t size, const storage::Store::RecordFill& fill) {
        std::uint8_t* data = nullptr;
        auto vec = fbb.CreateUninitializedVector<std::uint8_t>(size, &data);
        fill({data, size});
        out.push_back(wire::CreateReplicaRecord(fbb, index, vec));
        bytes += size;
      });
  if (!placed) return responder_.reply_error(conn, rid, placed.error());
  auto body = wire::CreateReplicaRecords(fbb, pos.epoch, commit_index_, pos.last_index, fbb.CreateVector(out), 0);
  responder_.send_frame(conn, rid, wire::Body::ReplicaRecords, body.Union());
  if (probe_) probe_->fetch_bytes.inc(bytes);
}

void Replication::answer_held(bool all) {
  if (held_.empty()) return;
  const std::uint64_t last = store_.log_position().last_index;
  const auto now = Clock::now();
  std::vector<HeldFetch> keep;
  for (const HeldFetch& h : held_) {
    if (!all && h.next_index > last && now < h.deadline) {
      keep.push_back(h);
      continue;
    }
    if (Connection* conn = responder_.find(h.connection)) {
      if (auto it = followers_.find(h.replica); it != followers_.end()) it->second.end_at_answer = last;
      answer_fetch(*conn, h.rid, h.next_index, h.max_bytes);
    }
  }
  held_.swap(keep);
}

void Replication::log_advanced(std::uint64_t last_index) {
  if (probe_) probe_->last_index.set(static_cast<double>(last_index));
  if (role_ != Role::kLeader) return;
  update_commit_index();
  answer_held(false);
}

void Replication::update_commit_index() {
  if (role_ != Role::kLeader) return;
  // The leader's own log is durable up to its end: the writer fsyncs before it completes.
  std::uint64_t lowest = store_.log_position().last_index;
  std::uint64_t keep_from = UINT64_MAX;
  std::set<std::string> waited_for = in_sync_;
  waited_for.insert(joining_.begin(), joining_.end());
  for (const auto& id : waited_for) {
    auto it = followers_.find(id);
    if (it == followers_.end()) continue;
    lowest = std::min(lowest, it->second.durable_index);
    keep_from = std::min(keep_from, it->second.durable_index + 1);
  }
  // A follower installing a snapshot fetches the log from the snapshot's index on next.
  for (const auto& [id, session] : snapshots_)
    keep_from = std::min(keep_from, session.snapshot->position().last_index + 1);
  store_.set_log_keep_from(keep_from);
  // A fenced leader's lease may have expired and another may lead: it confirms nothing.
  if (!fenced() && in_sync_.size() >= rc_.min_insync && lowest > commit_index_) commit_index_ = lowest;
  store_.set_undo_keep_from(commit_index_ + 1);
  writer_.release(commit_index_);
  if (probe_) {
    probe_->commit_index.set(static_cast<double>(commit_index_));
    probe_->in_sync.set(static_cast<double>(in_sync_.size()));
  }
}

void Replication::check_in_sync() {
  if (closing_) return;
  answer_held(false);
  close_idle_snapshots();
  if (role_ != Role::kLeader) return;
  const auto now = Clock::now();
  const std::uint64_t last = store_.log_position().last_index;
  std::set<std::string> next = in_sync_;
  for (auto& [id, f] : followers_) {
    const bool caught_up = now - f.caught_up < rc_.lag_max;
    if (caught_up && f.durable_index >= std::max(commit_index_, epoch_start_index_)) next.insert(id);
    if (!caught_up) next.erase(id);
    if (probe_) {
      probe_->lag_records.with({id}).set(static_cast<double>(last > f.durable_index ? last - f.durable_index : 0));
      probe_->lag_ms.with({id}).set(
          static_cast<double>(std::chrono::duration_cast<std::chrono::milliseconds>(now - f.caught_up).count()));
    }
  }
  // A write whose outcome is unknown left joiners waited for: writing again settles it.
  if ((next != in_sync_ || !joining_.empty()) && !in_sync_write_pending_) write_in_sync(std::move(next));
}

void Replication::write_in_sync(std::set<std::string> members) {
  in_sync_write_pending_ = true;
  spdlog::info("replication: in-sync set {} -> {}", join(in_sync_), join(members));
  if (config_.cluster.enabled() && hooks_.store_in_sync) {
    // etcd's set says who may be elected, so each of its members must hold every record
    // this leader confirms: a member leaves it there before this leader stops waiting for
    // it, and the leader waits for a joining member (joining_) before etcd names it.
    for (const auto& id : members)
      if (!in_sync_.contains(id)) joining_.insert(id);
    hooks_.store_in_sync(members, [this, members](bool stored, bool known) {
      if (closing_) return;
      if (!stored) {
        in_sync_write_pending_ = false;  // tried again at the next check
        // Refused: etcd's set is not `members`, and its joiners need not be waited for.
        // Unknown (no answer): etcd may name them; they are waited for until a write is known.
        if (known) joining_.clear();
        return;
      }
      store_in_sync_locally(members);
    });
    return;
  }
  store_in_sync_locally(std::move(members));
}

void Replication::store_in_sync_locally(std::set<std::string> members) {
  auto copy = members;
  writer_.submit(std::make_unique<InSyncOp>(std::move(copy), [this, members](const Status& st) {
    in_sync_write_pending_ = false;
    if (!st) {
      spdlog::error("replication: cannot store the in-sync set: {}", st.error().describe());
      return;
    }
    // Durable now: it may be used. etcd's set is exactly this one now (with [cluster]).
    in_sync_ = members;
    joining_.clear();
    if (probe_) probe_->in_sync_changes.inc();
    update_commit_index();
  }));
}

// -- requests any broker answers ----------------------------------------------------------

void Replication::status(Connection& conn, RequestId rid) {
  const storage::LogPosition pos = store_.log_position();
  auto first_index = store_.first_log_index();
  const std::uint64_t first = first_index ? *first_index : 0;
  const auto now = Clock::now();
  auto& fbb = responder_.fbb();
  fbb.Clear();
  std::vector<flatbuffers::Offset<wire::ReplicaInfo>> replicas;
  if (role_ == Role::kLeader)
    for (const auto& [id, f] : followers_) {
      auto ms = [&](Clock::duration d) {
        return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
      };
      const std::uint64_t lag = pos.last_index > f.durable_index ? pos.last_index - f.durable_index : 0;
      std::uint64_t lag_bytes = 0;
      if (lag > 0)
        if (auto r = store_.read_log_records(f.durable_index + 1, kLagBytesScan); r)
          for (const auto& rec : *r) lag_bytes += rec.bytes.size();
      replicas.push_back(wire::CreateReplicaInfo(fbb, fbb.CreateString(id), fbb.CreateString(f.address),
                                                 f.durable_index, in_sync_.count(id) > 0, lag, lag_bytes,
                                                 ms(now - f.caught_up), f.last_fetch ? ms(now - *f.last_fetch) : UINT64_MAX));
    }
  std::set<std::string> in_sync = in_sync_;
  if (role_ != Role::kLeader) in_sync = stored_in_sync();
  std::vector<flatbuffers::Offset<flatbuffers::String>> ids;
  for (const auto& id : in_sync) ids.push_back(fbb.CreateString(id));
  const std::uint64_t commit = role_ == Role::kLeader ? commit_index_ : (fetcher_ ? fetcher_->commit_index() : 0);
  flatbuffers::Offset<wire::EtcdView> etcd = 0;
  if (config_.cluster.enabled() && hooks_.etcd_view) {
    const EtcdView v = hooks_.etcd_view();
    auto strings = [&](const std::set<std::string>& items) {
      std::vector<flatbuffers::Offset<flatbuffers::String>> out;
      for (const auto& item : items) out.push_back(fbb.CreateString(item));
      return fbb.CreateVector(out);
    };
    etcd = wire::CreateEtcdView(fbb, fbb.CreateString(v.endpoint), v.lease_held, fbb.CreateString(v.leader), v.epoch,
                                strings(v.in_sync), v.min_insync, strings(v.members));
  }
  auto body = wire::CreateClusterInfo(
      fbb, fbb.CreateString(rc_.id), fbb.CreateString(role_name()), pos.epoch,
      fbb.CreateString(leader_id_), fbb.CreateString(leader_address()), fbb.CreateString(rc_.sync ? "sync" : "async"),
      rc_.min_insync, first, pos.last_index, commit, fbb.CreateVector(ids), fbb.CreateVector(replicas),
      fbb.CreateString(role_ == Role::kFollower && fetcher_ ? fetcher_->target_address() : std::string()),
      role_ == Role::kFollower && fetcher_ && fetcher_->installing(), etcd);
  responder_.send_frame(conn, rid, wire::Body::ClusterInfo, body.Union());
}

std::set<std::string> Replication::stored_in_sync() const {
  auto value = store_.get_meta(kInSyncKey);
  return value && *value ? split(**value) : std::set<std::string>();
}

void Replication::promote(Connection& conn, RequestId rid, const wire::Promote& req) {
  if (role_ == Role::kStandalone)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "replication is off on this broker (no replication.id)"));
  if (role_ == Role::kLeader)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "broker " + rc_.id + " already leads"));
  if (config_.cluster.enabled())
    return responder_.reply_error(
        conn, rid, Error(ErrorCode::kInvalidArgument,
                         "etcd chooses the leader of this cluster ([cluster]): a follower takes over by itself once the "
                         "leader's lease expires (stop the leader to move leadership)"));
  if (promoting_)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kBusy, "a promotion is already under way"));
  if (auto pending = store_.snapshot_pending(); !pending || *pending || (fetcher_ && fetcher_->installing()))
    return responder_.reply_error(
        conn, rid, Error(ErrorCode::kInvalidArgument, "broker " + rc_.id +
                                                          " is installing a snapshot of the leader's store: its store is "
                                                          "incomplete until the install finishes, so it cannot lead"));
  const std::set<std::string> last_in_sync = stored_in_sync();
  if (!req.unclean() && !last_in_sync.count(rc_.id))
    return responder_.reply_error(
        conn, rid,
        Error(ErrorCode::kInvalidArgument,
              "broker " + rc_.id + " was not in the last in-sync set it saw (" + join(last_in_sync) +
                  "), so it may lack confirmed records; promote a member of that set, or this one with --unclean "
                  "to accept losing them"));
  promoting_ = true;
  const std::uint64_t epoch = std::max(store_.log_position().epoch, fetcher_ ? fetcher_->leader_epoch() : 0) + 1;
  spdlog::warn("replication: {} promoted by an operator{}: it stops following and leads epoch {}", rc_.id,
               req.unclean() ? " (unclean)" : "", epoch);
  const std::uint64_t conn_id = conn.id();
  begin_epoch(epoch, [this, conn_id, rid](const Status& st) {
    Connection* c = responder_.find(conn_id);
    if (!c) return;
    if (!st) return responder_.reply_error(*c, rid, st.error());
    status(*c, rid);
  });
}

// -- [cluster]: what etcd decided ---------------------------------------------------------

void Replication::follow(const std::string& leader, std::uint64_t epoch) {
  if (closing_ || role_ != Role::kFollower || !fetcher_ || promoting_) return;
  const std::string address = peer_address(leader);
  if (address.empty()) {
    spdlog::error("replication: etcd names {} the leader, which is not in replication.peers", leader);
    return;
  }
  if (leader == leader_id_ && epoch == followed_epoch_) return;  // the fetcher retries by itself
  spdlog::info("replication: following {} ({}), the leader of epoch {}", leader, address, epoch);
  leader_id_ = leader;
  followed_epoch_ = epoch;
  fetcher_->follow(address, epoch);
}

bool Replication::can_lead() const {
  auto pending = store_.snapshot_pending();
  return pending && !*pending && !(fetcher_ && fetcher_->installing());
}

void Replication::lead(std::uint64_t epoch, std::set<std::string> in_sync, std::function<void(const Status&)> done) {
  if (closing_ || role_ == Role::kLeader || promoting_)
    return done(Error(ErrorCode::kBusy, "already leading, or about to"));
  promoting_ = true;
  cluster_in_sync_ = std::move(in_sync);
  spdlog::warn("replication: etcd elected {}: it stops following and leads epoch {}", rc_.id, epoch);
  begin_epoch(epoch, std::move(done));
}

void Replication::begin_epoch(std::uint64_t epoch, std::function<void(const Status&)> done) {
  auto begin = [this, epoch, done = std::move(done)] {
    writer_.submit(std::make_unique<BeginEpochOp>(epoch, rc_.id, [this, epoch, done](const Status& st) {
      promoting_ = false;
      if (!st) {
        spdlog::error("replication: cannot begin epoch {}: {}", epoch, st.error().describe());
        return done(st);
      }
      become_leader(epoch);
      done(st);
    }));
  };
  if (fetcher_)
    fetcher_->close(begin);  // no record of the old leader is applied after the new epoch's first
  else
    begin();
}

void Replication::set_lease_deadline(Clock::time_point deadline) { lease_deadline_ = deadline; }

bool Replication::fenced() const {
  return fenced_ || (lease_deadline_ && Clock::now() >= *lease_deadline_);
}

void Replication::set_fenced(bool fenced, std::string why) {
  if (fenced == fenced_) return;
  fenced_ = fenced;
  fence_why_ = std::move(why);
  if (fenced)
    spdlog::warn("replication: {} stops confirming: {}", rc_.id, fence_why_);
  else
    spdlog::info("replication: {} confirms again: its etcd lease was renewed", rc_.id);
  update_commit_index();
}

void Replication::digest(Connection& conn, RequestId rid) {
  struct Work {
    uv_work_t req;
    Replication* self;
    std::uint64_t conn_id;
    RequestId rid;
    storage::LogPosition pos;
    Result<std::vector<storage::KeySpaceDigest>> digests{std::vector<storage::KeySpaceDigest>()};
  };
  auto* w = new Work{{}, this, conn.id(), rid, {}};
  w->req.data = w;
  // The store's whole contents are read: on the thread pool, not the loop. Position and
  // digests come from one read transaction's view only when nothing writes meanwhile;
  // compare digests of a quiet cluster.
  uv_queue_work(
      loop_, &w->req,
      [](uv_work_t* req) {
        auto* w = static_cast<Work*>(req->data);
        w->pos = w->self->store_.log_position();
        w->digests = w->self->store_.digest();
      },
      [](uv_work_t* req, int) {
        std::unique_ptr<Work> w(static_cast<Work*>(req->data));
        Connection* c = w->self->responder_.find(w->conn_id);
        if (!c) return;
        if (!w->digests) return w->self->responder_.reply_error(*c, w->rid, w->digests.error());
        auto& fbb = w->self->responder_.fbb();
        fbb.Clear();
        std::vector<flatbuffers::Offset<wire::KeySpaceDigest>> spaces;
        for (const auto& d : *w->digests)
          spaces.push_back(wire::CreateKeySpaceDigest(fbb, fbb.CreateString(d.key_space), d.entries,
                                                      fbb.CreateString(d.sha256)));
        auto body = wire::CreateDigest(fbb, w->pos.last_index, w->pos.epoch, fbb.CreateVector(spaces));
        w->self->responder_.send_frame(*c, w->rid, wire::Body::Digest, body.Union());
      });
}

// -- snapshots: the leader's side ------------------------------------------------------------

void Replication::snapshot_fetch(Connection& conn, RequestId rid, const wire::SnapshotFetch& req) {
  if (role_ == Role::kStandalone)
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument, "replication is off on this broker (no replication.id)"));
  const std::string replica = req.replica() ? req.replica()->str() : "";
  if (!followers_.count(replica))
    return responder_.reply_error(conn, rid, Error(ErrorCode::kInvalidArgument,
                                                   "'" + replica + "' is not a replica of this cluster (replication.peers)"));
  if (role_ != Role::kLeader) {
    Error e(ErrorCode::kNotLeader, "broker " + rc_.id + " is a follower; fetch snapshots from the leader");
    e.leader = leader_address();
    return responder_.reply_error(conn, rid, e);
  }
  const auto now = Clock::now();
  if (req.session() == 0) {
    auto snapshot = store_.open_snapshot();
    if (!snapshot) return responder_.reply_error(conn, rid, snapshot.error());
    // Ids differ across this leader's restarts too, so that a follower's old session
    // cannot name a new one.
    if (next_session_ == 0) next_session_ = wall_ms() << 16;
    SnapshotSession& s = snapshots_[replica] = SnapshotSession{++next_session_, std::move(*snapshot), now, now};
    spdlog::info("replication: {} starts a snapshot (session {}) of this store at index {}, epoch {}", replica, s.id,
                 s.snapshot->position().last_index, s.snapshot->position().epoch);
    update_commit_index();  // the log from the snapshot's index on stays
  }
  auto it = snapshots_.find(replica);
  if (it == snapshots_.end() || (req.session() != 0 && it->second.id != req.session()))
    return responder_.reply_error(
        conn, rid, Error(ErrorCode::kInvalidArgument,
                         "snapshot session " + std::to_string(req.session()) + " of " + replica +
                             " is not open on this leader (idle for " + std::to_string(kSnapshotIdle.count()) +
                             " s, replaced by a newer one, or the leader restarted): start a new one"));
  SnapshotSession& s = it->second;
  s.last_used = now;
  const std::span<const std::uint8_t> after_key =
      req.after_key() ? std::span<const std::uint8_t>(req.after_key()->data(), req.after_key()->size())
                      : std::span<const std::uint8_t>();
  auto part = s.snapshot->read(req.after_space(), after_key,
                               std::clamp(req.max_bytes(), kSnapshotChunkMin, kSnapshotChunkMax));
  if (!part) {
    spdlog::warn("replication: {}'s snapshot (session {}) failed: {}", replica, s.id, part.error().describe());
    snapshots_.erase(it);
    update_commit_index();
    return responder_.reply_error(conn, rid, part.error());
  }
  auto& fbb = responder_.fbb();
  fbb.Clear();
  std::vector<flatbuffers::Offset<wire::SnapshotEntry>> entries;
  entries.reserve(part->entries.size());
  for (const auto& e : part->entries)
    entries.push_back(wire::CreateSnapshotEntry(fbb, e.space, fbb.CreateVector(e.key), fbb.CreateVector(e.value)));
  const storage::LogPosition pos = s.snapshot->position();
  auto body = wire::CreateSnapshotChunk(fbb, s.id, pos.last_index, pos.epoch, fbb.CreateVector(entries), part->done);
  responder_.send_frame(conn, rid, wire::Body::SnapshotChunk, body.Union());
  s.entries += part->entries.size();
  s.bytes += part->bytes;
  if (part->done && !s.done) {
    s.done = true;
    spdlog::info("replication: snapshot at index {} sent to {}: {} entries, {} bytes in {:.1f} s", pos.last_index,
                 replica, s.entries, s.bytes, std::chrono::duration<double>(now - s.started).count());
    if (probe_) probe_->snapshots_served.inc();
  }
}

void Replication::close_idle_snapshots() {
  const auto now = Clock::now();
  bool closed = false;
  for (auto it = snapshots_.begin(); it != snapshots_.end();) {
    if (now - it->second.last_used < kSnapshotIdle) {
      ++it;
      continue;
    }
    spdlog::info("replication: {}'s snapshot session {} was idle for {} s: closed", it->first, it->second.id,
                 kSnapshotIdle.count());
    it = snapshots_.erase(it);
    closed = true;
  }
  if (closed) update_commit_index();
}

}  // namespace txmq::broker
