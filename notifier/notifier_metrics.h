// The notifier's metric families, registered once; subscriptions look up their children.
#pragma once

#include "metrics/registry.h"

namespace txmq::notifier {

struct NotifierMetrics {
  explicit NotifierMetrics(metrics::Registry& r)
      : received(r.counter_family("txmq_notifier_messages_received_total",
                                  "Deliveries taken from the broker, retries included.", {"subscription"})),
        attempts(r.counter_family("txmq_notifier_attempts_total",
                                  "HTTP attempts by endpoint (scheme://host:port, or other past "
                                  "max_endpoint_series) and outcome: success, "
                                  "server_error, throttled, client_error, gone, timeout, connection_error, "
                                  "wrong_body.",
                                  {"subscription", "endpoint", "outcome"})),
        gave_up(r.counter_family("txmq_notifier_gave_up_total",
                                 "Messages given up on and recorded to the subscription's give-up topic, by "
                                 "reason: max_attempts, gone, url_invalid, url_not_allowed, address_not_allowed.",
                                 {"subscription", "reason"})),
        gave_up_truncated(r.counter_family("txmq_notifier_gave_up_truncated_total",
                                           "Give-up records cut to fit the broker's max_message_bytes (the body's "
                                           "tail, then key, headers and details left out).",
                                           {"subscription"})),
        deferred(r.counter_family("txmq_notifier_deferred_total",
                                  "Deliveries handed back unsent, not counted as attempts, by reason: "
                                  "circuit_open, endpoint_busy, endpoint_limit, stopping.",
                                  {"subscription", "reason"})),
        endpoints(r.gauge_family("txmq_notifier_endpoints",
                                 "Endpoint states (breaker, request slots) held, at most max_endpoints.",
                                 {"subscription"})),
        endpoints_evicted(r.counter_family("txmq_notifier_endpoints_evicted_total",
                                           "Idle endpoint states dropped to make room under max_endpoints; their "
                                           "breakers are forgotten.",
                                           {"subscription"})),
        endpoints_folded(r.counter_family("txmq_notifier_endpoint_series_folded_total",
                                          "Endpoint states counted under endpoint=\"other\" because "
                                          "max_endpoint_series endpoints already have a label of their own.",
                                          {"subscription"})),
        duration(r.histogram_family("txmq_notifier_request_duration_seconds",
                                    "Time from sending a request to its response or error.", {"subscription"},
                                    {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30})),
        in_flight(r.gauge_family("txmq_notifier_requests_in_flight", "HTTP requests in flight.", {"subscription"})),
        breaker(r.gauge_family("txmq_notifier_breaker_state",
                               "Circuit breaker of each endpoint: 0 closed, 1 open, 2 half-open (probing).",
                               {"subscription", "endpoint"})) {}

  metrics::Family<metrics::Counter>& received;
  metrics::Family<metrics::Counter>& attempts;
  metrics::Family<metrics::Counter>& gave_up;
  metrics::Family<metrics::Counter>& gave_up_truncated;
  metrics::Family<metrics::Counter>& deferred;
  metrics::Family<metrics::Gauge>& endpoints;
  metrics::Family<metrics::Counter>& endpoints_evicted;
  metrics::Family<metrics::Counter>& endpoints_folded;
  metrics::Family<metrics::Histogram>& duration;
  metrics::Family<metrics::Gauge>& in_flight;
  metrics::Family<metrics::Gauge>& breaker;
};

}  // namespace txmq::notifier
