// Running the built idsynth binary from end-to-end tests.
#pragma once

#include <string>

namespace idsynth::test {

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `command` through /bin/sh and captures both streams.
CommandResult run_command(const std::string& command);
// Number of '\n' in s: error messages must be one line.
int count_lines(const std::string& s);
// Path of the built CLI (IDSYNTH_BINARY_DIR/cli/idsynth).
std::string idsynth_binary();

}  // namespace idsynth::test
