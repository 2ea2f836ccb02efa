// idsynth train-generator: fine-tunes the Arc2Face model (UNet and ID encoder, full or LoRA) on
// (face image, ID vector) pairs; the loop is generator/train_generator.h.
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/config.h"
#include "generator/train_generator.h"

namespace idsynth::cli {

int cmd_train_generator(const std::vector<std::string>& args) {
  po::options_description opts("options");
  opts.add_options()("config", po::value<std::string>()->required(), "training YAML (configs/train-generator-*.yaml)")(
      "set", po::value<std::vector<std::string>>()->multitoken()->composing(),
      "override a key, e.g. --set optim.lr=1e-6 --set data.paths=[out/ds]")(
      "resume", po::value<std::string>()->implicit_value("auto"),
      "continue from a checkpoint file, or (no value) from the newest checkpoint in run.output")(
      "print-config", po::bool_switch(), "print the resolved config with every key's meaning and exit");
  auto parsed = parse_args(
      "train-generator", "--config FILE [--set key=value ...] [--resume [CHECKPOINT]]",
      "Fine-tunes the Arc2Face UNet and CLIP ID encoder (full weights, or LoRA adapters) on (face image, ID\n"
      "vector) pairs from idsynth shards, insightface RecordIO or image folders, as diffusers'\n"
      "train_text_to_image.py trains Stable Diffusion (AdamW, EMA, min-SNR, condition dropout). Writes\n"
      "checkpoints (exact resume), train_log.csv, sample grids, report.html and the model (Arc2Face layout,\n"
      "model/) or a LoRA file (lora.safetensors) to run.output. SIGTERM/SIGINT stop after the current step\n"
      "with a checkpoint (exit 130); --resume continues.",
      opts, args);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  const std::vector<std::string> overrides =
      v.count("set") ? v["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  const generator::TrainGeneratorConfig cfg =
      config::load<generator::TrainGeneratorConfig>(v["config"].as<std::string>(), overrides);
  if (v["print-config"].as<bool>()) {
    std::cout << config::to_yaml(cfg, true);
    return kExitOk;
  }
  generator::GeneratorTrainHooks hooks;
  hooks.handle_signals = true;
  const generator::GeneratorTrainResult r =
      generator::train_generator(cfg, hooks, v.count("resume") ? v["resume"].as<std::string>() : std::string());
  if (r.interrupted != 0) {
    std::cerr << "idsynth train-generator: stopped after step " << r.steps << "; checkpoint " << r.last_checkpoint
              << "; rerun with --resume to continue\n";
    return kExitInterrupted;
  }
  std::cout << "trained " << r.steps << " steps; loss " << r.first_loss << " -> " << r.last_loss << "; "
            << (r.lora_path.empty() ? "model " + r.model_dir : "LoRA " + r.lora_path) << "; report " << r.report_path << "\n";
  return kExitOk;
}

}  // namespace idsynth::cli
