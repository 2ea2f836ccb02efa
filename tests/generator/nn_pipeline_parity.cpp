// The whole Arc2Face sampling pipeline vs diffusers 0.29.2 on tiny random models
// (goldens/pipeline_tiny): conditioning, seeded latents, CFG + DPM-Solver++ chain, VAE decode.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>

#include <iostream>

#include "core/check.h"
#include "core/safetensors.h"
#include "generator/arc2face_pipeline.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

using namespace idsynth;
using namespace idsynth::generator;

namespace {

// Reduced-precision tolerances on the [0, 1] images (see PipelineReducedPrecision).
// bf16 measured on the CPU: mean 0.018, max 0.071 (limits: ~1.6x / 2x that); fp16 has 3 more mantissa
// bits, so its limits are a quarter of bf16's. A wrong image is off by ~0.3 on average.
constexpr double kBf16Mean = 0.03, kBf16Max = 0.15;
constexpr double kFp16Mean = 0.0075, kFp16Max = 0.04;

Arc2FacePipeline load_tiny(const std::string& dir, const std::string& scheduler = "dpmsolver++",
                           c10::ScalarType dtype = torch::kFloat) {
  PipelineOptions options;
  options.scheduler = scheduler;
  options.device = test::test_device();
  options.dtype = dtype;
  return Arc2FacePipeline::load(Arc2FaceModelPaths::resolve(dir + "/pipeline"), options);
}

void expect_close(const char* what, const torch::Tensor& actual, const torch::Tensor& expected, double atol) {
  std::cout << "  max|diff| " << what << " = " << test::max_abs_diff(actual, expected) << "\n";
  EXPECT_TRUE(test::all_close(actual, expected, atol, what));
}

}  // namespace

TEST(PipelineParity, MatchesDiffusersStableDiffusionPipeline) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  at::set_num_threads(2);
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto expected = SafeTensorsFile(dir + "/expected.safetensors").all();
  auto pipe = load_tiny(dir);
  const auto& ids = inputs.at("id_embeds");
  const int64_t per_id = inputs.at("num_images_per_prompt").item<int64_t>();
  const int64_t height = inputs.at("height").item<int64_t>(), width = inputs.at("width").item<int64_t>();
  ASSERT_EQ(pipe.vae_scale_factor(), 2);
  EXPECT_EQ(pipe.default_image_size(), 32);

  // 1. conditioning
  torch::NoGradGuard no_grad;
  expect_close("prompt_embeds", pipe.encode_ids(ids), expected.at("prompt_embeds"), 1e-5);
  expect_close("negative_prompt_embeds", pipe.unconditional_embedding(), expected.at("negative_prompt_embeds"), 1e-5);

  // 2. latents: one CPU generator seeded 1234, one randn call -> bit-exact
  auto latents = pipe.draw_latents(static_cast<uint64_t>(inputs.at("seed").item<int64_t>()), ids.size(0) * per_id, height, width);
  EXPECT_TRUE(torch::equal(latents, expected.at("init_latents"))) << "max|diff| "
      << (latents - expected.at("init_latents")).abs().max().item<double>();

  // 3. sampling
  SampleOptions options;
  options.num_inference_steps = inputs.at("num_inference_steps").item<int64_t>();
  options.guidance_scale = inputs.at("guidance_scale").item<double>();
  SampleTrace trace;
  auto images = pipe.sample(ids, latents, options, &trace);
  EXPECT_TRUE(torch::equal(trace.timesteps, expected.at("timesteps"))) << trace.timesteps;
  expect_close("noise_pred_cfg", torch::stack(trace.noise_pred_cfg), expected.at("noise_pred_cfg"), 1e-3);
  expect_close("latents_per_step", torch::stack(trace.latents), expected.at("latents_per_step"), 1e-3);
  expect_close("decoded_raw", trace.decoded, expected.at("decoded_raw"), 2e-3);
  expect_close("images", images, expected.at("images"), 2e-3);

  // 4. uint8 as diffusers' numpy_to_pil: at most one grey level apart from the reference
  auto bytes = Arc2FacePipeline::to_uint8(images).to(torch::kInt);
  auto ref = Arc2FacePipeline::to_uint8(expected.at("images")).to(torch::kInt);
  EXPECT_LE((bytes - ref).abs().max().item<int>(), 1);
}

