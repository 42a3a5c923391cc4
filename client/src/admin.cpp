// Admin: request-and-wait calls over one connection.

#include <future>

#include "connection.h"

namespace txmq::client {
namespace detail {
namespace {

TopicInfo to_topic_info(const wire::TopicInfo& t) {
  TopicInfo out;
  out.name = t.name() ? t.name()->str() : "";
  out.created_at_ms = t.created_at_ms();
  out.retention_ms = t.retention_ms();
  out.retention_bytes = t.retention_bytes();
  if (t.partitions())
    for (const auto* p : *t.partitions()) out.partitions.push_back({p->partition(), p->first_offset(), p->next_offset()});
  return out;
}

std::string str(const flatbuffers::String* s) { return s ? s->str() : std::string(); }
std::string bytes(const flatbuffers::Vector<std::uint8_t>* v) {
  return v ? std::string(reinterpret_cast<const char*>(v->data()), v->size()) : std::string();
}

GroupInfo to_group_info(const wire::GroupInfo& g) {
  GroupInfo out;
  out.group = str(g.group());
  out.topic = str(g.topic());
  out.mode = g.mode() == wire::GroupMode::Ordered ? GroupMode::kOrdered : GroupMode::kShared;
  out.consumers = g.consumers();
  out.lag = g.lag();
  out.in_flight = g.in_flight();
  out.waiting_retry = g.waiting_retry();
  out.redeliveries = g.redeliveries();
  out.dead_letters = g.dead_letters();
  out.ack_wait = Millis(g.ack_wait_ms());
  if (const auto* r = g.retry()) {
    out.retry.max_deliveries = r->max_deliveries();
    out.retry.delays.clear();
    if (r->delays_ms())
      for (auto d : *r->delays_ms()) out.retry.delays.emplace_back(static_cast<Millis::rep>(d));
    out.retry.exponential_initial = Millis(r->exponential_initial_ms());
    out.retry.exponential_factor = r->exponential_factor();
    out.retry.exponential_max = Millis(r->exponential_max_ms());
    out.retry.jitter = r->jitter();
  }
  return out;
}

Delivery to_delivery(const wire::Delivery& d) {
  Delivery out;
  out.topic = str(d.topic());
  out.group = str(d.group());
  out.partition = d.partition();
  out.offset = d.offset();
  out.timestamp_ms = d.timestamp_ms();
  out.delivery_count = d.delivery_count();
  out.key = bytes(d.key());
  out.body = bytes(d.body());
  if (d.headers())
    for (const auto* h : *d.headers()) out.headers.push_back(Header{str(h->name()), bytes(h->value())});
  return out;
}

// A ClusterInfo answer (to ClusterStatus and Promote).
Result<ClusterInfo> to_cluster_info(const wire::Frame& f) {
  const auto* c = f.body_as_ClusterInfo();
  if (!c) return Error(ErrorCode::kInternal, "unexpected answer");
  ClusterInfo out;
  out.id = str(c->id());
  out.role = str(c->role());
  out.epoch = c->epoch();
  out.leader = str(c->leader());
  out.leader_address = str(c->leader_address());
  out.mode = str(c->mode());
  out.min_insync = c->min_insync();
  out.first_index = c->first_index();
  out.last_index = c->last_index();
  out.commit_index = c->commit_index();
  out.fetching_from = str(c->fetching_from());
  out.installing_snapshot = c->installing_snapshot();
  if (const auto* e = c->etcd()) {
    EtcdView v;
    v.endpoint = str(e->endpoint());
    v.lease_held = e->lease_held();
    v.leader = str(e->leader());
    v.epoch = e->epoch();
    v.min_insync = e->min_insync();
    if (e->in_sync())
      for (const auto* id : *e->in_sync()) v.in_sync.push_back(id->str());
    if (e->members())
      for (const auto* id : *e->members()) v.members.push_back(id->str());
    out.etcd = std::move(v);
  }
  if (c->in_sync())
    for (const auto* id : *c->in_sync()) out.in_sync.push_back(id->str());
  if (c->replicas()) {
    for (const auto* r : *c->replicas()) {
      ReplicaInfo replica;
      replica.id = str(r->id());
      replica.address = str(r->address());
      replica.durable_index = r->durable_index();
      replica.in_sync = r->in_sync();
      replica.lag_records = r->lag_records();
      replica.lag_bytes = r->lag_bytes();
      replica.lag = Millis(static_cast<Millis::rep>(r->lag_ms()));
      if (r->last_fetch_ms_ago() != UINT64_MAX)
        replica.last_fetch_ago = Millis(static_cast<Millis::rep>(r->last_fetch_ms_ago()));
      out.replicas.push_back(std::move(replica));
    }
  }
  return out;
}

}  // namespace

class AdminImpl {
 public:
  explicit AdminImpl(ClientOptions options) : conn_(std::move(options), {}) { conn_.start(); }
  ~AdminImpl() { conn_.stop(); }

