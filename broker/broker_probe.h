#pragma once
// The broker's metrics: what the loop thread counts about topics, groups, connections and
// requests. Series are looked up once (per topic, per group) and cached by their owners, so
// an update on the hot path is one relaxed atomic add.
// Concurrency: loop thread only (the metrics themselves may be read from any thread).

#include <array>
#include <string_view>

#include "common/errors.h"
#include "txmq_generated.h"
#include "metrics/registry.h"

namespace txmq::broker {

// A topic's series; null pointers when metrics are off.
struct TopicSeries {
  metrics::Counter* produced = nullptr;  // messages appended
  metrics::Counter* bytes = nullptr;     // key + header + body bytes appended
};

// A consumer group's series on one topic; null pointers when metrics are off.
struct GroupSeries {
  metrics::Counter* delivered = nullptr;    // deliveries sent, first and later
  metrics::Counter* redelivered = nullptr;  // deliveries after the first
  metrics::Counter* acked = nullptr;
  metrics::Counter* nacked = nullptr;         // failed deliveries: nack, lease expiry, disconnect
  metrics::Counter* dead_lettered = nullptr;
  metrics::Gauge* lag = nullptr;            // messages not yet acknowledged
  metrics::Gauge* in_flight = nullptr;      // delivered, awaiting an ack
  metrics::Gauge* consumers = nullptr;
};

class BrokerProbe {
 public:
  explicit BrokerProbe(metrics::Registry& registry);

  TopicSeries topic(std::string_view topic);
  GroupSeries group(std::string_view topic, std::string_view group);
  void request_error(ErrorCode code);
  void connection_accepted() { connections_accepted_.inc(); }
  // A connection the broker closed for a limit: hello_timeout, frame_timeout,
  // frame_too_large, malformed_frame; or over TLS: tls_handshake_failed, not_tls,
  // tls_on_plain_port.
  void connection_closed(std::string_view reason) { connections_closed_.with({reason}).inc(); }
  void accept_failed() { accept_failures_.inc(); }
  // A connection authenticated: mechanism is scram, certificate or anonymous.
  void authenticated(std::string_view mechanism) { authentications_.with({mechanism}).inc(); }
  // A hello refused: reason is credentials (wrong password or unknown user: one reason, as
  // the client is told), mechanism (one this broker does not take), required (none given),
  // malformed (a broken exchange), permission (the user may not act for its producer group).
  void authentication_failed(std::string_view reason) { authentication_failures_.with({reason}).inc(); }
  // The users and ACL files were read again (SIGHUP): result is ok or error.
  void auth_reloaded(std::string_view result) { auth_reloads_.with({result}).inc(); }
  void retention_deleted(std::size_t n) { retention_deleted_.inc(n); }
  void txn_prepared(std::size_t n) { txn_prepared_.inc(n); }
  void txn_ended(wire::TxnState outcome);
  void txn_check_sent() { txn_checks_sent_.inc(); }
  void txn_check_answered() { txn_checks_answered_.inc(); }

 private:
  metrics::Family<metrics::Counter>& produced_;
  metrics::Family<metrics::Counter>& produced_bytes_;
  metrics::Family<metrics::Counter>& delivered_;
  metrics::Family<metrics::Counter>& redelivered_;
  metrics::Family<metrics::Counter>& acked_;
  metrics::Family<metrics::Counter>& nacked_;
  metrics::Family<metrics::Counter>& dead_lettered_;
  metrics::Family<metrics::Gauge>& lag_;
  metrics::Family<metrics::Gauge>& in_flight_;
  metrics::Family<metrics::Gauge>& consumers_;
  metrics::Family<metrics::Counter>& request_errors_;
  metrics::Counter& connections_accepted_;
  metrics::Family<metrics::Counter>& connections_closed_;
  metrics::Counter& accept_failures_;
  metrics::Family<metrics::Counter>& authentications_;
  metrics::Family<metrics::Counter>& authentication_failures_;
  metrics::Family<metrics::Counter>& auth_reloads_;
  metrics::Counter& retention_deleted_;
  metrics::Counter& txn_prepared_;
  metrics::Family<metrics::Counter>& txn_ended_;
  metrics::Counter& txn_checks_sent_;
  metrics::Counter& txn_checks_answered_;
  std::array<metrics::Counter*, 100> error_series_{};  // by wire code, filled on first use
};

}  // namespace txmq::broker
