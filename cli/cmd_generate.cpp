// idsynth generate: a YAML config -> a face-recognition training set (HDF5 shards + manifest).
#include <csignal>
#include <cstdlib>
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "dataset/generate_config.h"
#include "core/check.h"
#include "core/log.h"
#include "dataset/generate.h"

namespace idsynth::cli {
namespace {

// SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT, when set, are the defaults of --task-index/--task-count.
int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  IDSYNTH_CHECK(end != v && *end == '\0', "environment ", name, ": expected an integer, found '", v, "'");
  return x;
}

}  // namespace

int cmd_generate(const std::vector<std::string>& args) {
  dataset::GenerateOptions o;
  o.task_index = env_int("SLURM_ARRAY_TASK_ID", 0);
  o.task_count = env_int("SLURM_ARRAY_TASK_COUNT", 1);
  bool no_progress = false;
  po::options_description opts("options");
  opts.add_options()("config,c", po::value<std::string>()->required(), "YAML config (configs/*.yaml)")(
      "set", po::value<std::vector<std::string>>()->composing(), "override a key: --set generation.steps=30 (repeatable)")(
      "task-index", po::value<int64_t>(&o.task_index)->default_value(o.task_index),
      "this task generates shards k = task-index (mod task-count) (default: $SLURM_ARRAY_TASK_ID)")(
      "task-count", po::value<int64_t>(&o.task_count)->default_value(o.task_count),
      "number of tasks sharing the dataset (default: $SLURM_ARRAY_TASK_COUNT)")(
      "max-shards", po::value<int64_t>(&o.max_shards)->default_value(0),
      "stop after writing this many shards (0: all); rerun to continue")(
      "no-progress", po::bool_switch(&no_progress), "no progress bar")(
      "print-config", po::bool_switch(), "print the resolved config (defaults + file + --set) and exit");
  auto parsed = parse_args("generate", "--config FILE [--set key=value]... [--task-index K --task-count N]",
                           "Samples the identities once, then draws images_per_identity faces for each, filters them by\n"
                           "ID consistency and writes HDF5 shards atomically into output.dir (docs/formats.md). Rerunning\n"
                           "the same command resumes: finished shards are skipped, and the result is byte-identical to an\n"
                           "uninterrupted run. Exit code 3: this task's shards are not all finished (--max-shards). SIGTERM or\n"
                           "SIGINT stops within one UNet batch, keeping finished shards: exit code 130. A second run on\n"
                           "the same task refuses while the first holds output.dir/generate-task-K-of-N.lock.",
                           opts, args);
  if (parsed.help) return kExitOk;
  std::vector<std::string> overrides;
  if (parsed.vars.count("set")) overrides = parsed.vars["set"].as<std::vector<std::string>>();
  const std::string config_path = parsed.vars["config"].as<std::string>();
  const auto cfg = config::load<dataset::GenerateConfig>(config_path, overrides);
  if (parsed.vars["print-config"].as<bool>()) {
    std::cout << config::to_yaml(cfg, /*with_docs=*/true);
    return kExitOk;
  }
  o.progress = !no_progress;
  o.handle_signals = true;
  LOG_INF("generate: config ", config_path, " -> ", cfg.output.dir);
  const auto summary = dataset::generate_dataset(cfg, o);
  std::cout << dataset::describe(summary);
  const bool task_done = summary.shards_skipped + summary.shards_generated == summary.shards_of_task;
  if (summary.interrupted != 0 && !task_done) {
    std::cerr << "idsynth generate: stopped by " << (summary.interrupted == SIGTERM ? "SIGTERM" : "SIGINT")
              << ": finished shards are saved; rerun the same command to resume\n";
    return kExitInterrupted;
  }
  return task_done ? kExitOk : kExitPartial;
}

}  // namespace idsynth::cli
