#include "broker_list.h"

namespace txmq::client::detail {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool same(const common::HostPort& a, const common::HostPort& b) { return a.host == b.host && a.port == b.port; }

}  // namespace

Result<BrokerList> BrokerList::parse(std::string_view text) {
  std::vector<common::HostPort> entries;
  for (;;) {
    const std::size_t comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    if (item.empty())
      return Error(ErrorCode::kInvalidArgument,
                   "empty broker address in '" + std::string(text) + "' (a list is \"host:port,host:port\")");
    auto hp = common::parse_host_port(item);
    if (!hp) return hp.error();
    entries.push_back(std::move(*hp));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  BrokerList list(std::move(entries));
  list.configured_ = list.entries_.size();
  return list;
}

const common::HostPort& BrokerList::start_round() {
  current_ = preferred_;
  tried_ = 1;
  return entries_[current_];
}

std::optional<std::size_t> BrokerList::next() {
  if (tried_ >= entries_.size()) return std::nullopt;
  ++tried_;
  current_ = (current_ + 1) % entries_.size();
  return current_;
}

Status BrokerList::prefer(std::string_view address) {
  auto hp = common::parse_host_port(address);
  if (!hp) return hp.error();
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    if (same(entries_[i], *hp)) {
      preferred_ = i;
      return {};
    }
  }
  // One learned entry at most: a client that follows leaders through many promotions does
  // not grow its list, and the configured entries stay its way back.
  entries_.resize(configured_);
  entries_.push_back(std::move(*hp));
  preferred_ = configured_;
  return {};
}

}  // namespace txmq::client::detail
