// The math of one diffusion training step, as diffusers' examples/text_to_image/train_text_to_image.py
// (v0.29.2) does it, for Arc2Face's conditioning: the ID vectors through the CLIP ID encoder (with
// gradients when it is trained), condition dropout to the empty prompt, noise at random timesteps,
// the epsilon or v-prediction target, min-SNR-gamma weighting; and the pieces of the loop that hold
// model state: the EMA of the trained weights (diffusers' EMAModel).
// Ref: diffusers examples/text_to_image/train_text_to_image.py (main loop), training_utils.py
//      (compute_snr, EMAModel), schedulers/scheduling_ddpm.py (add_noise, get_velocity).
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "generator/arc2face_id_encoder.h"
#include "generator/schedulers.h"
#include "generator/unet_2d_condition.h"

namespace idsynth::generator {

// One step's fixed inputs: everything random is drawn by the caller (the trainer from its run
// generators, the parity test from the golden), so the step itself is a pure function.
struct DiffusionStepInputs {
  at::Tensor latents;     // [B, C, h, w] float32: VAE latent_dist.sample() * scaling_factor
  at::Tensor noise;       // [B, C, h, w] float32
  at::Tensor timesteps;   // [B] int64 in [0, T)
  at::Tensor id_vectors;  // [B, D] float32
  at::Tensor drop_mask;   // [B] bool: true -> the row is conditioned on the empty prompt
};

struct DiffusionLossOptions {
  std::string prediction_type = "epsilon";  // epsilon | v_prediction (the scheduler config's)
  double snr_gamma = 0.0;                   // min-SNR-gamma weighting; 0: plain MSE
};

// diffusers DDPMScheduler.add_noise: sqrt(acp[t])·x + sqrt(1 − acp[t])·noise (acp = alphas_cumprod [T]).
at::Tensor add_noise(const at::Tensor& alphas_cumprod, const at::Tensor& latents, const at::Tensor& noise,
                     const at::Tensor& timesteps);
// DDPMScheduler.get_velocity: sqrt(acp[t])·noise − sqrt(1 − acp[t])·x.
at::Tensor velocity(const at::Tensor& alphas_cumprod, const at::Tensor& latents, const at::Tensor& noise,
                    const at::Tensor& timesteps);
// training_utils.compute_snr: acp[t] / (1 − acp[t]), [B] float32.
at::Tensor compute_snr(const at::Tensor& alphas_cumprod, const at::Tensor& timesteps);

// The UNet conditioning of a training batch, in the autograd graph when the encoder's parameters
// require grad: rows with drop_mask false get the Arc2Face prompt with their ID vector, rows with
// drop_mask true the empty prompt (what sampling uses for the negative side of CFG). [B, 77, H].
at::Tensor encode_for_training(Arc2FaceIdEncoder& encoder, const at::Tensor& id_vectors, const at::Tensor& drop_mask);

struct DiffusionStepOutput {
  at::Tensor loss;                   // 0-d float32, in the graph
  at::Tensor encoder_hidden_states;  // [B, 77, H] (for tests)
  at::Tensor noisy_latents;          // [B, C, h, w]
  at::Tensor model_pred;             // [B, C, h, w] float32
  at::Tensor target;                 // [B, C, h, w]
};

// Forward of one step (call loss.backward() after): noisy = add_noise(latents, noise, t);
// hidden = encode_for_training(ids, drop); pred = unet(noisy, t, hidden); target = noise or
// velocity; loss = mean MSE, or with snr_gamma: per-sample MSE · min(snr, γ)/snr (epsilon) or
// min(snr, γ)/(snr + 1) (v_prediction), then the mean. The UNet runs in its own dtype; the loss in
// float32.
DiffusionStepOutput diffusion_step(UNet2DCondition& unet, Arc2FaceIdEncoder& encoder, const at::Tensor& alphas_cumprod,
                                   const DiffusionStepInputs& in, const DiffusionLossOptions& options);

// diffusers EMAModel (use_ema_warmup false, update_after_step 0, min_decay 0): after optimisation
// step n (1-based), decay = min(max_decay, (1 + s)/(10 + s)) with s = n − 1 (0 at s <= 0), and
// shadow −= (1 − decay)·(shadow − param). Shadows are float32 copies on the parameters' device.
class EmaWeights {
 public:
  EmaWeights(std::vector<std::pair<std::string, at::Tensor>> params, double max_decay);
  void update();  // after each optimiser step
  int64_t optimization_step() const { return step_; }
  double decay_at(int64_t optimization_step) const;
  // name -> shadow, for checkpoints and the exported model.
  const std::vector<std::pair<std::string, at::Tensor>>& shadows() const { return shadows_; }
  void restore(const std::vector<std::pair<std::string, at::Tensor>>& shadows, int64_t optimization_step);

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_, shadows_;
  double max_decay_;
  int64_t step_ = 0;
};

}  // namespace idsynth::generator
