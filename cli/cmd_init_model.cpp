// idsynth init-model: a small random-weight Arc2Face model in the real file layout.
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/log.h"
#include "generator/model_init.h"

namespace idsynth::cli {

int cmd_init_model(const std::vector<std::string>& args) {
  generator::ModelInitOptions o;
  po::options_description opts("options");
  opts.add_options()("out", po::value<std::string>()->required(), "model folder to write")(
      "layout", po::value<std::string>(&o.layout)->default_value(o.layout),
      "diffusers (unet/ text_encoder/ vae/ scheduler/) or arc2face (arc2face/ encoder/pytorch_model.bin vae/ scheduler/)")(
      "size", po::value<std::string>(&o.size)->default_value(o.size), "tiny, small, or miniature (32x32 images through a 4x VAE: 8x8 latents; docs/miniature.md)")(
      "text-hidden-size", po::value<int64_t>(&o.text_hidden_size)->default_value(o.text_hidden_size),
      "text encoder width = the widest identity vector the model takes")(
      "seed", po::value<int64_t>(&o.seed)->default_value(o.seed), "seed of the random weights")(
      "with-recognizer", po::bool_switch(&o.with_recognizer),
      "also write recognizer.safetensors: a small random IResNet with the text width as embedding size (ID filter)");
  auto parsed = parse_args("init-model", "--out DIR [--layout diffusers|arc2face] [--size tiny|small|miniature]",
                           "Writes a small random-weight Arc2Face model (CLIP ID encoder, UNet, VAE, DPM-Solver++\n"
                           "scheduler config) in the real diffusers/transformers/Arc2Face file layouts, so every idsynth\n"
                           "command can run offline. The same seed writes the same bytes.",
                           opts, args);
  if (parsed.help) return kExitOk;
  const std::string out = parsed.vars["out"].as<std::string>();
  const std::string summary = generator::write_random_model(out, o);
  LOG_INF("wrote ", out, ": ", summary);
  return kExitOk;
}

}  // namespace idsynth::cli
