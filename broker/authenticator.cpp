#include "broker/authenticator.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <set>

#include "broker/audit.h"
#include "broker/names.h"

namespace txmq::broker {
namespace {

namespace scram = common::scram;

std::string_view text_of(const flatbuffers::Vector<std::uint8_t>* v) {
  return v ? std::string_view(reinterpret_cast<const char*>(v->data()), v->size()) : std::string_view{};
}

// Reads both files; the error names the one that failed.
struct Loaded {
  common::UsersFile users;
  std::shared_ptr<const AccessControl> rules;
};
Result<Loaded> load_files(const BrokerConfig& config) {
  Loaded loaded;
  if (!config.users_file.empty()) {
    auto users = common::UsersFile::load(config.users_file);
    if (!users) return Error(users.error().code, "auth.users_file: " + users.error().message);
    loaded.users = std::move(*users);
  }
  auto rules = AccessControl::load(config.acl_file);
  if (!rules) return Error(rules.error().code, "auth.acl_file: " + rules.error().message);
  loaded.rules = std::make_shared<const AccessControl>(std::move(*rules));
  return loaded;
}

}  // namespace

Authenticator::Authenticator(uv_loop_t* loop, const BrokerConfig& config, Responder& responder, BrokerProbe* probe,
                             AuditLog* audit, Done done)
    : loop_(loop), config_(config), responder_(responder), probe_(probe), audit_(audit), done_(std::move(done)) {
  uv_timer_init(loop_, &failure_timer_);
  failure_timer_.data = this;
  // Decoys need only be stable while this broker runs; a fresh secret per start is enough.
  if (RAND_bytes(decoy_secret_.data(), static_cast<int>(decoy_secret_.size())) != 1)
    spdlog::warn("no random bytes for the decoy secret; unknown users' salts are less opaque");
}

Status Authenticator::load() {
  if (!enabled()) return {};
  auto loaded = load_files(config_);
  if (!loaded) return loaded.error();
  users_ = std::move(loaded->users);
  rules_.replace(std::move(loaded->rules));
  spdlog::info("authentication on: {} users from {}, {} rules from {}{}{}", users_.size(),
               config_.users_file.empty() ? "(no users file)" : config_.users_file, rules_.current()->rule_count(),
               config_.acl_file, config_.certificate_identity ? "; client certificates name their user" : "",
               config_.allow_anonymous ? "; anonymous connections allowed" : "");
  return {};
}

void Authenticator::reload() {
  if (!enabled()) {
    spdlog::info("SIGHUP: auth.enabled is false; no users or rules to reload");
    return;
  }
  auto loaded = load_files(config_);
  if (!loaded) {
    if (probe_) probe_->auth_reloaded("error");
    spdlog::error("SIGHUP: {}; the users and rules in force stay", loaded.error().message);
    if (audit_) audit_->record({"", "", "users.reload", config_.users_file, "error: " + loaded.error().message});
    return;
  }
  // What changed, for the log and the audit trail (names only, never keys).
  std::set<std::string> before, after;
  for (auto& u : users_.users()) before.insert(u);
  for (auto& u : loaded->users.users()) after.insert(u);
  std::vector<std::string> added, removed, changed;
  for (auto& u : after)
    if (!before.count(u)) added.push_back(u);
    else if (!(*users_.find(u) == *loaded->users.find(u))) changed.push_back(u);
  for (auto& u : before)
    if (!after.count(u)) removed.push_back(u);
  users_ = std::move(loaded->users);
  rules_.replace(std::move(loaded->rules));
  if (probe_) probe_->auth_reloaded("ok");
  spdlog::info("SIGHUP: {} users, {} rules in force ({} added, {} removed, {} with a new password)", users_.size(),
               rules_.current()->rule_count(), added.size(), removed.size(), changed.size());
  if (audit_) {
    for (auto& u : added) audit_->record({"", "", "user.add", u, "ok"});
    for (auto& u : removed) audit_->record({"", "", "user.remove", u, "ok"});
    for (auto& u : changed) audit_->record({"", "", "user.passwd", u, "ok"});
    audit_->record({"", "", "acl.reload", config_.acl_file, "ok"});
  }
}

void Authenticator::hello(Connection& conn, RequestId rid, const wire::Hello& req) {
  if (!enabled()) return done_(conn, rid, Verdict{});
  const std::string_view mechanism = req.mechanism() ? req.mechanism()->string_view() : std::string_view{};
  if (mechanism == scram::kMechanism) return start_scram(conn, rid, req);
  if (!mechanism.empty())
    return fail(conn, rid, "mechanism", "asked for mechanism '" + std::string(mechanism.substr(0, 64)) + "'",
                Error(ErrorCode::kAuthenticationFailed, "this broker does not take the authentication mechanism '" +
                                                            std::string(mechanism.substr(0, 64)) +
                                                            "'; it takes SCRAM-SHA-256 or a client certificate"));
  if (config_.certificate_identity) {
    if (std::string name = conn.peer_certificate_name(); !name.empty()) {
      if (!valid_name(name) || name == common::kAnonymousUser)
        return fail(conn, rid, "malformed", "client certificate CN '" + name.substr(0, 64) + "' is not a user name");
      return pass(conn, rid, "certificate", Verdict{std::move(name), ""});
    }
  }
  if (config_.allow_anonymous) return pass(conn, rid, "anonymous", Verdict{std::string(common::kAnonymousUser), ""});
  fail(conn, rid, "required", "no credentials",
       Error(ErrorCode::kAuthenticationFailed,
             "this broker requires authentication: a user and password (SCRAM-SHA-256) or a client certificate"));
}

void Authenticator::start_scram(Connection& conn, RequestId rid, const wire::Hello& req) {
  auto exchange = scram::ServerExchange::start(text_of(req.auth()));
  if (!exchange) return fail(conn, rid, "malformed", exchange.error().message);
  // An unknown user gets a decoy: the exchange reads the same until the proof fails.
  const scram::StoredCredentials* known = users_.find(exchange->user());
  const std::string first = exchange->first_message(known ? *known : scram::decoy(exchange->user(), decoy_secret_));
  exchanges_.insert_or_assign(conn.id(), std::move(*exchange));
  auto& fbb = responder_.fbb();
  fbb.Clear();
  auto body = wire::CreateAuthChallenge(
      fbb, fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(first.data()), first.size()));
  responder_.send_frame(conn, rid, wire::Body::AuthChallenge, body.Union());
}

