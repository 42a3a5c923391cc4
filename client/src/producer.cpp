// Producer: batches messages per topic and keeps many produce requests in flight.

#include <algorithm>
#include <cassert>
#include <condition_variable>
#include <future>
#include <deque>
#include <map>
#include <optional>
#include <random>

#include "connection.h"
#include "wire_message.h"

namespace txmq::client {
namespace detail {

class ProducerImpl {
 public:
  explicit ProducerImpl(Producer::Options options)
      : options_(std::move(options)), conn_(options_, {}) {
    conn_.start();
  }
  ~ProducerImpl() {
    conn_.stop();  // fails what is in flight with kClosed
    fail_queued(Error(ErrorCode::kClosed));
  }

  void send_async(std::string_view topic, Message message, Producer::SendCallback cb) {
    enqueue(topic, std::move(message), std::move(cb), options_.max_block);
  }

  // send_async, waiting up to max_block for room.
  void enqueue(std::string_view topic, Message message, Producer::SendCallback cb, Millis max_block) {
    // Refused here, as the broker would refuse it, once the broker's limit is known.
    if (const std::size_t max = conn_.max_message_bytes(); max != 0 && limit_size(message) > max) {
      Error e(ErrorCode::kMessageTooLarge, "message of " + std::to_string(limit_size(message)) +
                                               " bytes is larger than the broker accepts (limits.max_message_bytes = " +
                                               std::to_string(max) + ")");
      if (!conn_.post([cb = std::move(cb), e] { cb(e); })) cb(Error(ErrorCode::kClosed));
      return;
    }
    const std::size_t size = message_bytes(message);
    const bool on_io_thread = conn_.on_io_thread();
    bool post_pump = false;
    {
      std::unique_lock lock(mu_);
      // Blocking here is the back-pressure: a caller that produces faster than the broker
      // confirms waits instead of growing the buffer without bound. Only the I/O thread
      // frees room, so on it there is no waiting: it fails at once.
      auto room = [&] {
        const bool bytes_ok = in_flight_bytes_ + size <= options_.max_buffered_bytes || in_flight_bytes_ == 0;
        const bool count_ok = options_.max_in_flight_messages == 0 || in_flight_ < options_.max_in_flight_messages;
        return bytes_ok && count_ok;
      };
      if (!room()) {
        std::optional<Error> refused;
        if (on_io_thread)
          refused = Error(ErrorCode::kInvalidArgument,
                          "send_async called from the producer's I/O thread with no room (" + usage() +
                              "): it cannot wait there for room");
        else if (!space_cv_.wait_for(lock, max_block, room))
          refused = Error(ErrorCode::kTimeout, "no room for the message within " +
                                                   std::to_string(max_block.count()) + " ms: " + usage());
        if (refused) {
          lock.unlock();
          if (!conn_.post([cb = std::move(cb), e = *refused] { cb(e); })) cb(Error(ErrorCode::kClosed));
          return;
        }
      }
      auto& q = queued_[std::string(topic)];
      q.push_back(Queued{std::move(message), std::move(cb), size});
      in_flight_bytes_ += size;
      ++in_flight_;
      queued_bytes_ += size;
      ++outstanding_;
      ++queued_count_;
      bool full = queued_count_ >= options_.max_batch_messages || queued_bytes_ >= options_.max_batch_bytes;
      if (!pump_scheduled_ || (full && !full_pump_posted_)) {
        post_pump = true;
        pump_scheduled_ = true;
        if (full) full_pump_posted_ = true;
      }
    }
    if (post_pump && !conn_.post([this] { arm_pump(); })) fail_queued(Error(ErrorCode::kClosed));
  }

  Result<SendReceipt> send(std::string_view topic, Message message, Millis timeout) {
    if (conn_.on_io_thread())
      return Error(ErrorCode::kInvalidArgument, "Producer::send called from its own callback thread");
    auto promise = std::make_shared<std::promise<Result<SendReceipt>>>();
    auto future = promise->get_future();
    // One deadline for the wait for room and the wait for the answer.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    enqueue(topic, std::move(message), [promise](const Result<SendReceipt>& r) { promise->set_value(r); },
            std::min(timeout, options_.max_block));
    if (future.wait_until(deadline) != std::future_status::ready)
      return Error(ErrorCode::kTimeout, "send not confirmed within " + std::to_string(timeout.count()) + " ms");
    return future.get();
  }

