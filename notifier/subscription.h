// One subscription at work: consumes its topic as its group, POSTs each message to its
// endpoint within the endpoint's concurrency and circuit breaker, and turns each response
// into a verdict for the broker: ack, nack with the schedule's delay, or give up (record,
// then ack). Runs on the notifier's loop thread; the consumer's callbacks are posted to it.
#pragma once

#include <uv.h>

#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <random>
#include <set>
#include <string>

#include "notifier/attempt_log.h"
#include "notifier/breaker.h"
#include "notifier/config.h"
#include "http/http_client.h"
#include "notifier/loop_post.h"
#include "notifier/notifier_metrics.h"
#include "txmq/client.h"

namespace txmq::notifier {

class Subscription {
 public:
  // Everything passed by reference outlives the subscription. Its consumer connects with
  // `connection` (NotifierConfig::client_options). Thread: the loop's.
  Subscription(uv_loop_t* loop, SubscriptionConfig config, client::ClientOptions connection, http::HttpClient& http,
               LoopPost& post, client::Producer& records, NotifierMetrics& metrics);
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Creates the give-up topic if missing, sets the group's lease and delivery limit, and
  // subscribes. Blocks up to `timeout`; call before the loop runs. kUnknownTopic, kTimeout...
  Status start(client::Admin& admin, std::chrono::milliseconds timeout);

  // Stops taking messages, hands back those not yet sent, and calls `drained` on the loop
  // thread once every request in flight has ended and every verdict is durable.
  void stop(std::function<void()> drained);

  const SubscriptionConfig& config() const { return config_; }

 private:
  struct Endpoint;
  struct Job;

  void take(client::Delivery delivery);
  void pump(Endpoint& e);
  void send(Endpoint& e, Job job);
  void on_response(Endpoint& e, Job job, std::uint64_t started_ms, http::HttpResponse response);
  void give_up(Job job, std::string reason, std::optional<AttemptRecord> last, std::string detail = {});
  void defer(Job job, std::string_view reason, std::chrono::milliseconds delay);
  void breaker_changed(Endpoint& e);
  void maybe_drained();
  // The endpoint's state, created on first use; nullptr when max_endpoints are held and
  // none is idle (nothing in flight or queued) to make room.
  Endpoint* endpoint_for(const std::string& origin);
  // Whether the job's URL (from its header) may be sent: fills job.url, or gives it up.
  bool resolve_url(Job& job);

  uv_loop_t* loop_;
  SubscriptionConfig config_;
  client::ClientOptions connection_;  // its consumer's: broker, client name, TLS
  http::HttpClient& http_;
  LoopPost& post_;
  client::Producer& records_;
  NotifierMetrics& metrics_;
  std::string signing_key_;  // decoded secret; empty: unsigned
  std::unique_ptr<client::Consumer> consumer_;
  std::map<std::string, std::unique_ptr<Endpoint>> endpoints_;  // by origin; max_endpoints
  // Origins with an endpoint label of their own (max_endpoint_series at most); endpoints
  // beyond them share endpoint="other", so that message-chosen URLs cannot grow the page.
  std::set<std::string> labelled_;
  std::size_t recording_ = 0;  // give-up records not yet confirmed
  bool paused_ = false;        // the consumer's window is 0 (a breaker is open)
  bool stopping_ = false;
  bool timer_closed_ = false;
  std::function<void()> drained_;
  uv_timer_t resume_timer_;    // resumes the consumer when a cool-down ends
  std::mt19937_64 rng_{std::random_device{}()};
  metrics::Counter* received_;
  metrics::Gauge* in_flight_;
  metrics::Histogram* duration_;
  metrics::Gauge* endpoints_held_;
  metrics::Counter* endpoints_evicted_;
  metrics::Counter* endpoints_folded_;
  metrics::Counter* gave_up_truncated_;
};

}  // namespace txmq::notifier