  // Builds a request on the I/O thread, waits for its answer and converts it with parse.
  template <typename T, typename Build, typename Parse>
  Result<T> call(Millis timeout, Build build, Parse parse) {
    if (conn_.on_io_thread()) return Error(ErrorCode::kInvalidArgument, "Admin called from the I/O thread");
    auto promise = std::make_shared<std::promise<Result<T>>>();
    auto future = promise->get_future();
    auto deadline = Connection::Clock::now() + timeout;
    bool posted = conn_.post([this, promise, build, parse, deadline] {
      auto& fbb = conn_.builder();
      fbb.Clear();
      std::uint64_t rid = conn_.next_request_id();
      auto [type, body] = build(fbb);
      fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, type, body));
      conn_.request(rid, common::frame_bytes(fbb), deadline, [promise, parse](Result<const wire::Frame*> r) {
        if (!r.ok())
          promise->set_value(r.error());
        else
          promise->set_value(parse(**r));
      });
    });
    if (!posted) return Error(ErrorCode::kClosed);
    // The connection's own deadline answers first; the margin only guards against a stuck
    // I/O thread.
    if (future.wait_for(timeout + Millis(1000)) != std::future_status::ready) return Error(ErrorCode::kTimeout);
    return future.get();
  }

  Connection conn_;
};

using Body = std::pair<wire::Body, flatbuffers::Offset<void>>;

}  // namespace detail

Admin::Admin(ClientOptions options) : impl_(std::make_unique<detail::AdminImpl>(std::move(options))) {}
Admin::~Admin() = default;

Result<TopicInfo> Admin::create_topic(std::string_view name, std::uint32_t partitions, Millis timeout) {
  TopicOptions options;
  options.partitions = partitions;
  return create_topic(name, options, timeout);
}

Result<TopicInfo> Admin::create_topic(std::string_view name, const TopicOptions& o, Millis timeout) {
  return impl_->call<TopicInfo>(
      timeout,
      [name = std::string(name), o](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::CreateTopic, wire::CreateCreateTopic(fbb, fbb.CreateString(name), o.partitions,
                                                                             o.retention_ms, o.retention_bytes)
                                                         .Union()};
      },
      [](const wire::Frame& f) -> Result<TopicInfo> {
        if (!f.body_as_TopicInfo()) return Error(ErrorCode::kInternal, "unexpected answer");
        return detail::to_topic_info(*f.body_as_TopicInfo());
      });
}

Status Admin::delete_topic(std::string_view name, Millis timeout) {
  auto r = impl_->call<bool>(
      timeout,
      [name = std::string(name)](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::DeleteTopic, wire::CreateDeleteTopic(fbb, fbb.CreateString(name)).Union()};
      },
      [](const wire::Frame&) -> Result<bool> { return true; });
  if (!r) return r.error();
  return {};
}

