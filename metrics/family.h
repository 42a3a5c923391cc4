#pragma once

#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/utf8.h"
#include "metrics/histogram.h"
#include "metrics/metric_type.h"
#include "metrics/text_format.h"

namespace txmq::metrics {

// What every metric family has: a name, help text, a type and label names, and a way to write
// itself in the text format. Families are created and owned by a Registry and live as long as
// it does; references to them may be cached.
class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  // Accessors: immutable after construction, so any thread. Errors: none.
  const std::string& name() const noexcept { return name_; }
  const std::string& help() const noexcept { return help_; }
  MetricType type() const noexcept { return type_; }
  const std::vector<std::string>& label_names() const noexcept { return label_names_; }
  // A histogram's bucket bounds; empty for other types.
  const std::vector<double>& upper_bounds() const noexcept { return upper_bounds_; }

  // The series names this family writes: its name, and for a histogram also name_bucket,
  // name_sum and name_count. The registry keeps them unique across families.
  // Thread: any. Errors: std::bad_alloc.
  std::vector<std::string> series_names() const;

  // Appends `# HELP`, `# TYPE` and every sample. Thread: any. Errors: std::bad_alloc, and
  // whatever a collect-time callback throws.
  void render(std::string& out) const;

 protected:
  // Throws std::invalid_argument for an invalid metric name, an invalid, reserved or repeated
  // label name, or invalid histogram bounds.
  FamilyBase(std::string name, std::string help, MetricType type,
             std::vector<std::string> label_names, std::vector<double> upper_bounds);

 private:
  virtual void render_samples(std::string& out) const = 0;

  std::string name_;
  std::string help_;
  MetricType type_;
  std::vector<std::string> label_names_;
  std::vector<double> upper_bounds_;  // the children's histograms point into this
};

// A family of Counters, Gauges or Histograms: one child per distinct list of label values.
//
// Lifecycle: created by Registry::counter_family and friends. Children are created on first
// use by with() and never removed, so a label with unbounded values (a consumer id, an offset)
// is a memory leak: label by topic or by partition, never by something per message.
// Concurrency: with() takes a mutex, so look children up once at setup time and cache the
// reference; updating a child takes no lock at all. Rendering holds the same mutex while it
// writes this family, so a with() racing a scrape waits for at most that long.
template <typename T>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> upper_bounds = {})
      : FamilyBase(std::move(name), std::move(help), T::kType, std::move(label_names),
                   std::move(upper_bounds)) {
    // An unlabelled family has exactly one child, made now so that it reads 0 before the
    // first update instead of being absent.
    if (this->label_names().empty()) with({});
  }

  // The child for these label values, in the order of label_names(); created on first use.
  // Bytes that are not valid UTF-8 are replaced with U+FFFD (the text format is UTF-8).
  // The reference is valid for the registry's life. Thread: any (takes the family's mutex).
  // Errors: std::invalid_argument if the number of values differs from the number of label
  // names (a programming error), std::bad_alloc.
  T& with(std::initializer_list<std::string_view> label_values) {
    if (label_values.size() != label_names().size()) {
      throw std::invalid_argument("metric " + name() + " takes " +
                                  std::to_string(label_names().size()) + " label values");
    }
    // Label values are made valid UTF-8 before the lookup, not only when written: two
    // values that differ only in invalid bytes are one series, never two series that render
    // the same (a duplicate promtool rejects).
    std::vector<std::string> key;
    key.reserve(label_values.size());
    for (std::string_view v : label_values) key.push_back(common::to_valid_utf8(v));
    std::lock_guard lock(mutex_);
    auto it = children_.find(key);
    if (it == children_.end()) {
      Child child{format_labels(label_names(), key), make_child()};
      it = children_.emplace(std::move(key), std::move(child)).first;
    }
    return *it->second.metric;
  }

 private:
  struct Child {
    std::string labels;         // escaped once here rather than on every scrape
    std::unique_ptr<T> metric;  // its own allocation, cache-line aligned
  };

  std::unique_ptr<T> make_child() const {
    if constexpr (std::is_same_v<T, Histogram>) {
      return std::make_unique<T>(upper_bounds());
    } else {
      return std::make_unique<T>();
    }
  }

  void render_samples(std::string& out) const override {
    std::lock_guard lock(mutex_);
    for (const auto& [values, child] : children_) {
      append_samples(out, name(), child.labels, *child.metric);
    }
  }

  mutable std::mutex mutex_;  // guards children_ (the map), not the values in it
  // Ordered by label values, so that children render in a stable order.
  std::map<std::vector<std::string>, Child> children_;
};

}  // namespace txmq::metrics
