#include "metrics/registry.h"

#include <typeinfo>

namespace txmq::metrics {

namespace {

bool same_shape(const FamilyBase& a, const FamilyBase& b) {
  return typeid(a) == typeid(b) && a.type() == b.type() && a.label_names() == b.label_names() &&
         a.upper_bounds() == b.upper_bounds();
}

}  // namespace

Family<Counter>& Registry::counter_family(std::string_view name, std::string_view help,
                                          std::vector<std::string> label_names) {
  return static_cast<Family<Counter>&>(
      add(std::make_unique<Family<Counter>>(std::string(name), std::string(help),
                                            std::move(label_names)),
          true));
}

Family<Gauge>& Registry::gauge_family(std::string_view name, std::string_view help,
                                      std::vector<std::string> label_names) {
  return static_cast<Family<Gauge>&>(add(
      std::make_unique<Family<Gauge>>(std::string(name), std::string(help), std::move(label_names)),
      true));
}

Family<Histogram>& Registry::histogram_family(std::string_view name, std::string_view help,
                                              std::vector<std::string> label_names,
                                              std::vector<double> upper_bounds) {
  return static_cast<Family<Histogram>&>(
      add(std::make_unique<Family<Histogram>>(std::string(name), std::string(help),
                                              std::move(label_names), std::move(upper_bounds)),
          true));
}

Counter& Registry::counter(std::string_view name, std::string_view help) {
  return counter_family(name, help, {}).with({});
}

Gauge& Registry::gauge(std::string_view name, std::string_view help) {
  return gauge_family(name, help, {}).with({});
}

Histogram& Registry::histogram(std::string_view name, std::string_view help,
                               std::vector<double> upper_bounds) {
  return histogram_family(name, help, {}, std::move(upper_bounds)).with({});
}

void Registry::callback_counter(std::string_view name, std::string_view help,
                                std::function<double()> read) {
  add(std::make_unique<CallbackFamily>(std::string(name), std::string(help), MetricType::kCounter,
                                       std::move(read)),
      false);
}

void Registry::callback_gauge(std::string_view name, std::string_view help,
                              std::function<double()> read) {
  add(std::make_unique<CallbackFamily>(std::string(name), std::string(help), MetricType::kGauge,
                                       std::move(read)),
      false);
}

void Registry::on_render(std::function<void()> refresh) {
  std::lock_guard lock(mutex_);
  refreshers_.push_back(std::move(refresh));
}

std::string Registry::render() const {
  // Families are never removed, so the pointers stay valid after the lock is released.
  std::vector<const FamilyBase*> families;
  std::vector<std::function<void()>> refreshers;
  {
    std::lock_guard lock(mutex_);
    families.reserve(families_.size());
    for (const auto& family : families_) families.push_back(family.get());
    refreshers = refreshers_;
  }
  for (const auto& refresh : refreshers) refresh();
  std::string out;
  for (const FamilyBase* family : families) family->render(out);
  return out;
}

FamilyBase& Registry::add(std::unique_ptr<FamilyBase> candidate, bool reuse_allowed) {
  std::lock_guard lock(mutex_);
  for (const auto& existing : families_) {
    if (existing->name() != candidate->name()) continue;
    if (reuse_allowed && same_shape(*existing, *candidate)) return *existing;
    throw std::invalid_argument("metric " + candidate->name() + " is already registered" +
                                (reuse_allowed ? " with another type, labels or buckets" : ""));
  }
  // A histogram "x" writes x_bucket, x_sum and x_count; a gauge named x_sum would interleave
  // with it in a way no parser can untangle.
  const std::vector<std::string> names = candidate->series_names();
  for (const std::string& name : names) {
    if (series_names_.contains(name)) {
      throw std::invalid_argument("metric " + candidate->name() + ": series " + name +
                                  " collides with an existing metric");
    }
  }
  families_.reserve(families_.size() + 1);  // so that nothing throws once names are claimed
  series_names_.insert(names.begin(), names.end());
  families_.push_back(std::move(candidate));
  return *families_.back();
}

}  // namespace txmq::metrics
