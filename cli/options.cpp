#include "cli/options.h"

#include <iostream>

namespace idsynth::cli {

ParsedArgs parse_args(const std::string& command, const std::string& usage, const std::string& description,
                      po::options_description options, const std::vector<std::string>& args,
                      const po::positional_options_description* positional) {
  options.add_options()("help,h", "show this help and exit");
  ParsedArgs out;
  auto parser = po::command_line_parser(args).options(options);
  if (positional) parser.positional(*positional);
  po::store(parser.run(), out.vars);
  if (out.vars.count("help")) {
    std::cout << "usage: idsynth " << command << " " << usage << "\n\n" << description << "\n\n" << options << std::flush;
    out.help = true;
    return out;
  }
  po::notify(out.vars);
  return out;
}

}  // namespace idsynth::cli
