// txmq-notifier: the process. One libuv loop runs every subscription, the HTTP engine and
// the /metrics endpoint; the client library's threads post into it.
#pragma once

#include <uv.h>

#include <memory>
#include <vector>

#include "metrics/http_endpoint.h"
#include "metrics/registry.h"
#include "notifier/config.h"
#include "http/http_client.h"
#include "notifier/loop_post.h"
#include "notifier/notifier_metrics.h"
#include "notifier/subscription.h"
#include "txmq/client.h"

namespace txmq::notifier {

class Notifier {
 public:
  explicit Notifier(NotifierConfig config);
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Starts every subscription (failing fast, with a message naming it, when the broker
  // cannot be reached or a topic is missing), prints "ready", serves until SIGINT or
  // SIGTERM, then drains and returns 0; 1 when it could not start.
  int run();

 private:
  Status start();
  void stop();        // drains the subscriptions, then closes()
  void close_all();   // releases every handle; uv_run then returns

  NotifierConfig config_;
  uv_loop_t loop_;
  metrics::Registry registry_;
  std::unique_ptr<NotifierMetrics> metrics_;
  std::unique_ptr<LoopPost> post_;
  std::unique_ptr<http::HttpClient> http_;
  std::unique_ptr<metrics::HttpEndpoint> endpoint_;
  std::unique_ptr<client::Producer> records_;  // give-up records
  std::vector<std::unique_ptr<Subscription>> subscriptions_;
  uv_signal_t sigint_, sigterm_;
  bool stopping_ = false;
  std::size_t draining_ = 0;  // subscriptions not yet drained
  int exit_code_ = 0;
};

}  // namespace txmq::notifier
