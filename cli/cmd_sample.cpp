// idsynth sample: identity vectors -> Arc2Face face images (PNG) and a sample.json run record.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/check.h"
#include "core/device.h"
#include "core/file_util.h"
#include "core/hashing.h"
#include "formats/image.h"
#include "core/json.h"
#include "core/log.h"
#include "generator/arc2face_pipeline.h"
#include "generator/clip_text_model.h"
#include "generator/schedulers.h"
#include "formats/identity_file.h"

namespace idsynth::cli {

namespace {

struct SampleParams {
  std::string model_dir, base_dir, variant, ids_path, out_dir;
  int64_t images_per_id = 1;
  int64_t seed = 0;
  int64_t steps = 25;
  double guidance = 3.0;
  std::string scheduler = "dpmsolver++";
  std::string timestep_spacing;  // empty: the scheduler config's
  int64_t height = 0, width = 0;  // 0: the UNet's sample_size x the VAE factor
  std::string device = "cpu", dtype = "float32";
  int64_t batch_size = 0;
  std::vector<std::string> loras;  // FILE[:SCALE]
};

json::Value file_record(const std::string& path) {
  json::Value r = json::Value::object();
  r.set("path", path);
  r.set("bytes", static_cast<int64_t>(file_size(path)));
  r.set("sha256", sha256_file(path));
  return r;
}

std::string image_name(int64_t identity, int64_t image) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%05lld_%03lld.png", static_cast<long long>(identity), static_cast<long long>(image));
  return buf;
}

}  // namespace

