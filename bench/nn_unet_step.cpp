// One guided SD-1.5 UNet step (batch 2, 64x64 latents), one SD-1.5 VAE decode (64x64 -> 512x512),
// the SD-1.5 self-attention alone, or one whole 25-step image through the pipeline, with random
// weights, on the CPU (float32, bfloat16) or a GPU (also float16). Prints seconds, achieved GFLOP/s
// (0.80 TFLOP per UNet sample-evaluation, DESIGN.md) and peak RSS, next to the machine's
// matrix-product rate measured in the same run.
//
// `--what fast`: Arc2Face's LCM-LoRA mode (4 LCM steps, no guidance) against the paper's 25 guided
// DPM-Solver++ steps, whole images, and the time to fuse a rank-64 LoRA into the SD-1.5 UNet.
//
// `--what train`: one SD-1.5 UNet training step (float32, AdamW), with --batch N and --checkpointing 0|1.
//
// `--what kernels`: the three products an SD-1.5 UNet step is made of (a 320-wide projection over
// 4096 tokens, a 3x3 320-channel convolution at 64x64, one head-batch of 4096x4096 attention scores)
// in float32 and in each lower precision, on raw libtorch ops: whether this CPU's bfloat16 kernels
// are worth using (core/device.h runtime_dtype).
//
//   bench_nn_unet_step [--what unet|vae|attn|image|fast|train|kernels|all] [--batch N] [--checkpointing 0|1] [--rows N] [--device cpu|cuda] [--steps 25] [--dtype fp32|bf16|all] [--iters N] [--threads N]
//                      [--latent N] [--channels-last 0|1] [--profile PREFIX]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/device.h"
#include "core/file_util.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "generator/arc2face_pipeline.h"
#include "generator/autoencoder_kl.h"
#include "generator/lora.h"
#include "generator/nn_blocks.h"
#include "generator/unet_2d_condition.h"

using namespace idsynth;
using namespace idsynth::generator;

namespace {

constexpr double kUNetFlopPerSample = 0.80e12;  // one SD-1.5 UNet evaluation of a 64x64 latent
constexpr double kSkipRepeatsAfterSeconds = 60;   // a first call slower than this is not repeated
// diffusers 0.29.2 on this CPU (DESIGN.md): one guided step (batch 2)
constexpr double kDiffusersStepFp32 = 19.2;
constexpr double kDiffusersStepBf16 = 8.7;

struct Args {
  std::string what = "all";
  std::string dtype = "all";
  std::string device = "cpu";
  int64_t steps = 25;  // --what image
  int iters = 2;
  int threads = 0;
  int64_t latent = 64;
  bool channels_last = true;
  int64_t rows = 0;        // --what attn: only this tile height (0: a sweep)
  std::string profile;  // chrome trace of one UNet call (op times), for finding slow ops
  int64_t batch = 1;    // --what train: images per step
  bool checkpointing = false;  // --what train: UNet gradient checkpointing
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    auto value = [&]() -> std::string {
      IDSYNTH_CHECK(i + 1 < argc, "bench_nn_unet_step: ", key, ": expected a value");
      return argv[++i];
    };
    if (key == "--what") a.what = value();
    else if (key == "--rows") a.rows = std::stoll(value());
    else if (key == "--device") a.device = value();
    else if (key == "--steps") a.steps = std::stoll(value());
    else if (key == "--dtype") a.dtype = value();
    else if (key == "--iters") a.iters = std::stoi(value());
    else if (key == "--threads") a.threads = std::stoi(value());
    else if (key == "--latent") a.latent = std::stoll(value());
    else if (key == "--channels-last") a.channels_last = value() != "0";
    else if (key == "--profile") a.profile = value();
    else if (key == "--batch") a.batch = std::stoll(value());
    else if (key == "--checkpointing") a.checkpointing = value() != "0";
    else fail("bench_nn_unet_step: unknown argument '", key,
              "' (expected --what unet|vae|all, --dtype fp32|bf16|all, --iters N, --threads N, --latent N, --channels-last 0|1)");
  }
  IDSYNTH_CHECK(a.what == "unet" || a.what == "vae" || a.what == "attn" || a.what == "image" || a.what == "fast" ||
                    a.what == "train" || a.what == "kernels" || a.what == "all",
                "--what: expected unet, vae, attn, image, fast, train, kernels or all, found ", a.what);
  IDSYNTH_CHECK(a.iters >= 1, "--iters: expected >= 1, found ", a.iters);
  return a;
}