Result<TopicInfo> Admin::describe_topic(std::string_view name, Millis timeout) {
  return impl_->call<TopicInfo>(
      timeout,
      [name = std::string(name)](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::DescribeTopic, wire::CreateDescribeTopic(fbb, fbb.CreateString(name)).Union()};
      },
      [](const wire::Frame& f) -> Result<TopicInfo> {
        if (!f.body_as_TopicInfo()) return Error(ErrorCode::kInternal, "unexpected answer");
        return detail::to_topic_info(*f.body_as_TopicInfo());
      });
}

Result<std::vector<TopicInfo>> Admin::list_topics(Millis timeout) {
  return impl_->call<std::vector<TopicInfo>>(
      timeout,
      [](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::ListTopics, wire::CreateListTopics(fbb).Union()};
      },
      [](const wire::Frame& f) -> Result<std::vector<TopicInfo>> {
        const auto* list = f.body_as_TopicList();
        if (!list) return Error(ErrorCode::kInternal, "unexpected answer");
        std::vector<TopicInfo> out;
        if (list->topics())
          for (const auto* t : *list->topics()) out.push_back(detail::to_topic_info(*t));
        return out;
      });
}

Result<BrokerStats> Admin::stats(Millis timeout) {
  return impl_->call<BrokerStats>(
      timeout,
      [](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::GetStats, wire::CreateGetStats(fbb).Union()};
      },
      [](const wire::Frame& f) -> Result<BrokerStats> {
        const auto* s = f.body_as_Stats();
        if (!s) return Error(ErrorCode::kInternal, "unexpected answer");
        BrokerStats out;
        out.broker_version = s->broker_version() ? s->broker_version()->str() : "";
        out.uptime_ms = s->uptime_ms();
        out.connections = s->connections();
        out.topics = s->topics();
        out.messages_produced = s->messages_produced();
        out.bytes_produced = s->bytes_produced();
        out.messages_delivered = s->messages_delivered();
        out.messages_acked = s->messages_acked();
        out.storage_used_bytes = s->storage_used_bytes();
        out.storage_max_bytes = s->storage_max_bytes();
        out.commits = s->commits();
        return out;
      });
}

Result<GroupInfo> Admin::configure_group(std::string_view group, std::string_view topic, const GroupConfig& config,
                                         Millis timeout) {
  return impl_->call<GroupInfo>(
      timeout,
      [group = std::string(group), topic = std::string(topic), config](flatbuffers::FlatBufferBuilder& fbb) {
        flatbuffers::Offset<wire::RetryPolicy> retry = 0;
        if (config.retry) {
          const RetrySchedule& r = *config.retry;
          std::vector<std::uint64_t> delays;
          for (auto d : r.delays) delays.push_back(static_cast<std::uint64_t>(d.count()));
          retry = wire::CreateRetryPolicy(fbb, r.max_deliveries, fbb.CreateVector(delays),
                                          static_cast<std::uint64_t>(r.exponential_initial.count()),
                                          r.exponential_factor, static_cast<std::uint64_t>(r.exponential_max.count()),
                                          r.jitter);
        }
        auto mode = config.mode.value_or(GroupMode::kShared) == GroupMode::kOrdered ? wire::GroupMode::Ordered
                                                                                     : wire::GroupMode::Shared;
        return detail::Body{wire::Body::ConfigureGroup,
                            wire::CreateConfigureGroup(
                                fbb, fbb.CreateString(group), fbb.CreateString(topic), mode, config.mode.has_value(),
                                config.ack_wait ? static_cast<std::uint64_t>(config.ack_wait->count()) : 0, retry)
                                .Union()};
      },
      [](const wire::Frame& f) -> Result<GroupInfo> {
        const auto* list = f.body_as_GroupList();
        if (!list || !list->groups() || list->groups()->size() == 0)
          return Error(ErrorCode::kInternal, "unexpected answer");
        return detail::to_group_info(*list->groups()->Get(0));
      });
}

