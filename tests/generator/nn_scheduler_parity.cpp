// Schedulers vs diffusers 0.29.2 (goldens/scheduler_dpmpp): DPM-Solver++ 2M as Arc2Face builds it
// from SD-1.5's PNDM config, and DDIM (eta 0) from the same file; LCM (goldens/scheduler_lcm) as
// Arc2Face's LCM-LoRA example builds it from the same config.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <torch/version.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <iostream>
#include <limits>

#include "core/check.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "generator/schedulers.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

using namespace idsynth;
using namespace idsynth::generator;

namespace {

constexpr double kSampleTol = 1e-4;  // README: values reach O(10) in the early steps

void expect_close(const std::string& what, const torch::Tensor& actual, const torch::Tensor& expected, double atol) {
  std::cout << "  max|diff| " << what << " = " << test::max_abs_diff(actual, expected) << "\n";
  EXPECT_TRUE(test::all_close(actual, expected, atol, what));
}

void run_chain(Scheduler& s, const TensorDict& inputs, int64_t n, torch::Tensor& prev_samples) {
  s.set_timesteps(n);
  auto x = inputs.at("initial_sample") * s.init_noise_sigma();
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < s.num_inference_steps(); ++i) {
    x = s.step(inputs.at("model_outputs")[i], i, s.scale_model_input(x, i));
    out.push_back(x);
  }
  prev_samples = torch::stack(out);
}

// np.round(k * (last / n)) for the linspace spacing, with exact integer arithmetic (half to even).
int64_t round_ratio(int64_t num, int64_t den) {
  int64_t q = num / den, rem = num % den;
  if (2 * rem > den || (2 * rem == den && q % 2 == 1)) ++q;
  return q;
}

std::vector<int64_t> to_vec(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// The schedule tables (betas, alphas_cumprod, sigmas) are float32 torch arithmetic (linspace, pow,
// cumprod). With the libtorch the goldens were made with (1.13) they are bit-identical; other
// versions round some entries differently, so there they may differ by a few float32 ulps.
::testing::AssertionResult same_schedule(const torch::Tensor& actual, const torch::Tensor& expected) {
  constexpr double kUlps = TORCH_VERSION_MAJOR == 1 ? 0.0 : 4.0;
  if (actual.sizes() != expected.sizes()) return ::testing::AssertionFailure() << "shape " << actual.sizes();
  const auto a = actual.to(torch::kDouble), e = expected.to(torch::kDouble);
  const auto allowed = e.abs() * (kUlps * std::numeric_limits<float>::epsilon());
  const auto excess = ((a - e).abs() - allowed).max().item<double>();
  if (excess <= 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max|diff| " << (a - e).abs().max().item<double>() << " beyond " << kUlps
                                       << " float32 ulps (libtorch " << TORCH_VERSION << ")";
}

}  // namespace

TEST(SchedulerParity, DpmSolverFromSd15PndmConfig) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "scheduler_dpmpp");
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto expected = SafeTensorsFile(dir + "/expected.safetensors").all();
  // Arc2Face: DPMSolverMultistepScheduler.from_config(PNDM config of SD-1.5).
  auto s = load_scheduler("dpmsolver++", dir + "/sd15_scheduler_config.json");
  auto* dpm = dynamic_cast<DPMSolverMultistepScheduler*>(s.get());
  ASSERT_NE(dpm, nullptr);
  EXPECT_EQ(dpm->config().timestep_spacing, "linspace");  // DPM's default, not PNDM's "leading"
  EXPECT_EQ(dpm->config().steps_offset, 1);
  EXPECT_TRUE(same_schedule(s->betas(), expected.at("betas")));
  EXPECT_TRUE(same_schedule(s->alphas_cumprod(), expected.at("alphas_cumprod")));
  EXPECT_EQ(s->init_noise_sigma(), expected.at("dpm_init_noise_sigma").item<double>());
  for (int64_t n : {25, 7}) {
    SCOPED_TRACE(n);
    torch::Tensor prev;
    run_chain(*s, inputs, n, prev);
    EXPECT_TRUE(torch::equal(s->timesteps(), expected.at(cat("dpm_timesteps_", n)))) << s->timesteps();
    EXPECT_TRUE(same_schedule(dpm->sigmas(), expected.at(cat("dpm_sigmas_", n))));
    expect_close(cat("dpm_prev_samples_", n), prev, expected.at(cat("dpm_prev_samples_", n)), kSampleTol);
  }
  // The config diffusers saved for the DPM scheduler gives the same chain.
  auto saved = load_scheduler("", dir + "/dpmsolver_multistep/scheduler_config.json");
  torch::Tensor prev;
  run_chain(*saved, inputs, 25, prev);
  EXPECT_ALL_CLOSE(prev, expected.at("dpm_prev_samples_25"), kSampleTol);
}