double peak_rss_gib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / (1024.0 * 1024.0);  // kB
  }
  return 0;
}

c10::Device g_device = c10::kCPU;

std::vector<c10::ScalarType> dtypes(const std::string& name) {
  if (name == "all" && g_device.is_cuda()) return {at::kFloat, at::kHalf, at::kBFloat16};
  if (name == "all") return {at::kFloat, at::kBFloat16};
  return {parse_dtype(name, "--dtype")};
}

// Waits for queued GPU work, so that wall-clock times cover it.
void sync() {
  if (g_device.is_cuda()) torch::cuda::synchronize(g_device.index());
}

// Times f() `iters` times (once if the first call is slow); returns {first, best} seconds.
template <typename F>
std::pair<double, double> time_calls(int iters, F&& f) {
  double first = 0, best = 1e30;
  for (int i = 0; i < iters; ++i) {
    log::Stopwatch w;
    f();
    sync();
    const double s = w.seconds();
    if (i == 0) first = s;
    best = std::min(best, s);
    if (i == 0 && s > kSkipRepeatsAfterSeconds) break;
  }
  return {first, best};
}

// Reference: a square matrix product in the given dtype, through the same route as the models'
// linear layers (generator::linear: oneDNN on the CPU, cuBLAS on a GPU).
double matmul_gflops(c10::ScalarType dtype) {
  c10::InferenceMode guard;
  const int64_t n = g_device.is_cuda() ? 8192 : 2048;
  torch::nn::Linear layer(torch::nn::LinearOptions(n, n).bias(false));
  layer->to(g_device, dtype);
  const auto x = torch::randn({n, n}).to(g_device, dtype);
  linear(layer, x);  // warm-up
  auto [first, best] = time_calls(3, [&] { linear(layer, x); });
  (void)first;
  return 2.0 * n * n * n / best / 1e9;
}

UNet2DConditionConfig sd15_unet_config(int64_t latent) {
  UNet2DConditionConfig c;  // diffusers defaults = SD-1.x topology
  c.source = "SD-1.5 UNet (bench)";
  c.sample_size = latent;
  c.cross_attention_dim = {768};
  c.attention_head_dim = {8};
  c.check();
  return c;
}

AutoencoderKLConfig sd15_vae_config() {
  AutoencoderKLConfig c;
  c.source = "SD-1.5 VAE (bench)";
  c.block_out_channels = {128, 256, 512, 512};
  c.down_block_types.assign(4, "DownEncoderBlock2D");
  c.up_block_types.assign(4, "UpDecoderBlock2D");
  c.layers_per_block = 2;
  c.sample_size = 512;
  c.check();
  return c;
}

// One SD-1.5 UNet training step (float32 master weights, AdamW over all 860M parameters, MSE to a
// random target), as train-generator runs it: forward, backward, optimiser, with peak RSS after each.
// Peak RSS is per process: run once with --checkpointing 0 and once with 1 to compare.
void bench_train(const Args& args) {
  UNet2DCondition unet(sd15_unet_config(args.latent));
  unet->to(g_device);
  unet->train();
  unet->set_gradient_checkpointing(args.checkpointing);
  torch::optim::AdamW adamw(unet->parameters(), torch::optim::AdamWOptions(1e-5));
  std::printf("train: SD-1.5 UNet, %.1f M parameters, float32 + AdamW, batch %ld, %ldx%ld latents, gradient checkpointing %s, threads %d\n",
              count_parameters(*unet) / 1e6, static_cast<long>(args.batch), static_cast<long>(args.latent),
              static_cast<long>(args.latent), args.checkpointing ? "on" : "off", at::get_num_threads());
  torch::manual_seed(0);
  const auto x = torch::randn({args.batch, 4, args.latent, args.latent}).to(g_device);
  const auto target = torch::randn({args.batch, 4, args.latent, args.latent}).to(g_device);
  const auto ehs = torch::randn({args.batch, 77, 768}).to(g_device);
  const auto t = torch::randint(0, 1000, {args.batch}, torch::kLong).to(g_device);
  for (int i = 0; i < args.iters; ++i) {
    log::Stopwatch w;
    const at::Tensor loss = torch::mse_loss(unet->forward(x, t, ehs), target);
    if (g_device.is_cuda()) torch::cuda::synchronize();
    const double forward = w.seconds(), rss_forward = peak_rss_gib();
    loss.backward();
    if (g_device.is_cuda()) torch::cuda::synchronize();
    const double backward = w.seconds() - forward, rss_backward = peak_rss_gib();
    adamw.step();
    adamw.zero_grad();
    if (g_device.is_cuda()) torch::cuda::synchronize();
    const double total = w.seconds();
    std::printf("train step %d: forward %.1f s (peak RSS %.2f GiB), backward %.1f s (peak RSS %.2f GiB), AdamW %.1f s; "
                "%.1f s/step, %.3f samples/s | peak RSS %.2f GiB\n",
                i + 1, forward, rss_forward, backward, rss_backward, total - forward - backward, total,
                static_cast<double>(args.batch) / total, peak_rss_gib());
    std::fflush(stdout);
  }
}

