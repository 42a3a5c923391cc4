#include "metrics/names.h"

namespace txmq::metrics {

namespace {

bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

bool is_identifier(std::string_view name) {
  if (name.empty() || !is_name_start(name.front())) return false;
  for (char c : name) {
    if (!is_name_char(c)) return false;
  }
  return true;
}

}  // namespace

bool is_valid_metric_name(std::string_view name) { return is_identifier(name); }

bool is_valid_label_name(std::string_view name) {
  return is_identifier(name) && !name.starts_with("__");
}

std::string metric_name(std::string_view subsystem, std::string_view name) {
  std::string full;
  full.reserve(kNamespace.size() + subsystem.size() + name.size() + 2);
  full.append(kNamespace).append("_").append(subsystem).append("_").append(name);
  return full;
}

}  // namespace txmq::metrics
