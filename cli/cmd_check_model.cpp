// idsynth check-model: which file each part of a model is loaded from, in which layout and
// precision, and whether it loads — before a long run finds out.
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/check.h"
#include "core/device.h"
#include "core/log.h"
#include "generator/arc2face_pipeline.h"
#include "generator/autoencoder_kl.h"
#include "generator/clip_text_model.h"
#include "generator/single_file.h"
#include "generator/unet_2d_condition.h"

namespace idsynth::cli {

namespace {

void print_row(const char* part, const generator::LoadReport& r) {
  std::printf("%-13s %-9s %-11s %6lld tensors %12lld parameters  %s\n", part, dtype_string(r.file_dtype).c_str(),
              r.layout.c_str(), static_cast<long long>(r.tensors), static_cast<long long>(r.parameters), r.weights.c_str());
}

}  // namespace

int cmd_check_model(const std::vector<std::string>& args) {
  std::string model_dir, base_dir, variant, scheduler;
  po::options_description opts("options");
  opts.add_options()("model-dir", po::value<std::string>(&model_dir)->required(),
                     "model folder: an Arc2Face download (arc2face/ encoder/) or a diffusers pipeline folder")(
      "base-dir", po::value<std::string>(&base_dir), "Stable Diffusion 1.5 folder or single-file checkpoint (VAE, scheduler)")(
      "variant", po::value<std::string>(&variant), "weight-file variant to prefer, e.g. fp16")(
      "scheduler", po::value<std::string>(&scheduler)->default_value("dpmsolver++"), "scheduler to build from the scheduler config");
  auto parsed = parse_args("check-model", "--model-dir DIR [--base-dir DIR|FILE] [--variant fp16]",
                           "Resolves every part of an Arc2Face model as `sample` and `generate` do, loads each one on the\n"
                           "CPU, and prints the file it came from, the file's dtype, its layout (diffusers, legacy: old\n"
                           "attention names converted, single-file: an original LDM checkpoint), tensor and parameter\n"
                           "counts. Stops with exit code 1 at the first part that does not load.",
                           opts, args);
  if (parsed.help) return kExitOk;
  const auto paths = generator::Arc2FaceModelPaths::resolve(model_dir, base_dir, variant);
  std::printf("%-13s %-9s %-11s %14s %23s  %s\n", "part", "dtype", "layout", "", "", "file");
  generator::LoadReport r;
  generator::load_clip_text_model(paths.text_encoder, c10::kCPU, c10::kFloat, &r);
  print_row("text encoder", r);
  generator::load_unet(paths.unet, c10::kCPU, c10::kFloat, &r);
  print_row("UNet", r);
  generator::load_vae(paths.vae, c10::kCPU, c10::kFloat, &r);
  print_row("VAE", r);
  const auto s = paths.scheduler_config.empty()
                     ? generator::make_scheduler(scheduler, generator::sd15_scheduler_config(), "Stable Diffusion 1.5 scheduler config")
                     : generator::load_scheduler(scheduler, paths.scheduler_config);
  std::printf("%-13s %s from %s\n", "scheduler", s->name(),
              paths.scheduler_config.empty() ? "Stable Diffusion 1.5's built-in config" : paths.scheduler_config.c_str());
  std::printf("model loads: %s\n", model_dir.c_str());
  return kExitOk;
}

}  // namespace idsynth::cli