void Authenticator::respond(Connection& conn, RequestId rid, const wire::AuthResponse& req) {
  auto it = exchanges_.find(conn.id());
  if (it == exchanges_.end()) {
    responder_.reply_error(conn, rid,
                           Error(ErrorCode::kInvalidArgument, "AuthResponse without an authentication in progress"), true);
    return;
  }
  scram::ServerExchange exchange = std::move(it->second);
  exchanges_.erase(it);
  auto final_message = exchange.final_message(text_of(req.data()));
  if (!final_message) {
    const bool known = users_.find(exchange.user()) != nullptr;
    return fail(conn, rid, "credentials",
                "user '" + exchange.user().substr(0, 64) + "': " + (known ? final_message.error().message : "no such user"));
  }
  pass(conn, rid, "scram", Verdict{exchange.user(), std::move(*final_message)});
}

void Authenticator::pass(Connection& conn, RequestId rid, std::string_view mechanism, Verdict verdict) {
  if (probe_) probe_->authenticated(mechanism);
  spdlog::debug("connection {} from {} is user '{}' ({})", conn.id(), conn.peer(), verdict.user, mechanism);
  conn.access = Access(verdict.user, rules_);
  done_(conn, rid, std::move(verdict));
}

void Authenticator::refuse(Connection& conn, RequestId rid, const Error& error, std::string_view reason) {
  fail(conn, rid, reason, error.message, error);
}

void Authenticator::fail(Connection& conn, RequestId rid, std::string_view reason, const std::string& detail,
                         const Error& error) {
  if (probe_) probe_->authentication_failed(reason);
  // A guesser opening many connections must not flood the log: a line a second at most,
  // saying how many were not logged.
  const auto now = std::chrono::steady_clock::now();
  if (now - last_failure_log_ >= std::chrono::seconds(1)) {
    spdlog::warn("connection {} from {}: authentication failed ({}): {}{}", conn.id(), conn.peer(), reason, detail,
                 unlogged_failures_ ? " (and " + std::to_string(unlogged_failures_) + " failures not logged)" : "");
    last_failure_log_ = now;
    unlogged_failures_ = 0;
  } else {
    ++unlogged_failures_;
  }
  // The connection waits out the delay reading nothing, then gets the error and is closed.
  conn.pause_reading();
  failures_.push_back(Failure{conn.id(), rid, error, now + config_.auth_failure_delay});
  if (failures_.size() == 1) arm_timer();
}

void Authenticator::arm_timer() {
  if (failures_.empty() || uv_is_closing(reinterpret_cast<uv_handle_t*>(&failure_timer_))) return;
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(failures_.front().due -
                                                                 std::chrono::steady_clock::now());
  uv_timer_start(
      &failure_timer_, [](uv_timer_t* t) { static_cast<Authenticator*>(t->data)->answer_due_failures(); },
      static_cast<std::uint64_t>(std::max<std::int64_t>(wait.count(), 0)), 0);
}

void Authenticator::answer_due_failures() {
  const auto now = std::chrono::steady_clock::now();
  while (!failures_.empty() && failures_.front().due <= now) {
    Failure f = std::move(failures_.front());
    failures_.pop_front();
    if (Connection* conn = responder_.find(f.connection)) responder_.reply_error(*conn, f.rid, f.error, true);
  }
  arm_timer();
}

void Authenticator::connection_closed(Connection& conn) { exchanges_.erase(conn.id()); }

void Authenticator::close() {
  auto* h = reinterpret_cast<uv_handle_t*>(&failure_timer_);
  if (!uv_is_closing(h)) uv_close(h, nullptr);
}

}  // namespace txmq::broker