TEST(SchedulerParity, DdimFromSd15PndmConfig) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "scheduler_dpmpp");
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto expected = SafeTensorsFile(dir + "/expected.safetensors").all();
  auto s = load_scheduler("ddim", dir + "/sd15_scheduler_config.json");
  EXPECT_TRUE(same_schedule(s->alphas_cumprod(), expected.at("alphas_cumprod")));
  EXPECT_EQ(s->init_noise_sigma(), expected.at("ddim_init_noise_sigma").item<double>());
  for (int64_t n : {25, 7}) {
    SCOPED_TRACE(n);
    torch::Tensor prev;
    run_chain(*s, inputs, n, prev);
    EXPECT_TRUE(torch::equal(s->timesteps(), expected.at(cat("ddim_timesteps_", n)))) << s->timesteps();
    expect_close(cat("ddim_prev_samples_", n), prev, expected.at(cat("ddim_prev_samples_", n)), kSampleTol);
  }
  auto saved = load_scheduler("", dir + "/ddim/scheduler_config.json");
  saved->set_timesteps(7);
  EXPECT_TRUE(torch::equal(saved->timesteps(), expected.at("ddim_timesteps_7")));
}

TEST(SchedulerParity, StepByTimestepValueMatchesStepIndex) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "scheduler_dpmpp");
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto expected = SafeTensorsFile(dir + "/expected.safetensors").all();
  auto s = load_scheduler("dpmsolver++", dir + "/sd15_scheduler_config.json");
  s->set_timesteps(7);
  auto x = inputs.at("initial_sample");
  for (int64_t i = 0; i < 7; ++i)
    x = s->step_at_timestep(inputs.at("model_outputs")[i], s->timesteps()[i].item<double>(), x);
  EXPECT_ALL_CLOSE(x, expected.at("dpm_prev_samples_7")[6], kSampleTol);
}

