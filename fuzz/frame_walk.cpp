#include "fuzz/frame_walk.h"

#include <bit>
#include <string_view>

namespace txmq::fuzz {
namespace {

// FNV-1a over everything read: cheap, and every byte it sees was really loaded.
class Digest {
 public:
  void add(std::uint64_t v) {
    h_ ^= v;
    h_ *= 0x100000001b3ull;
  }
  void add(double v) { add(std::bit_cast<std::uint64_t>(v)); }  // any double, NaN included
  void add(std::string_view s) {
    add(static_cast<std::uint64_t>(s.size()));
    for (char c : s) add(static_cast<std::uint64_t>(static_cast<unsigned char>(c)));
  }
  std::uint64_t value() const { return h_; }

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ull;
};

void str(Digest& d, const flatbuffers::String* s) {
  if (!s) return;
  d.add(s->string_view());
  d.add(std::string_view(s->c_str()));  // what a reader treating it as a C string sees
}

void bytes(Digest& d, const flatbuffers::Vector<std::uint8_t>* v) {
  if (!v) return;
  d.add(std::string_view(reinterpret_cast<const char*>(v->data()), v->size()));
}

void ulongs(Digest& d, const flatbuffers::Vector<std::uint64_t>* v) {
  if (!v) return;
  for (std::uint64_t x : *v) d.add(x);
}

void strings(Digest& d, const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* v) {
  if (!v) return;
  for (const auto* s : *v) str(d, s);
}

void headers(Digest& d, const flatbuffers::Vector<flatbuffers::Offset<wire::Header>>* v) {
  if (!v) return;
  for (const auto* h : *v) {
    str(d, h->name());
    bytes(d, h->value());
  }
}

void message(Digest& d, const wire::Message& m) {
  bytes(d, m.key());
  headers(d, m.headers());
  bytes(d, m.body());
  d.add(static_cast<std::uint64_t>(m.partition()));
  d.add(m.deliver_at_ms());
  d.add(m.delay_ms());
}

void messages(Digest& d, const flatbuffers::Vector<flatbuffers::Offset<wire::Message>>* v) {
  if (!v) return;
  for (const auto* m : *v) message(d, *m);
}

// Structs are read in place: both a member access and a whole copy, as handlers do both
// (transaction_coordinator.cpp copies TxnEnd items into a std::vector).
void refs(Digest& d, const flatbuffers::Vector<const wire::MessageRef*>* v) {
  if (!v) return;
  for (const auto* r : *v) {
    d.add(static_cast<std::uint64_t>(r->partition()));
    d.add(r->offset());
    wire::MessageRef copy = *r;
    d.add(copy.offset());
  }
}

void retry(Digest& d, const wire::RetryPolicy* r) {
  if (!r) return;
  d.add(static_cast<std::uint64_t>(r->max_deliveries()));
  ulongs(d, r->delays_ms());
  d.add(r->exponential_initial_ms());
  d.add(r->exponential_factor());
  d.add(r->exponential_max_ms());
  d.add(r->jitter());
}

void delivery(Digest& d, const wire::Delivery& m) {
  str(d, m.topic());
  str(d, m.group());
  d.add(static_cast<std::uint64_t>(m.partition()));
  d.add(m.offset());
  d.add(m.timestamp_ms());
  bytes(d, m.key());
  headers(d, m.headers());
  bytes(d, m.body());
  d.add(static_cast<std::uint64_t>(m.delivery_count()));
  strings(d, m.history());
}

void topic_info(Digest& d, const wire::TopicInfo& t) {
  str(d, t.name());
  if (const auto* ps = t.partitions())
    for (const auto* p : *ps) {
      d.add(static_cast<std::uint64_t>(p->partition()));
      d.add(p->first_offset());
      d.add(p->next_offset());
    }
  d.add(t.created_at_ms());
  d.add(t.retention_ms());
  d.add(t.retention_bytes());
}

void body(Digest& d, const wire::Frame& f) {
  using wire::Body;
  // The verifier accepts a union whose type is set and whose table is absent. The broker
  // refuses such a frame before reading it (on_frame); a reader that trusts body_type()
  // alone dereferences null.
  if (f.body() == nullptr) return;
  switch (f.body_type()) {
    case Body::NONE:
      return;
    case Body::Hello: {
      const auto* b = f.body_as_Hello();
      d.add(static_cast<std::uint64_t>(b->protocol_version()));
      str(d, b->client_name());
      str(d, b->producer_group());
      str(d, b->mechanism());
      bytes(d, b->auth());
      d.add(static_cast<std::uint64_t>(b->heartbeat_ms()));
      return;
    }
    case Body::HelloOk: {
      const auto* b = f.body_as_HelloOk();
      d.add(static_cast<std::uint64_t>(b->protocol_version()));
      str(d, b->broker_version());
      d.add(static_cast<std::uint64_t>(b->max_frame_bytes()));
      d.add(static_cast<std::uint64_t>(b->max_message_bytes()));
      str(d, b->user());
      bytes(d, b->auth());
      d.add(static_cast<std::uint64_t>(b->heartbeat_ms()));
      return;
    }
    case Body::Heartbeat:
      return;
    case Body::AuthChallenge:
      bytes(d, f.body_as_AuthChallenge()->data());
      return;
    case Body::AuthResponse:
      bytes(d, f.body_as_AuthResponse()->data());
      return;
    case Body::Error: {
      const auto* b = f.body_as_Error();
      d.add(static_cast<std::uint64_t>(b->code()));
      str(d, b->message());
      str(d, b->leader());
      d.add(b->leader_epoch());
      return;
    }
    case Body::ReplicaFetch: {
      const auto* b = f.body_as_ReplicaFetch();
      str(d, b->replica());
      d.add(b->epoch());
      d.add(b->next_index());
      d.add(b->last_epoch());
      d.add(b->durable_index());
      d.add(static_cast<std::uint64_t>(b->max_bytes()));
      d.add(static_cast<std::uint64_t>(b->wait_ms()));
      return;
    }
    case Body::ReplicaRecords: {
      const auto* b = f.body_as_ReplicaRecords();
      d.add(b->epoch());
      d.add(b->commit_index());
      d.add(b->last_index());
      d.add(b->truncate_to());
      d.add(static_cast<std::uint64_t>(b->needs_snapshot()));
      if (b->records())
        for (const auto* r : *b->records()) {
          d.add(r->index());
          bytes(d, r->data());
        }
      return;
    }
    case Body::SnapshotFetch: {
      const auto* b = f.body_as_SnapshotFetch();
      str(d, b->replica());
      d.add(b->session());
      d.add(static_cast<std::uint64_t>(b->after_space()));
      bytes(d, b->after_key());
      d.add(static_cast<std::uint64_t>(b->max_bytes()));
      return;
    }
    case Body::SnapshotChunk: {
      const auto* b = f.body_as_SnapshotChunk();
      d.add(b->session());
      d.add(b->index());
      d.add(b->epoch());
      d.add(static_cast<std::uint64_t>(b->done()));
      if (b->entries())
        for (const auto* e : *b->entries()) {
          d.add(static_cast<std::uint64_t>(e->space()));
          bytes(d, e->key());
          bytes(d, e->value());
        }
      return;
    }
    case Body::ClusterStatus:
    case Body::GetDigest:
      return;
    case Body::Promote:
      d.add(static_cast<std::uint64_t>(f.body_as_Promote()->unclean()));
      return;
    case Body::ClusterInfo: {
      const auto* b = f.body_as_ClusterInfo();
      for (const auto* s : {b->id(), b->role(), b->leader(), b->leader_address(), b->mode(), b->fetching_from()})
        str(d, s);
      d.add(b->epoch());
      d.add(static_cast<std::uint64_t>(b->min_insync()));
      d.add(b->first_index());
      d.add(b->last_index());
      d.add(b->commit_index());
      d.add(static_cast<std::uint64_t>(b->installing_snapshot()));
      if (b->in_sync())
        for (const auto* s : *b->in_sync()) str(d, s);
      if (b->replicas())
        for (const auto* r : *b->replicas()) {
          str(d, r->id());
          str(d, r->address());
          d.add(r->durable_index());
          d.add(static_cast<std::uint64_t>(r->in_sync()));
          d.add(r->lag_records());
          d.add(r->lag_bytes());
          d.add(r->lag_ms());
          d.add(r->last_fetch_ms_ago());
        }
      if (const auto* e = b->etcd()) {
        str(d, e->endpoint());
        str(d, e->leader());
        d.add(static_cast<std::uint64_t>(e->lease_held()));
        d.add(e->epoch());
        d.add(static_cast<std::uint64_t>(e->min_insync()));
        for (const auto* list : {e->in_sync(), e->members()})
          if (list)
            for (const auto* s : *list) str(d, s);
      }
      return;
    }
    case Body::Digest: {
      const auto* b = f.body_as_Digest();
      d.add(b->last_index());
      d.add(b->epoch());
      if (b->key_spaces())
        for (const auto* k : *b->key_spaces()) {
          str(d, k->key_space());
          d.add(k->entries());
          str(d, k->sha256());
        }
      return;
    }
    case Body::Ok:
      return;
    case Body::Produce: {
      const auto* b = f.body_as_Produce();
      str(d, b->topic());
      messages(d, b->messages());
      d.add(b->producer_id());
      d.add(b->sequence());
      return;
    }
    case Body::ProduceOk:
      refs(d, f.body_as_ProduceOk()->offsets());
      return;
    case Body::CreateTopic: {
      const auto* b = f.body_as_CreateTopic();
      str(d, b->name());
      d.add(static_cast<std::uint64_t>(b->partitions()));
      d.add(b->retention_ms());
      d.add(b->retention_bytes());
      return;
    }
    case Body::DeleteTopic:
      str(d, f.body_as_DeleteTopic()->name());
      return;
    case Body::DescribeTopic:
      str(d, f.body_as_DescribeTopic()->name());
      return;
    case Body::ListTopics:
      return;
    case Body::TopicInfo:
      topic_info(d, *f.body_as_TopicInfo());
      return;
    case Body::TopicList:
      if (const auto* ts = f.body_as_TopicList()->topics())
        for (const auto* t : *ts) topic_info(d, *t);
      return;
    case Body::Subscribe: {
      const auto* b = f.body_as_Subscribe();
      str(d, b->topic());
      str(d, b->group());
      d.add(static_cast<std::uint64_t>(b->window()));
      return;
    }
    case Body::Delivery:
      delivery(d, *f.body_as_Delivery());
      return;
    case Body::Ack: {
      const auto* b = f.body_as_Ack();
      str(d, b->topic());
      str(d, b->group());
      refs(d, b->messages());
      return;
    }
    case Body::GetStats:
      return;
    case Body::Stats: {
      const auto* b = f.body_as_Stats();
      str(d, b->broker_version());
      for (std::uint64_t v : {b->uptime_ms(), std::uint64_t{b->connections()}, std::uint64_t{b->topics()},
                              b->messages_produced(), b->bytes_produced(), b->messages_delivered(),
                              b->messages_acked(), b->storage_used_bytes(), b->storage_max_bytes(), b->commits()})
        d.add(v);
      return;
    }
    case Body::Settle: {
      const auto* b = f.body_as_Settle();
      str(d, b->topic());
      str(d, b->group());
      if (const auto* items = b->items())
        for (const auto* i : *items) {
          d.add(static_cast<std::uint64_t>(i->partition()));
          d.add(i->offset());
          d.add(std::string_view(wire::EnumNameSettleVerb(i->verb())));
          d.add(i->delay_ms());
          str(d, i->reason());
        }
      return;
    }
    case Body::SettleOk:
      d.add(static_cast<std::uint64_t>(f.body_as_SettleOk()->ignored()));
      return;
    case Body::ConfigureGroup: {
      const auto* b = f.body_as_ConfigureGroup();
      str(d, b->group());
      str(d, b->topic());
      d.add(std::string_view(wire::EnumNameGroupMode(b->mode())));
      d.add(static_cast<std::uint64_t>(b->set_mode()));
      d.add(b->ack_wait_ms());
      retry(d, b->retry());
      return;
    }
    case Body::DescribeGroups:
      str(d, f.body_as_DescribeGroups()->group());
      return;
    case Body::GroupList:
      if (const auto* gs = f.body_as_GroupList()->groups())
        for (const auto* g : *gs) {
          str(d, g->group());
          str(d, g->topic());
          d.add(std::string_view(wire::EnumNameGroupMode(g->mode())));
          for (std::uint64_t v : {std::uint64_t{g->consumers()}, g->lag(), g->in_flight(), g->waiting_retry(),
                                  g->redeliveries(), g->dead_letters(), g->ack_wait_ms()})
            d.add(v);
          retry(d, g->retry());
        }
      return;
    case Body::Fetch: {
      const auto* b = f.body_as_Fetch();
      str(d, b->topic());
      d.add(static_cast<std::uint64_t>(b->partition()));
      d.add(b->offset());
      d.add(static_cast<std::uint64_t>(b->max_messages()));
      return;
    }
    case Body::FetchOk:
      if (const auto* ms = f.body_as_FetchOk()->messages())
        for (const auto* m : *ms) delivery(d, *m);
      return;
    case Body::Redrive: {
      const auto* b = f.body_as_Redrive();
      str(d, b->group());
      ulongs(d, b->offsets());
      d.add(static_cast<std::uint64_t>(b->trust_unmarked()));
      return;
    }
    case Body::RedriveOk: {
      const auto* b = f.body_as_RedriveOk();
      ulongs(d, b->redriven());
      ulongs(d, b->failed());
      ulongs(d, b->unmarked());
      return;
    }
    case Body::Prepare: {
      const auto* b = f.body_as_Prepare();
      str(d, b->topic());
      str(d, b->producer_group());
      messages(d, b->messages());
      d.add(b->check_after_ms());
      return;
    }
    case Body::PrepareOk:
      ulongs(d, f.body_as_PrepareOk()->transaction_ids());
      return;
    case Body::EndTransactions: {
      const auto* b = f.body_as_EndTransactions();
      if (const auto* items = b->items())
        for (const auto* i : *items) {
          d.add(i->transaction_id());
          d.add(std::string_view(wire::EnumNameTxnAction(i->action())));
          wire::TxnEnd copy = *i;
          d.add(copy.transaction_id());
        }
      d.add(static_cast<std::uint64_t>(b->operator_()));
      return;
    }
    case Body::EndTransactionsOk:
      if (const auto* rs = f.body_as_EndTransactionsOk()->results())
        for (const auto* r : *rs) {
          d.add(r->transaction_id());
          d.add(std::string_view(wire::EnumNameTxnState(r->state())));
          d.add(static_cast<std::uint64_t>(r->changed()) << 1 | r->found());
          wire::TxnResult copy = *r;
          d.add(copy.transaction_id());
        }
      return;
    case Body::CheckTransaction: {
      const auto* b = f.body_as_CheckTransaction();
      d.add(b->transaction_id());
      str(d, b->topic());
      str(d, b->producer_group());
      bytes(d, b->key());
      headers(d, b->headers());
      bytes(d, b->body());
      d.add(static_cast<std::uint64_t>(b->checks()));
      return;
    }
    case Body::ListTransactions: {
      const auto* b = f.body_as_ListTransactions();
      d.add(std::string_view(wire::EnumNameTxnState(b->state())));
      d.add(static_cast<std::uint64_t>(b->all_states()));
      d.add(b->transaction_id());
      d.add(static_cast<std::uint64_t>(b->max()));
      return;
    }
    case Body::TransactionList:
      if (const auto* ts = f.body_as_TransactionList()->transactions())
        for (const auto* t : *ts) {
          d.add(t->transaction_id());
          d.add(std::string_view(wire::EnumNameTxnState(t->state())));
          str(d, t->topic());
          str(d, t->producer_group());
          for (std::uint64_t v : {t->created_ms(), std::uint64_t{t->checks()}, t->next_check_ms(), t->ended_ms(),
                                  std::uint64_t{t->partition()}, t->offset()})
            d.add(v);
          str(d, t->resolution());
          bytes(d, t->key());
          headers(d, t->headers());
          bytes(d, t->body());
        }
      return;
  }
  // A body type beyond the union (a newer peer): the verifier accepted it as unknown and
  // nothing of it may be read.
  d.add(static_cast<std::uint64_t>(f.body_type()));
}

}  // namespace

std::uint64_t walk_frame(const wire::Frame& frame) {
  Digest d;
  d.add(frame.request_id());
  d.add(std::string_view(wire::EnumNameBody(frame.body_type())));
  body(d, frame);
  return d.value();
}

}  // namespace txmq::fuzz
