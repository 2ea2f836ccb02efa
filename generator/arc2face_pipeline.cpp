#include "generator/arc2face_pipeline.h"

#include <algorithm>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include "core/check.h"
#include "core/file_util.h"
#include "core/log.h"
#include "generator/single_file.h"

namespace idsynth::generator {

// =============================================================================================
// Model files

namespace {

// The first of `dirs` that holds `marker`, else "".
std::string first_with(const std::vector<std::string>& dirs, const std::string& marker) {
  for (const auto& d : dirs)
    if (!d.empty() && file_exists(d + "/" + marker)) return d;
  return "";
}

std::string join_or(const std::vector<std::string>& paths) {
  std::string s;
  for (const auto& p : paths) s += (s.empty() ? "" : " or ") + p;
  return s;
}

// Arc2Face's folder wins over a base model's when a folder has both (a merged download); the user
// is told, since the other would give a different model.
std::string pick_dir(const std::string& arc2face, const std::string& diffusers, const char* part) {
  const bool a = file_exists(arc2face + "/config.json"), d = file_exists(diffusers + "/config.json");
  if (a && d)
    LOG_WRN("both ", arc2face, "/ (Arc2Face) and ", diffusers, "/ (a diffusers pipeline) hold a ", part,
            "; using Arc2Face's ", arc2face, "/");
  return a ? arc2face : d ? diffusers : "";
}

}  // namespace

Arc2FaceModelPaths Arc2FaceModelPaths::resolve(const std::string& model_dir, const std::string& base_dir,
                                               const std::string& variant) {
  IDSYNTH_CHECK(is_directory(model_dir), model_dir, ": model directory not found");
  const bool base_file = !base_dir.empty() && file_exists(base_dir) && !is_directory(base_dir);
  IDSYNTH_CHECK(base_dir.empty() || base_file || is_directory(base_dir), base_dir,
                ": base model not found (expected a Stable Diffusion 1.5 folder or single-file checkpoint)");
  Arc2FaceModelPaths p;
  const std::string m = model_dir, b = base_dir;
  // 1. UNet and text encoder: the Arc2Face download's folders, else a diffusers pipeline's; the
  //    UNet of a fine-tuned SD-1.5 single file as a last resort.
  const std::string unet_dir = pick_dir(m + "/arc2face", m + "/unet", "UNet");
  const std::string te_dir = pick_dir(m + "/encoder", m + "/text_encoder", "text encoder");
  IDSYNTH_CHECK(!unet_dir.empty() || base_file, join_or({m + "/arc2face/config.json", m + "/unet/config.json"}),
                ": missing (UNet config)");
  IDSYNTH_CHECK(!te_dir.empty(), join_or({m + "/encoder/config.json", m + "/text_encoder/config.json"}),
                ": missing (text encoder config)");
  p.unet = !unet_dir.empty() ? locate_component(unet_dir, Component::kUNet, variant) : single_file_component(b);
  p.text_encoder = locate_component(te_dir, Component::kTextEncoder, variant);
  // 2. VAE and scheduler: the model folder, else the SD-1.5 base (folder or single file, whose
  //    scheduler is SD-1.5's own config).
  std::vector<std::string> vae_dirs = {m + "/vae"}, sched_dirs = {m + "/scheduler"};
  if (!b.empty() && !base_file) {
    vae_dirs.push_back(b + "/vae");
    sched_dirs.push_back(b + "/scheduler");
  }
  const std::string vae_dir = first_with(vae_dirs, "config.json");
  if (!vae_dir.empty()) {
    p.vae = locate_component(vae_dir, Component::kVAE, variant);
  } else if (base_file) {
    p.vae = single_file_component(b);
  } else {
    std::vector<std::string> want;
    for (const auto& d : vae_dirs) want.push_back(d + "/config.json");
    fail(join_or(want), ": missing (VAE config", b.empty() ? "; an Arc2Face download needs --base-dir with SD-1.5's vae/" : "", ")");
  }
  const std::string sched_dir = first_with(sched_dirs, "scheduler_config.json");
  if (!sched_dir.empty()) {
    p.scheduler_config = sched_dir + "/scheduler_config.json";
  } else if (!base_file) {
    std::vector<std::string> want;
    for (const auto& d : sched_dirs) want.push_back(d + "/scheduler_config.json");
    fail(join_or(want), ": missing (scheduler config", b.empty() ? "; an Arc2Face download needs --base-dir with SD-1.5's scheduler/" : "",
         ")");
  }
  return p;
}

std::vector<std::string> Arc2FaceModelPaths::files() const {
  // A single file appears once; configs that are built in (single file) are not files.
  std::vector<std::string> out;
  for (const auto& f : {unet.config, unet.weights, text_encoder.config, text_encoder.weights, vae.config, vae.weights,
                        scheduler_config})
    if (!f.empty() && std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
  return out;
}

// =============================================================================================
// Pipeline

Arc2FacePipeline::Arc2FacePipeline(CLIPTextModel text_encoder, UNet2DCondition unet, AutoencoderKL vae,
                                   std::unique_ptr<Scheduler> scheduler, PipelineOptions options)
    : encoder_(std::move(text_encoder)),
      unet_(std::move(unet)),
      vae_(std::move(vae)),
      scheduler_(std::move(scheduler)),
      options_(std::move(options)) {
  IDSYNTH_CHECK(scheduler_ != nullptr, "Arc2Face pipeline: no scheduler");
  const auto& uc = unet_->config();
  for (int64_t dim : uc.cross_attention_dim)
    IDSYNTH_CHECK(dim == encoder_.hidden_size(), "Arc2Face pipeline: UNet cross_attention_dim ", dim,
                  " does not match the text encoder's hidden_size ", encoder_.hidden_size());
  IDSYNTH_CHECK(uc.in_channels == vae_->config().latent_channels, "Arc2Face pipeline: UNet in_channels ", uc.in_channels,
                " does not match the VAE's latent_channels ", vae_->config().latent_channels);
}

Arc2FacePipeline Arc2FacePipeline::load(const Arc2FaceModelPaths& paths, const PipelineOptions& options) {
  log::Stopwatch watch;
  auto scheduler = scheduler_for(paths, options.scheduler, options.timestep_spacing);
  IDSYNTH_CHECK(options.lora_files.empty() || options.lora_files.size() == options.loras.size(),
                "Arc2Face pipeline: ", options.lora_files.size(), " LoRA files read for ", options.loras.size(), " LoRA specs");
  const std::vector<LoraToApply> loras = options.lora_files.empty() ? read_loras(options.loras) : options.lora_files;
  auto text_encoder = load_clip_text_model(paths.text_encoder, options.device, options.dtype, nullptr, loras);
  auto unet = load_unet(paths.unet, options.device, options.dtype, nullptr, loras);
  auto vae = load_vae(paths.vae, options.device, options.dtype);
  Arc2FacePipeline pipe(std::move(text_encoder), std::move(unet), std::move(vae), std::move(scheduler), options);
  LOG_INF("loading Arc2Face pipeline completed, taking ", watch.seconds(), " s (scheduler ", pipe.scheduler().name(), ")");
  return pipe;
}

std::unique_ptr<Scheduler> Arc2FacePipeline::scheduler_for(const Arc2FaceModelPaths& paths, const std::string& kind,
                                                           const std::string& timestep_spacing) {
  const bool sd15 = paths.scheduler_config.empty();
  json::Value config = sd15 ? sd15_scheduler_config() : json::parse_file(paths.scheduler_config);
  std::string source = sd15 ? "Stable Diffusion 1.5 scheduler config" : paths.scheduler_config;
  if (!timestep_spacing.empty()) {
    config.set("timestep_spacing", timestep_spacing);
    source += " with timestep_spacing '" + timestep_spacing + "'";
  }
  return make_scheduler(kind, config, source);
}

int64_t Arc2FacePipeline::vae_scale_factor() const { return vae_->config().spatial_factor(); }
int64_t Arc2FacePipeline::latent_channels() const { return unet_->config().in_channels; }
int64_t Arc2FacePipeline::default_image_size() const {
  const auto& s = unet_->config().sample_size;
  return s ? *s * vae_scale_factor() : 0;
}

torch::Tensor Arc2FacePipeline::encode_ids(const torch::Tensor& ids) {
  IDSYNTH_CHECK(ids.dim() == 2 && ids.size(0) > 0, "Arc2Face pipeline: ID embeddings: expected [N, D] with N > 0, found ",
                ids.sizes());
  IDSYNTH_CHECK(ids.size(1) <= id_width(), "Arc2Face pipeline: ID embeddings: expected width <= ", id_width(),
                " (the text encoder's hidden_size), found ", ids.size(1));
  IDSYNTH_CHECK(torch::isfinite(ids).all().item<bool>(), "Arc2Face pipeline: ID embeddings contain NaN or Inf");
  return encoder_.encode(ids);
}

const torch::Tensor& Arc2FacePipeline::unconditional_embedding() {
  if (!uncond_.defined()) uncond_ = encoder_.unconditional();
  return uncond_;
}

torch::Tensor Arc2FacePipeline::draw_latents(uint64_t seed, int64_t count, int64_t height, int64_t width) const {
  // diffusers: randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=float32)
  auto gen = at::detail::createCPUGenerator(seed);
  return draw_latents(gen, count, height, width);
}

torch::Tensor Arc2FacePipeline::draw_latents(at::Generator& generator, int64_t count, int64_t height, int64_t width) const {
  const int64_t f = vae_scale_factor();
  IDSYNTH_CHECK(count > 0, "Arc2Face pipeline: image count: expected > 0, found ", count);
  IDSYNTH_CHECK(height > 0 && width > 0 && height % f == 0 && width % f == 0, "Arc2Face pipeline: image size ", height, "x",
                width, ": expected positive multiples of the VAE scale factor ", f);
  return torch::randn({count, latent_channels(), height / f, width / f}, generator,
                      torch::TensorOptions().dtype(torch::kFloat));
}

namespace {

// Each noise-taking step's noise for all M images, drawn before any denoising (see sample()).
// float32 on the CPU, as diffusers' randn_tensor with a CPU generator draws it.
std::vector<torch::Tensor> draw_step_noise(const Scheduler& schedule, const std::vector<at::Generator>& generators,
                                           at::IntArrayRef latent_shape) {
  const int64_t m = latent_shape[0];
  IDSYNTH_CHECK(!generators.empty(), "Arc2Face pipeline: ", schedule.name(),
                " adds noise between steps: expected a generator to draw it, found none");
  IDSYNTH_CHECK(generators.size() == 1 || static_cast<int64_t>(generators.size()) == m, "Arc2Face pipeline: step generators: expected 1 or ",
                m, " (one per image), found ", generators.size());
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  std::vector<int64_t> one(latent_shape.begin(), latent_shape.end());
  one[0] = 1;
  std::vector<torch::Tensor> noise(static_cast<size_t>(schedule.num_inference_steps()));
  for (int64_t i = 0; i < schedule.num_inference_steps(); ++i) {
    if (!schedule.step_needs_noise(i)) continue;
    if (generators.size() == 1) {
      auto gen = generators[0];  // shares the state: the caller's stream advances
      noise[static_cast<size_t>(i)] = torch::randn(latent_shape, gen, f32);
    } else {
      std::vector<torch::Tensor> rows;
      for (auto gen : generators) rows.push_back(torch::randn(one, gen, f32));
      noise[static_cast<size_t>(i)] = torch::cat(rows);
    }
  }
  return noise;
}

}  // namespace

torch::Tensor Arc2FacePipeline::sample(const torch::Tensor& id_embeds, const torch::Tensor& latents,
                                       const SampleOptions& options, SampleTrace* trace,
                                       const std::vector<at::Generator>& step_generators) {
  IDSYNTH_CHECK(id_embeds.dim() == 2 && id_embeds.size(0) > 0, "Arc2Face pipeline: ID embeddings: expected [N, D], found ",
                id_embeds.sizes());
  IDSYNTH_CHECK(latents.dim() == 4 && latents.size(0) % id_embeds.size(0) == 0, "Arc2Face pipeline: latents ",
                latents.sizes(), ": expected [M, C, h, w] with M a multiple of the ", id_embeds.size(0), " identities");
  torch::NoGradGuard no_grad;
  // Each identity is encoded once, then repeated for its images (identity-major).
  const int64_t per_id = latents.size(0) / id_embeds.size(0);
  auto cond = encode_ids(id_embeds).repeat_interleave(per_id, 0);  // [M, 77, H]
  return sample_embeds(cond, latents, options, trace, step_generators);
}

torch::Tensor Arc2FacePipeline::sample_embeds(const torch::Tensor& prompt_embeds, const torch::Tensor& latents,
                                              const SampleOptions& options, SampleTrace* trace,
                                              const std::vector<at::Generator>& step_generators) {
  const int64_t m = latents.dim() == 4 ? latents.size(0) : 0;
  IDSYNTH_CHECK(m > 0 && latents.size(1) == latent_channels(), "Arc2Face pipeline: latents: expected [M, ",
                latent_channels(), ", h, w], found ", latents.sizes());
  IDSYNTH_CHECK(prompt_embeds.dim() == 3 && prompt_embeds.size(0) == m, "Arc2Face pipeline: conditioning: expected [", m,
                ", 77, H], found ", prompt_embeds.sizes());
  IDSYNTH_CHECK(options.num_inference_steps >= 1, "Arc2Face pipeline: steps: expected >= 1, found ", options.num_inference_steps);
  IDSYNTH_CHECK(options.batch_size >= 0, "Arc2Face pipeline: batch size: expected >= 0, found ", options.batch_size);
  torch::NoGradGuard no_grad;
  log::Stopwatch watch;
  auto schedule = scheduler_->clone();
  schedule->set_timesteps(options.num_inference_steps);
  // A stochastic scheduler's noise for every image, drawn up front so batching cannot reorder it.
  std::vector<torch::Tensor> step_noise;
  if (schedule->needs_step_noise()) step_noise = draw_step_noise(*schedule, step_generators, latents.sizes());
  const int64_t batch = options.batch_size > 0 ? std::min(options.batch_size, m) : m;
  std::vector<torch::Tensor> images;
  std::vector<std::vector<torch::Tensor>> noise_chunks, latent_chunks;
  std::vector<torch::Tensor> decoded_chunks;
  for (int64_t start = 0; start < m; start += batch) {
    const int64_t end = std::min(start + batch, m);
    std::vector<torch::Tensor> noise_trace, latent_trace, chunk_noise;
    for (const auto& z : step_noise) chunk_noise.push_back(z.defined() ? z.slice(0, start, end) : z);
    auto final_latents = denoise(latents.slice(0, start, end), prompt_embeds.slice(0, start, end), options, chunk_noise,
                                 trace ? &noise_trace : nullptr, trace ? &latent_trace : nullptr);
    auto decoded = decode(final_latents);  // [b, 3, H, W] float32
    // diffusers' postprocess: (x / 2 + 0.5).clamp(0, 1), NHWC
    images.push_back((decoded / 2 + 0.5).clamp(0, 1).permute({0, 2, 3, 1}).contiguous().cpu());
    if (trace) {
      noise_chunks.push_back(std::move(noise_trace));
      latent_chunks.push_back(std::move(latent_trace));
      decoded_chunks.push_back(decoded.cpu());
    }
  }
  if (trace) {
    trace->timesteps = schedule->timesteps();
    trace->noise_pred_cfg.clear();
    trace->latents.clear();
    for (size_t step = 0; step < noise_chunks.front().size(); ++step) {
      std::vector<torch::Tensor> n, l;
      for (size_t c = 0; c < noise_chunks.size(); ++c) {
        n.push_back(noise_chunks[c][step]);
        l.push_back(latent_chunks[c][step]);
      }
      trace->noise_pred_cfg.push_back(torch::cat(n));
      trace->latents.push_back(torch::cat(l));
    }
    trace->decoded = torch::cat(decoded_chunks);
  }
  LOG_DBG("sampling completed, taking ", watch.seconds(), " s (", m, " images, ", options.num_inference_steps,
          " steps, batch ", batch, ")");
  return torch::cat(images);
}

torch::Tensor Arc2FacePipeline::denoise(const torch::Tensor& latents_in, const torch::Tensor& cond,
                                        const SampleOptions& options, const std::vector<torch::Tensor>& step_noise,
                                        std::vector<torch::Tensor>* noise_trace, std::vector<torch::Tensor>* latent_trace) {
  const int64_t b = latents_in.size(0);
  const bool cfg = options.guidance_scale > 1.0;  // diffusers: do_classifier_free_guidance
  // 1. a fresh schedule for this batch (multistep schedulers keep history)
  auto scheduler = scheduler_->clone();
  scheduler->set_timesteps(options.num_inference_steps);
  // 2. conditioning: [uncond x b; cond] as one UNet batch
  auto context = cond.to(options_.device, options_.dtype);
  if (cfg) {
    const auto& uncond = unconditional_embedding();
    context = torch::cat({uncond.expand({b, uncond.size(1), uncond.size(2)}), context});  // [2b, 77, H]
  }
  // 3. latents stay float32 on the device; the UNet gets them in the model dtype
  auto latents = latents_in.to(options_.device, torch::kFloat) * scheduler->init_noise_sigma();
  const auto& timesteps = scheduler->timesteps();
  for (int64_t i = 0; i < scheduler->num_inference_steps(); ++i) {
    log::Stopwatch step_watch;
    auto model_in = scheduler->scale_model_input(latents, i);
    if (cfg) model_in = torch::cat({model_in, model_in});
    auto out = unet_->forward(model_in.to(options_.dtype), timesteps[i], context).to(torch::kFloat);
    torch::Tensor noise;
    if (cfg) {
      auto parts = out.chunk(2);
      noise = parts[0] + options.guidance_scale * (parts[1] - parts[0]);  // eps_u + g (eps_c - eps_u)
    } else {
      noise = out;
    }
    if (scheduler->step_needs_noise(i))
      latents = scheduler->step_with_noise(noise, i, latents, step_noise.at(static_cast<size_t>(i)).to(options_.device));
    else
      latents = scheduler->step(noise, i, latents);
    if (noise_trace) noise_trace->push_back(noise.cpu());
    if (latent_trace) latent_trace->push_back(latents.cpu());
    LOG_DBG("step ", i + 1, "/", scheduler->num_inference_steps(), " t=", timesteps[i].item<double>(), " batch ", b,
            " taking ", step_watch.seconds(), " s");
  }
  return latents;
}

torch::Tensor Arc2FacePipeline::decode(const torch::Tensor& latents) {
  auto z = latents / vae_->config().scaling_factor;
  // diffusers' StableDiffusionPipeline decodes in the model dtype (only SD-XL's pipeline honours the
  // VAE's force_upcast); a float16 decode that overflows is redone in float32 instead of writing
  // black images.
  auto images = vae_->decode(z.to(options_.dtype)).to(torch::kFloat);
  if (options_.dtype == torch::kHalf && !torch::isfinite(images).all().item<bool>()) {
    LOG_WRN("VAE decode overflowed in float16 for a batch of ", z.size(0), " latents; decoding it again in float32");
    vae_->to(torch::kFloat);
    images = vae_->decode(z.to(torch::kFloat));
    vae_->to(torch::kHalf);
  }
  return images;
}

torch::Tensor Arc2FacePipeline::to_uint8(const torch::Tensor& images) {
  return (images.to(torch::kFloat) * 255).round().clamp(0, 255).to(torch::kUInt8);
}

}  // namespace idsynth::generator
