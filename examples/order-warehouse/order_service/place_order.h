#pragma once
// Placing an order: the transactional-message flow in one function.
//
//   1. prepare a half message on `orders` (stored by the broker, invisible to consumers)
//   2. the local transaction: insert the order into the order database
//   3. commit the half message if the insert committed, roll it back if it failed
//
// A crash between 1 and 3 leaves the transaction prepared; the broker then checks back and
// OrderDb::check answers from the database. So the message is visible if and only if the
// order is in the database, whatever fails when.
//
// The two crash points of the scenario are here: pause_after_prepare and
// pause_after_local_commit stop the Nth order of this process at that step and wait to be
// SIGKILLed by the runner.

#include <atomic>
#include <string>

#include "order.h"
#include "order_db.h"
#include "txmq/client.h"

namespace orders_example {

enum class PlaceOutcome {
  kCommitted,    // in the database, and the message is visible
  kRolledBack,   // the local transaction failed; the message was discarded
  kPending,      // in the database, but the commit did not reach the broker: the check-back will commit it
  kUnavailable,  // the broker did not take the half message; nothing was done
};

struct PlaceResult {
  PlaceOutcome outcome;
  std::string detail;  // why, for the rolled-back and unavailable cases
};

struct CrashPoints {
  long long pause_after_prepare = 0;       // 0: never; N: the Nth prepared order
  long long pause_after_local_commit = 0;  // 0: never; N: the Nth order committed locally
};

class OrderPlacer {
 public:
  OrderPlacer(txmq::client::TransactionalProducer& producer, OrderDb& db, CrashPoints crash_points)
      : producer_(producer), db_(db), crash_(crash_points) {}

  // Runs on the calling thread (an HTTP worker); blocks for two broker round trips.
  PlaceResult place(const Order& order);

 private:
  txmq::client::TransactionalProducer& producer_;
  OrderDb& db_;
  CrashPoints crash_;
  std::atomic<long long> prepared_{0};
  std::atomic<long long> committed_locally_{0};
};

}  // namespace orders_example