// Half precision (bf16 on the CPU; fp16 and bf16 on CUDA) against the float32 diffusers images.
// The tolerances are what the formats allow, not parity: bf16 keeps 8 mantissa bits (relative
// rounding 2^-9 = 2e-3 per op), fp16 11 bits (2^-12 = 2.4e-4); the tiny random UNet amplifies them
// over the golden's steps (limits in kBf16Mean...).
TEST(PipelineReducedPrecision, CloseToFloat32Reference) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  at::set_num_threads(2);
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto expected = SafeTensorsFile(dir + "/expected.safetensors").all();
  std::vector<std::pair<c10::ScalarType, std::pair<double, double>>> cases = {{torch::kBFloat16, {kBf16Mean, kBf16Max}}};
  if (test::test_device().is_cuda()) cases.push_back({torch::kHalf, {kFp16Mean, kFp16Max}});
  for (const auto& [dtype, tol] : cases) {
    SCOPED_TRACE(c10::toString(dtype));
    auto pipe = load_tiny(dir, "dpmsolver++", dtype);
    const auto& ids = inputs.at("id_embeds");
    const int64_t per_id = inputs.at("num_images_per_prompt").item<int64_t>();
    auto latents = pipe.draw_latents(static_cast<uint64_t>(inputs.at("seed").item<int64_t>()), ids.size(0) * per_id,
                                     inputs.at("height").item<int64_t>(), inputs.at("width").item<int64_t>());
    SampleOptions options;
    options.num_inference_steps = inputs.at("num_inference_steps").item<int64_t>();
    options.guidance_scale = inputs.at("guidance_scale").item<double>();
    auto images = pipe.sample(ids, latents, options);
    ASSERT_TRUE(torch::isfinite(images).all().item<bool>());
    const auto diff = (images - expected.at("images")).abs();
    const double mean = diff.mean().item<double>(), worst = diff.max().item<double>();
    std::cout << "[ measured ] " << c10::toString(dtype) << " on " << test::test_device() << ": images mean|diff| "
              << mean << ", max|diff| " << worst << "\n";
    EXPECT_LE(mean, tol.first);
    EXPECT_LE(worst, tol.second);
    if (dtype == torch::kHalf) {
      // Latents beyond float16's range (65504) overflow the decode: it is redone in float32, whose
      // GroupNorms bring them back to scale.
      const auto huge = pipe.decode(latents * 1e5);
      EXPECT_TRUE(torch::isfinite(huge).all().item<bool>());
      EXPECT_EQ(pipe.vae()->parameters().front().scalar_type(), torch::kHalf);
    }
  }
}

TEST(PipelineDeterminism, SameInputsGiveSameBytes) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  at::set_num_threads(2);
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto pipe = load_tiny(dir);
  SampleOptions options;
  options.num_inference_steps = 2;
  auto ids = inputs.at("id_embeds").slice(0, 0, 1);
  auto a = pipe.sample(ids, pipe.draw_latents(7, 2, 32, 32), options);
  auto b = pipe.sample(ids, pipe.draw_latents(7, 2, 32, 32), options);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_TRUE(torch::equal(Arc2FacePipeline::to_uint8(a), Arc2FacePipeline::to_uint8(b)));
}

