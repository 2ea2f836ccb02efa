#include "generator/diffusion_training.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/padding.h>

#include <algorithm>
#include <utility>

#include "core/check.h"

namespace idsynth::generator {

namespace {

// [B] values as [B, 1, ..., 1] against x (DDPMScheduler's unsqueeze loop).
at::Tensor per_sample(const at::Tensor& values, const at::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = -1;
  return values.flatten().view(shape);
}

// sqrt(acp[t]) and sqrt(1 - acp[t]) in x's dtype and on x's device, shaped per_sample.
std::pair<at::Tensor, at::Tensor> noise_coefficients(const at::Tensor& alphas_cumprod, const at::Tensor& x,
                                                     const at::Tensor& timesteps) {
  IDSYNTH_CHECK(alphas_cumprod.dim() == 1, "diffusion training: alphas_cumprod: expected [T], found ",
                alphas_cumprod.sizes());
  IDSYNTH_CHECK(timesteps.dim() == 1 && timesteps.size(0) == x.size(0), "diffusion training: timesteps: expected [",
                x.size(0), "], found ", timesteps.sizes());
  const at::Tensor t = timesteps.to(x.device(), at::kLong);
  if (t.numel() > 0) {
    const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
    IDSYNTH_CHECK(lo >= 0 && hi < alphas_cumprod.size(0), "diffusion training: timesteps: expected values in [0, ",
                  alphas_cumprod.size(0), "), found [", lo, ", ", hi, "]");
  }
  // Same operation order as diffusers: cast the table, index, then the powers.
  const at::Tensor acp_t = alphas_cumprod.to(x.device(), x.scalar_type()).index_select(0, t);
  return {per_sample(acp_t.pow(0.5), x), per_sample(at::rsub(acp_t, 1).pow(0.5), x)};
}

}  // namespace

at::Tensor add_noise(const at::Tensor& alphas_cumprod, const at::Tensor& latents, const at::Tensor& noise,
                     const at::Tensor& timesteps) {
  // Ref: scheduling_ddpm.py DDPMScheduler.add_noise
  IDSYNTH_CHECK(noise.sizes() == latents.sizes(), "add_noise: noise: expected the latents' shape ", latents.sizes(),
                ", found ", noise.sizes());
  const auto [sqrt_alpha, sqrt_one_minus_alpha] = noise_coefficients(alphas_cumprod, latents, timesteps);
  return sqrt_alpha * latents + sqrt_one_minus_alpha * noise;
}

at::Tensor velocity(const at::Tensor& alphas_cumprod, const at::Tensor& latents, const at::Tensor& noise,
                    const at::Tensor& timesteps) {
  // Ref: scheduling_ddpm.py DDPMScheduler.get_velocity
  IDSYNTH_CHECK(noise.sizes() == latents.sizes(), "velocity: noise: expected the latents' shape ", latents.sizes(),
                ", found ", noise.sizes());
  const auto [sqrt_alpha, sqrt_one_minus_alpha] = noise_coefficients(alphas_cumprod, latents, timesteps);
  return sqrt_alpha * noise - sqrt_one_minus_alpha * latents;
}

at::Tensor compute_snr(const at::Tensor& alphas_cumprod, const at::Tensor& timesteps) {
  // Ref: training_utils.py compute_snr (square roots of the whole table first, then index, as there)
  IDSYNTH_CHECK(timesteps.dim() == 1, "compute_snr: timesteps: expected [B], found ", timesteps.sizes());
  const at::Tensor t = timesteps.to(at::kLong);
  const at::Tensor acp = alphas_cumprod.to(t.device());
  const at::Tensor alpha = acp.pow(0.5).index_select(0, t).to(at::kFloat);
  const at::Tensor sigma = at::rsub(acp, 1.0).pow(0.5).index_select(0, t).to(at::kFloat);
  return (alpha / sigma).pow(2);
}

at::Tensor encode_for_training(Arc2FaceIdEncoder& encoder, const at::Tensor& id_vectors, const at::Tensor& drop_mask) {
  // Ref: Arc2Face arc2face/utils.py project_face_embs (prompt, row 4 := zero-padded ID); the dropped
  // rows are the empty prompt, as sampling's negative side.
  CLIPTextModel& model = encoder.model();
  const int64_t hidden = encoder.hidden_size(), seq = Arc2FaceIdEncoder::kSequenceLength;
  const int64_t pos = Arc2FaceIdEncoder::kIdTokenPosition;
  IDSYNTH_CHECK(id_vectors.dim() == 2 && id_vectors.size(1) <= hidden,
                "encode_for_training: ID vectors: expected [N, D] with D <= the encoder's hidden_size ", hidden,
                ", found ", id_vectors.sizes());
  const int64_t n = id_vectors.size(0);
  IDSYNTH_CHECK(drop_mask.dim() == 1 && drop_mask.size(0) == n, "encode_for_training: drop_mask: expected [", n,
                "], found ", drop_mask.sizes());
  const at::Tensor first_parameter = model->parameters().front();
  const auto device = first_parameter.device();
  auto ids_tensor = [&](const std::vector<int64_t>& ids) {
    return at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, -1}).to(device);
  };
  const at::Tensor prompt_ids = ids_tensor(Arc2FaceIdEncoder::prompt_ids());
  // Token embeddings through the embedding module, so token_embedding.weight gets its gradient.
  const at::Tensor prompt = model->token_embeds(prompt_ids);                                       // [1, 77, H]
  const at::Tensor empty = model->token_embeds(ids_tensor(Arc2FaceIdEncoder::unconditional_ids()));  // [1, 77, H]
  const at::Tensor padded = torch::nn::functional::pad(id_vectors.to(device, prompt.scalar_type()),
                                                       torch::nn::functional::PadFuncOptions({0, hidden - id_vectors.size(1)}));
  const at::Tensor kept = at::cat({prompt.narrow(1, 0, pos).expand({n, pos, hidden}), padded.unsqueeze(1),
                                   prompt.narrow(1, pos + 1, seq - pos - 1).expand({n, seq - pos - 1, hidden})},
                                  1);  // [N, 77, H]
  const at::Tensor dropped = drop_mask.to(device, at::kBool).view({n, 1, 1});
  const at::Tensor embeds = at::where(dropped, empty.expand({n, seq, hidden}), kept);
  // The pooled token (chosen by the ids) differs between the two prompts, but last_hidden_state,
  // the only output used, does not depend on it.
  return model->forward_embeds(prompt_ids, embeds).last_hidden_state;
}

