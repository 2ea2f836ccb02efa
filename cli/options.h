// Shared command-line plumbing on Boost.Program_options: every command gets --help, and usage
// errors become kExitUsage with one line.
#pragma once

#include <boost/program_options.hpp>

#include <string>
#include <vector>

namespace idsynth::cli {

namespace po = boost::program_options;

struct ParsedArgs {
  po::variables_map vars;
  bool help = false;
};

// Parses args against `options` (+ positional); prints "usage: idsynth <command> <usage>" and the
// option table for --help. Throws po::error for bad input (caught in main as a usage error).
ParsedArgs parse_args(const std::string& command, const std::string& usage, const std::string& description,
                      po::options_description options, const std::vector<std::string>& args,
                      const po::positional_options_description* positional = nullptr);

}  // namespace idsynth::cli
