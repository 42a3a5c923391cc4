// Consumer: subscribes (again after every reconnect), hands deliveries to the handler on
// the I/O thread, and batches acks.

#include <condition_variable>
#include <map>
#include <mutex>

#include "connection.h"

namespace txmq::client {
namespace detail {

class ConsumerImpl {
 public:
  ConsumerImpl(Consumer::Options options, Consumer::Handler handler, Consumer& owner)
      : options_(std::move(options)),
        handler_(std::move(handler)),
        owner_(owner),
        conn_(options_, Connection::Hooks{[this] { subscribe(); }, [this](const wire::Frame& f) { on_push(f); }}) {}
  ~ConsumerImpl() { conn_.stop(); }

  // Called once the owner holds this object, so that a handler running at once can use it.
  void start() { conn_.start(); }
  void stop() { conn_.stop(); }

  Status wait_subscribed(Millis timeout) {
    if (conn_.on_io_thread())
      return Error(ErrorCode::kInvalidArgument, "Consumer::wait_subscribed called from the consumer's own I/O thread");
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return subscribed_ || sub_error_.code != ErrorCode::kOk; }))
      return Error(ErrorCode::kTimeout, "not subscribed within " + std::to_string(timeout.count()) + " ms");
    if (subscribed_) return {};
    return sub_error_;
  }

  void settle(std::uint32_t partition, std::uint64_t offset, wire::SettleVerb verb, Millis delay, std::string reason) {
    bool post;
    {
      std::lock_guard lock(mu_);
      post = verdicts_.empty();
      verdicts_.push_back(Verdict{partition, offset, verb, static_cast<std::uint64_t>(delay.count()), std::move(reason),
                                  next_verdict_++});
      ++acks_outstanding_;
    }
    if (post) conn_.post([this] { send_verdicts(); });
  }

  // Waits for the verdicts numbered below the count given at the call, not for those given
  // while it waits: under a steady flow some verdict is always outstanding, and waiting for
  // none would never end.
  Status flush_acks(Millis timeout) {
    if (conn_.on_io_thread())
      return Error(ErrorCode::kInvalidArgument, "Consumer::flush_acks called from the consumer's own I/O thread");
    std::unique_lock lock(mu_);
    const std::uint64_t target = next_verdict_;
    if (!cv_.wait_for(lock, timeout, [&] { return first_unconfirmed() >= target; }))
      return Error(ErrorCode::kTimeout, "verdicts given before flush_acks not confirmed within " +
                                            std::to_string(timeout.count()) + " ms (" +
                                            std::to_string(acks_outstanding_) + " outstanding in all)");
    if (ack_error_.code != ErrorCode::kOk) {
      Error e = ack_error_;
      ack_error_ = Error(ErrorCode::kOk);
      return e;
    }
    return {};
  }

  void pause() {
    conn_.post([this] {
      window_ = 0;
      send_subscribe();
    });
  }

  void resume() {
    conn_.post([this] {
      window_ = options_.window;
      send_subscribe();
    });
  }

 private:
  // I/O thread: after every (re)connect.
  void subscribe() { send_subscribe(); }

  void send_subscribe() {
    {
      std::lock_guard lock(mu_);
      subscribed_ = false;
    }
    auto& fbb = conn_.builder();
    fbb.Clear();
    auto sub = wire::CreateSubscribe(fbb, fbb.CreateString(options_.topic), fbb.CreateString(options_.group),
                                     window_);
    std::uint64_t rid = conn_.next_request_id();
    fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::Subscribe, sub.Union()));
    conn_.request(rid, common::frame_bytes(fbb), Connection::Clock::now() + options_.request_timeout,
                  [this](Result<const wire::Frame*> r) {
                    // A follower's refusal is no answer: the connection follows the leader
                    // and subscribes again there (subscribe() after the reconnect).
                    if (!r.ok() && r.error().code == ErrorCode::kNotLeader) return;
                    {
                      std::lock_guard lock(mu_);
                      if (r.ok()) {
                        subscribed_ = true;
                        sub_error_ = Error(ErrorCode::kOk);
                      } else {
                        sub_error_ = r.error();
                      }
                      cv_.notify_all();
                    }
                    // A topic that does not exist yet (a dead-letter or give-up topic is
                    // created by its first message) is asked for again until it does.
                    if (!r.ok() && r.error().code == ErrorCode::kUnknownTopic && window_ > 0)
                      conn_.set_timer(options_.reconnect_max, [this] { send_subscribe(); });
                  });
  }

  void on_push(const wire::Frame& frame) {
    if (frame.body_type() != wire::Body::Delivery) return;
    const auto* d = frame.body_as_Delivery();
    Delivery out;
    auto str = [](const flatbuffers::String* s) { return s ? s->str() : std::string(); };
    auto bytes = [](const flatbuffers::Vector<std::uint8_t>* v) {
      return v ? std::string(reinterpret_cast<const char*>(v->data()), v->size()) : std::string();
    };
    out.topic = str(d->topic());
    out.group = str(d->group());
    out.partition = d->partition();
    out.offset = d->offset();
    out.timestamp_ms = d->timestamp_ms();
    out.delivery_count = d->delivery_count();
    out.key = bytes(d->key());
    out.body = bytes(d->body());
    if (d->headers())
      for (const auto* h : *d->headers()) out.headers.push_back(Header{str(h->name()), bytes(h->value())});
    if (d->history())
      for (const auto* s : *d->history()) out.history.push_back(s->str());
    handler_(owner_, out);
  }

  // I/O thread: one settle request for every verdict given since the last one.
  void send_verdicts() {
    std::vector<Verdict> verdicts;
    {
      std::lock_guard lock(mu_);
      verdicts.swap(verdicts_);
      // Registered in the same critical section as the swap, so that flush_acks always
      // finds these verdicts either queued or in flight.
      if (!verdicts.empty()) settles_in_flight_.emplace(verdicts.front().sequence, verdicts.size());
    }
    if (verdicts.empty()) return;
    const std::uint64_t first = verdicts.front().sequence;
    auto& fbb = conn_.builder();
    fbb.Clear();
    std::vector<flatbuffers::Offset<wire::SettleItem>> items;
    items.reserve(verdicts.size());
    for (const auto& v : verdicts)
      items.push_back(wire::CreateSettleItem(fbb, v.partition, v.offset, v.verb, v.delay_ms,
                                             v.reason.empty() ? 0 : fbb.CreateString(v.reason)));
    auto settle = wire::CreateSettle(fbb, fbb.CreateString(options_.topic), fbb.CreateString(options_.group),
                                     fbb.CreateVector(items));
    std::uint64_t rid = conn_.next_request_id();
    fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::Settle, settle.Union()));
    const std::size_t n = verdicts.size();
    // Sent again after a reconnect: an ack counts whenever it arrives, and a verdict on a
    // delivery the consumer no longer holds changes nothing, so a repeat is harmless.
    conn_.request(rid, common::frame_bytes(fbb), Connection::Clock::now() + options_.request_timeout,
                  [this, n, first](Result<const wire::Frame*> r) {
                    std::lock_guard lock(mu_);
                    acks_outstanding_ -= n;
                    settles_in_flight_.erase(first);
                    if (!r.ok() && ack_error_.code == ErrorCode::kOk) ack_error_ = r.error();
                    cv_.notify_all();
                  },
                  /*resend=*/true);
  }

  Consumer::Options options_;
  Consumer::Handler handler_;
  Consumer& owner_;                         // passed to the handler
  std::uint32_t window_ = options_.window;  // I/O thread; 0 once paused
  Connection conn_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool subscribed_ = false;                                 // guarded by mu_
  Error sub_error_{ErrorCode::kOk};                         // guarded by mu_
  struct Verdict {
    std::uint32_t partition;
    std::uint64_t offset;
    wire::SettleVerb verb;
    std::uint64_t delay_ms;
    std::string reason;
    std::uint64_t sequence;  // numbered in the order given, from 0
  };
  // The lowest verdict number not yet confirmed (or next_verdict_ when all are). Verdicts
  // go out in the order given, each settle request a contiguous run, so the oldest request
  // in flight, else the oldest queued verdict, holds it. mu_ held.
  std::uint64_t first_unconfirmed() const {
    if (!settles_in_flight_.empty()) return settles_in_flight_.begin()->first;
    if (!verdicts_.empty()) return verdicts_.front().sequence;
    return next_verdict_;
  }
  std::vector<Verdict> verdicts_;                           // guarded by mu_: not yet sent
  std::uint64_t next_verdict_ = 0;                          // guarded by mu_: the next verdict's number
  std::map<std::uint64_t, std::size_t> settles_in_flight_;  // guarded by mu_: first number -> count, sent, unanswered
  std::size_t acks_outstanding_ = 0;                        // guarded by mu_: not yet confirmed
  Error ack_error_{ErrorCode::kOk};                         // guarded by mu_: first failure
};

}  // namespace detail