TEST(PipelineBatching, BatchSizeDoesNotChangeImages) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  at::set_num_threads(2);
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto pipe = load_tiny(dir);
  // 8 images: 2 identities x 4, per-image latents as the dataset generator draws them.
  std::vector<torch::Tensor> per_image;
  for (int64_t i = 0; i < 8; ++i) per_image.push_back(pipe.draw_latents(100 + static_cast<uint64_t>(i), 1, 32, 32));
  auto latents = torch::cat(per_image);
  SampleOptions options;
  options.num_inference_steps = 2;
  options.batch_size = 0;
  auto all = pipe.sample(inputs.at("id_embeds"), latents, options);
  options.batch_size = 1;
  auto ones = pipe.sample(inputs.at("id_embeds"), latents, options);
  EXPECT_EQ(all.sizes(), (std::vector<int64_t>{8, 32, 32, 3}));
  std::cout << "  max|diff| batch 8 vs batches of 1 = " << test::max_abs_diff(ones, all) << "\n";
  // Exactly equal in float32 on the CPU: every batched kernel computes an image as it would alone
  // (core/invariant_kernels.h; libtorch's own kernels differ by ~2e-6 here).
  EXPECT_TRUE(torch::equal(ones, all));
  // Per-image seeding: image 5 (identity 1) alone equals image 5 of the batch.
  auto single = pipe.sample(inputs.at("id_embeds").slice(0, 1, 2), per_image[5], options);
  EXPECT_TRUE(torch::equal(single[0], all[5]));
}

TEST(PipelineSchedulers, DdimAndEulerRunAndBatchAlike) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  at::set_num_threads(2);
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  for (const char* kind : {"ddim", "euler"}) {
    SCOPED_TRACE(kind);
    auto pipe = load_tiny(dir, kind);
    auto ids = inputs.at("id_embeds");
    auto latents = pipe.draw_latents(5, 2, 32, 32);
    SampleOptions options;
    options.num_inference_steps = 2;
    auto both = pipe.sample(ids, latents, options);
    options.batch_size = 1;
    auto ones = pipe.sample(ids, latents, options);
    EXPECT_TRUE(torch::isfinite(both).all().item<bool>());
    EXPECT_ALL_CLOSE(ones, both, 1e-5);
  }
}

// LCM adds noise between steps. With one generator (idsynth sample) it continues the latents'
// stream, one randn over the whole batch per step, as StableDiffusionPipeline passes its generator
// to LCMScheduler.step(); recomputed here by hand from the scheduler and the UNet.
TEST(PipelineLcm, StepNoiseContinuesTheLatentGenerator) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  at::set_num_threads(2);
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto pipe = load_tiny(dir, "lcm");
  EXPECT_STREQ(pipe.scheduler().name(), "LCMScheduler");
  const auto ids = inputs.at("id_embeds");  // 2 identities x 2 images
  SampleOptions options;
  options.num_inference_steps = 2;
  options.guidance_scale = 1.0;  // LCM-LoRA's setting: no unconditional batch
  at::Generator gen = at::detail::createCPUGenerator(42);
  const auto latents = pipe.draw_latents(gen, 4, 32, 32);
  SampleTrace trace;
  const auto images = pipe.sample(ids, latents, options, &trace, {gen});

  // By hand: the same seed, latents then step 0's noise from one stream; the last step adds none.
  torch::NoGradGuard no_grad;
  at::Generator ref_gen = at::detail::createCPUGenerator(42);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  auto x = torch::randn({4, pipe.latent_channels(), 16, 16}, ref_gen, f32);
  EXPECT_TRUE(torch::equal(x, latents));
  const auto noise0 = torch::randn(x.sizes(), ref_gen, f32);
  auto s = pipe.scheduler().clone();
  s->set_timesteps(2);
  ASSERT_TRUE(s->step_needs_noise(0));
  ASSERT_FALSE(s->step_needs_noise(1));
  const auto device = test::test_device();
  const auto cond = pipe.encode_ids(ids).repeat_interleave(2, 0);
  auto eps = pipe.unet()->forward(x.to(device), s->timesteps()[0], cond).to(torch::kFloat);
  x = s->step_with_noise(eps, 0, x.to(device), noise0.to(device));
  expect_close("lcm latents step 0", trace.latents[0], x.cpu(), 1e-5);
  eps = pipe.unet()->forward(x, s->timesteps()[1], cond).to(torch::kFloat);
  x = s->step(eps, 1, x);
  expect_close("lcm latents step 1", trace.latents[1], x.cpu(), 1e-5);
  EXPECT_TRUE(torch::isfinite(images).all().item<bool>());

  // Batching does not change which noise an image gets (all of it is drawn up front).
  at::Generator gen2 = at::detail::createCPUGenerator(42);
  const auto latents2 = pipe.draw_latents(gen2, 4, 32, 32);
  options.batch_size = 1;
  const auto ones = pipe.sample(ids, latents2, options, nullptr, {gen2});
  EXPECT_ALL_CLOSE(ones, images, 1e-5);

  // A stochastic scheduler without a generator is one clear error.
  try {
    pipe.sample(ids, latents, options);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("LCMScheduler adds noise between steps"), std::string::npos) << e.what();
  }
}

