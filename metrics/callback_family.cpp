#include "metrics/callback_family.h"

namespace txmq::metrics {

CallbackFamily::CallbackFamily(std::string name, std::string help, MetricType type,
                               std::function<double()> read)
    : FamilyBase(std::move(name), std::move(help), type, {}, {}), read_(std::move(read)) {
  if (type == MetricType::kHistogram || !read_) {
    throw std::invalid_argument("metric " + this->name() +
                                ": a collect-time metric is a counter or gauge with a callback");
  }
}

void CallbackFamily::render_samples(std::string& out) const {
  append_sample(out, name(), "", read_());
}

}  // namespace txmq::metrics