DiffusionStepOutput diffusion_step(UNet2DCondition& unet, Arc2FaceIdEncoder& encoder, const at::Tensor& alphas_cumprod,
                                   const DiffusionStepInputs& in, const DiffusionLossOptions& options) {
  // Ref: train_text_to_image.py main loop (no noise offset, input perturbation or DREAM)
  IDSYNTH_CHECK(options.prediction_type == "epsilon" || options.prediction_type == "v_prediction",
                "diffusion training: prediction_type: expected epsilon or v_prediction, found '",
                options.prediction_type, "'");
  IDSYNTH_CHECK(options.snr_gamma >= 0, "diffusion training: snr_gamma: expected >= 0, found ", options.snr_gamma);
  IDSYNTH_CHECK(in.latents.dim() == 4, "diffusion training: latents: expected [B, C, h, w], found ", in.latents.sizes());
  const at::Tensor timesteps = in.timesteps.to(in.latents.device(), at::kLong);

  DiffusionStepOutput out;
  // 1. forward diffusion and conditioning
  out.noisy_latents = add_noise(alphas_cumprod, in.latents, in.noise, timesteps);
  out.encoder_hidden_states = encode_for_training(encoder, in.id_vectors, in.drop_mask);
  // 2. prediction and target
  out.model_pred = unet->forward(out.noisy_latents, timesteps, out.encoder_hidden_states).to(at::kFloat);
  out.target = options.prediction_type == "epsilon" ? in.noise : velocity(alphas_cumprod, in.latents, in.noise, timesteps);
  const at::Tensor target = out.target.to(out.model_pred.device(), at::kFloat);
  // 3. loss
  if (options.snr_gamma == 0) {
    out.loss = at::mse_loss(out.model_pred, target, at::Reduction::Mean);
    return out;
  }
  // Min-SNR-gamma (arXiv 2303.09556 section 3.4, in diffusers' epsilon / v form).
  const at::Tensor snr = compute_snr(alphas_cumprod, timesteps).to(out.model_pred.device());
  at::Tensor weights = std::get<0>(at::stack({snr, at::full_like(snr, options.snr_gamma)}, 1).min(1));
  weights = options.prediction_type == "epsilon" ? weights / snr : weights / (snr + 1);
  std::vector<int64_t> sample_dims;
  for (int64_t d = 1; d < out.model_pred.dim(); ++d) sample_dims.push_back(d);
  const at::Tensor per_sample_loss = at::mse_loss(out.model_pred, target, at::Reduction::None).mean(sample_dims);
  out.loss = (per_sample_loss * weights).mean();
  return out;
}