// Per-image generators (idsynth generate): image j draws its latent and then its step noise from
// its own generator, so a batch of N gives the images of N runs of one.
TEST(PipelineLcm, PerImageGeneratorsMakeImagesIndependentOfTheBatch) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  at::set_num_threads(2);
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto pipe = load_tiny(dir, "lcm");
  const auto cond = pipe.encode_ids(inputs.at("id_embeds")).repeat_interleave(2, 0);  // [4, 77, H]
  SampleOptions options;
  options.num_inference_steps = 4;
  options.guidance_scale = 2.0;  // with CFG too
  std::vector<at::Generator> gens;
  std::vector<torch::Tensor> latents;
  for (uint64_t j = 0; j < 4; ++j) {
    gens.push_back(at::detail::createCPUGenerator(900 + j));
    latents.push_back(pipe.draw_latents(gens.back(), 1, 32, 32));
  }
  const auto batch = pipe.sample_embeds(cond, torch::cat(latents), options, nullptr, gens);
  for (int64_t j = 0; j < 4; ++j) {
    SCOPED_TRACE(j);
    std::vector<at::Generator> own = {at::detail::createCPUGenerator(900 + static_cast<uint64_t>(j))};
    const auto lat = pipe.draw_latents(own[0], 1, 32, 32);
    const auto one = pipe.sample_embeds(cond.slice(0, j, j + 1), lat, options, nullptr, own);
    std::cout << "  max|diff| lcm image " << j << " batch of 4 vs alone = " << test::max_abs_diff(one[0], batch[j]) << "\n";
    EXPECT_TRUE(torch::equal(one[0], batch[j]));  // float32 on the CPU: exact (core/invariant_kernels.h)
  }
  // The noise does matter: another generator for the step noise gives another image.
  std::vector<at::Generator> other = {at::detail::createCPUGenerator(900)};
  const auto lat0 = pipe.draw_latents(other[0], 1, 32, 32);
  other[0] = at::detail::createCPUGenerator(12345);
  const auto changed = pipe.sample_embeds(cond.slice(0, 0, 1), lat0, options, nullptr, other);
  EXPECT_GT(test::max_abs_diff(changed[0], batch[0]), 1e-3);
}