  Status flush(Millis timeout) {
    if (conn_.on_io_thread()) return Error(ErrorCode::kInvalidArgument, "flush called from the callback thread");
    std::unique_lock lock(mu_);
    if (!done_cv_.wait_for(lock, timeout, [&] { return outstanding_ == 0; }))
      return Error(ErrorCode::kTimeout, std::to_string(outstanding_) + " message(s) still unconfirmed");
    return {};
  }

  std::uint32_t max_message_bytes() const { return conn_.max_message_bytes(); }

 private:
  struct Queued {
    Message message;
    Producer::SendCallback cb;
    std::size_t bytes;
  };

  // The size limits.max_message_bytes limits, counted as the broker counts it.
  static std::size_t limit_size(const Message& m) {
    std::size_t n = m.key.size() + m.body.size();
    for (const auto& h : m.headers) n += h.name.size() + h.value.size() + common::kHeaderOverheadBytes;
    return n;
  }

  static std::size_t message_bytes(const Message& m) {
    std::size_t n = m.key.size() + m.body.size() + 64;
    for (const auto& h : m.headers) n += h.name.size() + h.value.size() + 16;
    return n;
  }

  // I/O thread. With a linger, wait for the batch to fill (unless it is already full).
  void arm_pump() {
    bool full;
    {
      std::lock_guard lock(mu_);
      full = queued_count_ >= options_.max_batch_messages || queued_bytes_ >= options_.max_batch_bytes;
    }
    if (options_.linger.count() > 0 && !full)
      conn_.set_timer(options_.linger, [this] { pump(); });
    else
      pump();
  }

  // I/O thread. Turns everything queued into produce requests.
  void pump() {
    std::map<std::string, std::vector<Queued>> work;
    {
      std::lock_guard lock(mu_);
      work.swap(queued_);
      queued_bytes_ = 0;
      queued_count_ = 0;
      pump_scheduled_ = false;
      full_pump_posted_ = false;
    }
    for (auto& [topic, msgs] : work) {
      std::size_t i = 0;
      while (i < msgs.size()) {
        std::size_t bytes = 0, j = i;
        while (j < msgs.size() && j - i < options_.max_batch_messages &&
               (j == i || bytes + msgs[j].bytes <= options_.max_batch_bytes))
          bytes += msgs[j++].bytes;
        offer_batch(topic, std::vector<Queued>(std::make_move_iterator(msgs.begin() + static_cast<std::ptrdiff_t>(i)),
                                               std::make_move_iterator(msgs.begin() + static_cast<std::ptrdiff_t>(j))));
        i = j;
      }
    }
  }

  // I/O thread. An idempotent producer holds batches back while max_in_flight_batches are
  // unanswered: the broker recognises a resent batch only within its window.
  void offer_batch(const std::string& topic, std::vector<Queued> batch) {
    if (options_.idempotent && batches_in_flight_ >= options_.max_in_flight_batches) {
      held_.emplace_back(topic, std::move(batch));
      return;
    }
    send_batch(topic, std::move(batch));
  }