void bench_unet(const Args& args) {
  log::Stopwatch build;
  UNet2DCondition unet(sd15_unet_config(args.latent));
  unet->eval();
  unet->set_channels_last(args.channels_last);
  std::printf("unet: SD-1.5 config, %.1f M parameters, built with random weights in %.1f s\n",
              count_parameters(*unet) / 1e6, build.seconds());
  const double flop = kUNetFlopPerSample * 2 * (args.latent * args.latent) / (64.0 * 64.0);
  torch::manual_seed(0);
  const auto latents = torch::randn({2, 4, args.latent, args.latent}).to(g_device);
  const auto t = torch::tensor(999, torch::kLong).to(g_device);
  for (auto dtype : dtypes(args.dtype)) {
    c10::InferenceMode guard;
    unet->to(g_device, dtype);
    const auto ehs = torch::randn({2, 77, 768}).to(g_device, dtype);
    const auto x = latents.to(dtype);
    const double ref = matmul_gflops(dtype);
    auto [first, best] = time_calls(args.iters, [&] { unet->forward(x, t, ehs); });
    if (!args.profile.empty()) {
      torch::autograd::profiler::RecordProfile profile(args.profile + "." + dtype_string(dtype) + ".json");
      unet->forward(x, t, ehs);
    }
    const double diffusers = dtype == at::kBFloat16 ? kDiffusersStepBf16 : kDiffusersStepFp32;
    std::printf(
        "unet step  %-8s %s batch 2, %ldx%ld latents, threads %d: first %.3f s, best %.3f s -> %.0f GFLOP/s "
        "(matmul reference %.0f GFLOP/s",
        dtype_string(dtype).c_str(), g_device.str().c_str(), static_cast<long>(args.latent),
        static_cast<long>(args.latent), at::get_num_threads(), first, best, flop / best / 1e9, ref);
    if (!g_device.is_cuda() && args.latent == 64) std::printf("; diffusers on this CPU: %.1f s/step at 64x64, %.2fx", diffusers, diffusers / best);
    std::printf(") | peak RSS %.2f GiB\n", peak_rss_gib());
    std::fflush(stdout);
  }
}

