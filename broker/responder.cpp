#include "broker/responder.h"

#include <spdlog/spdlog.h>

#include "common/frame.h"

namespace txmq::broker {

void Responder::send_frame(Connection& conn, RequestId rid, wire::Body type, flatbuffers::Offset<void> body) {
  loop_thread_.check();
  fbb_.FinishSizePrefixed(wire::CreateFrame(fbb_, rid.value(), type, body));
  conn.send(common::frame_bytes(fbb_));
  if (!audited_.empty() && type != wire::Body::Error) audit_answered(conn.id(), rid, "ok");
}

void Responder::reply_error(Connection& conn, RequestId rid, const Error& error, bool fatal) {
  if (probe_) probe_->request_error(error.code);
  if (!audited_.empty()) audit_answered(conn.id(), rid, error.describe());
  fbb_.Clear();
  auto body = wire::CreateError(fbb_, static_cast<std::uint16_t>(error.code), fbb_.CreateString(error.message),
                                error.leader.empty() ? 0 : fbb_.CreateString(error.leader), error.leader_epoch);
  send_frame(conn, rid, wire::Body::Error, body.Union());
  if (fatal) {
    spdlog::info("connection {} from {}: {}; closing", conn.id(), conn.peer(), error.describe());
    conn.close_after_flush();
  }
}

void Responder::reply_ok(Connection& conn, RequestId rid) {
  fbb_.Clear();
  send_frame(conn, rid, wire::Body::Ok, wire::CreateOk(fbb_).Union());
}

void Responder::audit_on_answer(const Connection& conn, RequestId rid, AuditEntry entry) {
  loop_thread_.check();
  if (!audit_) return;
  entry.user = conn.access.user();
  entry.peer = conn.peer();
  audited_.push_back(Audited{conn.id(), rid, std::move(entry)});
}

void Responder::audit_answered(std::uint64_t connection, RequestId rid, std::string outcome) {
  for (auto it = audited_.begin(); it != audited_.end(); ++it) {
    if (it->connection != connection || it->rid != rid) continue;
    it->entry.outcome = std::move(outcome);
    audit_->record(it->entry);
    audited_.erase(it);
    return;
  }
}

void Responder::connection_closed(const Connection& conn) {
  loop_thread_.check();
  for (auto it = audited_.begin(); it != audited_.end();) {
    if (it->connection != conn.id()) {
      ++it;
      continue;
    }
    it->entry.outcome = "unanswered: connection closed";
    audit_->record(it->entry);
    it = audited_.erase(it);
  }
}

void Responder::hold_produce_bytes(Connection& conn, std::size_t n) {
  loop_thread_.check();
  const bool was_below = conn.produce_bytes_in_flight < inflight_limit_;
  conn.produce_bytes_in_flight += n;
  // A producer that pipelines faster than the disk syncs is slowed here, at its socket,
  // instead of queueing unbounded work for the writer.
  if (was_below && conn.produce_bytes_in_flight >= inflight_limit_) conn.pause_reading();
}

void Responder::release_produce_bytes(Connection& conn, std::size_t n) {
  loop_thread_.check();
  const bool was_above = conn.produce_bytes_in_flight >= inflight_limit_;
  conn.produce_bytes_in_flight -= n;
  if (was_above && conn.produce_bytes_in_flight < inflight_limit_) conn.resume_reading();
}

}  // namespace txmq::broker
