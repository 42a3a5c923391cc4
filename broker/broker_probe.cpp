#include "broker/broker_probe.h"

#include <string>

namespace txmq::broker {

BrokerProbe::BrokerProbe(metrics::Registry& r)
    : produced_(r.counter_family("txmq_messages_produced_total", "Messages appended to a topic.", {"topic"})),
      produced_bytes_(r.counter_family("txmq_produced_bytes_total",
                                       "Key, header and body bytes appended to a topic.", {"topic"})),
      delivered_(r.counter_family("txmq_messages_delivered_total",
                                  "Deliveries sent to consumers, redeliveries included.", {"topic", "group"})),
      redelivered_(r.counter_family("txmq_messages_redelivered_total",
                                    "Deliveries of a message after its first one.", {"topic", "group"})),
      acked_(r.counter_family("txmq_messages_acked_total", "Messages acknowledged by a consumer group.",
                              {"topic", "group"})),
      nacked_(r.counter_family("txmq_messages_failed_total",
                               "Failed deliveries: nacks, expired leases, consumers gone.", {"topic", "group"})),
      dead_lettered_(r.counter_family("txmq_messages_dead_lettered_total",
                                      "Messages moved to the group's dead-letter topic.", {"topic", "group"})),
      lag_(r.gauge_family("txmq_consumer_lag_messages",
                          "Messages in the topic the group has not acknowledged yet.", {"topic", "group"})),
      in_flight_(r.gauge_family("txmq_consumer_in_flight_messages",
                                "Messages delivered to the group's consumers and not yet acknowledged.",
                                {"topic", "group"})),
      consumers_(r.gauge_family("txmq_consumers", "Connected consumers of the group.", {"topic", "group"})),
      request_errors_(r.counter_family("txmq_request_errors_total",
                                       "Requests answered with an error, by error code.", {"code"})),
      connections_accepted_(r.counter("txmq_connections_accepted_total", "Client connections accepted.")),
      connections_closed_(r.counter_family("txmq_connections_closed_total",
                                           "Connections the broker closed for breaking a limit, by reason.",
                                           {"reason"})),
      accept_failures_(r.counter("txmq_accept_failures_total",
                                 "Connections that could not be accepted (out of file descriptors).")),
      authentications_(r.counter_family("txmq_authentications_total",
                                        "Connections authenticated, by mechanism: scram, certificate, anonymous.",
                                        {"mechanism"})),
      authentication_failures_(r.counter_family(
          "txmq_authentication_failures_total",
          "Hellos refused: credentials, mechanism, required, malformed, permission.", {"reason"})),
      auth_reloads_(r.counter_family("txmq_auth_reloads_total",
                                     "Reloads of the users and ACL files (SIGHUP), by result: ok, error.",
                                     {"result"})),
      retention_deleted_(r.counter("txmq_retention_deleted_messages_total", "Messages deleted by retention.")),
      txn_prepared_(r.counter("txmq_transactions_prepared_total", "Half messages prepared.")),
      txn_ended_(r.counter_family("txmq_transactions_ended_total",
                                  "Transactions ended, by outcome: committed, rolled_back, parked.", {"outcome"})),
      txn_checks_sent_(r.counter("txmq_transaction_checks_sent_total", "Check-backs sent to producer groups.")),
      txn_checks_answered_(r.counter("txmq_transaction_checks_answered_total",
                                     "Checked transactions whose producer then ended them (any answer).")) {}

void BrokerProbe::txn_ended(wire::TxnState outcome) {
  switch (outcome) {
    case wire::TxnState::Committed: return txn_ended_.with({"committed"}).inc();
    case wire::TxnState::RolledBack: return txn_ended_.with({"rolled_back"}).inc();
    case wire::TxnState::Parked: return txn_ended_.with({"parked"}).inc();
    default: return;
  }
}

TopicSeries BrokerProbe::topic(std::string_view topic) {
  return TopicSeries{&produced_.with({topic}), &produced_bytes_.with({topic})};
}

GroupSeries BrokerProbe::group(std::string_view topic, std::string_view group) {
  return GroupSeries{&delivered_.with({topic, group}),     &redelivered_.with({topic, group}),
                     &acked_.with({topic, group}),         &nacked_.with({topic, group}),
                     &dead_lettered_.with({topic, group}), &lag_.with({topic, group}),
                     &in_flight_.with({topic, group}),     &consumers_.with({topic, group})};
}

void BrokerProbe::request_error(ErrorCode code) {
  auto i = static_cast<std::size_t>(code);
  if (i >= error_series_.size()) return;
  if (!error_series_[i]) error_series_[i] = &request_errors_.with({code_name(code)});
  error_series_[i]->inc();
}

}  // namespace txmq::broker