// The self-attention of SD-1.5's first level (batch 2 x 8 heads, 4096 tokens, 40 channels): the
// tiled reference form (bmm, scale, softmax, bmm in 128 MiB tiles) against cache-sized tiles.
void bench_kernels(const Args& args) {
  c10::InferenceMode guard;
  const auto opt = at::TensorOptions().device(g_device);
  at::Generator gen = at::detail::createCPUGenerator(1);
  const at::Tensor x = at::randn({4096, 320}, gen), w = at::randn({320, 320}, gen);
  const at::Tensor image = at::randn({1, 320, 64, 64}, gen), kernel = at::randn({320, 320, 3, 3}, gen);
  const at::Tensor q = at::randn({8, 4096, 40}, gen);
  struct Kernel {
    const char* name;
    double gflop;
    std::function<void(c10::ScalarType)> run;
  };
  const std::vector<Kernel> kernels = {
      {"linear 4096x320 . 320x320", 2.0 * 4096 * 320 * 320 / 1e9,
       [&](c10::ScalarType t) { at::linear(x.to(opt.dtype(t)), w.to(opt.dtype(t))); }},
      {"conv 3x3 320->320 @64x64", 2.0 * 320 * 320 * 9 * 64 * 64 / 1e9,
       [&](c10::ScalarType t) { at::conv2d(image.to(opt.dtype(t)), kernel.to(opt.dtype(t)), {}, 1, 1); }},
      {"bmm 8 x 4096x40 . 40x4096", 2.0 * 8 * 4096 * 4096 * 40 / 1e9,
       [&](c10::ScalarType t) {
         const at::Tensor a = q.to(opt.dtype(t));
         at::bmm(a, a.transpose(1, 2));
       }},
  };
  std::printf("kernels on %s, %d threads (inputs cast inside each timed call):\n", g_device.str().c_str(), at::get_num_threads());
  const std::vector<c10::ScalarType> types =
      g_device.is_cuda() ? std::vector<c10::ScalarType>{at::kFloat, at::kHalf, at::kBFloat16} : std::vector<c10::ScalarType>{at::kFloat, at::kBFloat16};
  for (const Kernel& k : kernels) {
    double fp32 = 0;
    for (c10::ScalarType t : types) {
      const double s = time_calls(args.iters, [&] { k.run(t); }).second;
      if (t == at::kFloat) fp32 = s;
      std::printf("  %-28s %-9s %8.4f s  %7.1f GFLOP/s  %6.2fx float32's time\n", k.name, dtype_string(t).c_str(), s, k.gflop / s,
                  s / fp32);
    }
  }
  std::printf("cpu_has_fast_bfloat16: %s\n", cpu_has_fast_bfloat16() ? "yes" : "no");
}

void bench_attention(const Args& args) {
  c10::InferenceMode guard;
  const int64_t tokens = args.latent * args.latent;
  torch::manual_seed(0);
  for (auto dtype : dtypes(args.dtype)) {
    const auto q = torch::randn({16, tokens, 40}).to(dtype), k = torch::randn({16, tokens, 40}).to(dtype),
               v = torch::randn({16, tokens, 40}).to(dtype);
    const double scale = 1.0 / std::sqrt(40.0);
    at::Tensor ref;
    auto [ref_first, ref_best] = time_calls(args.iters, [&] { ref = chunked_attention(q, k, v, scale); });
    (void)ref_first;
    std::printf("attention %-8s 16x%ldx40: reference tiles %.3f s\n", dtype_string(dtype).c_str(),
                static_cast<long>(tokens), ref_best);
    std::vector<int64_t> sweep = args.rows > 0 ? std::vector<int64_t>{args.rows} : std::vector<int64_t>{16, 32, 64, 128, 256};
    for (int64_t rows : sweep) {
      at::Tensor out;
      const int64_t tile_bytes = rows * tokens * static_cast<int64_t>(c10::elementSize(dtype));
      auto [first, best] = time_calls(args.iters, [&] { out = cache_tiled_attention(q, k, v, scale, false, false, tile_bytes); });
      (void)first;
      const double diff = (out.to(at::kFloat) - ref.to(at::kFloat)).abs().max().item<double>();
      std::printf("attention %-8s cache tiles of %3ld rows: %.3f s (%.2fx the reference), max|diff| %.2g\n",
                  dtype_string(dtype).c_str(), static_cast<long>(rows), best, ref_best / best, diff);
      std::fflush(stdout);
    }
  }
}

// SD-1.5-sized parts with random weights, as one pipeline on g_device in `dtype`.
Arc2FacePipeline random_sd15_pipeline(const Args& args, c10::ScalarType dtype, const std::string& scheduler) {
  CLIPTextConfig text;  // SD-1.5's text encoder (CLIP ViT-L/14)
  text.hidden_size = 768;
  text.intermediate_size = 3072;
  text.num_attention_heads = 12;
  text.check();
  PipelineOptions options;
  options.device = g_device;
  options.dtype = dtype;
  options.scheduler = scheduler;
  CLIPTextModel encoder(text);
  UNet2DCondition unet(sd15_unet_config(args.latent));
  AutoencoderKL vae(sd15_vae_config());
  for (torch::nn::Module* m : std::initializer_list<torch::nn::Module*>{encoder.get(), unet.get(), vae.get()}) {
    m->eval();
    m->to(g_device, dtype);
  }
  unet->set_channels_last(args.channels_last);
  vae->set_channels_last(args.channels_last);
  return Arc2FacePipeline(encoder, unet, vae, make_scheduler(scheduler), options);
}