Result<std::vector<GroupInfo>> Admin::describe_groups(std::string_view group, Millis timeout) {
  return impl_->call<std::vector<GroupInfo>>(
      timeout,
      [group = std::string(group)](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::DescribeGroups,
                            wire::CreateDescribeGroups(fbb, group.empty() ? 0 : fbb.CreateString(group)).Union()};
      },
      [](const wire::Frame& f) -> Result<std::vector<GroupInfo>> {
        const auto* list = f.body_as_GroupList();
        if (!list) return Error(ErrorCode::kInternal, "unexpected answer");
        std::vector<GroupInfo> out;
        if (list->groups())
          for (const auto* g : *list->groups()) out.push_back(detail::to_group_info(*g));
        return out;
      });
}

Result<std::vector<Delivery>> Admin::fetch(std::string_view topic, std::uint32_t partition, std::uint64_t offset,
                                           std::uint32_t max, Millis timeout) {
  return impl_->call<std::vector<Delivery>>(
      timeout,
      [topic = std::string(topic), partition, offset, max](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::Fetch,
                            wire::CreateFetch(fbb, fbb.CreateString(topic), partition, offset, max).Union()};
      },
      [](const wire::Frame& f) -> Result<std::vector<Delivery>> {
        const auto* ok = f.body_as_FetchOk();
        if (!ok) return Error(ErrorCode::kInternal, "unexpected answer");
        std::vector<Delivery> out;
        if (ok->messages())
          for (const auto* d : *ok->messages()) out.push_back(detail::to_delivery(*d));
        return out;
      });
}

Result<RedriveResult> Admin::redrive(std::string_view group, const std::vector<std::uint64_t>& dlq_offsets,
                                     Millis timeout, RedriveUnmarked unmarked) {
  return impl_->call<RedriveResult>(
      timeout,
      [group = std::string(group), dlq_offsets, trust = unmarked == RedriveUnmarked::kTrust](
          flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{
            wire::Body::Redrive,
            wire::CreateRedrive(fbb, fbb.CreateString(group), fbb.CreateVector(dlq_offsets), trust).Union()};
      },
      [](const wire::Frame& f) -> Result<RedriveResult> {
        const auto* ok = f.body_as_RedriveOk();
        if (!ok) return Error(ErrorCode::kInternal, "unexpected answer");
        RedriveResult out;
        if (ok->redriven()) out.redriven.assign(ok->redriven()->begin(), ok->redriven()->end());
        if (ok->failed()) out.failed.assign(ok->failed()->begin(), ok->failed()->end());
        if (ok->unmarked()) out.unmarked.assign(ok->unmarked()->begin(), ok->unmarked()->end());
        return out;
      });
}

namespace {

TxnState txn_state(wire::TxnState s) {
  switch (s) {
    case wire::TxnState::Committed: return TxnState::kCommitted;
    case wire::TxnState::RolledBack: return TxnState::kRolledBack;
    case wire::TxnState::Parked: return TxnState::kParked;
    default: return TxnState::kPrepared;
  }
}

TransactionInfo to_transaction_info(const wire::TransactionInfo& t) {
  TransactionInfo out;
  out.transaction_id = t.transaction_id();
  out.state = txn_state(t.state());
  out.topic = t.topic() ? t.topic()->str() : "";
  out.producer_group = t.producer_group() ? t.producer_group()->str() : "";
  out.created_ms = t.created_ms();
  out.checks = t.checks();
  out.next_check_ms = t.next_check_ms();
  out.ended_ms = t.ended_ms();
  out.resolution = t.resolution() ? t.resolution()->str() : "";
  out.partition = t.partition();
  out.offset = t.offset();
  auto bytes = [](const flatbuffers::Vector<std::uint8_t>* v) {
    return v ? std::string(reinterpret_cast<const char*>(v->data()), v->size()) : std::string();
  };
  out.message.key = bytes(t.key());
  out.message.body = bytes(t.body());
  if (t.headers())
    for (const auto* h : *t.headers()) out.message.headers.push_back(Header{h->name() ? h->name()->str() : "", bytes(h->value())});
  return out;
}

wire::TxnState to_wire(TxnState s) {
  switch (s) {
    case TxnState::kCommitted: return wire::TxnState::Committed;
    case TxnState::kRolledBack: return wire::TxnState::RolledBack;
    case TxnState::kParked: return wire::TxnState::Parked;
    default: return wire::TxnState::Prepared;
  }
}

}  // namespace

