#include "broker/cluster_coordinator.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <tuple>

namespace txmq::broker {

using nlohmann::json;

namespace {

constexpr std::uint64_t kTickMs = 100;
// After a failed grant or read, the next try.
constexpr auto kRetry = std::chrono::milliseconds(500);

std::string join(const std::set<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += (out.empty() ? "" : ",") + x;
  return "{" + out + "}";
}

std::uint64_t uint_field(const json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

std::string string_field(const json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

struct ClusterCoordinator::Probe {
  explicit Probe(metrics::Registry& r)
      : elections(r.counter_family("txmq_cluster_elections_total",
                                   "Elections this broker stood in: won, or lost to another's transaction",
                                   {"result"})),
        leader_changes(r.counter("txmq_cluster_leader_changes_total", "Leaders etcd named, as this broker saw them")),
        leader_known(r.gauge("txmq_cluster_leader_known", "1 while etcd names a leader, 0 while it names none")),
        in_sync_members(r.gauge("txmq_cluster_in_sync_members", "The in-sync set in etcd: its members")),
        min_insync(r.gauge("txmq_cluster_min_insync", "The in-sync set in etcd: its min_insync")),
        in_sync_changes(r.counter_family("txmq_cluster_in_sync_changes_total",
                                         "Leader: in-sync set changes written to etcd (stored), or refused by its "
                                         "compare-and-swap (refused)",
                                         {"result"})),
        fenced(r.gauge("txmq_cluster_fenced", "1 while this leader's etcd lease may have expired: it confirms nothing")),
        keepalive_seconds(r.histogram("txmq_etcd_keepalive_seconds", "etcd lease keep-alives answered: their latency",
                                      {0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5})),
        keepalive_failures(r.counter("txmq_etcd_keepalive_failures_total",
                                     "etcd lease keep-alives that failed (no answer, or an error)")),
        leases_lost(r.counter("txmq_etcd_leases_lost_total", "Leases etcd no longer had when kept alive")),
        lease_held(r.gauge("txmq_etcd_lease_held", "1 while this broker holds an etcd lease (it is a member)")) {}
  metrics::Family<metrics::Counter>& elections;
  metrics::Counter& leader_changes;
  metrics::Gauge& leader_known;
  metrics::Gauge& in_sync_members;
  metrics::Gauge& min_insync;
  metrics::Family<metrics::Counter>& in_sync_changes;
  metrics::Gauge& fenced;
  metrics::Histogram& keepalive_seconds;
  metrics::Counter& keepalive_failures;
  metrics::Counter& leases_lost;
  metrics::Gauge& lease_held;
};

ClusterCoordinator::ClusterCoordinator(uv_loop_t* loop, const BrokerConfig& config, Replication& replication,
                                       metrics::Registry* registry, Hooks hooks)
    : loop_(loop),
      config_(config),
      cc_(config.cluster),
      replication_(replication),
      hooks_(std::move(hooks)),
      probe_(registry ? std::make_unique<Probe>(*registry) : nullptr),
      prefix_("/txmq/" + config.cluster.name + "/"),
      leader_key_(prefix_ + "leader"),
      state_key_(prefix_ + "state"),
      members_prefix_(prefix_ + "members/"),
      ttl_(std::chrono::seconds(config.cluster.lease_ttl_s)),
      keepalive_every_(ttl_ / 3),
      margin_(ttl_ / 6) {
  etcd::ClientOptions o;
  o.endpoints = cc_.etcd_endpoints;
  // A call unanswered for as long as keep-alives are apart is given up.
  o.timeout = keepalive_every_;
  etcd_ = std::make_unique<etcd::Client>(loop_, std::move(o));
}

ClusterCoordinator::~ClusterCoordinator() = default;

void ClusterCoordinator::start() {
  spdlog::info("cluster: {} joins cluster '{}' through etcd at {} (lease TTL {} s)", config_.replication.id, cc_.name,
               etcd_->endpoint(), cc_.lease_ttl_s);
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<ClusterCoordinator*>(t->data)->tick(); }, 0, kTickMs);
}

void ClusterCoordinator::close(std::function<void()> done) {
  if (closing_) return;
  closing_ = true;
  if (timer_.loop) uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  auto finish = [this, done = std::move(done)] { etcd_->close(done); };
  if (lease_ == 0) return finish();
  // Revoked, the lease takes the member key and (a leader's) the leader key with it, so
  // that the others elect at once instead of after the TTL.
  etcd_->revoke(lease_, [this, finish](Status st) {
    if (st) spdlog::info("cluster: lease revoked");
    else spdlog::warn("cluster: could not revoke the lease ({}): it expires within {} s", st.error().message, cc_.lease_ttl_s);
    finish();
  });
}

// -- the lease -----------------------------------------------------------------------------

void ClusterCoordinator::tick() {
  if (closing_ || stepping_down_) return;
  const auto now = Clock::now();
  if (lease_ == 0) {
    if (!granting_ && now >= retry_at_) grant();
  } else {
    if (!keepalive_in_flight_ && now >= next_keepalive_) keep_alive();
    if (!registered_ && !registering_ && now >= retry_at_) register_member();
  }
  // Past the deadline the lease may have expired and another broker may lead.
  if (leading_) {
    const bool fence = lease_ == 0 || now >= lease_deadline_;
    if (fence) {
      const auto since = std::chrono::duration_cast<std::chrono::milliseconds>(now - last_keepalive_ok_).count();
      replication_.set_fenced(true, "no etcd keep-alive answered for " + std::to_string(since) + " ms");
    }
    if (probe_) probe_->fenced.set(fence ? 1 : 0);
  }
  if (!synced_ && !syncing_ && now >= retry_at_) sync();
  if (synced_) decide();
}

void ClusterCoordinator::grant() {
  granting_ = true;
  const auto sent = Clock::now();
  etcd_->grant(cc_.lease_ttl_s, [this, sent](Result<etcd::Lease> r) {
    granting_ = false;
    if (closing_) return;
    if (!r) {
      log_trouble("cannot get an etcd lease: " + r.error().message);
      retry_at_ = Clock::now() + kRetry;
      return;
    }
    trouble_.clear();
    lease_ = r->id;
    lease_deadline_ = sent + std::chrono::seconds(r->ttl_s) - margin_;
    replication_.set_lease_deadline(lease_deadline_);
    last_keepalive_ok_ = sent;
    next_keepalive_ = sent + keepalive_every_;
    registered_ = false;
    if (probe_) probe_->lease_held.set(1);
    register_member();
  });
}

// Registered: alive, with the log this broker holds now (what the first election
// compares). Tried again from the tick until it is.
void ClusterCoordinator::register_member() {
  registering_ = true;
  const std::int64_t lease = lease_;
  etcd_->put(members_prefix_ + config_.replication.id, member_json(), lease, [this, lease](Result<std::int64_t> put) {
    registering_ = false;
    if (closing_ || lease != lease_) return;
    if (!put) {
      log_trouble("cannot register in etcd: " + put.error().message);
      retry_at_ = Clock::now() + kRetry;
      return;
    }
    registered_ = true;
    spdlog::info("cluster: {} registered (lease {:x})", config_.replication.id, lease);
  });
}

void ClusterCoordinator::keep_alive() {
  keepalive_in_flight_ = true;
  const auto sent = Clock::now();
  const std::int64_t lease = lease_;
  next_keepalive_ = sent + keepalive_every_;
  etcd_->keep_alive(lease, [this, sent, lease](Result<std::int64_t> r) {
    keepalive_in_flight_ = false;
    if (closing_ || lease != lease_) return;
    if (!r) {
      if (probe_) probe_->keepalive_failures.inc();
      spdlog::warn("cluster: etcd keep-alive failed: {}", r.error().message);
      // Tried again soon (on the next endpoint, after a timeout), not a whole interval later.
      next_keepalive_ = Clock::now() + std::chrono::milliseconds(2 * kTickMs);
      return;
    }
    if (*r <= 0) return lease_lost("etcd no longer has this broker's lease (it expired)");
    const auto now = Clock::now();
    if (probe_) probe_->keepalive_seconds.observe(std::chrono::duration<double>(now - sent).count());
    lease_deadline_ = sent + std::chrono::seconds(*r) - margin_;
    replication_.set_lease_deadline(lease_deadline_);
    last_keepalive_ok_ = sent;
    if (leading_ && now < lease_deadline_) {
      replication_.set_fenced(false, {});
      if (probe_) probe_->fenced.set(0);
    }
  });
}

void ClusterCoordinator::lease_lost(const std::string& why) {
  if (probe_) {
    probe_->leases_lost.inc();
    probe_->lease_held.set(0);
  }
  lease_ = 0;
  registered_ = false;
  if (leading_ || starting_) return step_down(why);
  spdlog::warn("cluster: {}: registering again", why);
}

// -- what etcd holds -------------------------------------------------------------------------

void ClusterCoordinator::sync() {
  syncing_ = true;
  etcd_->get(prefix_, true, [this](Result<etcd::Range> r) {
    syncing_ = false;
    if (closing_) return;
    if (!r) {
      log_trouble("cannot read the cluster's keys from etcd: " + r.error().message);
      retry_at_ = Clock::now() + kRetry;
      return;
    }
    trouble_.clear();
    leader_.reset();
    state_.reset();
    members_.clear();
    for (const auto& kv : r->kvs) apply(kv, false);
    seen_revision_ = r->revision;
    watch_ = etcd_->watch(
        prefix_, true, r->revision + 1,
        [this](std::vector<etcd::WatchEvent> events, std::int64_t revision) {
          for (const auto& e : events) apply(e.kv, e.type == etcd::WatchEvent::Type::kDelete);
          seen_revision_ = std::max(seen_revision_, revision);
          decide();
        },
        [this](Error e) {
          spdlog::warn("cluster: {}; reading etcd again", e.message);
          synced_ = false;
          retry_at_ = Clock::now() + kRetry;
        });
    synced_ = true;
    decide();
  });
}

void ClusterCoordinator::apply(const etcd::KeyValue& kv, bool deleted) {
  if (kv.key == leader_key_) {
    if (deleted) {
      if (leader_) spdlog::info("cluster: {} no longer leads (its leader key is gone)", leader_->id);
      leader_.reset();
      if (probe_) probe_->leader_known.set(0);
      return;
    }
    json v = json::parse(kv.value, nullptr, false);
    LeaderKey l{string_field(v, "id"), uint_field(v, "epoch"), kv.lease, kv.create_revision};
    if (!leader_ || leader_->id != l.id || leader_->epoch != l.epoch) {
      if (probe_) probe_->leader_changes.inc();
      spdlog::info("cluster: etcd names {} the leader of epoch {}", l.id, l.epoch);
    }
    leader_ = std::move(l);
    if (probe_) probe_->leader_known.set(1);
  } else if (kv.key == state_key_) {
    if (deleted) {
      state_.reset();
      return;
    }
    json v = json::parse(kv.value, nullptr, false);
    State s;
    s.epoch = uint_field(v, "epoch");
    s.leader = string_field(v, "leader");
    s.min_insync = static_cast<std::uint32_t>(uint_field(v, "min_insync"));
    if (auto it = v.find("in_sync"); it != v.end() && it->is_array())
      for (const auto& m : *it)
        if (m.is_string()) s.in_sync.insert(m.get<std::string>());
    s.mod_revision = kv.mod_revision;
    state_ = std::move(s);
    if (probe_) {
      probe_->in_sync_members.set(static_cast<double>(state_->in_sync.size()));
      probe_->min_insync.set(state_->min_insync);
    }
  } else if (kv.key.starts_with(members_prefix_)) {
    const std::string id = kv.key.substr(members_prefix_.size());
    if (deleted) {
      members_.erase(id);
      return;
    }
    json v = json::parse(kv.value, nullptr, false);
    members_[id] = Member{uint_field(v, "epoch"), uint_field(v, "last_index")};
  }
}

// -- decisions --------------------------------------------------------------------------------

void ClusterCoordinator::decide() {
  if (closing_ || stepping_down_) return;
  const std::string& me = config_.replication.id;
  if (leader_) {
    leaderless_since_ = {};
    if (leader_->id == me) {
      if (leading_ || starting_) return;
      if (lease_ != 0 && leader_->lease == lease_) {
        // Our own election (its answer, or the watch's report of it): lead.
        starting_ = true;
        std::set<std::string> in_sync = state_ ? state_->in_sync : std::set<std::string>{me};
        replication_.lead(leader_->epoch, std::move(in_sync), [this](const Status& st) {
          starting_ = false;
          if (closing_) return;
          if (!st) return step_down("cannot begin epoch: " + st.error().message);
          leading_ = true;
          if (probe_) probe_->fenced.set(0);
        });
        return;
      }
      // This broker's leader key from an earlier run: revoking its lease deletes it now
      // rather than after the TTL.
      if (revoked_ != leader_->lease) {
        revoked_ = leader_->lease;
        spdlog::warn("cluster: the leader key names {} on a lease of an earlier run ({:x}): revoking it", me,
                     leader_->lease);
        etcd_->revoke(leader_->lease, [this](Status st) {
          if (st || closing_) return;
          spdlog::warn("cluster: cannot revoke the earlier lease: {}", st.error().message);
          revoked_ = 0;  // tried again at the next decision
        });
      }
      return;
    }
    if (leading_ || starting_)
      return step_down("etcd names " + leader_->id + " the leader of epoch " + std::to_string(leader_->epoch));
    replication_.follow(leader_->id, leader_->epoch);
    waiting_.clear();
    return;
  }
  if (leading_ || starting_) return step_down("the leader key is gone: this broker's lease expired");
  if (leaderless_since_ == Clock::time_point{}) leaderless_since_ = Clock::now();
  if (lease_ != 0 && !campaigning_) campaign();
}

void ClusterCoordinator::campaign() {
  const std::string& me = config_.replication.id;
  if (!replication_.can_lead()) return log_waiting("this broker's store is incomplete (a snapshot install)");
  const storage::LogPosition mine = replication_.log_position();
  State next;
  if (state_) {
    if (!state_->in_sync.contains(me)) {
      if (!cc_.unclean_election)
        return log_waiting("no leader, and this broker is not in the in-sync set " + join(state_->in_sync) +
                           ": waiting for a member of it");
      // Unclean only when it must be: while a member of the set is registered (its lease
      // alive), that one should stand and keep what was confirmed. It may be unable to (a
      // snapshot install under way, an epoch it cannot begin): after two TTLs without a
      // leader, this broker stands anyway.
      const bool waited_enough = Clock::now() - leaderless_since_ >= 2 * ttl_;
      for (const auto& id : state_->in_sync)
        if (members_.contains(id) && !waited_enough)
          return log_waiting("no leader; " + id + ", in the in-sync set " + join(state_->in_sync) +
                             ", is registered and stands first (unclean_election: this broker stands if none leads " +
                             std::to_string(2 * cc_.lease_ttl_s) + " s after the leader key went)");
    }
    if (state_->in_sync.contains(me)) {
      next.in_sync = state_->in_sync;
      next.in_sync.erase(state_->leader);  // deposed: it may lack what this leader confirms
    } else {
      // Unclean: the others hold records this broker lacks, which they will drop to follow
      // it; none is in sync with it until it has fetched.
      spdlog::warn("cluster: {} stands uncleanly (not in the in-sync set {}): records only they hold are lost", me,
                   join(state_->in_sync));
    }
  } else {
    // The first election: every peer registered, the longest log stands (of equal ones,
    // the lowest id).
    std::string best;
    std::tuple<std::uint64_t, std::uint64_t> best_position{0, 0};
    for (const auto& [id, address] : config_.replication.peers) {
      auto it = members_.find(id);
      if (it == members_.end()) return log_waiting("the first election waits for every peer to register; " + id + " has not");
      const auto position = std::make_tuple(it->second.epoch, it->second.last_index);
      if (best.empty() || position > best_position || (position == best_position && id < best)) {
        best = id;
        best_position = position;
      }
    }
    if (best != me) return log_waiting("the first election: " + best + " holds the longest log and stands");
  }
  next.in_sync.insert(me);
  next.epoch = std::max<std::uint64_t>(state_ ? state_->epoch : 0, mine.epoch) + 1;
  next.leader = me;
  next.min_insync = config_.replication.min_insync;

  etcd::Txn t;
  t.compare = {etcd::Compare::absent(leader_key_), etcd::Compare::mod_revision(state_key_, state_ ? state_->mod_revision : 0)};
  t.success = {etcd::Operation::put(leader_key_, json{{"id", me}, {"epoch", next.epoch}}.dump(), lease_),
               etcd::Operation::put(state_key_, state_json(next))};
  t.failure = {etcd::Operation::get(leader_key_), etcd::Operation::get(state_key_)};
  campaigning_ = true;
  spdlog::info("cluster: {} stands for epoch {} (its log at {}, in-sync {})", me, next.epoch, mine.last_index,
               join(next.in_sync));
  const std::int64_t lease = lease_;
  etcd_->txn(t, [this, next, lease](Result<etcd::TxnResult> r) {
    campaigning_ = false;
    if (closing_) return;
    if (!r) {
      // It may have been done: the watch tells.
      spdlog::warn("cluster: the election transaction failed: {}", r.error().message);
      return;
    }
    if (probe_) probe_->elections.with({r->succeeded ? "won" : "lost"}).inc();
    if (r->succeeded) spdlog::warn("cluster: {} won the election for epoch {}", config_.replication.id, next.epoch);
    // What the answer says is the store at its revision; the watch may have shown newer
    // (the winner's lease already gone, say), which stands.
    if (r->revision <= seen_revision_ || lease != lease_) return decide();
    if (!r->succeeded) {
      leader_.reset();  // a failure branch without a leader key: none
      for (const auto& range : r->ranges)
        for (const auto& kv : range.kvs) apply(kv, false);
    } else {
      apply(etcd::KeyValue{leader_key_, json{{"id", next.leader}, {"epoch", next.epoch}}.dump(), r->revision,
                           r->revision, 1, lease},
            false);
      apply(etcd::KeyValue{state_key_, state_json(next), 0, r->revision, 0, 0}, false);
    }
    seen_revision_ = r->revision;
    decide();
  });
}

void ClusterCoordinator::store_in_sync(const std::set<std::string>& members, std::function<void(bool, bool)> done) {
  if (!leading_ || !leader_ || !state_ || closing_) return done(false, true);
  State next = *state_;
  next.in_sync = members;
  etcd::Txn t;
  // Only while this broker's own leader key stands, and over the state it last saw.
  t.compare = {etcd::Compare::created_at(leader_key_, leader_->create_revision),
               etcd::Compare::mod_revision(state_key_, state_->mod_revision)};
  t.success = {etcd::Operation::put(state_key_, state_json(next))};
  etcd_->txn(t, [this, next, done = std::move(done)](Result<etcd::TxnResult> r) {
    if (closing_) return done(false, false);
    const bool stored = r && r->succeeded;
    if (probe_) probe_->in_sync_changes.with({stored ? "stored" : "refused"}).inc();
    if (!stored) {
      spdlog::warn("cluster: etcd did not take the in-sync set {}: {}", join(next.in_sync),
                   r ? "the leader or state key changed" : r.error().message);
      // A read shows what changed; a deposed leader then steps down.
      if (r && synced_) {
        synced_ = false;
        etcd_->cancel_watch(watch_);
      }
      return done(false, r.ok());
    }
    if (r->revision > seen_revision_) {
      apply(etcd::KeyValue{state_key_, state_json(next), 0, r->revision, 0, 0}, false);
      seen_revision_ = r->revision;
    }
    done(true, true);
  });
}

void ClusterCoordinator::step_down(const std::string& why) {
  if (stepping_down_) return;
  stepping_down_ = true;
  replication_.set_fenced(true, why);
  spdlog::error("cluster: {} steps down: {}", config_.replication.id, why);
  if (hooks_.step_down) hooks_.step_down(why);
}

// -- helpers ----------------------------------------------------------------------------------

std::string ClusterCoordinator::state_json(const State& s) const {
  return json{{"epoch", s.epoch},
              {"leader", s.leader},
              {"in_sync", std::vector<std::string>(s.in_sync.begin(), s.in_sync.end())},
              {"min_insync", s.min_insync}}
      .dump();
}

std::string ClusterCoordinator::member_json() const {
  const storage::LogPosition pos = replication_.log_position();
  std::string address;
  for (const auto& [id, a] : config_.replication.peers)
    if (id == config_.replication.id) address = a;
  return json{{"id", config_.replication.id}, {"address", address}, {"epoch", pos.epoch}, {"last_index", pos.last_index}}
      .dump();
}

void ClusterCoordinator::log_trouble(const std::string& what) {
  if (trouble_.contains(what)) return;
  trouble_.insert(what);
  spdlog::warn("cluster: {} (tried again every {} ms)", what, kRetry.count());
}

void ClusterCoordinator::log_waiting(const std::string& why) {
  if (why == waiting_) return;
  waiting_ = why;
  spdlog::info("cluster: {}", why);
}

EtcdView ClusterCoordinator::view() const {
  EtcdView v;
  v.endpoint = etcd_->endpoint();
  v.lease_held = lease_ != 0;
  if (leader_) {
    v.leader = leader_->id;
    v.epoch = leader_->epoch;
  }
  if (state_) {
    v.in_sync = state_->in_sync;
    v.min_insync = state_->min_insync;
    if (!leader_) v.epoch = state_->epoch;
  }
  for (const auto& [id, m] : members_) v.members.insert(id);
  return v;
}

}  // namespace txmq::broker