TEST(SchedulerTimesteps, LinspaceLeadingTrailingMatchDiffusersFormulas) {
  auto dpm = make_scheduler("dpmsolver++");  // class defaults: linspace
  // linspace: round(linspace(0, 999, n + 1))[::-1][:-1]
  for (int64_t n : {1, 2, 3, 10, 25, 50, 100}) {
    SCOPED_TRACE(n);
    dpm->set_timesteps(n);
    std::vector<int64_t> want;
    for (int64_t k = n; k >= 1; --k) want.push_back(round_ratio(k * 999, n));
    EXPECT_EQ(to_vec(dpm->timesteps()), want);
  }
  dpm->set_timesteps(1);
  EXPECT_EQ(to_vec(dpm->timesteps()), (std::vector<int64_t>{999}));
  dpm->set_timesteps(2);
  EXPECT_EQ(to_vec(dpm->timesteps()), (std::vector<int64_t>{999, 500}));  // 499.5 rounds to even

  auto leading = make_scheduler("dpmsolver++", json::parse(R"({"timestep_spacing": "leading", "steps_offset": 1})"), "t");
  leading->set_timesteps(4);  // ratio 1000 // 5 = 200
  EXPECT_EQ(to_vec(leading->timesteps()), (std::vector<int64_t>{801, 601, 401, 201}));
  auto trailing = make_scheduler("dpmsolver++", json::parse(R"({"timestep_spacing": "trailing"})"), "t");
  trailing->set_timesteps(4);
  EXPECT_EQ(to_vec(trailing->timesteps()), (std::vector<int64_t>{999, 749, 499, 249}));
  trailing->set_timesteps(3);  // arange(1000, 0, -333.33).round() - 1
  EXPECT_EQ(to_vec(trailing->timesteps()), (std::vector<int64_t>{999, 666, 332}));

  auto ddim = make_scheduler("ddim", json::parse(R"({"steps_offset": 1})"), "t");  // leading
  for (int64_t n : {1, 2, 50}) {
    ddim->set_timesteps(n);
    std::vector<int64_t> want;
    for (int64_t k = n - 1; k >= 0; --k) want.push_back(k * (1000 / n) + 1);
    EXPECT_EQ(to_vec(ddim->timesteps()), want);
  }
  auto ddim_lin = make_scheduler("ddim", json::parse(R"({"timestep_spacing": "linspace"})"), "t");
  ddim_lin->set_timesteps(1);
  EXPECT_EQ(to_vec(ddim_lin->timesteps()), (std::vector<int64_t>{0}));
  ddim_lin->set_timesteps(3);
  EXPECT_EQ(to_vec(ddim_lin->timesteps()), (std::vector<int64_t>{999, 500, 0}));  // 499.5 -> 500
}

TEST(SchedulerEuler, TimestepsSigmasAndScaling) {
  auto s = make_scheduler("euler", json::parse(R"({"beta_start": 0.00085, "beta_end": 0.012,
                                                   "beta_schedule": "scaled_linear"})"), "t");
  s->set_timesteps(25);
  auto* euler = dynamic_cast<EulerDiscreteScheduler*>(s.get());
  ASSERT_NE(euler, nullptr);
  // linspace(0, 999, 25, dtype=float32)[::-1]: fractional timesteps, step 41.625.
  ASSERT_EQ(s->timesteps().scalar_type(), torch::kFloat);
  EXPECT_FLOAT_EQ(s->timesteps()[0].item<float>(), 999.0f);
  EXPECT_FLOAT_EQ(s->timesteps()[1].item<float>(), 957.375f);
  EXPECT_FLOAT_EQ(s->timesteps()[24].item<float>(), 0.0f);
  // sigma at 957.375 is linear between the table values at 957 and 958.
  auto table = torch::pow((1 - s->alphas_cumprod()) / s->alphas_cumprod(), 0.5).to(torch::kDouble);
  const double want = table[957].item<double>() + 0.375 * (table[958].item<double>() - table[957].item<double>());
  EXPECT_FLOAT_EQ(euler->sigmas()[1].item<float>(), static_cast<float>(want));
  EXPECT_EQ(euler->sigmas()[25].item<float>(), 0.0f);
  // linspace spacing: init_noise_sigma is the largest sigma; scale_model_input divides by sqrt(sigma^2 + 1).
  const double s0 = euler->sigmas()[0].item<double>();
  EXPECT_FLOAT_EQ(static_cast<float>(s->init_noise_sigma()), static_cast<float>(s0));
  auto x = torch::ones({1, 4, 2, 2});
  EXPECT_NEAR(s->scale_model_input(x, 0)[0][0][0][0].item<double>(), 1.0 / std::sqrt(s0 * s0 + 1), 1e-6);
  // With epsilon = 0 the predicted x0 is x itself, so an Euler step leaves x unchanged.
  auto y = s->step(torch::zeros_like(x), 0, x);
  EXPECT_ALL_CLOSE(y, x, 0.0);
  // Leading spacing: init_noise_sigma = sqrt(max_sigma^2 + 1).
  auto lead = make_scheduler("euler", json::parse(R"({"timestep_spacing": "leading", "steps_offset": 1})"), "t");
  lead->set_timesteps(10);
  EXPECT_FLOAT_EQ(lead->timesteps()[0].item<float>(), 901.0f);
  const double m = dynamic_cast<EulerDiscreteScheduler*>(lead.get())->sigmas().max().item<double>();
  EXPECT_NEAR(lead->init_noise_sigma(), std::sqrt(m * m + 1), 1e-4);
}