// Seconds of one image as `idsynth sample` makes it (ID encoding, the steps, the VAE decode):
// {first call, best call}.
std::pair<double, double> time_image(const Args& args, Arc2FacePipeline& pipe, int64_t steps, double guidance, int iters) {
  torch::manual_seed(0);
  const auto id = torch::nn::functional::normalize(torch::randn({1, 512}), torch::nn::functional::NormalizeFuncOptions().dim(1));
  at::Generator generator = at::detail::createCPUGenerator(0);
  const auto latents = pipe.draw_latents(generator, 1, args.latent * 8, args.latent * 8);
  SampleOptions sample;
  sample.num_inference_steps = steps;
  sample.guidance_scale = guidance;
  return time_calls(iters, [&] {
    pipe.sample(id, latents, sample, nullptr, {generator});
    sync();
  });
}

// One whole image with `steps` guided DPM-Solver++ steps.
void bench_image(const Args& args) {
  for (auto dtype : dtypes(args.dtype)) {
    log::Stopwatch build;
    auto pipe = random_sd15_pipeline(args, dtype, "dpmsolver++");
    std::printf("image      %-8s %s: pipeline built in %.1f s\n", dtype_string(dtype).c_str(), g_device.str().c_str(),
                build.seconds());
    auto [first, best] = time_image(args, pipe, args.steps, 3.0, args.iters);
    // Counting the UNet's guided evaluations alone (the VAE decode and the encoder come on top).
    const double unet_flop = kUNetFlopPerSample * 2 * static_cast<double>(args.steps) *
                             static_cast<double>(args.latent * args.latent) / (64.0 * 64.0);
    std::printf("image      %-8s %s %ldx%ld, %ld steps, guidance on, threads %d: first %.2f s, best %.2f s -> %.0f GFLOP/s "
                "counting the UNet alone",
                dtype_string(dtype).c_str(), g_device.str().c_str(), static_cast<long>(args.latent * 8),
                static_cast<long>(args.latent * 8), static_cast<long>(args.steps), at::get_num_threads(), first, best,
                unet_flop / best / 1e9);
    if (!g_device.is_cuda() && args.latent == 64) {
      const double diffusers = (dtype == at::kBFloat16 ? kDiffusersStepBf16 : kDiffusersStepFp32) * static_cast<double>(args.steps);
      std::printf(" (diffusers' UNet steps alone: %.0f s, %.2fx)", diffusers, diffusers / best);
    }
    std::printf(" | peak RSS %.2f GiB\n", peak_rss_gib());
    std::fflush(stdout);
  }
}