Result<std::vector<TransactionInfo>> Admin::list_transactions(std::optional<TxnState> state, std::uint32_t max,
                                                              Millis timeout) {
  return impl_->call<std::vector<TransactionInfo>>(
      timeout,
      [state, max](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::ListTransactions,
                            wire::CreateListTransactions(fbb, to_wire(state.value_or(TxnState::kPrepared)),
                                                         !state.has_value(), 0, max)
                                .Union()};
      },
      [](const wire::Frame& f) -> Result<std::vector<TransactionInfo>> {
        const auto* list = f.body_as_TransactionList();
        if (!list) return Error(ErrorCode::kInternal, "unexpected answer");
        std::vector<TransactionInfo> out;
        if (list->transactions())
          for (const auto* t : *list->transactions()) out.push_back(to_transaction_info(*t));
        return out;
      });
}

Result<TransactionInfo> Admin::show_transaction(std::uint64_t id, Millis timeout) {
  return impl_->call<TransactionInfo>(
      timeout,
      [id](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::ListTransactions,
                            wire::CreateListTransactions(fbb, wire::TxnState::Prepared, true, id, 1).Union()};
      },
      [](const wire::Frame& f) -> Result<TransactionInfo> {
        const auto* list = f.body_as_TransactionList();
        if (!list || !list->transactions() || list->transactions()->size() == 0)
          return Error(ErrorCode::kInternal, "unexpected answer");
        return to_transaction_info(*list->transactions()->Get(0));
      });
}

Result<TransactionResult> Admin::end_transaction(std::uint64_t id, bool commit, Millis timeout) {
  return impl_->call<TransactionResult>(
      timeout,
      [id, commit](flatbuffers::FlatBufferBuilder& fbb) {
        std::vector<wire::TxnEnd> items{wire::TxnEnd(id, commit ? wire::TxnAction::Commit : wire::TxnAction::Rollback)};
        return detail::Body{wire::Body::EndTransactions,
                            wire::CreateEndTransactions(fbb, fbb.CreateVectorOfStructs(items), true).Union()};
      },
      [id](const wire::Frame& f) -> Result<TransactionResult> {
        const auto* ok = f.body_as_EndTransactionsOk();
        if (!ok || !ok->results() || ok->results()->size() != 1) return Error(ErrorCode::kInternal, "unexpected answer");
        const auto* r = ok->results()->Get(0);
        if (!r->found()) return Error(ErrorCode::kInvalidArgument, "no transaction " + std::to_string(id));
        return TransactionResult{r->transaction_id(), txn_state(r->state()), r->changed(), {}};
      });
}

Result<ClusterInfo> Admin::cluster_status(Millis timeout) {
  return impl_->call<ClusterInfo>(
      timeout,
      [](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::ClusterStatus, wire::CreateClusterStatus(fbb).Union()};
      },
      detail::to_cluster_info);
}

Result<ClusterInfo> Admin::promote(bool unclean, Millis timeout) {
  return impl_->call<ClusterInfo>(
      timeout,
      [unclean](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::Promote, wire::CreatePromote(fbb, unclean).Union()};
      },
      detail::to_cluster_info);
}

Result<StoreDigest> Admin::digest(Millis timeout) {
  return impl_->call<StoreDigest>(
      timeout,
      [](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::GetDigest, wire::CreateGetDigest(fbb).Union()};
      },
      [](const wire::Frame& f) -> Result<StoreDigest> {
        const auto* d = f.body_as_Digest();
        if (!d) return Error(ErrorCode::kInternal, "unexpected answer");
        StoreDigest out;
        out.last_index = d->last_index();
        out.epoch = d->epoch();
        if (d->key_spaces())
          for (const auto* k : *d->key_spaces())
            out.key_spaces.push_back(KeySpaceDigest{detail::str(k->key_space()), k->entries(), detail::str(k->sha256())});
        return out;
      });
}

}  // namespace txmq::client
