#pragma once
// Reconciliation: the notifications txmq-notifier gave up on (the points service was down
// for longer than the notifier's schedule) are not lost — the notifier produced a give-up
// record for each to its failure topic (`<notifier group>.gave-up`). This handler consumes
// that topic, lists each record once and credits the order from the record's copy of the
// original message, under the same webhook-id, so nothing is credited twice.

#include "points_db.h"
#include "txmq/client.h"

namespace orders_example {

// Runs on the reconciliation consumer's I/O thread; settles the delivery on `consumer`.
void reconcile_gave_up(PointsDb& db, txmq::client::Consumer& consumer, const txmq::client::Delivery& record);

}  // namespace orders_example