TEST(SchedulerConfig, RejectsUnsupportedValuesByName) {
  auto expect_error = [](const std::string& kind, const std::string& text, const std::string& needle) {
    try {
      make_scheduler(kind, json::parse(text), "sched/scheduler_config.json");
      ADD_FAILURE() << "expected an error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("sched/scheduler_config.json"), std::string::npos) << e.what();
    }
  };
  expect_error("dpmsolver++", R"({"algorithm_type": "sde-dpmsolver++"})", "algorithm_type");
  expect_error("dpmsolver++", R"({"use_karras_sigmas": true})", "use_karras_sigmas");
  expect_error("dpmsolver++", R"({"solver_order": 3})", "solver_order");
  expect_error("dpmsolver++", R"({"timestep_spacing": "quadratic"})", "quadratic");
  expect_error("ddim", R"({"beta_schedule": "sigmoid"})", "beta_schedule");
  expect_error("euler", R"({"use_karras_sigmas": true})", "use_karras_sigmas");
  expect_error("pndm", R"({})", "pndm");
  expect_error("", R"({"_class_name": "PNDMScheduler"})", "PNDMScheduler");
  // -Infinity and null values parse; the scheduler is the file's class when no kind is given.
  auto s = make_scheduler("", json::parse(R"({"_class_name": "DPMSolverMultistepScheduler",
      "lambda_min_clipped": -Infinity, "variance_type": null, "trained_betas": null})"), "x");
  EXPECT_STREQ(s->name(), "DPMSolverMultistepScheduler");
}

TEST(SchedulerDtype, HalfSamplesStepInFloat32AndCastBack) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "scheduler_dpmpp");
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto s = load_scheduler("dpmsolver++", dir + "/sd15_scheduler_config.json");
  s->set_timesteps(7);
  auto x = inputs.at("initial_sample");
  auto xb = x.to(torch::kBFloat16);
  auto r = s->clone();
  for (int64_t i = 0; i < 7; ++i) {
    x = s->step(inputs.at("model_outputs")[i], i, x);
    xb = r->step(inputs.at("model_outputs")[i].to(torch::kBFloat16), i, xb);
  }
  EXPECT_EQ(xb.scalar_type(), torch::kBFloat16);
  EXPECT_LT((xb.to(torch::kFloat) - x).abs().max().item<double>(), 0.5);
}

