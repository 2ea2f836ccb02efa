// idsynth config: the defaults in one place, and a dry run of config resolution.
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "dataset/generate_config.h"

namespace idsynth::cli {

int cmd_config(const std::vector<std::string>& args) {
  po::options_description opts("options");
  opts.add_options()("config,c", po::value<std::string>()->default_value(""), "YAML config to validate and resolve")(
      "set", po::value<std::vector<std::string>>()->composing(), "override a key: --set generation.steps=30 (repeatable)")(
      "defaults", po::bool_switch(), "print every key with its default and documentation");
  auto parsed = parse_args("config", "[--defaults | --config FILE [--set key=value]...]",
                           "Prints the resolved config (defaults, then the file, then --set overrides) as YAML, or the\n"
                           "documented defaults. Exits with code 1 and one line naming the key if the config is invalid.",
                           opts, args);
  if (parsed.help) return kExitOk;
  if (parsed.vars["defaults"].as<bool>()) {
    std::cout << config::to_yaml(dataset::GenerateConfig{}, /*with_docs=*/true);
    return kExitOk;
  }
  std::vector<std::string> overrides;
  if (parsed.vars.count("set")) overrides = parsed.vars["set"].as<std::vector<std::string>>();
  const auto cfg = config::load<dataset::GenerateConfig>(parsed.vars["config"].as<std::string>(), overrides);
  std::cout << config::to_yaml(cfg);
  return kExitOk;
}

}  // namespace idsynth::cli
