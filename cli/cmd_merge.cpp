// idsynth merge: check a dataset's shards against their records and rebuild manifest.json.
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "dataset/generate_config.h"
#include "core/check.h"
#include "core/file_util.h"
#include "dataset/generate.h"
#include "formats/dataset_folder.h"

namespace idsynth::cli {

int cmd_merge(const std::vector<std::string>& args) {
  bool check_only = false;
  po::options_description opts("options");
  opts.add_options()("dir", po::value<std::string>()->required(), "dataset folder (output.dir)")(
      "check-only", po::bool_switch(&check_only), "report only: keep the records of damaged shards and the manifest as they are");
  po::positional_options_description pos;
  pos.add("dir", 1);
  auto parsed = parse_args("merge", "DIR [--check-only]",
                           "Verifies every shard record against its file (size and sha256), lists missing and damaged\n"
                           "shards, removes the records of damaged ones (so the next `idsynth generate` regenerates them)\n"
                           "and stale temporaries, and rebuilds manifest.json. Exit code 3 when the dataset is incomplete.",
                           opts, args, &pos);
  if (parsed.help) return kExitOk;
  const std::string dir = parsed.vars["dir"].as<std::string>();
  const std::string config_path = dir + "/config.resolved.yaml";
  IDSYNTH_CHECK(file_exists(config_path), dir, ": not an idsynth dataset (config.resolved.yaml missing)");
  const auto cfg = config::load<dataset::GenerateConfig>(config_path);
  const auto report = formats::verify_dataset(dir, dataset::dataset_shard_count(cfg), !check_only);
  std::cout << formats::describe(report);
  return report.complete() ? kExitOk : kExitPartial;
}

}  // namespace idsynth::cli