Consumer::Consumer(Options options, Handler handler)
    : impl_(std::make_unique<detail::ConsumerImpl>(std::move(options), std::move(handler), *this)) {
  impl_->start();
}
Consumer::Consumer(Options options, DeliveryHandler handler)
    : Consumer(std::move(options), Handler([handler = std::move(handler)](Consumer&, const Delivery& d) { handler(d); })) {}
// The I/O thread stops before impl_ goes: a handler still running may use this consumer.
Consumer::~Consumer() { impl_->stop(); }
Status Consumer::wait_subscribed(Millis timeout) { return impl_->wait_subscribed(timeout); }
void Consumer::ack(const Delivery& d) { impl_->settle(d.partition, d.offset, wire::SettleVerb::Ack, Millis(0), {}); }
void Consumer::ack(std::uint32_t partition, std::uint64_t offset) {
  impl_->settle(partition, offset, wire::SettleVerb::Ack, Millis(0), {});
}
void Consumer::nack(const Delivery& d, Millis delay, std::string reason) {
  impl_->settle(d.partition, d.offset, wire::SettleVerb::Nack, delay, std::move(reason));
}
void Consumer::in_progress(const Delivery& d) {
  impl_->settle(d.partition, d.offset, wire::SettleVerb::InProgress, Millis(0), {});
}
void Consumer::terminate(const Delivery& d, std::string reason) {
  impl_->settle(d.partition, d.offset, wire::SettleVerb::Terminate, Millis(0), std::move(reason));
}
Status Consumer::flush_acks(Millis timeout) { return impl_->flush_acks(timeout); }
void Consumer::pause() { impl_->pause(); }
void Consumer::resume() { impl_->resume(); }

}  // namespace txmq::client
