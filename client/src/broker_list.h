#pragma once
// The brokers a client connection may use (ClientOptions::broker, "h1:p1,h2:p2,h3:p3"), and
// the order it tries them in.
//
// A connection round tries every entry once, starting from the preferred one (the entry
// that last answered a hello, or the leader a NotLeader named) and wrapping around the
// list; a round in which none connects ends in the connection's backoff. A leader named
// by a NotLeader that the list lacks is added as one learned entry (the next such leader
// replaces it), so that the client follows a leader it was not told of and still falls
// back on the list when that leader goes.
// Concurrency: none; the connection's I/O thread owns it.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/address.h"
#include "common/result.h"

namespace txmq::client::detail {

class BrokerList {
 public:
  // Entries are separated by commas, with optional blanks around each. Errors:
  // kInvalidArgument for an empty list or entry, or an entry that is not HOST:PORT
  // (common::parse_host_port's message, which quotes it).
  static Result<BrokerList> parse(std::string_view text);

  std::size_t size() const { return entries_.size(); }
  const common::HostPort& entry(std::size_t i) const { return entries_[i]; }

  // Starts a round at the preferred entry and returns it.
  const common::HostPort& start_round();
  // The round's next entry, or nullopt when the round has tried every one.
  std::optional<std::size_t> next();
  // The entry the round is at (start_round's or next's).
  std::size_t current() const { return current_; }
  const common::HostPort& current_entry() const { return entries_[current_]; }

  // The current entry answered a hello: later rounds start from it.
  void connected() { preferred_ = current_; }
  // A broker named this address ("host:port") as its leader: later rounds start from it,
  // added as the learned entry when the list lacks it. kInvalidArgument when it is not
  // HOST:PORT (the preference is left as it was).
  Status prefer(std::string_view address);
  // The current entry refused us without naming a leader: later rounds start after it.
  void skip_current() { preferred_ = (current_ + 1) % entries_.size(); }

 private:
  explicit BrokerList(std::vector<common::HostPort> entries) : entries_(std::move(entries)) {}

  std::vector<common::HostPort> entries_;  // the configured ones, then the learned one, if any
  std::size_t configured_ = 0;             // how many of entries_ came from the text
  std::size_t preferred_ = 0;              // where the next round starts
  std::size_t current_ = 0;                // the entry being tried
  std::size_t tried_ = 0;                  // entries tried this round
};

}  // namespace txmq::client::detail
