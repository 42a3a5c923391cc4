#pragma once
// Where a consumer group's deliveries go: one consumer's end of the wire.
//
// The broker's Connection is one; unit tests use a fake. The group builds each delivery
// frame in its FlatBufferBuilder and hands the sink a view of it, so a delivery costs no
// copy beyond what the sink itself keeps (a Connection appends it to its output queue).
// A sink's address is its identity in the group: leases and redelivery preferences name
// the sink that held a message.
// Concurrency: loop thread only.

#include <cstdint>
#include <span>

namespace txmq::broker {

class DeliverySink {
 public:
  // Accepts pushes at all; a sink that is closing or condemned gets nothing more.
  virtual bool open() const = 0;
  // A push may go now (its output is below high water); the group stops filling a sink
  // that is not, and goes on when the sink's owner dispatches again.
  virtual bool writable() const = 0;
  // Takes one whole frame (length prefix included). The span is valid only during the call.
  virtual void send(std::span<const std::uint8_t> frame) = 0;

 protected:
  ~DeliverySink() = default;  // not owned through this interface
};

}  // namespace txmq::broker
