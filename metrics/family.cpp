#include "metrics/family.h"

#include <algorithm>

#include "metrics/names.h"

namespace txmq::metrics {

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type,
                       std::vector<std::string> label_names, std::vector<double> upper_bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)),
      upper_bounds_(std::move(upper_bounds)) {
  if (!is_valid_metric_name(name_)) {
    throw std::invalid_argument("invalid metric name \"" + name_ + "\"");
  }
  for (std::size_t i = 0; i < label_names_.size(); ++i) {
    const std::string& label = label_names_[i];
    if (!is_valid_label_name(label)) {
      throw std::invalid_argument("metric " + name_ + ": invalid label name \"" + label + "\"");
    }
    // "le" carries a histogram's bucket bound; a label of the same name would clash with it.
    if (type_ == MetricType::kHistogram && label == "le") {
      throw std::invalid_argument("metric " + name_ + ": \"le\" is reserved in histograms");
    }
    if (std::find(label_names_.begin(), label_names_.begin() + i, label) !=
        label_names_.begin() + i) {
      throw std::invalid_argument("metric " + name_ + ": label \"" + label + "\" repeats");
    }
  }
  if (type_ == MetricType::kHistogram) {
    validate_buckets(upper_bounds_);
  } else if (!upper_bounds_.empty()) {
    throw std::invalid_argument("metric " + name_ + ": only histograms have buckets");
  }
}

std::vector<std::string> FamilyBase::series_names() const {
  if (type_ != MetricType::kHistogram) return {name_};
  return {name_, name_ + "_bucket", name_ + "_sum", name_ + "_count"};
}

void FamilyBase::render(std::string& out) const {
  append_header(out, name_, help_, type_);
  render_samples(out);
}

}  // namespace txmq::metrics
