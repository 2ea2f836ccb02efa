// One Arc2Face training step (generator/diffusion_training.h) against diffusers 0.29.2 + PyTorch autograd
// on the golden tiny model (tests/generator/data/train_step, made by tests/fixtures/train_step_goldens.py):
// latents, noisy latents, conditioning, prediction, loss, every parameter's gradient, two AdamW steps.
// Also: the UNet's gradient checkpointing gives the same gradients, the differentiable forward gives
// the inference numbers, and EmaWeights follows diffusers' EMAModel formula.
#include <gtest/gtest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/json.h"
#include "core/safetensors.h"
#include "generator/arc2face_id_encoder.h"
#include "generator/autoencoder_kl.h"
#include "generator/clip_text_model.h"
#include "generator/diffusion_training.h"
#include "generator/schedulers.h"
#include "generator/unet_2d_condition.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

using namespace idsynth;
using namespace idsynth::generator;

namespace {

// Tolerances. The golden's own spread (1 vs 2 threads, same script, README "Tolerances") is 2e-7 on the
// losses, 7e-6 relative on grad_norm and 1.2e-5 x max|g| on full gradients; a wrong gradient (a
// missed term, a dropped row) is off by far more than 1e-3.
constexpr double kActivationAtol = 2e-5;  // latents, conditioning, prediction (values of order 1)
constexpr double kLossRtol = 1e-5;
constexpr double kGradRtol = 1e-5;        // grad_norm, relative
// grad_sum / grad_probe: relative to |value| + grad_norm * sqrt(numel), the largest such a sum can be
// (|sum(g * probe)| <= |g| |probe| <= |g| sqrt(n)): sums that cancel to ~0 are compared on that scale.
constexpr double kSumRtol = 1e-5;
constexpr double kFullGradRtol = 2e-5;    // subset gradients, elementwise, relative to the tensor's max |g|
constexpr double kZeroGradRatio = 1e-6;   // exactly-zero gradients: norm below this x the largest norm
constexpr double kAdamDeltaRtol = 1e-4;   // adamw.delta_norm, relative (golden spread 3.4e-5)
constexpr double kAdamWeightAtol = 1e-4;  // adamw.weight (README suggestion; lr x 2 steps = 2e-3 is the scale)

std::string train_step_dir() {
  return std::string(IDSYNTH_SOURCE_DIR) + "/tests/generator/data/train_step";
}

std::set<std::string> json_string_set(const std::string& text) {
  std::set<std::string> out;
  const json::Value list = json::parse(text, "metadata");
  for (const auto& v : list.as_array()) out.insert(v.as_string());
  return out;
}

struct TinyModels {
  AutoencoderKL vae{nullptr};
  UNet2DCondition unet{nullptr};
  CLIPTextModel text{nullptr};
  at::Tensor alphas_cumprod;
};

TinyModels load_tiny(const std::string& pipeline) {
  TinyModels m;
  m.vae = load_vae(pipeline + "/vae");
  m.unet = load_unet(pipeline + "/unet");
  m.text = load_clip_text_model(pipeline + "/text_encoder", torch::kCPU, torch::kFloat);
  m.alphas_cumprod = load_scheduler("", pipeline + "/scheduler/scheduler_config.json")->alphas_cumprod();
  m.unet->train();
  m.text->train();
  return m;
}

// "unet.<name>" / "text_encoder.<name>" -> parameter, in the golden's order (UNet then encoder).
std::vector<std::pair<std::string, at::Tensor>> trained_parameters(TinyModels& m) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : m.unet->named_parameters()) out.emplace_back("unet." + item.key(), item.value());
  for (const auto& item : m.text->named_parameters()) out.emplace_back("text_encoder." + item.key(), item.value());
  return out;
}

at::Tensor probe_for(const at::Tensor& t) {
  return at::linspace(-1, 1, t.numel(), at::TensorOptions().dtype(at::kDouble)).view(t.sizes());
}

double scalar(const TensorDict& d, const std::string& key) {
  return d.at(key).to(at::kDouble).item<double>();
}

struct Golden {
  TensorDict inputs, expected;
  std::map<std::string, std::string> metadata;
};

Golden read_golden(const std::string& dir) {
  Golden g;
  g.inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  SafeTensorsFile expected(dir + "/expected.safetensors");
  g.expected = expected.all();
  g.metadata = expected.metadata();
  return g;
}

