#pragma once
// Who is on the other end of a connection. With auth.enabled a hello is authenticated by
// SCRAM-SHA-256 against the users file, or by the name (CN) of a client certificate the TLS
// handshake verified, or is let in as "anonymous" when auth.allow_anonymous says so; the
// rules of the ACL file then say what each user may do (broker/acl.h). Without
// auth.enabled every hello is let in unrestricted.
//
// The exchange (schema/txmq.fbs): Hello{mechanism, client-first} -> AuthChallenge ->
// AuthResponse -> HelloOk{user, server-final}. A failure is answered with one Error,
// AuthenticationFailed "authentication failed", whatever went wrong (an unknown user reads
// the same as a wrong password: it gets decoy credentials), after auth.failure_delay_ms
// during which the connection reads nothing; the reason is logged with the peer and counted.
//
// Owns: the users and the rules in force, each connection's exchange in progress, the
// failures waiting out their delay, the secret decoys are derived from.
// Lifecycle: made by the Broker at start (load() reads both files; a broker whose files do
// not load does not start); reload() on SIGHUP reads them again and keeps the old ones if
// either fails; close() before the loop ends.
// Concurrency: loop thread only.

#include <uv.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>

#include "broker/acl.h"
#include "broker/audit.h"
#include "broker/broker_probe.h"
#include "broker/config.h"
#include "broker/connection.h"
#include "broker/responder.h"
#include "common/ids.h"
#include "common/scram.h"
#include "common/users_file.h"
#include "txmq_generated.h"

namespace txmq::broker {

class Authenticator {
 public:
  // What a successful authentication tells the hello: the user ("" without auth.enabled)
  // and the mechanism's last message for HelloOk (SCRAM's server-final).
  struct Verdict {
    std::string user;
    std::string final_message;
  };
  using Done = std::function<void(Connection&, RequestId, Verdict)>;

  // audit: where user changes seen on reload are recorded; may be null.
  Authenticator(uv_loop_t* loop, const BrokerConfig& config, Responder& responder, BrokerProbe* probe,
                AuditLog* audit, Done done);
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  bool enabled() const { return config_.auth_enabled; }
  // Reads the users and ACL files. kInvalidArgument naming the file and the problem.
  Status load();
  // Reads both files again; on an error keeps what is in force and logs why. Connections
  // keep their users; what they may do follows the new rules from their next request.
  void reload();
  const AccessRules& rules() const { return rules_; }

  // A Hello (version and names already checked). Calls done, or sends AuthChallenge, or
  // fails the connection (see above).
  void hello(Connection& conn, RequestId rid, const wire::Hello& req);
  // An AuthResponse. Without an exchange in progress on conn: kInvalidArgument, closed.
  void respond(Connection& conn, RequestId rid, const wire::AuthResponse& req);
  // The hello passed authentication but is refused afterwards (the user may not act for
  // the producer group it names): answered with error after the delay, like a failure.
  void refuse(Connection& conn, RequestId rid, const Error& error, std::string_view reason);
  void connection_closed(Connection& conn);
  void close();

 private:
  struct Failure {
    std::uint64_t connection;
    RequestId rid;
    Error error;
    std::chrono::steady_clock::time_point due;
  };
  void fail(Connection& conn, RequestId rid, std::string_view reason, const std::string& detail,
            const Error& error = Error(ErrorCode::kAuthenticationFailed));
  void answer_due_failures();
  void arm_timer();
  void start_scram(Connection& conn, RequestId rid, const wire::Hello& req);
  void pass(Connection& conn, RequestId rid, std::string_view mechanism, Verdict verdict);

  uv_loop_t* loop_;
  const BrokerConfig& config_;
  Responder& responder_;
  BrokerProbe* probe_;
  AuditLog* audit_;
  Done done_;
  common::UsersFile users_;
  AccessRules rules_;
  std::array<std::uint8_t, 32> decoy_secret_{};
  std::unordered_map<std::uint64_t, common::scram::ServerExchange> exchanges_;  // by connection id
  std::deque<Failure> failures_;  // in due order: every failure waits the same delay
  uv_timer_t failure_timer_;
  std::chrono::steady_clock::time_point last_failure_log_{};
  std::uint64_t unlogged_failures_ = 0;
};

}  // namespace txmq::broker