TEST(PipelinePaths, MissingFilesAreNamed) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  const std::string tmp = test::temp_dir("pipeline_paths");
  try {
    Arc2FaceModelPaths::resolve(tmp);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(tmp + "/unet/config.json"), std::string::npos) << e.what();
  }
  // Arc2Face download layout (arc2face/ + encoder/) with an SD-1.5 base folder for vae/ and scheduler/.
  const std::string arc = tmp + "/arc", base = dir + "/pipeline";
  ASSERT_EQ(std::system(("mkdir -p " + arc + " && ln -s " + base + "/unet " + arc + "/arc2face && ln -s " + base +
                         "/text_encoder " + arc + "/encoder").c_str()), 0);
  try {
    Arc2FaceModelPaths::resolve(arc);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(arc + "/vae/config.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--base-dir"), std::string::npos) << e.what();
  }
  auto paths = Arc2FaceModelPaths::resolve(arc, base);
  EXPECT_EQ(paths.unet.weights, arc + "/arc2face/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(paths.text_encoder.weights, arc + "/encoder/model.safetensors");
  EXPECT_EQ(paths.vae.dir, base + "/vae");
  EXPECT_EQ(paths.scheduler_config, base + "/scheduler/scheduler_config.json");
  EXPECT_EQ(paths.files().size(), 7u);
}

// Arc2Face's fast mode against diffusers 0.29.2: goldens/pipeline_tiny with a LoRA fused into its
// UNet, LCMScheduler from the pipeline's scheduler config, guidance 1.0, one CPU generator for the
// latents and every step's noise, prompt embeddings given (as Arc2Face passes them). The reference
// images are diffusers' from the weights diffusers and peft fuse (tests/fixtures/lcm_pipeline_goldens.py
// wrote tests/generator/data/lcm_pipeline); here each of the LoRA's three file forms is read and fused
// by idsynth. Limit 1e-5 on the [0, 1] images (measured 7.7e-7; the fast-sampling issue allows
// 1/255 + 2e-3).
TEST(PipelineLcm, LoraOfEachFormMatchesDiffusers) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  at::set_num_threads(2);
  const std::string data = std::string(IDSYNTH_SOURCE_DIR) + "/tests/generator/data/";
  const auto inputs = SafeTensorsFile(data + "lcm_pipeline/inputs.safetensors").all();
  const auto expected = SafeTensorsFile(data + "lcm_pipeline/images.safetensors").all();
  const uint64_t seed = static_cast<uint64_t>(inputs.at("seed").item<int64_t>());
  const torch::Tensor& embeds = inputs.at("prompt_embeds");
  for (const std::string form : {"kohya", "diffusers", "peft"}) {
    PipelineOptions options;
    options.scheduler = "lcm";
    options.device = test::test_device();
    options.loras = {LoraSpec{form == "peft" ? data + "lora/peft/adapter_model.safetensors"
                                             : data + "lora/" + form + ".safetensors",
                              1.0}};
    auto pipe = Arc2FacePipeline::load(Arc2FaceModelPaths::resolve(dir + "/pipeline"), options);
    for (const int64_t steps : {4, 2}) {
      SCOPED_TRACE(form + ", " + std::to_string(steps) + " steps");
      std::vector<at::Generator> generator = {at::detail::createCPUGenerator(seed)};
      const auto latents = pipe.draw_latents(generator[0], embeds.size(0), 32, 32);
      SampleOptions sample;
      sample.num_inference_steps = steps;
      sample.guidance_scale = 1.0;
      const auto images = pipe.sample_embeds(embeds, latents, sample, nullptr, generator);
      expect_close((form + " LoRA, LCM " + std::to_string(steps) + " steps").c_str(), images,
                   expected.at("images_steps" + std::to_string(steps)), 1e-5);
    }
  }
  // The LoRA matters: without it the same run is another image.
  PipelineOptions plain;
  plain.scheduler = "lcm";
  plain.device = test::test_device();
  auto pipe = Arc2FacePipeline::load(Arc2FaceModelPaths::resolve(dir + "/pipeline"), plain);
  std::vector<at::Generator> generator = {at::detail::createCPUGenerator(seed)};
  const auto latents = pipe.draw_latents(generator[0], embeds.size(0), 32, 32);
  SampleOptions sample;
  sample.num_inference_steps = 4;
  sample.guidance_scale = 1.0;
  EXPECT_GT(test::max_abs_diff(pipe.sample_embeds(embeds, latents, sample, nullptr, generator), expected.at("images_steps4")),
            0.02);
}