// latent_dist.sample() * scaling_factor with the golden's noise.
at::Tensor golden_latents(TinyModels& m, const Golden& g, bool check) {
  const LatentDistribution dist = m.vae->encode(g.inputs.at("pixel_values"));
  if (check) {
    EXPECT_TRUE(test::all_close(dist.mean, g.expected.at("latent_mean"), kActivationAtol, "latent_mean"));
    EXPECT_TRUE(test::all_close(dist.std(), g.expected.at("latent_std"), kActivationAtol, "latent_std"));
  }
  return (dist.mean + dist.std() * g.inputs.at("vae_noise")) * m.vae->config().scaling_factor;
}

DiffusionStepInputs golden_step_inputs(const at::Tensor& latents, const Golden& g) {
  DiffusionStepInputs in;
  in.latents = latents;
  in.noise = g.inputs.at("noise");
  in.timesteps = g.inputs.at("timesteps");
  in.id_vectors = g.inputs.at("id_vectors");
  in.drop_mask = g.inputs.at("drop_mask").to(at::kBool);
  return in;
}

void zero_grads(const std::vector<std::pair<std::string, at::Tensor>>& params) {
  for (const auto& [name, p] : params) {
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
}

// One case (`eps` or `v_snr`): forward and backward, then every check against the golden.
void check_case(const std::string& case_name, const DiffusionLossOptions& options, bool gradient_checkpointing) {
  const std::string dir = train_step_dir();
  ASSERT_TRUE(std::filesystem::exists(dir + "/expected.safetensors")) << dir << " has no expected.safetensors";
  IDSYNTH_REQUIRE_GOLDEN(tiny, "pipeline_tiny/pipeline");
  const Golden g = read_golden(dir);
  TinyModels m = load_tiny(tiny);
  m.unet->set_gradient_checkpointing(gradient_checkpointing);
  const auto& e = g.expected;
  const std::string c = case_name + ".";

  // 1. schedule and latents
  std::cout << "  max|diff| alphas_cumprod = " << test::max_abs_diff(m.alphas_cumprod, e.at("alphas_cumprod")) << "\n";
  EXPECT_TRUE(test::all_close(m.alphas_cumprod, e.at("alphas_cumprod"), 1e-7, "alphas_cumprod"));
  const at::Tensor latents = golden_latents(m, g, true);
  EXPECT_TRUE(test::all_close(latents, e.at(c + "latents"), kActivationAtol, "latents"));

  // 2. forward: use the golden latents so that the step is checked on exactly its inputs
  Arc2FaceIdEncoder encoder(m.text);
  const auto params = trained_parameters(m);
  ASSERT_EQ(params.size(), 530u) << "494 UNet + 36 text encoder parameters";
  zero_grads(params);
  const DiffusionStepOutput out =
      diffusion_step(m.unet, encoder, m.alphas_cumprod, golden_step_inputs(e.at(c + "latents"), g), options);
  EXPECT_TRUE(test::all_close(out.noisy_latents, e.at(c + "noisy_latents"), kActivationAtol, "noisy_latents"));
  EXPECT_TRUE(test::all_close(out.encoder_hidden_states, e.at(c + "encoder_hidden_states"), kActivationAtol,
                              "encoder_hidden_states"));
  EXPECT_TRUE(test::all_close(out.model_pred, e.at(c + "model_pred"), kActivationAtol, "model_pred"));
  EXPECT_TRUE(test::all_close(out.target, e.at(c + "target"), kActivationAtol, "target"));
  if (case_name == "v_snr") {
    EXPECT_TRUE(test::all_close(compute_snr(m.alphas_cumprod, g.inputs.at("timesteps")), e.at("v_snr.snr"),
                                1e-6 * e.at("v_snr.snr").abs().max().item<double>(), "snr"));
  }
  const double loss = out.loss.item<double>(), expected_loss = scalar(e, c + "loss");
  std::cout << "  loss " << loss << " expected " << expected_loss << " rel diff "
            << std::abs(loss - expected_loss) / std::abs(expected_loss) << "\n";
  EXPECT_LE(std::abs(loss - expected_loss), kLossRtol * std::abs(expected_loss));

  // 3. gradients of every parameter
  out.loss.backward();
  const std::set<std::string> math_zero = json_string_set(g.metadata.at(c + "math_zero_grad"));
  const std::set<std::string> subset = json_string_set(g.metadata.at("subset"));
  double largest_norm = 0;
  for (const auto& [name, p] : params) {
    ASSERT_TRUE(p.grad().defined()) << name << " got no gradient";
    largest_norm = std::max(largest_norm, p.grad().to(at::kDouble).norm().item<double>());
  }
  double worst_norm = 0, worst_sum = 0, worst_full = 0;
  std::string worst_norm_name, worst_sum_name, worst_full_name;
  int checked = 0;
  for (const auto& [name, p] : params) {
    const at::Tensor grad = p.grad().to(at::kDouble).contiguous();
    const double norm = grad.norm().item<double>();
    if (math_zero.count(name)) {
      EXPECT_LT(norm, kZeroGradRatio * largest_norm) << name << ": a gradient that is zero in exact arithmetic";
      continue;
    }
    const double expected_norm = scalar(e, c + "grad_norm." + name);
    const double norm_err = std::abs(norm - expected_norm) / expected_norm;
    EXPECT_LE(norm_err, kGradRtol) << name << " grad_norm " << norm << " expected " << expected_norm;
    if (norm_err > worst_norm) worst_norm = norm_err, worst_norm_name = name;
    const double sums[2] = {grad.sum().item<double>(), (grad * probe_for(grad)).sum().item<double>()};
    const char* keys[2] = {"grad_sum.", "grad_probe."};
    const double sum_floor = expected_norm * std::sqrt(static_cast<double>(grad.numel()));
    for (int k = 0; k < 2; ++k) {
      const double expected_sum = scalar(e, c + keys[k] + name);
      const double err = std::abs(sums[k] - expected_sum) / (std::abs(expected_sum) + sum_floor);
      EXPECT_LE(err, kSumRtol) << name << " " << keys[k] << sums[k] << " expected " << expected_sum;
      if (err > worst_sum) worst_sum = err, worst_sum_name = name + " " + keys[k];
    }
    if (subset.count(name)) {
      const at::Tensor expected_grad = e.at(c + "grad." + name).to(at::kDouble);
      const double err = test::max_abs_diff(grad, expected_grad) / expected_grad.abs().max().item<double>();
      EXPECT_LE(err, kFullGradRtol) << name << " full gradient, relative to max|g|";
      if (err > worst_full) worst_full = err, worst_full_name = name;
    }
    ++checked;
  }
  std::cout << "  " << checked << " gradients compared (" << math_zero.size() << " zero in exact arithmetic)\n"
            << "  worst grad_norm rel diff " << worst_norm << " (" << worst_norm_name << ")\n"
            << "  worst grad_sum/probe |diff| / (|value| + grad_norm sqrt(n)) " << worst_sum << " (" << worst_sum_name << ")\n"
            << "  worst subset gradient max|diff| / max|g| " << worst_full << " (" << worst_full_name << ")\n";
}

}  // namespace

