#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "metrics/callback_family.h"
#include "metrics/counter.h"
#include "metrics/family.h"
#include "metrics/gauge.h"
#include "metrics/histogram.h"

namespace txmq::metrics {

// Owns metric families and renders them all in the Prometheus text format 0.0.4.
//
// Lifecycle: create one per process (the broker owns it) before the components that register
// into it, and destroy it after everything that updates a metric or renders it (close the HTTP
// endpoint first). Every reference it hands out lives as long as the registry.
// Concurrency: every member may be called from any thread. Registration takes the registry's
// mutex; rendering takes it only to copy the list of families, so a slow collect-time callback
// never blocks registration. Updating a metric never takes a registry lock.
// Errors: registration throws std::invalid_argument for programming errors (an invalid or
// reserved name, a name already registered with another type, labels or buckets, series
// names that collide). These happen at setup time, never on an update path.
// Ordering: families render in registration order, children sorted by label values.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // A labelled family. Registering a name again with the same type and label names (and,
  // for histograms, buckets) returns the existing family; the first help text stays.
  // Thread: any. Errors: std::invalid_argument as above, std::bad_alloc.
  Family<Counter>& counter_family(std::string_view name, std::string_view help,
                                  std::vector<std::string> label_names);
  Family<Gauge>& gauge_family(std::string_view name, std::string_view help,
                              std::vector<std::string> label_names);
  Family<Histogram>& histogram_family(std::string_view name, std::string_view help,
                                      std::vector<std::string> label_names,
                                      std::vector<double> upper_bounds = default_buckets());

  // An unlabelled metric: the single child of a family without labels.
  // Thread: any. Errors: as for the families.
  Counter& counter(std::string_view name, std::string_view help);
  Gauge& gauge(std::string_view name, std::string_view help);
  Histogram& histogram(std::string_view name, std::string_view help,
                       std::vector<double> upper_bounds = default_buckets());

  // A collect-time metric: `read` runs at every render, on the rendering thread (see
  // CallbackFamily for what that allows). Unlike the above, registering the same name twice
  // throws, because the second callback would otherwise be silently dropped.
  // Thread: any. Errors: std::invalid_argument as above or for an empty `read`, std::bad_alloc.
  void callback_counter(std::string_view name, std::string_view help, std::function<double()> read);
  void callback_gauge(std::string_view name, std::string_view help, std::function<double()> read);

  // Runs `refresh` at the start of every render, on the rendering thread, before any family
  // is written: for labelled gauges whose values are cheaper to compute at scrape time than
  // to keep current (a consumer group's lag). Thread: any. Errors: std::bad_alloc.
  void on_render(std::function<void()> refresh);

  // Every family in the text format. Runs the collect-time callbacks on the calling thread.
  // Thread: any. Errors: std::bad_alloc, and whatever a callback throws.
  std::string render() const;

 private:
  // Adds `candidate` unless a family of that name exists: then returns the existing one if
  // reuse is allowed and it has the same shape, else throws.
  FamilyBase& add(std::unique_ptr<FamilyBase> candidate, bool reuse_allowed);

  mutable std::mutex mutex_;                           // guards the three members below
  std::vector<std::function<void()>> refreshers_;
  std::vector<std::unique_ptr<FamilyBase>> families_;  // registration order
  std::set<std::string, std::less<>> series_names_;    // of every family, to catch collisions
};

}  // namespace txmq::metrics
