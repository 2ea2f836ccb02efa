// The Arc2Face sampling pipeline: ID vectors -> CLIP conditioning -> UNet denoising with
// classifier-free guidance -> VAE decode -> images in [0, 1]. The same computation as diffusers'
// StableDiffusionPipeline called by Arc2Face (prompt_embeds from the ID encoder, the empty-prompt
// negative embedding, DPM-Solver++ by default).
// Ref: diffusers/pipelines/stable_diffusion/pipeline_stable_diffusion.py (__call__),
//      foivospar/Arc2Face README.md; reference/arc2face.md sections 3-5; goldens/pipeline_tiny.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "generator/arc2face_id_encoder.h"
#include "generator/autoencoder_kl.h"
#include "generator/clip_text_model.h"
#include "generator/lora.h"
#include "generator/schedulers.h"
#include "generator/unet_2d_condition.h"

namespace idsynth::generator {

// Where each part of the model lives. Two layouts are understood:
//  (a) diffusers pipeline folder: unet/ text_encoder/ vae/ scheduler/ (what `idsynth init-model`
//      writes and goldens/pipeline_tiny/pipeline is);
//  (b) the Arc2Face download: arc2face/ (UNet) + encoder/ (text encoder), with vae/ and
//      scheduler/ taken from a Stable Diffusion 1.5 folder (`base_dir`).
// Parts in model_dir win; vae/ and scheduler/ fall back to base_dir.
struct Arc2FaceModelPaths {
  ComponentFiles unet, text_encoder, vae;
  std::string scheduler_config;  // empty: Stable Diffusion 1.5's (from a single-file base)

  // Checks that every file exists; a missing one is one error naming that file. `base_dir` may
  // also be an SD-1.5 single-file checkpoint (VAE, scheduler defaults, and the UNet when model_dir
  // has none); `variant` prefers e.g. the fp16 weight files (model_files.h).
  static Arc2FaceModelPaths resolve(const std::string& model_dir, const std::string& base_dir = "",
                                    const std::string& variant = "");
  // Every config and weight file, in a fixed order (for hashes in run records).
  std::vector<std::string> files() const;
};

struct PipelineOptions {
  c10::Device device = c10::kCPU;
  c10::ScalarType dtype = c10::kFloat;  // UNet, VAE and text encoder; scheduler math is float32
  std::string scheduler = "dpmsolver++";  // dpmsolver++ | ddim | euler | lcm (see scheduler_kinds())
  // Overrides the scheduler config's timestep_spacing (linspace | leading | trailing; empty: the
  // config's), as diffusers' Scheduler.from_config(config, timestep_spacing="trailing") does for
  // step-distilled LoRAs.
  std::string timestep_spacing;
  // LoRA files fused into the UNet and text encoder at load, in order (generator/lora.h).
  std::vector<LoraSpec> loras;
  // The same files already read and checked (read_loras(loras)), so that a caller that checks
  // them before loading, or loads several pipelines, reads each file once; empty: load reads them.
  std::vector<LoraToApply> lora_files;
};

struct SampleOptions {
  int64_t num_inference_steps = 25;
  double guidance_scale = 3.0;  // <= 1 turns classifier-free guidance off
  // Images per denoising batch (the UNet sees twice as many with CFG); 0 = all at once. Results do
  // not depend on it beyond float rounding of batched kernels.
  int64_t batch_size = 0;
};

// Intermediates of one sample() call, in image order (for parity tests and debugging).
struct SampleTrace {
  torch::Tensor timesteps;                    // [steps]
  std::vector<torch::Tensor> noise_pred_cfg;  // per step: guided noise [M, C, h, w] float32
  std::vector<torch::Tensor> latents;         // per step: the scheduler's output [M, C, h, w]
  torch::Tensor decoded;                      // raw VAE output [M, 3, H, W] float32
};

class Arc2FacePipeline {
 public:
  Arc2FacePipeline(CLIPTextModel text_encoder, UNet2DCondition unet, AutoencoderKL vae,
                   std::unique_ptr<Scheduler> scheduler, PipelineOptions options);
  // Loads every part onto options.device in options.dtype and logs the total load time.
  static Arc2FacePipeline load(const Arc2FaceModelPaths& paths, const PipelineOptions& options);
  // The scheduler `load` builds (kind from PipelineOptions::scheduler), without any weights: cheap,
  // so commands can check settings such as the step count before loading the model.
  static std::unique_ptr<Scheduler> scheduler_for(const Arc2FaceModelPaths& paths, const std::string& kind,
                                                  const std::string& timestep_spacing = "");

