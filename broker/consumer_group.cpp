#include "broker/consumer_group.h"

#include <algorithm>

#include "common/frame.h"

namespace txmq::broker {

ConsumerGroup::ConsumerGroup(std::string name, storage::GroupId id, Topic& topic, GroupPolicy policy,
                             std::uint64_t serial)
    : name_(std::move(name)), id_(id), topic_(&topic), policy_(std::move(policy)), serial_(serial) {}

Status ConsumerGroup::load(const LogReader& log) {
  cursors_.resize(topic_->meta.partitions);
  marked_.resize(topic_->meta.partitions);
  for (std::uint32_t p = 0; p < cursors_.size(); ++p) {
    auto state = log.load_cursor(id_, topic_->meta.id, PartitionId(p));
    if (!state) return state.error();
    auto& c = cursors_[p];
    // Retention may have removed messages below the floor; start where data begins.
    c.ack_floor = std::max(state->ack_floor, topic_->partitions[p].first);
    c.next = c.ack_floor;
    c.delivered_upto = std::max(state->delivered_upto, c.ack_floor);
    marked_[p] = c.delivered_upto;
    c.acked = std::move(state->acked_above);
    for (const auto& [offset, pending] : state->pending) {
      // A pending record wins over an ack key: it is a dead letter redriven after its ack.
      c.acked.erase(offset);
      c.pending[offset] = Pending{pending.delivery_count, pending.due_ms, 0, nullptr, pending.reasons};
      c.retry_due.emplace(pending.due_ms, offset);
    }
  }
  return {};
}

Consumer* ConsumerGroup::find_consumer(const DeliverySink* sink) {
  for (auto& c : consumers_)
    if (c->sink == sink) return c.get();
  return nullptr;
}

void ConsumerGroup::add_consumer(DeliverySink& sink, std::uint32_t window) {
  if (Consumer* c = find_consumer(&sink)) {
    c->window = window;
    return;
  }
  consumers_.push_back(std::make_unique<Consumer>(Consumer{&sink, window}));
}

std::vector<Failure> ConsumerGroup::remove_consumer(const DeliverySink* sink, std::uint64_t now_ms) {
  std::vector<Failure> failures;
  for (std::uint32_t p = 0; p < cursors_.size(); ++p) {
    auto& cursor = cursors_[p];
    std::vector<Offset> held;
    for (const auto& [o, f] : cursor.in_flight)
      if (f.holder == sink) held.push_back(o);
    // A consumer that went away failed its deliveries; another may take them at once.
    for (Offset o : held) failures.push_back(fail(PartitionId(p), o, "consumer disconnected", 0, false, now_ms));
  }
  std::erase_if(consumers_, [&](const auto& c) { return c->sink == sink; });
  if (next_consumer_ >= consumers_.size()) next_consumer_ = 0;
  return failures;
}

void ConsumerGroup::release(PartitionId p, std::map<Offset, InFlight>::iterator it) {
  auto& cursor = cursors_[p.value()];
  cursor.leases.erase({it->second.lease_deadline_ms, it->first});
  if (Consumer* c = find_consumer(it->second.holder)) --c->in_flight;
  cursor.in_flight.erase(it);
}

Failure ConsumerGroup::fail(PartitionId p, Offset o, std::string_view reason, std::optional<std::uint64_t> delay_ms,
                            bool terminate, std::uint64_t now_ms) {
  auto& cursor = cursors_[p.value()];
  auto it = cursor.in_flight.find(o);
  InFlight f = std::move(it->second);
  release(p, it);
  Failure out{p, o, terminate || f.delivery_count.value() >= policy_.retry.max_deliveries, {}, f.has_record};
  out.record.delivery_count = f.delivery_count.value();
  out.record.first_delivery_ms = f.first_delivery_ms;
  out.record.last_delivery_ms = now_ms;
  reason = reason.substr(0, kMaxReasonBytes);
  if (!reason.empty()) {
    out.record.reasons.emplace_back(reason);
    f.reasons.emplace_back(reason);
    if (f.reasons.size() > kMaxReasons) f.reasons.erase(f.reasons.begin());
  }
  if (out.dead_letter) {
    // Never delivered to this group again; the dead-letter write also records the ack.
    if (o >= cursor.ack_floor) cursor.acked.insert(o);
    ++dead_lettered;
    return out;
  }
  const std::uint64_t delay = delay_ms ? *delay_ms : policy_.retry.delay_ms(f.delivery_count.value(), rng_);
  out.record.due_ms = now_ms + delay;
  cursor.pending[o] = Pending{f.delivery_count, out.record.due_ms, f.first_delivery_ms, f.holder, std::move(f.reasons)};
  cursor.retry_due.emplace(out.record.due_ms, o);
  return out;
}

Status ConsumerGroup::settle(const DeliverySink& sink, PartitionId p, Offset o, wire::SettleVerb verb,
                             std::uint64_t delay_ms, std::string_view reason, std::uint64_t now_ms,
                             SettleBatch& batch) {
  if (p.value() >= cursors_.size())
    return Error(ErrorCode::kInvalidArgument, "topic '" + topic_->meta.name + "' has no partition " +
                                                  std::to_string(p.value()));
  auto& cursor = cursors_[p.value()];
  auto it = cursor.in_flight.find(o);
  if (verb == wire::SettleVerb::Ack) {
    // An ack counts whoever sends it and whenever: at-least-once never needs another copy
    // of a message someone acknowledged, even late, after its lease ran out.
    bool has_record;
    if (it != cursor.in_flight.end()) {
      has_record = it->second.has_record;
      release(p, it);
    } else if (auto w = cursor.pending.find(o); w != cursor.pending.end()) {
      has_record = true;
      cursor.retry_due.erase({w->second.due_ms, o});
      cursor.pending.erase(w);
    } else if (o < cursor.ack_floor || cursor.acked.contains(o) ||
               o >= topic_->partitions[p.value()].next) {
      ++batch.ignored;
      return {};
    } else {
      has_record = false;
    }
    if (has_record) batch.clear.emplace_back(p, o);
    if (o >= cursor.ack_floor && cursor.acked.insert(o).second) batch.acks[p].push_back(o);
    ++acked_total;
    if (series.acked) series.acked->inc();
    return {};
  }
  if (it == cursor.in_flight.end() || it->second.holder != &sink) {
    ++batch.ignored;  // not ours (any more): a lease that ran out, a message settled already
    return {};
  }
  switch (verb) {
    case wire::SettleVerb::InProgress: {
      cursor.leases.erase({it->second.lease_deadline_ms, o});
      it->second.lease_deadline_ms = now_ms + static_cast<std::uint64_t>(policy_.ack_wait.count());
      cursor.leases.emplace(it->second.lease_deadline_ms, o);
      return {};
    }
    case wire::SettleVerb::Nack:
      batch.failures.push_back(
          fail(p, o, reason, delay_ms > 0 ? std::optional<std::uint64_t>(delay_ms) : std::nullopt, false, now_ms));
      return {};
    case wire::SettleVerb::Terminate:
      batch.failures.push_back(fail(p, o, reason, std::nullopt, true, now_ms));
      return {};
    default:
      return Error(ErrorCode::kInvalidArgument, "unknown verb");
  }
}

std::vector<Failure> ConsumerGroup::expire_leases(std::uint64_t now_ms) {
  std::vector<Failure> failures;
  for (std::uint32_t p = 0; p < cursors_.size(); ++p) {
    auto& cursor = cursors_[p];
    while (!cursor.leases.empty() && cursor.leases.begin()->first <= now_ms) {
      Offset o = cursor.leases.begin()->second;
      failures.push_back(fail(PartitionId(p), o, "lease expired", std::nullopt, false, now_ms));
    }
  }
  return failures;
}

std::uint64_t ConsumerGroup::next_wakeup(std::uint64_t now_ms) const {
  std::uint64_t t = UINT64_MAX;
  for (const auto& c : cursors_) {
    if (!c.leases.empty()) t = std::min(t, c.leases.begin()->first);
    if (auto it = c.retry_due.upper_bound({now_ms, Offset(UINT64_MAX)}); it != c.retry_due.end())
      t = std::min(t, it->first);
  }
  return t;
}

void ConsumerGroup::set_ack_floor(PartitionId p, Offset floor) {
  auto& cursor = cursors_[p.value()];
  if (floor <= cursor.ack_floor) return;
  cursor.acked.erase(cursor.acked.begin(), cursor.acked.lower_bound(floor));
  cursor.ack_floor = floor;
  cursor.next = std::max(cursor.next, floor);
  cursor.delivered_upto = std::max(cursor.delivered_upto, floor);
}

void ConsumerGroup::reopen(PartitionId p, Offset o, std::uint64_t now_ms) {
  if (p.value() >= cursors_.size()) return;
  auto& cursor = cursors_[p.value()];
  if (cursor.in_flight.contains(o) || cursor.pending.contains(o)) return;
  cursor.acked.erase(o);
  cursor.pending[o] = Pending{DeliveryCount(0), now_ms, 0, nullptr, {}};
  cursor.retry_due.emplace(now_ms, o);
}

Consumer* ConsumerGroup::next_consumer_with_room() {
  for (std::size_t i = 0; i < consumers_.size(); ++i) {
    Consumer* c = consumers_[(next_consumer_ + i) % consumers_.size()].get();
    if (c->in_flight < c->window && c->sink->open() && c->sink->writable()) {
      next_consumer_ = (next_consumer_ + i + 1) % consumers_.size();
      return c;
    }
  }
  return nullptr;
}

// In ordered mode a partition belongs to one consumer at a time, so its messages arrive in
// order; the owner is stable while the set of consumers is.
Consumer* ConsumerGroup::ordered_owner(PartitionId p) {
  if (consumers_.empty()) return nullptr;
  return consumers_[p.value() % consumers_.size()].get();
}

std::vector<std::pair<PartitionId, Offset>> ConsumerGroup::dispatch(const LogReader& log,
                                                                    flatbuffers::FlatBufferBuilder& fbb,
                                                                    std::uint64_t now_ms) {
  const std::uint32_t partitions = static_cast<std::uint32_t>(cursors_.size());
  // Each round gives one consumer with room a run from one partition that has work, so
  // consumers and partitions are both served in turn. The windows bound the total.
  for (std::size_t idle = 0; idle < consumers_.size();) {
    Consumer* c = next_consumer_with_room();
    if (!c) break;
    std::size_t got = 0;
    for (std::uint32_t i = 0; i < partitions && got == 0; ++i) {
      PartitionId p((next_partition_ + i) % partitions);
      if (policy_.mode == wire::GroupMode::Ordered && ordered_owner(p) != c) continue;
      got = fill(*c, p, log, fbb, now_ms);
      if (got) next_partition_ = (p.value() + 1) % partitions;
    }
    // A consumer with room found nothing; once every consumer has come up empty in a row,
    // nothing is left for anyone.
    idle = got ? 0 : idle + 1;
  }
  std::vector<std::pair<PartitionId, Offset>> marks;
  for (std::uint32_t p = 0; p < partitions; ++p) {
    if (cursors_[p].delivered_upto > marked_[p]) {
      marked_[p] = cursors_[p].delivered_upto;
      marks.emplace_back(PartitionId(p), marked_[p]);
    }
  }
  return marks;
}

std::size_t ConsumerGroup::fill(Consumer& c, PartitionId p, const LogReader& log,
                                flatbuffers::FlatBufferBuilder& fbb, std::uint64_t now_ms) {
  auto& cursor = cursors_[p.value()];
  const bool ordered = policy_.mode == wire::GroupMode::Ordered;
  std::size_t room = ordered ? (cursor.in_flight.empty() ? 1 : 0) : c.window - c.in_flight;
  std::size_t sent = 0;
  const Offset end = topic_->partitions[p.value()].next;

  if (ordered && room > 0) {
    // The head is the lowest offset not yet resolved; it holds the partition until it is
    // acknowledged or dead-lettered.
    std::optional<Offset> fresh;
    if (cursor.pending.empty() || cursor.pending.begin()->first > cursor.ack_floor) {
      Offset from = cursor.ack_floor;
      auto r = log.read_log(topic_->meta.id, p, from, 64, [&](const storage::LogEntry& e) {
        if (e.offset >= end) return false;
        if (cursor.acked.contains(e.offset) || cursor.pending.contains(e.offset)) return true;
        fresh = e.offset;
        return false;
      });
      (void)r;
    }
    if (!cursor.pending.empty() && (!fresh || cursor.pending.begin()->first < *fresh)) {
      auto w = cursor.pending.begin();
      if (w->second.due_ms > now_ms) return 0;  // the head waits for its retry time
      Pending retry = std::move(w->second);
      Offset o = w->first;
      cursor.retry_due.erase({retry.due_ms, o});
      cursor.pending.erase(w);
      return deliver(c, p, o, DeliveryCount(retry.delivery_count.value() + 1), retry.first_delivery_ms, true,
                     std::move(retry.reasons), log, fbb, now_ms, nullptr) ? 1 : 0;
    }
    if (!fresh) return 0;
    DeliveryCount n(*fresh < cursor.delivered_upto ? 2 : 1);
    return deliver(c, p, *fresh, n, 0, false, {}, log, fbb, now_ms, nullptr) ? 1 : 0;
  }

  // Retries that are due go first: they are the oldest work. One whose lease ran out with
  // this consumer goes to another when there is one: a hung consumer must not use up a
  // message's deliveries while others wait.
  for (auto it = cursor.retry_due.begin();
       sent < room && c.sink->writable() && it != cursor.retry_due.end() && it->first <= now_ms;) {
    const Offset o = it->second;
    auto w = cursor.pending.find(o);
    if (w->second.last_holder == c.sink && consumers_.size() > 1) {
      ++it;
      continue;
    }
    Pending retry = std::move(w->second);
    it = cursor.retry_due.erase(it);
    cursor.pending.erase(w);
    if (deliver(c, p, o, DeliveryCount(retry.delivery_count.value() + 1), retry.first_delivery_ms, true,
                std::move(retry.reasons), log, fbb, now_ms, nullptr))
      ++sent;
  }
  // Fresh messages, in chunks: entries already settled (acked, pending) are skipped without
  // using the room, so the scan goes on until the room is filled or the log ends.
  while (sent < room && cursor.next < end && c.sink->writable()) {
    Offset last = cursor.next;
    bool any = false;
    auto r = log.read_log(topic_->meta.id, p, cursor.next, room - sent + 256, [&](const storage::LogEntry& e) {
      // Stop at the committed end: the writer may have appended past what the loop knows.
      if (e.offset >= end) return false;
      last = e.offset;
      any = true;
      if (!cursor.acked.contains(e.offset) && !cursor.in_flight.contains(e.offset) &&
          !cursor.pending.contains(e.offset)) {
        // Below the delivered-up-to mark a message was delivered before a restart, and
        // that delivery's lease was lost with the broker: this is its second.
        DeliveryCount n(e.offset < cursor.delivered_upto ? 2 : 1);
        if (deliver(c, p, e.offset, n, 0, false, {}, log, fbb, now_ms, &e)) ++sent;
      }
      return sent < room && c.sink->writable();
    });
    if (!r) break;
    cursor.next = any ? next(last) : end;
  }
  return sent;
}

bool ConsumerGroup::deliver(Consumer& c, PartitionId p, Offset o, DeliveryCount n, std::uint64_t first_ms,
                            bool has_record, FailureReasons reasons, const LogReader& log, flatbuffers::FlatBufferBuilder& fbb,
                            std::uint64_t now_ms, const storage::LogEntry* entry) {
  auto send = [&](const storage::LogEntry& e) {
    const storage::StoredMessage* m = e.message;
    fbb.Clear();
    std::vector<flatbuffers::Offset<wire::Header>> headers;
    if (m->headers()) {
      headers.reserve(m->headers()->size());
      for (const auto* h : *m->headers())
        headers.push_back(wire::CreateHeader(fbb, h->name() ? fbb.CreateString(h->name()) : 0,
                                             h->value() ? fbb.CreateVector(h->value()->data(), h->value()->size()) : 0));
    }
    auto body = wire::CreateDelivery(
        fbb, fbb.CreateString(topic_->meta.name), fbb.CreateString(name_), p.value(), o.value(), m->timestamp_ms(),
        m->key() ? fbb.CreateVector(m->key()->data(), m->key()->size()) : 0,
        headers.empty() ? 0 : fbb.CreateVector(headers),
        m->body() ? fbb.CreateVector(m->body()->data(), m->body()->size()) : 0, n.value(),
        reasons.empty() ? 0 : fbb.CreateVectorOfStrings(reasons));  // the wire's history
    fbb.FinishSizePrefixed(wire::CreateFrame(fbb, 0, wire::Body::Delivery, body.Union()));
    c.sink->send(common::frame_bytes(fbb));
  };
  if (entry) {
    send(*entry);
  } else if (!log.read_one(topic_->meta.id, p, o, send)) {
    // Removed by retention meanwhile: nothing left to deliver or to retry.
    return false;
  }
  auto& cursor = cursors_[p.value()];
  const std::uint64_t deadline = now_ms + static_cast<std::uint64_t>(policy_.ack_wait.count());
  cursor.in_flight[o] = InFlight{c.sink, n, first_ms ? first_ms : now_ms, deadline, has_record, std::move(reasons)};
  cursor.leases.emplace(deadline, o);
  if (o >= cursor.delivered_upto) cursor.delivered_upto = next(o);
  ++c.in_flight;
  ++delivered;
  if (n.value() > 1) ++redelivered;
  if (series.delivered) {
    series.delivered->inc();
    if (n.value() > 1) series.redelivered->inc();
  }
  return true;
}

std::size_t ConsumerGroup::in_flight() const {
  std::size_t n = 0;
  for (const auto& c : cursors_) n += c.in_flight.size();
  return n;
}

std::size_t ConsumerGroup::pending() const {
  std::size_t n = 0;
  for (const auto& c : cursors_) n += c.pending.size();
  return n;
}

std::uint64_t ConsumerGroup::lag() const {
  std::uint64_t n = 0;
  for (std::size_t p = 0; p < cursors_.size(); ++p) {
    const auto& c = cursors_[p];
    const std::uint64_t end = topic_->partitions[p].next.value();
    // Retention may have removed messages the group never acknowledged: they are not lag.
    const std::uint64_t floor = std::max(c.ack_floor, topic_->partitions[p].first).value();
    // Redriven dead letters sit below the floor (their first pass acknowledged them).
    n += static_cast<std::uint64_t>(std::distance(c.pending.begin(), c.pending.lower_bound(Offset(floor))));
    if (end <= floor) continue;
    const auto acked = static_cast<std::uint64_t>(std::distance(c.acked.lower_bound(Offset(floor)), c.acked.end()));
    n += end - floor - std::min(acked, end - floor);
  }
  return n;
}

}  // namespace txmq::broker
