// `idsynth train-generator`: fine-tunes the Arc2Face model (UNet and/or CLIP ID encoder, full weights
// or LoRA adapters) on (face image, ID vector) pairs, the way diffusers'
// examples/text_to_image/train_text_to_image.py trains Stable Diffusion, with Arc2Face's ID
// conditioning and condition dropout (generator/diffusion_training.h).
//
// Every random draw of a step (the VAE posterior sample, the noise, the timesteps, the dropout mask)
// comes from a CPU generator seeded from (run.seed, batch position), and the batch itself is a
// function of (run.seed, position) (generator/train_generator_data.h), so a checkpoint needs only
// the trained weights, the AdamW moments, the EMA and the step to resume bit-identically on the CPU.
//
// Output folder: config.resolved.yaml; checkpoint-<step>.safetensors (atomic); train_log.csv,
// loss_curve.svg; samples/step-<step>.png (rows: identities, first column their training image,
// then one column per seed); report.html; at the end either model/ (Arc2Face layout: arc2face/,
// encoder/, vae/, scheduler/, which `sample --model` loads) or lora.safetensors (kohya form, which
// `sample --lora` loads on the starting model).
// Ref: diffusers examples/text_to_image/train_text_to_image.py, training_utils.py (EMAModel),
//      reference/arc2face.md §10.3.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "generator/train_generator_config.h"

namespace idsynth::generator {

struct GeneratorTrainHooks {
  // Called after every optimiser step (tests stop or inspect a run here).
  std::function<void(int64_t step, double loss)> after_step;
  // Install SIGTERM/SIGINT handlers: the first signal stops after the current step with a checkpoint.
  bool handle_signals = false;
};

struct GeneratorTrainResult {
  int64_t steps = 0;          // optimiser steps done in total (including before a resume)
  double first_loss = 0;      // mean loss of the first log interval of this run
  double last_loss = 0;       // mean loss of the last log interval
  std::string last_checkpoint;
  std::string model_dir;      // full training: the exported model folder
  std::string lora_path;      // LoRA training: the LoRA file
  std::string report_path;
  int interrupted = 0;        // the signal that stopped the run early (0: ran to the end)
};

// Trains from the model in cfg.model, or from `resume`: a checkpoint file, or "auto" for the newest
// checkpoint in cfg.run.output (none there: from the start).
GeneratorTrainResult train_generator(const TrainGeneratorConfig& cfg, const GeneratorTrainHooks& hooks = {},
                                     const std::string& resume = "");

}  // namespace idsynth::generator