TEST(DiffusionTrainingParity, EpsilonStepMatchesDiffusers) {
  at::set_num_threads(2);
  check_case("eps", DiffusionLossOptions{}, false);
}

TEST(DiffusionTrainingParity, VPredictionMinSnrStepMatchesDiffusers) {
  at::set_num_threads(2);
  DiffusionLossOptions options;
  options.prediction_type = "v_prediction";
  options.snr_gamma = 5.0;
  check_case("v_snr", options, false);
}

TEST(DiffusionTrainingParity, GradientCheckpointingStepMatchesDiffusers) {
  at::set_num_threads(2);
  check_case("eps", DiffusionLossOptions{}, true);
}

TEST(DiffusionTrainingParity, ClippedAdamWStepsMatchTorch) {
  at::set_num_threads(2);
  const std::string dir = train_step_dir();
  ASSERT_TRUE(std::filesystem::exists(dir + "/expected.safetensors")) << dir << " has no expected.safetensors";
  IDSYNTH_REQUIRE_GOLDEN(tiny, "pipeline_tiny/pipeline");
  const Golden g = read_golden(dir);
  TinyModels m = load_tiny(tiny);
  const auto& e = g.expected;
  Arc2FaceIdEncoder encoder(m.text);
  const auto params = trained_parameters(m);
  std::vector<at::Tensor> tensors;
  std::vector<at::Tensor> before;
  for (const auto& [name, p] : params) {
    tensors.push_back(p);
    before.push_back(p.detach().to(at::kDouble, false, true));
  }
  zero_grads(params);
  diffusion_step(m.unet, encoder, m.alphas_cumprod, golden_step_inputs(e.at("eps.latents"), g), DiffusionLossOptions{})
      .loss.backward();

  // clip_grad_norm_ to 0.05, then AdamW twice with the same clipped gradients
  const double total_norm = torch::nn::utils::clip_grad_norm_(tensors, 0.05);
  const double expected_total = scalar(e, "adamw.total_norm");
  std::cout << "  total_norm " << total_norm << " expected " << expected_total << "\n";
  EXPECT_LE(std::abs(total_norm - expected_total), kGradRtol * expected_total);
  torch::optim::AdamW adamw(tensors, torch::optim::AdamWOptions(1e-3).betas({0.9, 0.999}).eps(1e-8).weight_decay(1e-2));
  adamw.step();
  adamw.step();

  const std::set<std::string> math_zero = json_string_set(g.metadata.at("eps.math_zero_grad"));
  const std::set<std::string> subset = json_string_set(g.metadata.at("subset"));
  double worst_delta = 0, worst_weight = 0;
  std::string worst_delta_name, worst_weight_name;
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params[i].first;
    if (math_zero.count(name)) continue;  // AdamW turns their rounding-noise gradients into full-size steps
    const at::Tensor after = params[i].second.detach().to(at::kDouble);
    const at::Tensor delta = after - before[i];
    const double delta_norm = delta.norm().item<double>(), expected = scalar(e, "adamw.delta_norm." + name);
    const double err = std::abs(delta_norm - expected) / expected;
    EXPECT_LE(err, kAdamDeltaRtol) << name << " delta_norm " << delta_norm << " expected " << expected;
    if (err > worst_delta) worst_delta = err, worst_delta_name = name;
    if (subset.count(name)) {
      const double diff = test::max_abs_diff(after, e.at("adamw.weight." + name));
      EXPECT_LE(diff, kAdamWeightAtol) << name << " weight after two AdamW steps";
      if (diff > worst_weight) worst_weight = diff, worst_weight_name = name;
    }
  }
  std::cout << "  worst adamw delta_norm rel diff " << worst_delta << " (" << worst_delta_name << ")\n"
            << "  worst adamw subset weight max|diff| " << worst_weight << " (" << worst_weight_name << ")\n";
}

