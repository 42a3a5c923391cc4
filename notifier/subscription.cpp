#include "notifier/subscription.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>

#include "notifier/attempt_log.h"
#include "notifier/give_up.h"
#include "notifier/outcome.h"
#include "notifier/signature.h"
#include "notifier/url.h"
#include "common/frame.h"
#include "common/well_known.h"

namespace txmq::notifier {
namespace {

std::uint64_t wall_ms() {
  using namespace std::chrono;
  return static_cast<std::uint64_t>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

const std::string* header(const client::Delivery& d, std::string_view name) {
  for (const auto& h : d.headers)
    if (h.name.size() == name.size() &&
        std::equal(h.name.begin(), h.name.end(), name.begin(), [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; }))
      return &h.value;
  return nullptr;
}

// The Standard Webhooks id of a message: the same on every attempt, unique per message.
std::string webhook_id(const client::Delivery& d) {
  return d.topic + ":" + std::to_string(d.partition) + ":" + std::to_string(d.offset);
}

// A value that would end the header line early is not sent as a header.
bool header_safe(const std::string& v) { return v.find_first_of("\r\n") == std::string::npos; }

constexpr std::size_t kOutcomes = 8;

// The broker's limits.max_message_bytes default, assumed for a give-up record until the
// records producer has heard the broker's own limit.
constexpr std::size_t kAssumedMaxMessageBytes = 1u << 20;

// A record key kept only when it leaves this much of the limit to the record itself.
constexpr std::size_t kMinRecordBytes = 4096;

// The endpoint label shared by endpoints past max_endpoint_series.
constexpr std::string_view kOtherEndpoint = "other";

}  // namespace

struct Subscription::Job {
  client::Delivery delivery;
  std::uint32_t attempt = 1;    // this delivery's attempt number
  std::uint32_t deferrals = 0;  // earlier deliveries handed back unsent
  std::string url;              // normalised (what is requested); as found when refused
  std::string origin;           // scheme://host:port of url
  bool allow_non_public = true; // may connect to loopback, private... addresses
};

struct Subscription::Endpoint {
  std::string origin;
  CircuitBreaker breaker;
  std::deque<Job> queue;      // waiting for a request slot
  std::uint32_t in_flight = 0;
  std::uint64_t last_used_ms = 0;  // loop time of the last message taken: eviction order
  std::array<metrics::Counter*, kOutcomes> attempts{};  // by Outcome
  metrics::Gauge* breaker_state = nullptr;  // none under endpoint="other"
};

Subscription::Subscription(uv_loop_t* loop, SubscriptionConfig config, client::ClientOptions connection,
                           http::HttpClient& http, LoopPost& post, client::Producer& records, NotifierMetrics& metrics)
    : loop_(loop),
      config_(std::move(config)),
      connection_(std::move(connection)),
      http_(http),
      post_(post),
      records_(records),
      metrics_(metrics),
      received_(&metrics.received.with({config_.name})),
      in_flight_(&metrics.in_flight.with({config_.name})),
      duration_(&metrics.duration.with({config_.name})),
      endpoints_held_(&metrics.endpoints.with({config_.name})),
      endpoints_evicted_(&metrics.endpoints_evicted.with({config_.name})),
      endpoints_folded_(&metrics.endpoints_folded.with({config_.name})),
      gave_up_truncated_(&metrics.gave_up_truncated.with({config_.name})) {
  uv_timer_init(loop_, &resume_timer_);
  resume_timer_.data = this;
}

Subscription::~Subscription() = default;

Status Subscription::start(client::Admin& admin, std::chrono::milliseconds timeout) {
  const std::string at = "subscription '" + config_.name + "': ";
  if (!config_.secret.empty()) {
    auto key = decode_secret(config_.secret);
    if (!key) return Error(ErrorCode::kInvalidArgument, at + key.error().message);
    signing_key_ = std::move(*key);
  }
  // The notifier owns its group: the lease covers a request that waited for a slot behind
  // one other request and then ran to its timeout; the broker's delivery limit is only a
  // backstop, since the notifier gives up itself after max_attempts.
  if (auto t = admin.describe_topic(config_.topic, timeout); !t) {
    if (t.error().code == ErrorCode::kUnknownTopic)
      return Error(ErrorCode::kUnknownTopic, at + "topic '" + config_.topic +
                                                 "' does not exist (create it: txmq topic create " + config_.topic + ")");
    return Error(t.error().code, at + "topic '" + config_.topic + "': " + t.error().message);
  }
  client::GroupConfig group;
  group.mode = client::GroupMode::kShared;
  group.ack_wait = config_.request_timeout * 3 + std::chrono::seconds(10);
  client::RetrySchedule retry;
  retry.max_deliveries = 1'000'000;
  group.retry = retry;
  if (auto r = admin.configure_group(config_.group, config_.topic, group, timeout); !r)
    return Error(r.error().code, at + "configuring group '" + config_.group + "': " + r.error().message);
  // Created only when missing, so that with authorization on the notifier's user needs
  // create on it only then (describe and produce always).
  if (auto t = admin.describe_topic(config_.gave_up_topic, timeout); !t) {
    if (t.error().code != ErrorCode::kUnknownTopic)
      return Error(t.error().code, at + "give-up topic '" + config_.gave_up_topic + "': " + t.error().message);
    if (auto r = admin.create_topic(config_.gave_up_topic, 1, timeout); !r && r.error().code != ErrorCode::kTopicExists)
      return Error(r.error().code, at + "creating give-up topic '" + config_.gave_up_topic + "': " + r.error().message);
  }

  client::Consumer::Options options;
  static_cast<client::ClientOptions&>(options) = connection_;
  options.topic = config_.topic;
  options.group = config_.group;
  // Twice the concurrency: a slot that frees finds the next message already here.
  options.window = config_.concurrency * 2;
  consumer_ = std::make_unique<client::Consumer>(options, [this](const client::Delivery& d) {
    post_.post([this, d] { take(d); });
  });
  if (auto st = consumer_->wait_subscribed(timeout); !st)
    return Error(st.error().code, at + "subscribing: " + st.error().message);
  return {};
}

Subscription::Endpoint* Subscription::endpoint_for(const std::string& origin) {
  if (auto it = endpoints_.find(origin); it != endpoints_.end()) return it->second.get();
  if (endpoints_.size() >= config_.max_endpoints) {
    // Make room by forgetting the least recently used idle endpoint. Nothing refers to an
    // idle one: no request callback (none in flight) and no queued job.
    auto victim = endpoints_.end();
    for (auto it = endpoints_.begin(); it != endpoints_.end(); ++it)
      if (it->second->in_flight == 0 && it->second->queue.empty() &&
          (victim == endpoints_.end() || it->second->last_used_ms < victim->second->last_used_ms))
        victim = it;
    if (victim == endpoints_.end()) return nullptr;
    if (victim->second->breaker_state) victim->second->breaker_state->set(0);
    endpoints_.erase(victim);
    endpoints_evicted_->inc();
  }
  std::string_view label = origin;
  if (!labelled_.contains(origin)) {
    if (labelled_.size() < config_.max_endpoint_series) {
      labelled_.insert(origin);
    } else {
      label = kOtherEndpoint;
      endpoints_folded_->inc();
    }
  }
  auto e = std::make_unique<Endpoint>(Endpoint{
      origin, CircuitBreaker(config_.breaker_failures, static_cast<std::uint64_t>(config_.breaker_cooldown.count())),
      {}, 0, 0, {}, nullptr});
  for (std::size_t i = 0; i < kOutcomes; ++i)
    e->attempts[i] = &metrics_.attempts.with({config_.name, label, outcome_name(static_cast<Outcome>(i))});
  if (label != kOtherEndpoint) e->breaker_state = &metrics_.breaker.with({config_.name, label});
  Endpoint* raw = e.get();
  endpoints_.emplace(origin, std::move(e));
  endpoints_held_->set(static_cast<double>(endpoints_.size()));
  return raw;
}

bool Subscription::resolve_url(Job& job) {
  const std::string* raw = header(job.delivery, config_.url_header);
  if (!raw) {
    give_up(std::move(job), "url_invalid", std::nullopt, "the message has no '" + config_.url_header + "' header");
    return false;
  }
  job.url = *raw;
  // Refused URLs are given up here, before any endpoint exists for them: they spend no
  // attempt and count against no endpoint's breaker.
  auto url = parse_url(*raw, config_.max_url_bytes);
  if (!url) {
    give_up(std::move(job), "url_invalid", std::nullopt, url.error().message);
    return false;
  }
  const AllowedUrl* allowed = match_allowed(config_.allowed, *url);
  if (!allowed) {
    give_up(std::move(job), "url_not_allowed", std::nullopt,
            url->text + " is not under any allowed_urls entry (same scheme, host and port, path below the entry's)");
    return false;
  }
  job.url = url->text;
  job.origin = url->origin();
  // An entry naming an IP literal names the only address its URLs can reach: the operator
  // chose it, private or not. A name is checked on the address it resolves to.
  job.allow_non_public = config_.allow_private_networks || allowed->url.host_is_ip();
  return true;
}

void Subscription::take(client::Delivery d) {
  if (!consumer_) return;  // stopped: the broker hands it to the next consumer
  received_->inc();
  Job job;
  job.deferrals = deferrals(d.history);
  job.attempt = d.delivery_count > job.deferrals ? d.delivery_count - job.deferrals : 1;
  job.delivery = std::move(d);
  if (!config_.url.empty()) {
    job.url = config_.endpoint.text;
    job.origin = config_.endpoint.origin();
    job.allow_non_public = true;  // the operator chose it
  } else if (!resolve_url(job)) {
    return;
  }
  // Already tried max_attempts times: a crash (or a failed give-up record) came between the
  // last attempt and its verdict.
  if (job.attempt > config_.max_attempts) return give_up(std::move(job), "max_attempts", std::nullopt);
  if (stopping_) return defer(std::move(job), "stopping", std::chrono::milliseconds(1));

  Endpoint* endpoint = endpoint_for(job.origin);
  if (!endpoint) return defer(std::move(job), "endpoint_limit", std::chrono::milliseconds(1000));
  Endpoint& e = *endpoint;
  const std::uint64_t now = uv_now(loop_);
  e.last_used_ms = now;
  if (e.breaker.state() == CircuitBreaker::State::kOpen && now < e.breaker.open_until_ms())
    return defer(std::move(job), "circuit_open", std::chrono::milliseconds(e.breaker.open_until_ms() - now));
  // With url_header many endpoints share one window (twice the concurrency). A hanging
  // endpoint may hold its concurrency in requests and half that again queued, no more, so
  // that the others keep room in the window.
  if (!config_.url_header.empty() && e.queue.size() >= std::max<std::size_t>(1, config_.concurrency / 2))
    return defer(std::move(job), "endpoint_busy", std::chrono::milliseconds(1000));
  e.queue.push_back(std::move(job));
  pump(e);
}

void Subscription::pump(Endpoint& e) {
  while (!e.queue.empty() && e.in_flight < config_.concurrency) {
    const std::uint64_t now = uv_now(loop_);
    const auto before = e.breaker.state();
    if (!e.breaker.allow(now)) {
      if (e.breaker.state() == CircuitBreaker::State::kOpen) {
        // Hand back what waits here: it would only use up its lease during the cool-down.
        const auto wait = std::chrono::milliseconds(e.breaker.open_until_ms() - now);
        while (!e.queue.empty()) {
          defer(std::move(e.queue.front()), "circuit_open", wait);
          e.queue.pop_front();
        }
      }
      break;  // half-open: the others wait for the probe's answer
    }
    if (e.breaker.state() != before) breaker_changed(e);
    Job job = std::move(e.queue.front());
    e.queue.pop_front();
    send(e, std::move(job));
  }
}

void Subscription::send(Endpoint& e, Job job) {
  const auto& d = job.delivery;
  const std::string id = webhook_id(d);
  const std::int64_t ts = static_cast<std::int64_t>(wall_ms() / 1000);
  const std::string* type = header(d, "content-type");
  http::HttpRequest req;
  req.url = job.url;
  req.body = d.body;
  req.timeout = config_.request_timeout;
  req.max_response_bytes = config_.max_response_bytes;
  req.allow_non_public = job.allow_non_public;
  req.ca_file = config_.ca_file;
  req.headers = {
      "Content-Type: " + (type && header_safe(*type) ? *type : config_.content_type),
      "webhook-id: " + id,
      "webhook-timestamp: " + std::to_string(ts),
      std::string(kNotifierTopicHeader) + ": " + d.topic,
      std::string(kNotifierAttemptHeader) + ": " + std::to_string(job.attempt),
  };
  if (!signing_key_.empty()) req.headers.push_back("webhook-signature: " + sign(signing_key_, id, ts, d.body));
  ++e.in_flight;
  in_flight_->inc();
  const std::uint64_t started = wall_ms();
  http_.post(std::move(req), [this, &e, job = std::move(job), started](http::HttpResponse r) mutable {
    on_response(e, std::move(job), started, std::move(r));
  });
}

void Subscription::on_response(Endpoint& e, Job job, std::uint64_t started_ms, http::HttpResponse r) {
  --e.in_flight;
  in_flight_->dec();
  duration_->observe(r.seconds);
  if (!r.refused_address.empty()) {
    // Nothing was sent, and the endpoint is not at fault: no attempt, no breaker verdict
    // (a probe slot is handed back), and no retry, since the name will resolve the same.
    e.breaker.on_neutral();
    if (consumer_)
      give_up(std::move(job), "address_not_allowed", std::nullopt,
              "the host resolved to " + r.refused_address +
                  ", which only allow_private_networks = true or an allowed_urls entry naming that IP allows");
    pump(e);
    maybe_drained();
    return;
  }
  const Outcome outcome = classify(r, config_);
  e.attempts[static_cast<std::size_t>(outcome)]->inc();
  // An endpoint that answers at all is up, even when it refuses this message.
  const bool changed = endpoint_failure(outcome) ? e.breaker.on_failure(uv_now(loop_)) : e.breaker.on_success();
  if (changed) breaker_changed(e);

  AttemptRecord record{job.attempt,          started_ms, static_cast<std::uint64_t>(r.seconds * 1000),
                       std::string(outcome_name(outcome)), r.status,  r.error};
  if (!consumer_) {
    // Aborted at shutdown: the lease runs out and the broker delivers it again.
  } else if (outcome == Outcome::kSuccess) {
    consumer_->ack(job.delivery);
  } else if (outcome == Outcome::kGone) {
    give_up(std::move(job), "gone", record);
  } else if (job.attempt >= config_.max_attempts) {
    give_up(std::move(job), "max_attempts", record);
  } else {
    std::optional<std::chrono::milliseconds> retry_after;
    if (!r.retry_after.empty()) retry_after = parse_retry_after(r.retry_after, static_cast<std::int64_t>(wall_ms() / 1000));
    const auto delay = retry_delay(config_, job.attempt, retry_after, rng_);
    consumer_->nack(job.delivery, std::max(delay, std::chrono::milliseconds(1)), format_attempt(record));
  }
  pump(e);
  maybe_drained();
}

void Subscription::give_up(Job job, std::string reason, std::optional<AttemptRecord> last, std::string detail) {
  GiveUp g;
  g.webhook_id = webhook_id(job.delivery);
  g.subscription = config_.name;
  g.endpoint = job.url;
  g.reason = reason;
  g.detail = std::move(detail);
  g.at_ms = wall_ms();
  for (const auto& entry : job.delivery.history) {
    if (auto a = parse_attempt(entry)) g.attempts.push_back(std::move(*a));
    else if (!entry.starts_with("deferred=")) g.other_history.push_back(entry);
  }
  if (last) g.attempts.push_back(std::move(*last));

  // The record must fit the broker's max_message_bytes (key, body, and each header's bytes
  // plus its encoding), or it could never be recorded and the message never given up: it
  // is cut to fit.
  const std::uint32_t known_limit = records_.max_message_bytes();
  const std::size_t limit = known_limit ? known_limit : kAssumedMaxMessageBytes;
  client::Message record;
  record.headers = {{"content-type", "application/json"}, {"webhook-id", g.webhook_id}};
  std::size_t room = limit;
  for (const auto& h : record.headers)
    room -= std::min(room, h.name.size() + h.value.size() + common::kHeaderOverheadBytes);
  if (job.delivery.key.size() + kMinRecordBytes <= room) {
    record.key = job.delivery.key;
    room -= record.key.size();
  }
  bool truncated = false;
  record.body = give_up_json(g, job.delivery, room, &truncated);
  if (truncated) gave_up_truncated_->inc();
  ++recording_;
  const std::size_t attempts = g.attempts.size();
  // Record first, ack second: a crash between the two repeats the record (consumers of the
  // give-up topic dedupe on webhook_id) instead of losing it.
  records_.send_async(config_.gave_up_topic, std::move(record),
                      [this, job = std::move(job), reason, attempts](const Result<client::SendReceipt>& r) {
                        std::string error = r.ok() ? std::string() : r.error().message;
                        post_.post([this, job, reason, attempts, error] {
                          --recording_;
                          if (!consumer_) return maybe_drained();
                          if (error.empty()) {
                            consumer_->ack(job.delivery);
                            metrics_.gave_up.with({config_.name, reason}).inc();
                            spdlog::warn("subscription '{}': gave up on {}:{}:{} for {} after {} attempt(s) ({})",
                                         config_.name, job.delivery.topic, job.delivery.partition,
                                         job.delivery.offset, job.url, attempts, reason);
                          } else {
                            // Not an attempt: the next delivery finds max_attempts spent and
                            // tries to record the give-up again.
                            spdlog::error("subscription '{}': cannot record give-up of {}:{}:{}: {}", config_.name,
                                          job.delivery.topic, job.delivery.partition, job.delivery.offset, error);
                            consumer_->nack(job.delivery, std::chrono::milliseconds(5000),
                                            "give-up not recorded: " + error);
                          }
                          maybe_drained();
                        });
                      });
}

void Subscription::defer(Job job, std::string_view reason, std::chrono::milliseconds delay) {
  metrics_.deferred.with({config_.name, reason}).inc();
  // Spread the returns over a tenth of the wait, so a reopened endpoint is not hit by the
  // whole backlog in one instant.
  const auto spread = std::uniform_int_distribution<std::int64_t>(0, delay.count() / 10)(rng_);
  consumer_->nack(job.delivery, std::max(delay + std::chrono::milliseconds(spread), std::chrono::milliseconds(1)),
                  format_deferral(job.deferrals + 1, std::string(reason)));
}

void Subscription::breaker_changed(Endpoint& e) {
  if (e.breaker_state) e.breaker_state->set(static_cast<double>(e.breaker.state()));
  switch (e.breaker.state()) {
    case CircuitBreaker::State::kOpen: {
      const std::uint64_t now = uv_now(loop_);
      const std::uint64_t wait = e.breaker.open_until_ms() > now ? e.breaker.open_until_ms() - now : 0;
      spdlog::warn("subscription '{}': circuit open for {} ({} ms)", config_.name, e.origin, wait);
      // With one endpoint the whole subscription waits: pausing the consumer keeps the
      // backlog in the broker instead of cycling it through deferrals.
      if (config_.url_header.empty() && !paused_ && !stopping_) {
        paused_ = true;
        consumer_->pause();
        uv_timer_start(&resume_timer_, [](uv_timer_t* t) {
          auto* self = static_cast<Subscription*>(t->data);
          if (self->stopping_ || !self->paused_) return;
          self->paused_ = false;
          self->consumer_->resume();
        }, wait, 0);
      }
      break;
    }
    case CircuitBreaker::State::kHalfOpen:
      spdlog::info("subscription '{}': probing {}", config_.name, e.origin);
      break;
    case CircuitBreaker::State::kClosed:
      spdlog::info("subscription '{}': circuit closed for {}", config_.name, e.origin);
      break;
  }
}

void Subscription::stop(std::function<void()> drained) {
  stopping_ = true;
  drained_ = std::move(drained);
  if (consumer_) consumer_->pause();
  for (auto& [origin, e] : endpoints_) {
    while (!e->queue.empty()) {
      defer(std::move(e->queue.front()), "stopping", std::chrono::milliseconds(1));
      e->queue.pop_front();
    }
  }
  uv_timer_stop(&resume_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&resume_timer_), [](uv_handle_t* h) {
    auto* self = static_cast<Subscription*>(h->data);
    self->timer_closed_ = true;
    self->maybe_drained();
  });
}

void Subscription::maybe_drained() {
  if (!stopping_ || !timer_closed_ || !drained_ || recording_ > 0) return;
  for (const auto& [origin, e] : endpoints_)
    if (e->in_flight > 0) return;
  if (consumer_) {
    if (auto st = consumer_->flush_acks(std::chrono::seconds(10)); !st)
      spdlog::warn("subscription '{}': verdicts not confirmed at shutdown: {}", config_.name, st.error().message);
    consumer_.reset();
  }
  auto cb = std::move(drained_);
  drained_ = nullptr;
  cb();
}

}  // namespace txmq::notifier