// ---------------------------------------------------------------------------------------------
// EmaWeights
// ---------------------------------------------------------------------------------------------
EmaWeights::EmaWeights(std::vector<std::pair<std::string, at::Tensor>> params, double max_decay)
    : params_(std::move(params)), max_decay_(max_decay) {
  IDSYNTH_CHECK(max_decay >= 0 && max_decay <= 1, "EMA: decay: expected a value in [0, 1], found ", max_decay);
  shadows_.reserve(params_.size());
  for (const auto& [name, p] : params_) {
    shadows_.emplace_back(name, p.detach().to(at::kFloat, /*non_blocking=*/false, /*copy=*/true));
  }
}

double EmaWeights::decay_at(int64_t optimization_step) const {
  // Ref: training_utils.py EMAModel.get_decay (update_after_step 0, no warmup, min_decay 0)
  const int64_t s = std::max<int64_t>(0, optimization_step - 1);
  if (s <= 0) return 0.0;
  const double decay = (1.0 + static_cast<double>(s)) / (10.0 + static_cast<double>(s));
  return std::max(std::min(decay, max_decay_), 0.0);
}

void EmaWeights::update() {
  // Ref: training_utils.py EMAModel.step
  torch::NoGradGuard no_grad;
  ++step_;
  const double one_minus_decay = 1.0 - decay_at(step_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i].second;
    at::Tensor& shadow = shadows_[i].second;
    const at::Tensor value = p.detach().to(shadow.scalar_type());
    if (p.requires_grad()) {
      shadow.sub_((shadow - value) * one_minus_decay);
    } else {
      shadow.copy_(value);
    }
  }
}

void EmaWeights::restore(const std::vector<std::pair<std::string, at::Tensor>>& shadows, int64_t optimization_step) {
  IDSYNTH_CHECK(shadows.size() == shadows_.size(), "EMA restore: expected ", shadows_.size(), " tensors, found ",
                shadows.size());
  IDSYNTH_CHECK(optimization_step >= 0, "EMA restore: optimization step: expected >= 0, found ", optimization_step);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < shadows.size(); ++i) {
    const auto& [name, value] = shadows[i];
    IDSYNTH_CHECK(name == shadows_[i].first, "EMA restore: tensor ", i, ": expected '", shadows_[i].first,
                  "', found '", name, "'");
    IDSYNTH_CHECK(value.sizes() == shadows_[i].second.sizes(), "EMA restore: ", name, ": expected shape ",
                  shadows_[i].second.sizes(), ", found ", value.sizes());
    shadows_[i].second.copy_(value);
  }
  step_ = optimization_step;
}

}  // namespace idsynth::generator