// ---------------------------------------------------------------------------------------------
// Without goldens: the tiny UNet and CLIP of goldens/pipeline_tiny are only used as weights here.
// ---------------------------------------------------------------------------------------------
namespace {

// A random batch for the tiny pipeline models: latents [2, 4, 16, 16] (odd-free sizes), ids [2, 16].
DiffusionStepInputs random_inputs(uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  DiffusionStepInputs in;
  in.latents = at::randn({2, 4, 16, 16}, gen);
  in.noise = at::randn({2, 4, 16, 16}, gen);
  in.timesteps = at::tensor(std::vector<int64_t>{17, 803});
  in.id_vectors = at::randn({2, 16}, gen);
  in.drop_mask = at::tensor(std::vector<int64_t>{0, 1}).to(at::kBool);
  return in;
}

// The step's gradients with and without checkpointing, in float64: checkpointing changes the order in
// which autograd sums the gradient contributions of tensors with several users (the time embedding,
// the conditioning, block outputs that are also skips), which in float32 moves gradients by up to
// 3e-6 of their max (measured); in float64 that is ~1e-13, so 1e-6 is a tight bound that a missing or
// doubled contribution breaks.
void expect_checkpointing_changes_nothing(const std::string& tiny, const DiffusionStepInputs& in) {
  TinyModels m = load_tiny(tiny);
  m.unet->to(at::kDouble);
  m.text->to(at::kDouble);
  Arc2FaceIdEncoder encoder(m.text);
  const auto params = trained_parameters(m);
  std::vector<at::Tensor> plain;
  double losses[2] = {0, 0};
  for (int pass = 0; pass < 2; ++pass) {
    m.unet->set_gradient_checkpointing(pass == 1);
    zero_grads(params);
    const auto out = diffusion_step(m.unet, encoder, m.alphas_cumprod, in, DiffusionLossOptions{});
    out.loss.backward();
    losses[pass] = out.loss.item<double>();
    if (pass == 0) {
      for (const auto& [name, p] : params) plain.push_back(p.grad().clone());
      continue;
    }
    double worst = 0, largest = 0;
    std::string worst_name;
    for (const auto& g : plain) largest = std::max(largest, g.abs().max().item<double>());
    for (size_t i = 0; i < params.size(); ++i) {
      const auto& [name, p] = params[i];
      ASSERT_TRUE(p.grad().defined()) << name << " got no gradient with checkpointing";
      // Gradients that are zero in exact arithmetic (see the golden's README) are rounding noise:
      // compared against the largest gradient instead of their own.
      const double scale = std::max(plain[i].abs().max().item<double>(), 1e-9 * largest);
      const double err = test::max_abs_diff(p.grad(), plain[i]) / scale;
      EXPECT_LE(err, 1e-6) << name;
      if (err > worst) worst = err, worst_name = name;
    }
    std::cout << "  latents " << in.latents.sizes() << ": worst max|diff| / max|g|, checkpointed vs plain: " << worst
              << " (" << worst_name << ")\n";
  }
  EXPECT_EQ(losses[0], losses[1]) << "the checkpointed forward must give the same loss";
}

}  // namespace