// Arc2Face's fast mode against the paper's: a whole image with LCM in 4 steps without guidance,
// and with DPM-Solver++ in --steps (25) guided steps, images/s and their ratio in the same run;
// then the time to read and fuse a rank-64 kohya LoRA over every module kind LCM-LoRA targets.
void bench_fast(const Args& args) {
  for (auto dtype : dtypes(args.dtype)) {
    auto lcm = random_sd15_pipeline(args, dtype, "lcm");
    const double lcm_s = time_image(args, lcm, 4, 1.0, args.iters).second;
    auto dpm = random_sd15_pipeline(args, dtype, "dpmsolver++");
    const double dpm_s = time_image(args, dpm, args.steps, 3.0, 1).second;
    std::printf("fast       %-8s %s %ldx%ld, threads %d: LCM 4 steps, guidance 1: %.2f s (%.4f images/s); DPM-Solver++ "
                "%ld steps, guidance 3: %.2f s (%.4f images/s); LCM is %.1fx faster\n",
                dtype_string(dtype).c_str(), g_device.str().c_str(), static_cast<long>(args.latent * 8),
                static_cast<long>(args.latent * 8), at::get_num_threads(), lcm_s, 1 / lcm_s, static_cast<long>(args.steps),
                dpm_s, 1 / dpm_s, dpm_s / lcm_s);
    std::fflush(stdout);
  }
  // The LoRA: rank 64 on the linear and convolution weights of LCM-LoRA's module kinds.
  UNet2DCondition unet(sd15_unet_config(args.latent));
  TensorDict weights;
  for (const auto& p : unet->named_parameters()) weights.insert(p.key(), p.value().detach());
  std::vector<std::string> kinds = {"to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj",
                                    "ff.net.2", "conv1", "conv2", "conv_shortcut", "time_emb_proj", "conv"};
  TensorDict lora;
  const int64_t rank = 64;
  for (const auto& [name, w] : weights) {
    if (name.size() < 8 || name.compare(name.size() - 7, 7, ".weight") != 0 || w.dim() < 2) continue;
    const std::string module = name.substr(0, name.size() - 7);
    bool target = false;
    for (const auto& k : kinds) target = target || (module.size() > k.size() && module.compare(module.size() - k.size() - 1, k.size() + 1, "." + k) == 0);
    if (!target || module == "conv_in" || module == "conv_out") continue;
    std::string kohya = "lora_unet_" + module;
    std::replace(kohya.begin(), kohya.end(), '.', '_');
    std::vector<int64_t> down = {rank, w.size(1)}, up = {w.size(0), rank};
    if (w.dim() == 4) {
      down = {rank, w.size(1), w.size(2), w.size(3)};
      up = {w.size(0), rank, 1, 1};
    }
    lora.insert(kohya + ".lora_down.weight", torch::randn(down).to(torch::kHalf));
    lora.insert(kohya + ".lora_up.weight", torch::randn(up).mul(0.01).to(torch::kHalf));
    lora.insert(kohya + ".alpha", torch::full({}, 64.0));
  }
  const std::string path = "/tmp/idsynth-bench-lora-rank64.safetensors";
  save_safetensors(path, lora);
  log::Stopwatch read;
  const LoraFile file = read_lora(path);
  const double read_s = read.seconds();
  log::Stopwatch fuse;
  const TensorDict fused = fuse_loras(weights, Component::kUNet, {{file, 1.0}});
  const double fuse_s = fuse.seconds();
  std::printf("lora       rank %ld, %zu layers, %.1f MB fp16 file: read %.2f s, fused into %zu SD-1.5 UNet weights in %.2f s "
              "(float32), threads %d\n",
              static_cast<long>(rank), file.layers.size(), static_cast<double>(file_size(path)) / 1e6, read_s,
              file.layers.size(), fuse_s, at::get_num_threads());
  std::remove(path.c_str());
}

void bench_vae(const Args& args) {
  log::Stopwatch build;
  AutoencoderKL vae(sd15_vae_config());
  vae->eval();
  vae->set_channels_last(args.channels_last);
  std::printf("vae: SD-1.5 config, %.1f M parameters, built with random weights in %.1f s\n",
              count_parameters(*vae) / 1e6, build.seconds());
  torch::manual_seed(0);
  const auto z = torch::randn({1, 4, args.latent, args.latent});
  for (auto dtype : dtypes(args.dtype)) {
    c10::InferenceMode guard;
    vae->to(g_device, dtype);
    const auto zz = z.to(g_device, dtype);
    auto [first, best] = time_calls(args.iters, [&] { vae->decode(zz); });
    if (!args.profile.empty()) {
      torch::autograd::profiler::RecordProfile profile(args.profile + ".vae." + dtype_string(dtype) + ".json");
      vae->decode(zz);
    }
    std::printf("vae decode %-8s %s 1x4x%ldx%ld -> %ldx%ld, threads %d: first %.3f s, best %.3f s | peak RSS %.2f GiB\n",
                dtype_string(dtype).c_str(), g_device.str().c_str(), static_cast<long>(args.latent), static_cast<long>(args.latent),
                static_cast<long>(args.latent * 8), static_cast<long>(args.latent * 8), at::get_num_threads(), first,
                best, peak_rss_gib());
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    const int threads = configure_threads(args.threads);
    g_device = parse_device(args.device, "--device");
    std::printf("bench_nn_unet_step: threads %d, oneDNN %s, channels-last %s\n", threads,
                at::hasMKLDNN() ? "yes" : "no", args.channels_last ? "on" : "off");
    if (args.what == "unet" || args.what == "all") bench_unet(args);
    if (args.what == "vae" || args.what == "all") bench_vae(args);
    if (args.what == "attn") bench_attention(args);
    if (args.what == "image") bench_image(args);
    if (args.what == "fast") bench_fast(args);
    if (args.what == "train") bench_train(args);
    if (args.what == "kernels") bench_kernels(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_nn_unet_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