int cmd_sample(const std::vector<std::string>& args) {
  SampleParams p;
  po::options_description opts("options");
  SharedOptions shared;
  shared.device("the UNet, VAE and text encoder").dtype("the UNet, VAE and text encoder (scheduler math is float32)");
  opts.add_options()("model-dir", po::value<std::string>(&p.model_dir)->required(),
                     "model folder: diffusers layout (unet/ text_encoder/ vae/ scheduler/) or the Arc2Face download (arc2face/ encoder/)")(
      "base-dir", po::value<std::string>(&p.base_dir),
      "Stable Diffusion 1.5 folder, or single-file checkpoint (v1-5-pruned-emaonly.safetensors / .ckpt), providing the VAE and scheduler when --model-dir lacks them")(
      "variant", po::value<std::string>(&p.variant), "weight-file variant to prefer, e.g. fp16 (default: the plain files)")(
      "ids", po::value<std::string>(&p.ids_path)->required(), "identity vectors [N, D]: .npy (float32/float64) or safetensors (one tensor or 'ids')")(
      "images-per-id", po::value<int64_t>(&p.images_per_id)->default_value(p.images_per_id), "images per identity")(
      "seed", po::value<int64_t>(&p.seed)->required(), "seed of the one CPU generator that draws all latents (as diffusers)")(
      "steps", po::value<int64_t>(&p.steps)->default_value(p.steps), "denoising steps")(
      "guidance", po::value<double>(&p.guidance)->default_value(p.guidance), "classifier-free guidance scale (<= 1: off)")(
      "scheduler", po::value<std::string>(&p.scheduler)->default_value(p.scheduler), generator::scheduler_kinds_text().c_str())(
      "timestep-spacing", po::value<std::string>(&p.timestep_spacing),
      "override the scheduler config's timestep_spacing: linspace, leading or trailing (step-distilled LoRAs such as Hyper-SD expect trailing)")(
      "height", po::value<int64_t>(&p.height)->default_value(0), "image height (0: UNet sample_size x VAE factor, 512 for SD-1.5)")(
      "width", po::value<int64_t>(&p.width)->default_value(0), "image width (0: as height)")(
      "batch-size", po::value<int64_t>(&p.batch_size)->default_value(0), "images per denoising batch (0: all); results do not depend on it")(
      "lora", po::value<std::vector<std::string>>(&p.loras)->composing(),
      "LoRA file to fuse into the UNet / text encoder, FILE[:SCALE] (scale default 1), repeatable; kohya, diffusers or peft form")(
      "out", po::value<std::string>(&p.out_dir)->required(), "output folder for {identity:05d}_{image:03d}.png and sample.json");
  auto parsed = parse_args("sample", "--model-dir DIR [--base-dir SD15] --ids FILE --images-per-id N --seed S --out DIR",
                           "Generates images_per_id faces per identity vector with Arc2Face (CFG, DPM-Solver++ by\n"
                           "default) and writes them as PNG with a sample.json record of settings and model hashes.",
                           opts, args, nullptr, &shared);
  if (parsed.help) return kExitOk;
  p.device = shared.device_text();
  p.dtype = shared.dtype_text();
  IDSYNTH_CHECK(p.images_per_id >= 1, "--images-per-id: expected >= 1, found ", p.images_per_id);
  IDSYNTH_CHECK(p.steps >= 1, "--steps: expected >= 1, found ", p.steps);
  IDSYNTH_CHECK(p.seed >= 0, "--seed: expected >= 0, found ", p.seed);
  IDSYNTH_CHECK(p.batch_size >= 0, "--batch-size: expected >= 0, found ", p.batch_size);
  log::Stopwatch total;

  // 1. files and identities (checked before any weights are read)
  const auto paths = generator::Arc2FaceModelPaths::resolve(p.model_dir, p.base_dir, p.variant);
  const auto te_config = generator::CLIPTextConfig::from_file(paths.text_encoder.config);
  bool were_normalised = true;
  const at::Tensor ids = formats::read_identity_vectors(p.ids_path, te_config.hidden_size, &were_normalised);
  const int64_t n_ids = ids.size(0);
  // LoRA files are read whole here too: a bad one fails before any model weights are read.
  generator::PipelineOptions pipeline_options;
  for (const auto& text : p.loras) {
    pipeline_options.loras.push_back(generator::parse_lora_spec(text));
    pipeline_options.lora_files.push_back({generator::read_lora(pipeline_options.loras.back().path), pipeline_options.loras.back().scale});
  }
  // The scheduler's own step range (LCM: 1..original_inference_steps), before any weights are read.
  {
    const auto schedule = generator::Arc2FacePipeline::scheduler_for(paths, p.scheduler, p.timestep_spacing);
    try {
      schedule->set_timesteps(p.steps);
    } catch (const Error& e) {
      fail("--steps: ", e.what());
    }
  }

  // 2. models
  pipeline_options.device = shared.device_value();
  pipeline_options.dtype = runtime_dtype(shared.dtype_value(), pipeline_options.device, "--dtype");
  p.dtype = dtype_string(pipeline_options.dtype);
  pipeline_options.scheduler = p.scheduler;
  pipeline_options.timestep_spacing = p.timestep_spacing;
  auto pipe = generator::Arc2FacePipeline::load(paths, pipeline_options);
  if (p.height == 0) p.height = pipe.default_image_size();
  if (p.width == 0) p.width = p.height;
  IDSYNTH_CHECK(p.height > 0, "--height: the UNet config has no sample_size; give --height and --width");

  // 3. latents: one generator, identity-major, as diffusers' num_images_per_prompt; a scheduler
  //    that adds noise between steps (LCM) keeps drawing from the same generator, as
  //    StableDiffusionPipeline passes it to scheduler.step(), so a seed gives diffusers' images.
  const int64_t count = n_ids * p.images_per_id;
  at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(p.seed));
  const auto latents = pipe.draw_latents(generator, count, p.height, p.width);
  generator::SampleOptions so;
  so.num_inference_steps = p.steps;
  so.guidance_scale = p.guidance;
  so.batch_size = p.batch_size;
  LOG_INF("sampling ", count, " images (", n_ids, " identities x ", p.images_per_id, ") at ", p.height, "x", p.width, ", ",
          p.steps, " steps, guidance ", p.guidance, ", ", pipe.scheduler().name(), ", ", p.device, " ", p.dtype);
  const auto images = generator::Arc2FacePipeline::to_uint8(pipe.sample(ids, latents, so, nullptr, {generator}));

  // 4. outputs
  std::filesystem::create_directories(p.out_dir);
  json::Value names = json::Value::array();
  for (int64_t i = 0; i < count; ++i) {
    const std::string name = image_name(i / p.images_per_id, i % p.images_per_id);
    formats::write_image_rgb(p.out_dir + "/" + name, formats::tensor_to_mat(images[i]));
    names.push_back(name);
  }
  json::Value record = json::Value::object();
  record.set("command", "sample");
  record.set("model_dir", p.model_dir);
  record.set("base_dir", p.base_dir);
  if (!p.variant.empty()) record.set("variant", p.variant);
  if (!pipeline_options.loras.empty()) {
    json::Value loras = json::Value::array();
    for (const auto& l : pipeline_options.loras) {
      json::Value r = file_record(l.path);
      r.set("scale", l.scale);
      loras.push_back(r);
    }
    record.set("loras", loras);
  }
  record.set("ids", file_record(p.ids_path));
  record.set("num_identities", n_ids);
  record.set("id_width", ids.size(1));
  record.set("ids_were_normalised", were_normalised);
  record.set("images_per_id", p.images_per_id);
  record.set("seed", p.seed);
  record.set("latents", cat("torch.randn((", count, ", ", pipe.latent_channels(), ", ", p.height / pipe.vae_scale_factor(), ", ",
                            p.width / pipe.vae_scale_factor(), "), generator=torch.Generator('cpu').manual_seed(", p.seed,
                            "), dtype=float32), identity-major"));
  record.set("steps", p.steps);
  record.set("guidance_scale", p.guidance);
  record.set("scheduler", pipe.scheduler().name());
  if (!p.timestep_spacing.empty()) record.set("timestep_spacing", p.timestep_spacing);
  record.set("height", p.height);
  record.set("width", p.width);
  record.set("device", p.device);
  record.set("dtype", dtype_string(pipeline_options.dtype));
  record.set("batch_size", p.batch_size);
  json::Value files = json::Value::array();
  for (const auto& f : paths.files()) files.push_back(file_record(f));
  record.set("model_files", files);
  record.set("images", names);
  json::write_file(p.out_dir + "/sample.json", record);
  LOG_INF("wrote ", count, " images and sample.json to ", p.out_dir, ", taking ", total.seconds(), " s");
  return kExitOk;
}

}  // namespace idsynth::cli