TEST(DiffusionTraining, GradientCheckpointingGivesTheSameGradients) {
  IDSYNTH_REQUIRE_GOLDEN(tiny, "pipeline_tiny/pipeline");
  at::set_num_threads(2);
  expect_checkpointing_changes_nothing(tiny, random_inputs(7));
}

TEST(DiffusionTraining, GradientCheckpointingWithOddLatentSizes) {
  // 15 x 13 latents: the up blocks' upsamplers take their sizes from the skips (forwarded into the
  // checkpoints).
  IDSYNTH_REQUIRE_GOLDEN(tiny, "pipeline_tiny/pipeline");
  at::set_num_threads(2);
  DiffusionStepInputs in = random_inputs(10);
  in.latents = in.latents.narrow(2, 0, 15).narrow(3, 0, 13).contiguous();
  in.noise = in.noise.narrow(2, 0, 15).narrow(3, 0, 13).contiguous();
  expect_checkpointing_changes_nothing(tiny, in);
}

TEST(DiffusionTraining, GradientCheckpointingReachesFrozenModelsTrainedInputs) {
  // Frozen UNet (as under LoRA), trained encoder: the checkpoints must still pass gradients to the
  // conditioning. And a frozen encoder with a trained UNet: the blocks' parameters still get theirs
  // although no checkpoint input requires grad in the first block.
  IDSYNTH_REQUIRE_GOLDEN(tiny, "pipeline_tiny/pipeline");
  at::set_num_threads(2);
  TinyModels m = load_tiny(tiny);
  m.unet->set_gradient_checkpointing(true);
  Arc2FaceIdEncoder encoder(m.text);
  const DiffusionStepInputs in = random_inputs(8);

  for (auto& p : m.unet->parameters()) p.set_requires_grad(false);
  auto out = diffusion_step(m.unet, encoder, m.alphas_cumprod, in, DiffusionLossOptions{});
  out.loss.backward();
  for (const auto& item : m.text->named_parameters()) {
    if (item.key() == "text_model.encoder.layers.0.self_attn.k_proj.bias") continue;  // zero in exact arithmetic
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().max().item<double>(), 0.0) << item.key();
  }

  for (auto& p : m.unet->parameters()) p.set_requires_grad(true);
  for (auto& p : m.text->parameters()) p.set_requires_grad(false);
  out = diffusion_step(m.unet, encoder, m.alphas_cumprod, in, DiffusionLossOptions{});
  out.loss.backward();
  for (const auto& item : m.unet->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key() << " got no gradient through its checkpoint";
  }
}

TEST(DiffusionTraining, DifferentiableForwardGivesTheInferenceNumbers) {
  IDSYNTH_REQUIRE_GOLDEN(tiny, "pipeline_tiny/pipeline");
  at::set_num_threads(2);
  TinyModels m = load_tiny(tiny);
  Arc2FaceIdEncoder encoder(m.text);
  const DiffusionStepInputs in = random_inputs(9);
  const at::Tensor noisy = add_noise(m.alphas_cumprod, in.latents, in.noise, in.timesteps);

  m.unet->eval();
  const at::Tensor hidden = encoder.encode(in.id_vectors);
  const at::Tensor inference = m.unet->forward(noisy, in.timesteps, hidden);
  EXPECT_FALSE(inference.requires_grad()) << "eval mode must not record a graph";

  m.unet->train();
  const at::Tensor trained_hidden = encode_for_training(encoder, in.id_vectors, at::zeros({2}, at::kBool));
  EXPECT_TRUE(trained_hidden.requires_grad());
  // Inference runs the batch-invariant oneDNN kernels (core/invariant_kernels.h), training libtorch's
  // recorded ops: equal to float rounding (1.2e-6 measured on values up to ~3).
  EXPECT_TRUE(test::all_close(trained_hidden, hidden, 5e-6, "encode_for_training vs encode"));
  const at::Tensor training = m.unet->forward(noisy, in.timesteps, trained_hidden);
  EXPECT_TRUE(training.requires_grad());
  std::cout << "  max|diff| UNet training vs inference forward = " << test::max_abs_diff(training, inference) << "\n";
  EXPECT_TRUE(test::all_close(training, inference, 1e-5, "UNet training forward vs inference"));

  // The dropped row is the empty prompt's encoding.
  const at::Tensor dropped = encode_for_training(encoder, in.id_vectors, at::ones({2}, at::kBool));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(test::all_close(dropped[1], encoder.unconditional()[0], 1e-6, "dropped row vs unconditional"));
}

