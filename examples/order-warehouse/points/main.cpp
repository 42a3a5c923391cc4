// points-service: credits loyalty points for paid orders, from the notifier's HTTP
// callbacks, once per webhook-id; reconciles the callbacks the notifier gave up on.
//
//   points-service --broker HOST:PORT --db points.db --listen 127.0.0.1:PORT
//                  --secret whsec_<base64> [--gave-up-topic notifier-points.gave-up]
//                  [--tls-ca FILE] [--user NAME --password-file FILE]
//
// The broker flags are in shared/service_runtime.h. With authentication on, user NAME
// needs: consume on the gave-up topic and group points-reconcile.
//
// HTTP: POST /points — the order JSON as the body, signed with Standard Webhooks headers.
// 204 credited (or credited before), 401 bad signature or stale timestamp, 400 not an
// order, 500 database trouble (the notifier retries).
// Stdout: "listening on HOST:PORT", then "ready" once the reconciliation consumer is
// subscribed. SIGTERM or SIGINT: exit 0.

#include "http_listen.h"
#include "points_db.h"
#include "reconcile.h"
#include "service_runtime.h"
#include "webhook_signature.h"

using namespace orders_example;
using namespace txmq::client;

int main(int argc, char** argv) {
  block_stop_signals();
  set_service_name("points");
  Flags flags(argc, argv);
  const BrokerSettings broker = broker_settings(flags);
  PointsDb db(flags.require("db"));
  // Five minutes, as Standard Webhooks suggests: a retry is signed afresh, so only a replay
  // of an old request is refused.
  const WebhookVerifier verifier(flags.require("secret"), std::chrono::seconds(300));

  httplib::Server http;
  http.Post("/points", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.get_header_value("webhook-id");
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
    if (auto why = verifier.verify(id, req.get_header_value("webhook-timestamp"), req.body,
                                   req.get_header_value("webhook-signature"), now.count());
        !why.empty()) {
      log_line("refused " + (id.empty() ? std::string("a request") : id) + ": " + why);
      res.status = 401;
      return;
    }
    auto order = order_from_json(req.body);
    if (!order) {
      res.status = 400;
      return;
    }
    try {
      if (!db.credit(id, *order, CreditSource::kWebhook))
        log_line("duplicate " + id + " (attempt " + req.get_header_value(txmq::kNotifierAttemptHeader) + "): already credited");
      res.status = 204;
    } catch (const SqliteError& e) {
      log_line(std::string("credit failed: ") + e.what());
      res.status = 500;
    }
  });

  const std::string listen = flags.require("listen");
  std::thread server;
  const int port = listen_http(http, listen, server);
  if (port < 0) {
    log_line("cannot listen on " + listen);
    return 1;
  }
  say("listening on " + listen.substr(0, listen.rfind(':')) + ":" + std::to_string(port));

  auto co = client_options<Consumer::Options>(broker, "points-reconcile");
  co.topic = flags.get("gave-up-topic", txmq::gave_up_topic("notifier-points"));
  co.group = "points-reconcile";
  Consumer gave_up(co, [&](Consumer& self, const Delivery& d) { reconcile_gave_up(db, self, d); });
  int rc = 0;
  if (auto st = gave_up.wait_subscribed(std::chrono::seconds(30)); !st) {
    log_line("cannot subscribe to " + co.topic + ": " + st.error().describe());
    rc = 1;
  } else {
    say("ready");
    wait_for_stop_signal();
    (void)gave_up.flush_acks(std::chrono::seconds(5));
  }
  http.stop();
  server.join();
  log_line("stopped");
  return rc;
}
