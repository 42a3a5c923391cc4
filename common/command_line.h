#pragma once
// The command line of every txmq program, parsed one way: --help and --version print and
// exit 0; anything CLI11 refuses (an unknown flag, a missing or bad value) is printed with
// the usage hint and exits 2, the code each program gives a bad config. CLI11's own
// codes (106, 109, ...) would tell a script nothing it could rely on.

#include <CLI/CLI.hpp>

#include <optional>

namespace txmq::common {

// The process's exit code when it is to stop now; nullopt to go on with the parsed app.
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
}

}  // namespace txmq::common