TEST(SchedulerParity, LcmFromSd15PndmConfig) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "scheduler_lcm");
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto expected = SafeTensorsFile(dir + "/expected.safetensors").all();
  // Arc2Face's LCM mode: LCMScheduler.from_config(the PNDM config SD-1.5's pipeline loads).
  auto s = load_scheduler("lcm", dir + "/sd15_scheduler_config.json");
  auto* lcm = dynamic_cast<LCMScheduler*>(s.get());
  ASSERT_NE(lcm, nullptr);
  EXPECT_EQ(lcm->config().original_inference_steps, 50);
  EXPECT_EQ(lcm->config().timestep_scaling, 10.0);
  EXPECT_FALSE(lcm->config().set_alpha_to_one);  // the PNDM file's value wins over LCM's default
  EXPECT_TRUE(same_schedule(s->alphas_cumprod(), expected.at("alphas_cumprod")));
  EXPECT_EQ(s->init_noise_sigma(), expected.at("init_noise_sigma").item<double>());
  for (int64_t n : {1, 2, 4, 8}) {
    SCOPED_TRACE(n);
    s->set_timesteps(n);
    EXPECT_TRUE(torch::equal(s->timesteps(), expected.at(cat("timesteps_", n)))) << s->timesteps();
    // The golden's generator: a fresh CPU generator seeded 1234 + n, one randn per noisy step.
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(1234 + n));
    auto x = inputs.at("initial_sample") * s->init_noise_sigma();
    std::vector<torch::Tensor> c_skip, c_out, prev, denoised;
    for (int64_t i = 0; i < n; ++i) {
      const auto [skip, out] = lcm->boundary_scalings(i);
      c_skip.push_back(skip);
      c_out.push_back(out);
      const auto& model_output = inputs.at("model_outputs")[i];
      EXPECT_EQ(s->step_needs_noise(i), i < n - 1);
      x = s->step_needs_noise(i) ? s->step_with_noise(model_output, i, x, torch::randn(x.sizes(), gen, torch::kFloat))
                                 : s->step(model_output, i, x);
      prev.push_back(x);
      denoised.push_back(lcm->denoised());
    }
    EXPECT_TRUE(torch::equal(torch::stack(c_skip), expected.at(cat("c_skip_", n))))
        << "max|diff| " << test::max_abs_diff(torch::stack(c_skip), expected.at(cat("c_skip_", n)));
    EXPECT_TRUE(torch::equal(torch::stack(c_out), expected.at(cat("c_out_", n))))
        << "max|diff| " << test::max_abs_diff(torch::stack(c_out), expected.at(cat("c_out_", n)));
    expect_close(cat("denoised_", n), torch::stack(denoised), expected.at(cat("denoised_", n)), 1e-5);
    expect_close(cat("prev_samples_", n), torch::stack(prev), expected.at(cat("prev_samples_", n)), 1e-5);
  }
  // The config diffusers saved for the LCM scheduler gives the same schedule.
  auto saved = load_scheduler("", dir + "/scheduler_config.json");
  EXPECT_STREQ(saved->name(), "LCMScheduler");
  saved->set_timesteps(8);
  EXPECT_TRUE(torch::equal(saved->timesteps(), expected.at("timesteps_8")));
}

TEST(SchedulerLcm, StepCountsNoiseAndKindNames) {
  auto s = make_scheduler("LCMScheduler");
  EXPECT_STREQ(s->name(), "LCMScheduler");
  EXPECT_NE(std::find(scheduler_kinds().begin(), scheduler_kinds().end(), "lcm"), scheduler_kinds().end());
  EXPECT_NE(scheduler_kinds_text().find("lcm"), std::string::npos);
  // Steps: 1..original_inference_steps (diffusers refuses more; 0 divides by zero there).
  for (int64_t bad : {0, 51, -1}) {
    try {
      s->set_timesteps(bad);
      ADD_FAILURE() << "expected an error for " << bad << " steps";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("expected 1..50"), std::string::npos) << e.what();
    }
  }
  s->set_timesteps(50);  // the whole grid: 999, 979, ..., 19
  EXPECT_EQ(s->timesteps()[0].item<int64_t>(), 999);
  EXPECT_EQ(s->timesteps()[49].item<int64_t>(), 19);
  // One step takes no noise; noise at a noisy step is required, and at the last refused.
  s->set_timesteps(1);
  EXPECT_FALSE(s->needs_step_noise());
  auto x = torch::ones({1, 4, 2, 2});
  EXPECT_NO_THROW(s->step(torch::zeros_like(x), 0, x));
  s->set_timesteps(2);
  EXPECT_TRUE(s->needs_step_noise());
  EXPECT_THROW(s->step(torch::zeros_like(x), 0, x), Error);
  EXPECT_THROW(s->step_with_noise(torch::zeros_like(x), 1, x, torch::zeros_like(x)), Error);
  // Deterministic schedulers never ask for noise and refuse it.
  auto ddim = make_scheduler("ddim");
  ddim->set_timesteps(4);
  EXPECT_FALSE(ddim->needs_step_noise());
  EXPECT_THROW(ddim->step_with_noise(torch::zeros_like(x), 0, x, torch::zeros_like(x)), Error);
  EXPECT_ALL_CLOSE(ddim->step_with_noise(torch::zeros_like(x), 0, x, torch::Tensor()), ddim->step(torch::zeros_like(x), 0, x), 0.0);
}
