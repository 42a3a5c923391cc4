#include "metrics/text_format.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>

#include "common/utf8.h"
#include "metrics/counter.h"
#include "metrics/gauge.h"
#include "metrics/histogram.h"

namespace txmq::metrics {

namespace {

void append_integer(std::string& out, std::uint64_t value) {
  char buffer[24];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  out.append(buffer, end);
}

// `name<suffix>{labels} `, up to the value.
void append_series(std::string& out, std::string_view name, std::string_view suffix,
                   std::string_view labels) {
  out.append(name).append(suffix);
  if (!labels.empty()) out.append("{").append(labels).append("}");
  out.push_back(' ');
}

}  // namespace

void append_escaped_help(std::string& out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
}

void append_escaped_label_value(std::string& out, std::string_view value) {
  // The page is UTF-8 (kTextContentType): a byte that is not part of valid UTF-8 would make
  // the whole page unparseable, so it is written as U+FFFD, whoever chose the value.
  for (std::size_t i = 0; i < value.size();) {
    const std::size_t n = common::utf8_length(value, i);
    if (n != 1) {
      if (n == 0) out.append("\xEF\xBF\xBD");
      else out.append(value.substr(i, n));
      i += n == 0 ? 1 : n;
      continue;
    }
    const char c = value[i++];
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '"') {
      out.append("\\\"");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
}

std::string format_labels(std::span<const std::string> names, std::span<const std::string> values) {
  std::string labels;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) labels.push_back(',');
    labels.append(names[i]).append("=\"");
    append_escaped_label_value(labels, values[i]);
    labels.push_back('"');
  }
  return labels;
}

void append_value(std::string& out, double value) {
  if (std::isnan(value)) {
    out.append("NaN");
  } else if (std::isinf(value)) {
    out.append(value > 0 ? "+Inf" : "-Inf");
  } else {
    // The shortest digits that read back as the same double, as plain decimals from 1e-4 up
    // to 1e21 so that bucket bounds read "0.0001" and "1000" rather than "1e-04" and
    // "1e+03", and in scientific notation outside that range.
    const double magnitude = std::fabs(value);
    const bool plain = magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e21);
    char buffer[64];  // the longest plain form is under 30 characters
    const auto [end, ec] =
        std::to_chars(buffer, buffer + sizeof buffer, value,
                      plain ? std::chars_format::fixed : std::chars_format::scientific);
    out.append(buffer, end);
  }
}

void append_header(std::string& out, std::string_view name, std::string_view help,
                   MetricType type) {
  out.append("# HELP ").append(name).push_back(' ');
  append_escaped_help(out, help);
  out.append("\n# TYPE ").append(name).push_back(' ');
  out.append(type_name(type)).push_back('\n');
}

void append_sample(std::string& out, std::string_view name, std::string_view labels, double value) {
  append_series(out, name, "", labels);
  append_value(out, value);
  out.push_back('\n');
}

void append_samples(std::string& out, std::string_view name, std::string_view labels,
                    const Counter& counter) {
  append_series(out, name, "", labels);
  append_integer(out, counter.value());
  out.push_back('\n');
}

void append_samples(std::string& out, std::string_view name, std::string_view labels,
                    const Gauge& gauge) {
  append_sample(out, name, labels, gauge.value());
}

void append_samples(std::string& out, std::string_view name, std::string_view labels,
                    const Histogram& histogram) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const std::span<const double> bounds = histogram.upper_bounds();
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += histogram.bucket_count(i);
    out.append(name).append("_bucket{").append(labels);
    out.append(labels.empty() ? "le=\"" : ",le=\"");
    append_value(out, i < bounds.size() ? bounds[i] : kInf);
    out.append("\"} ");
    append_integer(out, cumulative);
    out.push_back('\n');
  }
  append_series(out, name, "_sum", labels);
  append_value(out, histogram.sum());
  out.push_back('\n');
  append_series(out, name, "_count", labels);
  append_integer(out, cumulative);
  out.push_back('\n');
}

}  // namespace txmq::metrics