  // 2^(len(vae.block_out_channels) - 1): pixels per latent cell.
  int64_t vae_scale_factor() const;
  int64_t latent_channels() const;
  // unet.sample_size * vae_scale_factor (512 for SD-1.5), or 0 when the UNet config has none.
  int64_t default_image_size() const;
  int64_t id_width() const { return encoder_.hidden_size(); }

  // Conditioning for ids [N, D]: [N, 77, H] on the device in the model dtype.
  torch::Tensor encode_ids(const torch::Tensor& ids);
  // The empty-prompt embedding [1, 77, H], computed once per pipeline.
  const torch::Tensor& unconditional_embedding();

  // Latents for `count` images drawn as diffusers does: one CPU generator seeded `seed`, one
  // randn call, float32 [count, C, height/f, width/f] on the CPU.
  torch::Tensor draw_latents(uint64_t seed, int64_t count, int64_t height, int64_t width) const;
  // The same from the caller's CPU generator, which it keeps: a stochastic scheduler's per-step
  // noise then continues this generator's stream, as in diffusers (pass it to sample()).
  torch::Tensor draw_latents(at::Generator& generator, int64_t count, int64_t height, int64_t width) const;


  // Images [M, H, W, 3] float32 in [0, 1] on the CPU for ID vectors [N, D] and latents [M, C, h, w]
  // with M a multiple of N: identity i gets images i*M/N ... (identity-major). Each identity is
  // encoded once.
  // `step_generators` (CPU) draw the noise of a scheduler that adds noise between steps (LCM), as
  // diffusers' `generator` argument: one generator draws each such step's noise for the whole
  // batch in one randn [M, C, h, w] call (StableDiffusionPipeline with one generator; pass the one
  // that drew the latents); M generators draw image j's noise [1, C, h, w] from generator j (a
  // generator list: images independent of batching). All of it is drawn before denoising, in step
  // order, so options.batch_size does not change which numbers an image gets. Deterministic
  // schedulers ignore them; a stochastic one without them is an error.
  torch::Tensor sample(const torch::Tensor& id_embeds, const torch::Tensor& latents, const SampleOptions& options,
                       SampleTrace* trace = nullptr, const std::vector<at::Generator>& step_generators = {});
  // The same from precomputed conditioning [M, 77, H] (one row per image).
  torch::Tensor sample_embeds(const torch::Tensor& prompt_embeds, const torch::Tensor& latents,
                              const SampleOptions& options, SampleTrace* trace = nullptr,
                              const std::vector<at::Generator>& step_generators = {});

  // Final latents [M, C, h, w] float32 -> raw VAE output [M, 3, H, W] float32 (before the
  // (x/2+0.5).clamp). A float16 decode that overflows is redone in float32.
  torch::Tensor decode(const torch::Tensor& latents);

  // round(x * 255) as uint8, as diffusers' numpy_to_pil: [M, H, W, 3] uint8.
  static torch::Tensor to_uint8(const torch::Tensor& images);

  Arc2FaceIdEncoder& encoder() { return encoder_; }
  UNet2DCondition& unet() { return unet_; }
  AutoencoderKL& vae() { return vae_; }
  const Scheduler& scheduler() const { return *scheduler_; }
  const PipelineOptions& options() const { return options_; }

 private:
  // One denoising batch: latents [b, C, h, w] float32, conditioning [b, 77, H], and per step the
  // scheduler's noise for these b images (undefined where a step takes none; empty: no step does).
  torch::Tensor denoise(const torch::Tensor& latents, const torch::Tensor& cond, const SampleOptions& options,
                        const std::vector<torch::Tensor>& step_noise, std::vector<torch::Tensor>* noise_trace,
                        std::vector<torch::Tensor>* latent_trace);

  Arc2FaceIdEncoder encoder_;
  UNet2DCondition unet_;
  AutoencoderKL vae_;
  std::unique_ptr<Scheduler> scheduler_;
  PipelineOptions options_;
  torch::Tensor uncond_;
};

}  // namespace idsynth::generator
