#pragma once
// What happens to an order the warehouse could not reserve after the group's maximum
// deliveries: the broker moved its message to the dead-letter topic `warehouse.dlq`; this
// handler consumes that topic and
//
//   1. raises the alarm: an "ALARM" log line (and the dead-letter topic's size, which the
//      runner reads, like txmq_messages_dead_lettered_total for Prometheus);
//   2. decides in the stock database (StockDb::give_up): a reservation may exist after all
//      (reserved, then killed before the ack on the last delivery) — a false alarm, nothing
//      to undo; otherwise the order is rejected for good;
//   3. asks the order service to cancel a rejected order, with a message on
//      `order-cancellations`, and acks the dead letter only once that message is durable.
//
// A crash between 2 and 3 delivers the dead letter again; give_up is idempotent and the
// cancellation is sent again, which the order service tolerates (cancel is idempotent).

#include "stock_db.h"
#include "txmq/client.h"

namespace orders_example {

class Compensation {
 public:
  Compensation(StockDb& stock, txmq::client::Producer& cancellations) : stock_(stock), cancellations_(cancellations) {}

  // Runs on the dead-letter consumer's I/O thread; settles the delivery on `consumer`.
  void on_dead_letter(txmq::client::Consumer& consumer, const txmq::client::Delivery& letter);

 private:
  StockDb& stock_;
  txmq::client::Producer& cancellations_;
};

}  // namespace orders_example
