#include "broker/consumer_group.h"

#include <algorithm>

#include "common/frame.h"

namespace txmq::broker {

ConsumerGroup::ConsumerGroup(std::string name, storage::GroupId id, Topic& topic)
    : name_(std::move(name)), id_(id), topic_(&topic) {}

Status ConsumerGroup::load(const storage::Store& store) {
  cursors_.resize(topic_->meta.partitions);
  for (std::uint32_t p = 0; p < cursors_.size(); ++p) {
    auto state = store.load_cursor(id_, topic_->meta.id, PartitionId(p));
    if (!state) return state.error();
    auto& c = cursors_[p];
    // Retention may have removed messages below the floor; start where data begins.
    c.ack_floor = std::max(state->ack_floor, topic_->partitions[p].first);
    c.next = c.ack_floor;
    c.acked = std::move(state->acked_above);
  }
  return {};
}

Consumer* ConsumerGroup::find_consumer(const Connection* conn) {
  for (auto& c : consumers_)
    if (c->conn == conn) return c.get();
  return nullptr;
}

void ConsumerGroup::add_consumer(Connection& conn, std::uint32_t window) {
  if (Consumer* c = find_consumer(&conn)) {
    c->window = window;
    return;
  }
  consumers_.push_back(std::make_unique<Consumer>(Consumer{&conn, window}));
}

void ConsumerGroup::remove_consumer(const Connection* conn) {
  for (auto& cursor : cursors_) {
    for (auto it = cursor.in_flight.begin(); it != cursor.in_flight.end();) {
      if (it->second.holder == conn) {
        cursor.redeliver.emplace(it->first, it->second.deliveries);
        it = cursor.in_flight.erase(it);
      } else {
        ++it;
      }
    }
  }
  std::erase_if(consumers_, [&](const auto& c) { return c->conn == conn; });
  if (next_consumer_ >= consumers_.size()) next_consumer_ = 0;
}

Result<std::map<PartitionId, std::vector<Offset>>> ConsumerGroup::ack(
    std::span<const wire::MessageRef* const> refs) {
  std::map<PartitionId, std::vector<Offset>> to_store;
  for (const auto* ref : refs) {
    if (ref->partition() >= cursors_.size())
      return Error(ErrorCode::kInvalidArgument, "ack of unknown partition " + std::to_string(ref->partition()));
    if (ref->offset() >= topic_->partitions[ref->partition()].next.value())
      return Error(ErrorCode::kInvalidArgument, "ack of offset " + std::to_string(ref->offset()) +
                                                    " beyond the end of partition " +
                                                    std::to_string(ref->partition()));
  }
  for (const auto* ref : refs) {
    PartitionId p(ref->partition());
    Offset o(ref->offset());
    auto& cursor = cursors_[p.value()];
    if (o < cursor.ack_floor || cursor.acked.contains(o)) continue;
    if (auto it = cursor.in_flight.find(o); it != cursor.in_flight.end()) {
      if (Consumer* c = find_consumer(it->second.holder)) --c->in_flight;
      cursor.in_flight.erase(it);
    }
    // An ack for a message waiting for redelivery (its first consumer acked late, after
    // reconnecting) still counts: at-least-once never needs a second copy once acked.
    cursor.redeliver.erase(o);
    cursor.acked.insert(o);
    to_store[p].push_back(o);
    ++acked_total;
    if (series.acked) series.acked->inc();
  }
  return to_store;
}

void ConsumerGroup::set_ack_floor(PartitionId p, Offset floor) {
  auto& cursor = cursors_[p.value()];
  if (floor <= cursor.ack_floor) return;
  cursor.acked.erase(cursor.acked.begin(), cursor.acked.lower_bound(floor));
  cursor.ack_floor = floor;
}

Consumer* ConsumerGroup::next_consumer_with_room() {
  for (std::size_t i = 0; i < consumers_.size(); ++i) {
    Consumer* c = consumers_[(next_consumer_ + i) % consumers_.size()].get();
    if (c->in_flight < c->window && c->conn->open() && c->conn->writable()) {
      next_consumer_ = (next_consumer_ + i + 1) % consumers_.size();
      return c;
    }
  }
  return nullptr;
}

std::size_t ConsumerGroup::dispatch(const storage::Store& store, flatbuffers::FlatBufferBuilder& fbb) {
  std::size_t sent = 0;
  const std::uint32_t partitions = static_cast<std::uint32_t>(cursors_.size());
  // Each round gives one consumer with room a run from one partition that has work, so
  // consumers and partitions are both served in turn. The windows bound the total.
  for (;;) {
    Consumer* c = next_consumer_with_room();
    if (!c) break;
    std::size_t got = 0;
    for (std::uint32_t i = 0; i < partitions && got == 0; ++i) {
      PartitionId p((next_partition_ + i) % partitions);
      got = fill(*c, p, store, fbb);
      if (got) next_partition_ = (p.value() + 1) % partitions;
    }
    if (got == 0) break;  // nothing left to deliver in any partition
    sent += got;
  }
  return sent;
}

std::size_t ConsumerGroup::fill(Consumer& c, PartitionId p, const storage::Store& store,
                                flatbuffers::FlatBufferBuilder& fbb) {
  auto& cursor = cursors_[p.value()];
  std::size_t room = c.window - c.in_flight;
  std::size_t sent = 0;
  // Messages given back by a departed consumer go first: they are the oldest.
  while (!cursor.redeliver.empty() && sent < room && c.conn->writable()) {
    auto [offset, count] = *cursor.redeliver.begin();
    cursor.redeliver.erase(cursor.redeliver.begin());
    auto r = store.read_one(topic_->meta.id, p, offset, [&](const storage::LogEntry& e) {
      send_delivery(c, p, e, DeliveryCount(count.value() + 1), fbb);
    });
    if (r) ++sent;  // a message removed by retention meanwhile is simply skipped
  }
  const Offset end = topic_->partitions[p.value()].next;
  if (sent < room && cursor.next < end && c.conn->writable()) {
    Offset last = cursor.next;
    bool any = false;
    auto r = store.read_log(topic_->meta.id, p, cursor.next, room - sent, [&](const storage::LogEntry& e) {
      // Stop at the committed end: the writer may have appended past what the loop knows.
      if (e.offset >= end) return false;
      last = e.offset;
      any = true;
      if (!cursor.acked.contains(e.offset) && !cursor.in_flight.contains(e.offset)) {
        send_delivery(c, p, e, DeliveryCount(1), fbb);
        ++sent;
      }
      return c.conn->writable();
    });
    cursor.next = (r && any) ? next(last) : (r ? end : cursor.next);
  }
  return sent;
}

void ConsumerGroup::send_delivery(Consumer& c, PartitionId p, const storage::LogEntry& e,
                                  DeliveryCount n, flatbuffers::FlatBufferBuilder& fbb) {
  const storage::StoredMessage* m = e.message;
  fbb.Clear();
  std::vector<flatbuffers::Offset<wire::Header>> headers;
  if (m->headers()) {
    headers.reserve(m->headers()->size());
    for (const auto* h : *m->headers())
      headers.push_back(wire::CreateHeader(
          fbb, h->name() ? fbb.CreateString(h->name()) : 0,
          h->value() ? fbb.CreateVector(h->value()->data(), h->value()->size()) : 0));
  }
  auto body = wire::CreateDelivery(
      fbb, fbb.CreateString(topic_->meta.name), fbb.CreateString(name_), p.value(), e.offset.value(),
      m->timestamp_ms(), m->key() ? fbb.CreateVector(m->key()->data(), m->key()->size()) : 0,
      headers.empty() ? 0 : fbb.CreateVector(headers),
      m->body() ? fbb.CreateVector(m->body()->data(), m->body()->size()) : 0, n.value());
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, 0, wire::Body::Delivery, body.Union()));
  c.conn->send(common::frame_bytes(fbb));
  cursors_[p.value()].in_flight[e.offset] = InFlight{c.conn, n};
  ++c.in_flight;
  ++delivered;
  if (series.delivered) {
    series.delivered->inc();
    if (n.value() > 1) series.redelivered->inc();
  }
}

std::size_t ConsumerGroup::in_flight() const {
  std::size_t n = 0;
  for (const auto& c : cursors_) n += c.in_flight.size();
  return n;
}

std::uint64_t ConsumerGroup::lag() const {
  std::uint64_t n = 0;
  for (std::size_t p = 0; p < cursors_.size(); ++p) {
    const auto& c = cursors_[p];
    std::uint64_t end = topic_->partitions[p].next.value();
    if (end > c.ack_floor.value()) n += end - c.ack_floor.value() - c.acked.size();
  }
  return n;
}

}  // namespace txmq::broker
