#pragma once
// Durations and times as the tool reads and prints them: "250ms", "5s", "2m", "1h".

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "txmq/client.h"

namespace txmq::cli {

using txmq::client::Millis;

// "250ms", "5s", "2m", "1h", or a bare number of milliseconds; nullopt for anything else.
std::optional<Millis> parse_duration(const std::string& s);

// The largest whole unit: 3600000 ms is "1h", 1500 ms is "1500ms".
std::string format_duration(Millis d);

// Milliseconds since the epoch as UTC, "2026-01-02T03:04:05Z".
std::string format_time_ms(std::uint64_t ms);

// Validates a duration option as CLI11 parses it, so that run() may dereference
// parse_duration() of any non-empty duration option.
const CLI::Validator& duration_validator();

}  // namespace txmq::cli
