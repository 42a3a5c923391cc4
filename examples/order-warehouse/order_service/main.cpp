// order-service: takes orders over HTTP, places each with a transactional message, answers
// the broker's check-backs from its database, and cancels orders the warehouse gave up on.
//
//   order-service --broker HOST:PORT --db orders.db [--listen 127.0.0.1:0]
//                 [--tls-ca FILE] [--user NAME --password-file FILE]
//                 [--pause-after-prepare N] [--pause-after-local-commit N]
//
// The broker flags are in shared/service_runtime.h. With authentication on, user NAME
// needs: produce on topic orders, transact on producer group order-service, and consume on
// topic order-cancellations and group order-service.
//
// HTTP: POST /orders with an order as JSON ({"order_id","customer","sku","quantity",
// "amount_cents"}) answers 201 committed, 202 pending (the check-back will commit it),
// 422 rolled back, 503 broker unavailable, 400 not an order.
// Stdout: "listening on HOST:PORT", then "ready" once the cancellation consumer is
// subscribed. SIGTERM or SIGINT: stop, exit 0.

#include "flat_json.h"
#include "http_listen.h"
#include "order_db.h"
#include "place_order.h"
#include "service_runtime.h"

using namespace orders_example;
using namespace txmq::client;

namespace {

const char* outcome_name(PlaceOutcome o) {
  switch (o) {
    case PlaceOutcome::kCommitted: return "committed";
    case PlaceOutcome::kRolledBack: return "rolled_back";
    case PlaceOutcome::kPending: return "pending";
    default: return "unavailable";
  }
}

int status_of(PlaceOutcome o) {
  switch (o) {
    case PlaceOutcome::kCommitted: return 201;
    case PlaceOutcome::kRolledBack: return 422;
    case PlaceOutcome::kPending: return 202;
    default: return 503;
  }
}

// The compensation's last step: the warehouse gave up on an order (see
// warehouse/compensation.h) and asks, through `order-cancellations`, to cancel it.
void on_cancellation(OrderDb& db, Consumer& consumer, const Delivery& d) {
  auto c = cancellation_from_json(d.body);
  if (!c) {
    consumer.terminate(d, "not a cancellation");
    return;
  }
  try {
    if (db.cancel(c->order_id, c->reason)) log_line("compensated: cancelled order " + c->order_id + " (" + c->reason + ")");
    consumer.ack(d);  // cancelling twice changes nothing, so a redelivery is harmless
  } catch (const SqliteError& e) {
    consumer.nack(d, std::chrono::milliseconds(0), e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  block_stop_signals();
  set_service_name("order-service");
  Flags flags(argc, argv);
  const BrokerSettings broker = broker_settings(flags);
  OrderDb db(flags.require("db"));

  auto po = client_options<TransactionalProducer::Options>(broker, "order-service");
  po.producer_group = std::string(kOrderProducerGroup);
  // Runs on the producer's I/O thread when the broker asks about a transaction this group
  // prepared (from this process or from one that was killed).
  TransactionalProducer producer(po, [&db](const TransactionCheck& check) {
    auto answer = db.check(check.message.key, check.transaction_id);
    log_line("check-back " + std::to_string(check.transaction_id) + " for " + check.message.key + ": " +
             (answer == LocalTransactionState::kCommit ? "commit" : "rollback"));
    return answer;
  });
  OrderPlacer placer(producer, db,
                     CrashPoints{flags.number("pause-after-prepare", 0), flags.number("pause-after-local-commit", 0)});

  auto co = client_options<Consumer::Options>(broker, "order-service-cancellations");
  co.topic = std::string(kCancellationsTopic);
  co.group = "order-service";
  Consumer cancellations(co, [&](Consumer& self, const Delivery& d) { on_cancellation(db, self, d); });

  httplib::Server http;
  http.Post("/orders", [&](const httplib::Request& req, httplib::Response& res) {
    auto order = order_from_json(req.body);
    if (!order) {
      res.status = 400;
      res.set_content(R"({"error":"not an order"})", "application/json");
      return;
    }
    PlaceResult r = placer.place(*order);
    res.status = status_of(r.outcome);
    res.set_content(JsonWriter().field("order_id", order->order_id).field("state", outcome_name(r.outcome))
                        .field("detail", r.detail).str(),
                    "application/json");
  });

  const std::string listen = flags.get("listen", "127.0.0.1:0");
  std::thread server;
  const int port = listen_http(http, listen, server);
  if (port < 0) {
    log_line("cannot listen on " + listen);
    return 1;
  }
  say("listening on " + listen.substr(0, listen.rfind(':')) + ":" + std::to_string(port));

  if (auto st = cancellations.wait_subscribed(std::chrono::seconds(30)); !st) {
    log_line("cannot subscribe to " + std::string(kCancellationsTopic) + ": " + st.error().describe());
    http.stop();
    server.join();
    return 1;
  }
  say("ready");
  wait_for_stop_signal();
  http.stop();
  server.join();
  (void)cancellations.flush_acks(std::chrono::seconds(5));
  log_line("stopped");
  return 0;
}