  void send_batch(const std::string& topic, std::vector<Queued> batch) {
    ++batches_in_flight_;
    auto& fbb = conn_.builder();
    fbb.Clear();
    std::vector<flatbuffers::Offset<wire::Message>> msgs;
    msgs.reserve(batch.size());
    for (const auto& q : batch) msgs.push_back(build_message(fbb, q.message));
    const std::uint64_t sequence = options_.idempotent ? ++sequence_ : 0;
    auto produce = wire::CreateProduce(fbb, fbb.CreateString(topic), fbb.CreateVector(msgs), producer_id_, sequence);
    std::uint64_t rid = conn_.next_request_id();
    fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, wire::Body::Produce, produce.Union()));
    auto shared = std::make_shared<std::vector<Queued>>(std::move(batch));
    conn_.request(rid, common::frame_bytes(fbb), Connection::Clock::now() + options_.request_timeout,
                  [this, shared](Result<const wire::Frame*> r) {
                    --batches_in_flight_;
                    complete(*shared, r);
                    while (!held_.empty() && batches_in_flight_ < std::max<std::size_t>(options_.max_in_flight_batches, 1)) {
                      auto [topic, batch] = std::move(held_.front());
                      held_.pop_front();
                      send_batch(topic, std::move(batch));
                    }
                  },
                  options_.idempotent);
  }

  void complete(std::vector<Queued>& batch, const Result<const wire::Frame*>& r) {
    const flatbuffers::Vector<const wire::MessageRef*>* offsets = nullptr;
    Error error;
    bool ok = r.ok();
    if (ok) {
      const auto* body = (*r)->body_as_ProduceOk();
      offsets = body ? body->offsets() : nullptr;
      if (!offsets || offsets->size() != batch.size()) {
        ok = false;
        error = Error(ErrorCode::kInternal, "broker answered the produce with the wrong number of offsets");
      }
    } else {
      error = r.error();
    }
    // The room goes back before the callbacks run, so that a callback may send the next
    // message; the count flush() waits on drops after them, so that flush() returns only
    // once every callback has run.
    std::size_t bytes = 0;
    for (const auto& q : batch) bytes += q.bytes;
    release_room(batch.size(), bytes);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!batch[i].cb) continue;
      if (ok)
        batch[i].cb(SendReceipt{offsets->Get(static_cast<flatbuffers::uoffset_t>(i))->partition(),
                                offsets->Get(static_cast<flatbuffers::uoffset_t>(i))->offset()});
      else
        batch[i].cb(error);
    }
    finished(batch.size());
  }

  void release_room(std::size_t count, std::size_t bytes) {
    {
      std::lock_guard lock(mu_);
      in_flight_bytes_ -= bytes;
      in_flight_ -= count;
    }
    space_cv_.notify_all();
  }

  void finished(std::size_t count) {
    {
      std::lock_guard lock(mu_);
      outstanding_ -= count;
    }
    done_cv_.notify_all();
  }

  // What is taken, for an error message. mu_ held.
  std::string usage() const {
    return std::to_string(in_flight_) + " message(s) of " + std::to_string(in_flight_bytes_) +
           " bytes in flight; max_in_flight_messages = " + std::to_string(options_.max_in_flight_messages) +
           ", max_buffered_bytes = " + std::to_string(options_.max_buffered_bytes);
  }

  void fail_queued(const Error& e) {
    std::map<std::string, std::vector<Queued>> work;
    {
      std::lock_guard lock(mu_);
      work.swap(queued_);
      queued_bytes_ = queued_count_ = 0;
    }
    for (auto& [topic, msgs] : work) {
      std::size_t bytes = 0;
      for (const auto& q : msgs) bytes += q.bytes;
      release_room(msgs.size(), bytes);
      for (auto& q : msgs)
        if (q.cb) q.cb(e);
      finished(msgs.size());
    }
  }

  Producer::Options options_;
  // The idempotent producer's identity: random, so two producers never share one, and
  // never 0 (which means "not idempotent" on the wire).
  const std::uint64_t producer_id_ =
      options_.idempotent ? (std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32) | 1) : 0;
  std::uint64_t sequence_ = 0;  // I/O thread: the last batch's sequence number
  std::size_t batches_in_flight_ = 0;  // I/O thread
  std::deque<std::pair<std::string, std::vector<Queued>>> held_;  // I/O thread: waiting for room
  Connection conn_;
  std::mutex mu_;
  std::condition_variable space_cv_;
  std::condition_variable done_cv_;
  std::map<std::string, std::vector<Queued>> queued_;  // guarded by mu_
  std::size_t queued_bytes_ = 0;    // guarded by mu_: bytes in queued_
  std::size_t queued_count_ = 0;    // guarded by mu_: messages in queued_
  std::size_t in_flight_bytes_ = 0;  // guarded by mu_: bytes of messages queued or sent, unanswered
  std::size_t in_flight_ = 0;        // guarded by mu_: messages queued or sent, unanswered
  std::size_t outstanding_ = 0;      // guarded by mu_: in flight, or their callback still running
  bool pump_scheduled_ = false;     // guarded by mu_
  bool full_pump_posted_ = false;   // guarded by mu_
};

}  // namespace detail

Producer::Producer(Options options)
    : impl_(std::make_unique<detail::ProducerImpl>(options)), options_request_timeout_(options.request_timeout) {}
Producer::~Producer() = default;

Result<SendReceipt> Producer::send(std::string_view topic, Message message, Millis timeout) {
  return impl_->send(topic, std::move(message), timeout);
}

void Producer::send_async(std::string_view topic, Message message, SendCallback callback) {
  impl_->send_async(topic, std::move(message), std::move(callback));
}

Status Producer::flush(Millis timeout) { return impl_->flush(timeout); }

std::uint32_t Producer::max_message_bytes() const { return impl_->max_message_bytes(); }

}  // namespace txmq::client
