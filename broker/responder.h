#pragma once
// The way back to clients, as the broker's components use it: find a connection by id (it
// may have gone while a write was in flight), answer a request on it, push to it, and hold
// its reading while its produce bytes wait for storage.
//
// Owns the FlatBufferBuilder that every answer and push built on the loop is encoded in
// (reused, so that an answer costs no allocation once the builder has grown). Does not own
// the connections: the Broker does; this holds a view of its table.
// Lifecycle: made by the Broker before its components and destroyed after them.
// Concurrency: loop thread only.

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "broker/audit.h"
#include "broker/broker_probe.h"
#include "broker/connection.h"
#include "broker/loop_thread.h"
#include "common/errors.h"
#include "common/ids.h"
#include "txmq_generated.h"

namespace txmq::broker {

class Responder {
 public:
  using ConnectionTable = std::unordered_map<std::uint64_t, std::unique_ptr<Connection>>;

  // inflight_limit: produce bytes a connection may have waiting for storage before its
  // reading pauses (limits.connection_inflight_bytes).
  Responder(const ConnectionTable& connections, std::size_t inflight_limit)
      : connections_(connections), inflight_limit_(inflight_limit) {}
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;

  // The calling thread is the loop thread from now on (the Broker is made on another
  // thread than the one that runs it).
  void bind_loop_thread() { loop_thread_.bind(); }

  // Request errors are counted here from then on; null: not counted. Loop thread.
  void set_probe(BrokerProbe* probe) { probe_ = probe; }

  // The open connection with this id; null when it is gone or closing. Loop thread.
  Connection* find(std::uint64_t id) const {
    loop_thread_.check();
    auto it = connections_.find(id);
    return it == connections_.end() || !it->second->open() ? nullptr : it->second.get();
  }

  // The builder for the next answer: Clear() it, build the body in it, send_frame(). Loop
  // thread.
  flatbuffers::FlatBufferBuilder& fbb() { return fbb_; }
  // Finishes the frame around body (built in fbb()) and queues it on conn. RequestId()
  // (0) is a push. Loop thread; no errors (a connection that cannot take it closes by itself).
  void send_frame(Connection& conn, RequestId rid, wire::Body type, flatbuffers::Offset<void> body);
  // Answers rid with error (and counts it); `fatal` closes the connection once the error is
  // written. Clears fbb(). Loop thread.
  void reply_error(Connection& conn, RequestId rid, const Error& error, bool fatal = false);
  // Answers rid with Ok. Clears fbb(). Loop thread.
  void reply_ok(Connection& conn, RequestId rid);

  // The audit trail (broker/audit.h); null: none. Loop thread.
  void set_audit(AuditLog* audit) { audit_ = audit; }
  // Records entry in the audit trail when rid is answered on conn, with the answer's
  // outcome ("ok", or the error); without an audit trail, nothing. Loop thread.
  void audit_on_answer(const Connection& conn, RequestId rid, AuditEntry entry);
  // conn is going: its audited requests still unanswered are recorded as such. Loop thread.
  void connection_closed(const Connection& conn);

  // A produce or prepare of n bytes went to storage / came back: past the in-flight limit
  // the connection stops reading until enough came back. Loop thread.
  void hold_produce_bytes(Connection& conn, std::size_t n);
  void release_produce_bytes(Connection& conn, std::size_t n);

 private:
  LoopThread loop_thread_;
  const ConnectionTable& connections_;
  std::size_t inflight_limit_;
  BrokerProbe* probe_ = nullptr;
  struct Audited {
    std::uint64_t connection;
    RequestId rid;
    AuditEntry entry;
  };
  void audit_answered(std::uint64_t connection, RequestId rid, std::string outcome);
  AuditLog* audit_ = nullptr;
  std::vector<Audited> audited_;  // operator requests are few: a scan is cheapest
  flatbuffers::FlatBufferBuilder fbb_{4096};
};

}  // namespace txmq::broker
