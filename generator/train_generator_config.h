// The `idsynth train-generator` config: every key a generator-training YAML may hold, with its
// default, in one place. Defaults follow diffusers' examples/text_to_image/train_text_to_image.py
// (AdamW betas 0.9/0.999, weight decay 1e-2, eps 1e-8, max_grad_norm 1, EMA decay 0.9999, constant
// schedule) and Arc2Face's recipe (reference/arc2face.md §10.3: UNet and ID encoder trained, 10%
// condition dropout, fine-tuning lr 1e-6 at batch 32 in its second stage).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/config.h"
#include "generator/train_generator_data.h"

namespace idsynth::generator {

struct GeneratorRunConfig {
  std::string output = "work_dirs/train-generator";
  int64_t seed = 42;
  std::string device = "auto";
  std::vector<std::string> devices;
  int64_t threads = 0;
  int64_t log_every = 10;
  // The devices trained on: run.devices when given, else run.device alone.
  std::vector<std::string> device_list() const { return devices.empty() ? std::vector<std::string>{device} : devices; }
  void visit(config::Visitor& v) {
    v.field("output", output, "folder for checkpoints, logs, sample grids, the report and the trained model");
    v.field("seed", seed, "seed of the noise, timesteps, condition dropout, sample order, augmentation and LoRA init",
            {0, int64_t{1} << 53});
    v.field("device", device, "auto (the first CUDA device, else the CPU), cpu, or cuda:N");
    v.field("devices", devices,
            "instead of run.device, data parallel: [auto] (every CUDA device) or a list ([cuda:0, cuda:1]); one model replica "
            "per entry, each batch split across them, gradients summed on the first ([cpu, cpu] runs two CPU replicas)");
    v.field("threads", threads, "CPU threads for libtorch (0: all cores)", {0, 1024});
    v.field("log_every", log_every, "log a line (loss, lr, samples/s, ETA) every N steps", {1, 1 << 30});
  }
};

struct GeneratorModelConfig {
  std::string dir;
  std::string base_dir;
  std::string variant;
  std::string mixed_precision = "no";
  bool gradient_checkpointing = false;
  void visit(config::Visitor& v) {
    v.field("dir", dir, "the model to start from: an Arc2Face folder (arc2face/ + encoder/), a diffusers pipeline folder, or any layout `sample --model` loads");
    v.field("base_dir", base_dir, "Stable Diffusion 1.5 folder or single file for the VAE and scheduler (Arc2Face layout)");
    v.field("variant", variant, "prefer weight files of this variant (fp16)");
    v.field("mixed_precision", mixed_precision,
            "autocast of the UNet and encoder with dynamic loss scaling (CUDA only; float32 master weights)",
            {"no", "fp16", "bf16"});
    v.field("gradient_checkpointing", gradient_checkpointing, "recompute UNet blocks in backward instead of keeping their activations (memory for 512x512)");
  }
};

struct GeneratorTrainTargetConfig {
  std::string target = "diffusion";
  double vae_kl_weight = 1e-6;
  bool unet = true;
  bool encoder = true;
  int64_t lora_rank = 0;
  double lora_alpha = 0;
  bool lora_convolutions = false;
  double condition_dropout = 0.1;
  std::string prediction_type;
  double snr_gamma = 0;
  std::string cache_latents = "auto";
  void visit(config::Visitor& v) {
    v.field("target", target,
            "diffusion: the UNet / ID encoder with the diffusion loss; vae: the AutoencoderKL alone with L1 reconstruction + KL "
            "(a VAE for a new image domain)",
            {"diffusion", "vae"});
    v.field("vae_kl_weight", vae_kl_weight, "target vae: weight of the KL term (LDM's autoencoder configs: 1e-6)", {0.0, 1.0});
    v.field("unet", unet, "train the UNet");
    v.field("encoder", encoder, "train the CLIP ID encoder (Arc2Face trains both; ArcFace stays frozen)");
    v.field("lora_rank", lora_rank, "0: train the full weights; r > 0: train rank-r LoRA adapters instead (written as a LoRA file)",
            {0, 4096});
    v.field("lora_alpha", lora_alpha, "LoRA alpha (0: equal to the rank, scale 1)", {0.0, 1e6});
    v.field("lora_convolutions", lora_convolutions, "LoRA also on the UNet's convolutions (LoCon), not only the attention projections");
    v.field("condition_dropout", condition_dropout, "probability that a sample is conditioned on the empty prompt instead of its ID", {0.0, 1.0});
    v.field("prediction_type", prediction_type, "epsilon or v_prediction (empty: the scheduler config's)", {"", "epsilon", "v_prediction"});
    v.field("snr_gamma", snr_gamma, "min-SNR-gamma loss weighting (0: off; 5 is the paper's value)", {0.0, 1000.0});
    v.field("cache_latents", cache_latents,
            "target diffusion: auto encodes every training image (and its mirror image) with the frozen VAE once, before "
            "the first step, when data.crop is center and the posteriors fit in 2 GiB; off encodes each batch at every step",
            {"auto", "off"});
  }
};

struct GeneratorOptimConfig {
  double lr = 1e-5;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  double clip_grad_norm = 1.0;
  int64_t gradient_accumulation = 1;
  double loss_scale = 65536.0;
  int64_t loss_scale_growth_interval = 2000;
  void visit(config::Visitor& v) {
    v.field("lr", lr, "AdamW learning rate (after warmup)", {0.0, 10.0});
    v.field("beta1", beta1, "AdamW beta1", {0.0, 0.999999});
    v.field("beta2", beta2, "AdamW beta2", {0.0, 0.999999});
    v.field("eps", eps, "AdamW epsilon", {0.0, 1.0});
    v.field("weight_decay", weight_decay, "AdamW decoupled weight decay", {0.0, 1.0});
    v.field("clip_grad_norm", clip_grad_norm, "clip the trained parameters' total gradient norm (0: off)", {0.0, 1e9});
    v.field("gradient_accumulation", gradient_accumulation, "batches whose gradients are summed (averaged) before one optimiser step",
            {1, 1 << 20});
    v.field("loss_scale", loss_scale, "initial loss scale of fp16 mixed precision", {1.0, 1e10});
    v.field("loss_scale_growth_interval", loss_scale_growth_interval, "steps without overflow before the scale doubles", {1, 1 << 30});
  }
};

struct GeneratorScheduleConfig {
  int64_t max_steps = 1000;
  int64_t warmup_steps = 0;
  std::string type = "constant";
  double min_lr = 0.0;
  void visit(config::Visitor& v) {
    v.field("max_steps", max_steps, "optimiser steps to train", {1, int64_t{1} << 40});
    v.field("warmup_steps", warmup_steps, "linear warmup from 0 over this many steps", {0, int64_t{1} << 40});
    v.field("type", type, "learning rate after the warmup", {"constant", "cosine", "linear"});
    v.field("min_lr", min_lr, "floor of the cosine and linear decay", {0.0, 10.0});
  }
};

struct GeneratorEmaConfig {
  bool enabled = false;
  double decay = 0.9999;
  void visit(config::Visitor& v) {
    v.field("enabled", enabled, "keep an exponential moving average of the trained weights and export it");
    v.field("decay", decay, "largest EMA decay (diffusers EMAModel: min(decay, (1 + s)/(10 + s)))", {0.0, 1.0});
  }
};

struct GeneratorCheckpointConfig {
  int64_t every_steps = 500;
  int64_t keep = 2;
  void visit(config::Visitor& v) {
    v.field("every_steps", every_steps, "write a checkpoint every N steps (0: only at the end)", {0, int64_t{1} << 40});
    v.field("keep", keep, "checkpoints kept (older ones are deleted)", {1, 100000});
  }
};

struct GeneratorSamplesConfig {
  int64_t every_steps = 0;
  int64_t identities = 4;
  int64_t seeds = 2;
  int64_t steps = 25;
  double guidance_scale = 3.0;
  std::string scheduler = "dpmsolver++";
  void visit(config::Visitor& v) {
    v.field("every_steps", every_steps, "draw the sample grid every N steps (0: only before training and at the end)", {0, int64_t{1} << 40});
    v.field("identities", identities, "grid rows: the ID vectors of the first training pairs of this many identities", {1, 256});
    v.field("seeds", seeds, "grid columns: fixed latent seeds 0..N-1", {1, 64});
    v.field("steps", steps, "sampling steps", {1, 1000});
    v.field("guidance_scale", guidance_scale, "classifier-free guidance scale (<= 1: off)", {0.0, 100.0});
    v.field("scheduler", scheduler, "sampling scheduler", {"dpmsolver++", "ddim", "euler", "lcm"});
  }
};

struct TrainGeneratorConfig {
  GeneratorRunConfig run;
  GeneratorModelConfig model;
  GeneratorDataConfig data;
  GeneratorTrainTargetConfig train;
  GeneratorOptimConfig optim;
  GeneratorScheduleConfig schedule;
  GeneratorEmaConfig ema;
  GeneratorCheckpointConfig checkpoint;
  GeneratorSamplesConfig samples;
  void visit(config::Visitor& v) {
    v.section("run", run, "output, seed, devices");
    v.section("model", model, "the model to start from");
    v.section("data", data, "(face image, ID vector) pairs");
    v.section("train", train, "what is trained and the diffusion loss");
    v.section("optim", optim, "AdamW");
    v.section("schedule", schedule, "steps and learning-rate schedule");
    v.section("ema", ema, "exponential moving average of the trained weights");
    v.section("checkpoint", checkpoint, "checkpoints");
    v.section("samples", samples, "the sample grid of fixed IDs and seeds in the report");
  }
  void check() const {
    IDSYNTH_CHECK(!model.dir.empty(), "train-generator config: model.dir: expected the model folder to start from, found nothing");
    IDSYNTH_CHECK(train.target != "vae" || train.lora_rank == 0,
                  "train-generator config: train.lora_rank: expected 0 with train.target vae (the VAE is trained in full), found ",
                  train.lora_rank);
    IDSYNTH_CHECK(train.target == "vae" || train.unet || train.encoder,
                  "train-generator config: train: expected train.unet or train.encoder (or both) to be true, found both false: the run would train nothing");
    IDSYNTH_CHECK(!data.paths.empty(), "train-generator config: data.paths: expected at least one dataset, found none");
    IDSYNTH_CHECK(run.devices.empty() || run.device == "auto",
                  "train-generator config: run.devices: expected either run.device or run.devices, found both (run.device ", run.device, ")");
  }
};

}  // namespace idsynth::generator
