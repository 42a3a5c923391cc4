#pragma once

#include <functional>
#include <string>

#include "metrics/family.h"

namespace txmq::metrics {

// A metric whose value is computed when the registry renders rather than updated as things
// happen: the LMDB map size, connections counted by the loop thread, process CPU time. It has
// no labels and no children; it is one sample.
//
// Lifecycle: created and owned by Registry::callback_gauge / callback_counter.
// Concurrency: `read` runs on whichever thread renders the registry. In the broker that is the
// loop thread, because the HTTP endpoint renders there and nothing else does; so `read` may
// read loop-owned state directly, but state owned by another thread (the storage writer) only
// through an atomic. Keep it that way: a render from another thread would race with the loop.
// `read` must stay callable until the registry is destroyed or nothing renders it any more
// (close the HTTP endpoint before destroying what `read` captures). It should not throw: an
// exception fails the whole render, which the endpoint answers with 500.
class CallbackFamily final : public FamilyBase {
 public:
  // type is kCounter or kGauge. Thread: any. Errors: std::invalid_argument for an invalid
  // name, a histogram type or an empty `read`.
  CallbackFamily(std::string name, std::string help, MetricType type, std::function<double()> read);

 private:
  void render_samples(std::string& out) const override;

  std::function<double()> read_;
};

}  // namespace txmq::metrics