TEST(DiffusionTraining, NoiseFormulasMatchTheDdpmDefinitions) {
  const at::Tensor acp = at::tensor(std::vector<float>{0.9f, 0.5f, 0.1f});
  const at::Tensor x = at::ones({3, 1, 2, 2}) * 2.0, noise = at::ones({3, 1, 2, 2}) * -1.0;
  const at::Tensor t = at::tensor(std::vector<int64_t>{2, 0, 1});
  const float a[3] = {0.1f, 0.9f, 0.5f};
  const at::Tensor noisy = add_noise(acp, x, noise, t), v = velocity(acp, x, noise, t), snr = compute_snr(acp, t);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(noisy[i][0][1][1].item<double>(), std::sqrt(a[i]) * 2.0 - std::sqrt(1 - a[i]), 1e-6);
    EXPECT_NEAR(v[i][0][0][0].item<double>(), -std::sqrt(a[i]) - std::sqrt(1 - a[i]) * 2.0, 1e-6);
    EXPECT_NEAR(snr[i].item<double>(), a[i] / (1 - a[i]), 1e-5 * a[i] / (1 - a[i]));
  }
  EXPECT_THROW(add_noise(acp, x, noise, at::tensor(std::vector<int64_t>{0, 1, 3})), std::exception);
}

TEST(DiffusionTraining, EmaFollowsDiffusersEmaModel) {
  // EMAModel(decay 0.9): decay(n) = 0 for n = 1, else min(0.9, (1 + (n-1)) / (10 + (n-1))); shadow -=
  // (1 - decay)(shadow - param). Parameters 1, 2, 4, 8 after steps 1..4, starting shadow 0.5.
  at::Tensor p = at::full({3}, 0.5).requires_grad_(true);
  at::Tensor frozen = at::full({2}, 7.0);
  EmaWeights ema({{"p", p}, {"frozen", frozen}}, 0.9);
  EXPECT_DOUBLE_EQ(ema.decay_at(1), 0.0);
  EXPECT_DOUBLE_EQ(ema.decay_at(2), 2.0 / 11.0);
  EXPECT_DOUBLE_EQ(ema.decay_at(3), 3.0 / 12.0);
  EXPECT_DOUBLE_EQ(ema.decay_at(1000), 0.9);
  double shadow = 0.5;
  const double values[4] = {1, 2, 4, 8};
  for (int n = 1; n <= 4; ++n) {
    {
      torch::NoGradGuard no_grad;
      p.fill_(values[n - 1]);
      frozen.fill_(values[n - 1] + 1);
    }
    ema.update();
    const double decay = n == 1 ? 0.0 : std::min(0.9, static_cast<double>(n) / (9.0 + n));
    shadow -= (1 - decay) * (shadow - values[n - 1]);
    EXPECT_EQ(ema.optimization_step(), n);
    EXPECT_NEAR(ema.shadows()[0].second[1].item<double>(), shadow, 1e-5) << "step " << n;
    EXPECT_EQ(ema.shadows()[1].second[0].item<double>(), values[n - 1] + 1) << "frozen parameters are copied";
  }
  EXPECT_NEAR(shadow, 6.6013986014, 1e-9);  // 1, 1.8182, 3.4545, 6.6014 by hand

  // restore: shadows and the step count come back (the next decay follows the restored step)
  EmaWeights other({{"p", p}, {"frozen", frozen}}, 0.9);
  other.restore(ema.shadows(), ema.optimization_step());
  EXPECT_EQ(other.optimization_step(), 4);
  EXPECT_TRUE(test::all_close(other.shadows()[0].second, ema.shadows()[0].second, 0.0, "restored shadow"));
  EXPECT_THROW(other.restore({{"q", p}, {"frozen", frozen}}, 1), std::exception);
}
