// idsynth train: an IResNet with ArcFace/CosFace/AdaFace on idsynth shards or insightface RecordIO,
// with verification on .bin packs during training (eval/ wired into the trainer's callback here).
#include <algorithm>
#include <filesystem>
#include <iostream>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/check.h"
#include "core/config.h"
#include "core/log.h"
#include "formats/bin_pack.h"
#include "eval/pack_embeddings.h"
#include "recognition/recognizer.h"
#include "eval/verification.h"
#include "recognition/trainer.h"

namespace idsynth::cli {

namespace {

namespace fs = std::filesystem;

recognition::ValidationFn make_validation(const recognition::TrainValidationConfig& v) {
  if (v.bins.empty()) return {};
  auto packs = std::make_shared<std::vector<formats::BinPack>>();
  for (const auto& path : v.bins) packs->push_back(formats::read_bin(path));
  return [packs, v](recognition::IResNet& net, c10::Device device) {
    const auto rec = recognition::module_recognizer(net, device, "training backbone");
    eval::EmbedOptions eo;
    eo.batch_size = v.batch_size;
    eo.flip = v.flip;
    std::vector<recognition::ValidationScore> scores;
    for (const auto& pack : *packs) {
      const eval::PackEmbeddings emb = eval::embed_pack(*rec, pack, eo);
      // insightface's 10 folds; a pack with fewer pairs (test packs) gets one fold per pair.
      eval::VerificationOptions vo;
      vo.n_folds = std::min<int64_t>(10, pack.num_pairs());
      const eval::VerificationResult r = eval::evaluate_embeddings(emb.raw, emb.raw_flip, pack.issame, vo);
      scores.push_back({fs::path(pack.path).stem().string(), r.accuracy, r.std, r.xnorm});
    }
    return scores;
  };
}

}  // namespace

int cmd_train(const std::vector<std::string>& args) {
  po::options_description opts("options");
  opts.add_options()("config", po::value<std::string>()->required(), "training YAML (configs/train-ir50.yaml)")(
      "set", po::value<std::vector<std::string>>()->multitoken()->composing(),
      "override a key, e.g. --set optim.lr=0.05 --set data.paths=[out/ds]")(
      "resume", po::value<std::string>()->implicit_value("auto"),
      "continue from a checkpoint file, or (no value) from the newest checkpoint in run.output")(
      "print-config", po::bool_switch(), "print the resolved config and exit");
  auto parsed = parse_args("train", "--config FILE [--set key=value ...] [--resume [CHECKPOINT]]",
                           "Trains an IResNet face recogniser (arcface_torch train_v2.py recipe) on idsynth shards or\n"
                           "insightface RecordIO; writes checkpoints, logs, a loss curve and model.safetensors/model.pt\n"
                           "(arcface_torch names) to run.output. 'idsynth config --defaults' does not cover this\n"
                           "command's keys: see --print-config.",
                           opts, args);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  const std::vector<std::string> overrides = v.count("set") ? v["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  const recognition::TrainConfig cfg = config::load<recognition::TrainConfig>(v["config"].as<std::string>(), overrides);
  if (v["print-config"].as<bool>()) {
    std::cout << config::to_yaml(cfg, true);
    return kExitOk;
  }
  recognition::TrainHooks hooks;
  hooks.validate = make_validation(cfg.validation);
  const recognition::TrainResult r =
      recognition::train(cfg, hooks, v.count("resume") ? v["resume"].as<std::string>() : std::string());
  std::cout << "trained " << r.steps << " steps; loss " << r.last_loss << ", batch accuracy " << r.last_accuracy
            << "; model " << r.model_path << "\n";
  for (const auto& s : r.validation) std::cout << "[" << s.name << "] Accuracy-Flip: " << s.accuracy << "+-" << s.std << "\n";
  if (r.corrupt_images > 0) {
    std::cerr << "idsynth train: " << r.corrupt_images << " images did not decode and were skipped\n";
    return kExitPartial;
  }
  return kExitOk;
}

}  // namespace idsynth::cli
