// Ref: diffusers examples/text_to_image/train_text_to_image.py (main: optimizer, lr_scheduler,
//      accumulate, clip_grad_norm_, ema_unet.step, save), training_utils.py (EMAModel),
//      optimization.py (get_scheduler: constant_with_warmup, cosine, linear).
#include "generator/train_generator.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <opencv2/core.hpp>

#include "core/check.h"
#include "core/device.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "core/splitmix.h"
#include "core/stop_signals.h"
#include "core/svg_chart.h"
#include "core/weights.h"
#include "formats/image.h"
#include "generator/arc2face_pipeline.h"
#include "generator/diffusion_training.h"
#include "generator/lora_training.h"
#include "generator/single_file.h"
#include "generator/train_generator_data.h"
#include "recognition/train_optim.h"
#include "recognition/train_parallel.h"
#include "recognition/trainer.h"

namespace idsynth::generator {

namespace {

namespace fs = std::filesystem;

constexpr const char* kCheckpointFormat = "idsynth-train-generator-checkpoint";

using Named = std::vector<std::pair<std::string, at::Tensor>>;

// The generator of one batch position's draws: independent of every other position, so a resumed
// run draws what the uninterrupted one drew.
at::Generator step_generator(uint64_t seed, int64_t position) {
  return at::detail::createCPUGenerator(splitmix64(splitmix64(seed ^ 0x5452414E47454E31ull) + static_cast<uint64_t>(position)));
}

std::string step_name(const char* prefix, int64_t step, const char* ext) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s-%08lld%s", prefix, static_cast<long long>(step), ext);
  return buf;
}

std::string eta_string(double seconds) {
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", static_cast<long long>(s / 3600), static_cast<long long>((s / 60) % 60),
                static_cast<long long>(s % 60));
  return buf;
}

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

// diffusers get_scheduler: constant_with_warmup, cosine (half a period to 0) and linear, here with a
// floor `min_lr`.
double lr_at(const GeneratorScheduleConfig& s, double base, int64_t step) {
  if (step < s.warmup_steps) return base * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  if (s.type == "constant") return base;
  const double span = static_cast<double>(std::max<int64_t>(1, s.max_steps - s.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - s.warmup_steps) / span);
  const double factor = s.type == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
  return s.min_lr + (base - s.min_lr) * factor;
}

// bfloat16 autocast on CUDA (recognition's AutocastScope covers float16).
class Bf16AutocastScope {
 public:
  explicit Bf16AutocastScope(bool on) : on_(on) {
    if (!on_) return;
    prev_enabled_ = at::autocast::is_enabled();
    prev_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
  }
  ~Bf16AutocastScope() {
    if (!on_) return;
    at::autocast::set_enabled(prev_enabled_);
    at::autocast::set_autocast_gpu_dtype(prev_dtype_);
    at::autocast::clear_cache();
  }
  Bf16AutocastScope(const Bf16AutocastScope&) = delete;
  Bf16AutocastScope& operator=(const Bf16AutocastScope&) = delete;

 private:
  bool on_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kHalf;
};

torch::optim::AdamWParamState* adam_state(torch::optim::AdamW& opt, const at::Tensor& p) {
  auto& state = opt.state();
  auto it = state.find(c10::guts::to_string(p.unsafeGetTensorImpl()));
  if (it == state.end()) return nullptr;
  return static_cast<torch::optim::AdamWParamState*>(it->second.get());
}

void set_adam_state(torch::optim::AdamW& opt, const at::Tensor& p, int64_t step, const at::Tensor& exp_avg,
                    const at::Tensor& exp_avg_sq) {
  auto s = std::make_unique<torch::optim::AdamWParamState>();
  s->step(step);
  s->exp_avg(exp_avg.to(p.device(), p.scalar_type()).clone());
  s->exp_avg_sq(exp_avg_sq.to(p.device(), p.scalar_type()).clone());
  opt.state()[c10::guts::to_string(p.unsafeGetTensorImpl())] = std::move(s);
}

struct LogRow {
  int64_t step = 0;
  double loss = 0, lr = 0, samples_per_s = 0, elapsed_s = 0;
};

void write_log(const std::string& dir, const std::vector<LogRow>& rows) {
  std::ostringstream csv;
  csv << "step,loss,lr,samples_per_s,elapsed_s\n";
  csv.precision(9);
  for (const auto& r : rows) csv << r.step << ',' << r.loss << ',' << r.lr << ',' << r.samples_per_s << ',' << r.elapsed_s << '\n';
  write_file_atomic((fs::path(dir) / "train_log.csv").string(), csv.str());
}

std::vector<LogRow> read_log(const std::string& dir, int64_t up_to_step) {
  std::vector<LogRow> rows;
  std::ifstream in(fs::path(dir) / "train_log.csv");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    LogRow r;
    char comma;
    std::istringstream ls(line);
    if (ls >> r.step >> comma >> r.loss >> comma >> r.lr >> comma >> r.samples_per_s >> comma >> r.elapsed_s && r.step <= up_to_step)
      rows.push_back(r);
  }
  return rows;
}

std::string loss_svg(const std::vector<LogRow>& rows) {
  svg::Chart c;
  c.css_class = "loss-curve";
  c.title = "training loss";
  c.x.title = "step";
  c.y.title = "loss";
  svg::Line line;
  line.label = "loss";
  line.color = svg::series_color(0);
  double lo = 0, hi = 0, last = 1;
  for (const auto& r : rows) {
    line.x.push_back(static_cast<double>(r.step));
    line.y.push_back(r.loss);
    hi = std::max(hi, r.loss);
    last = std::max<double>(last, static_cast<double>(r.step));
  }
  c.x.max = last;
  c.x.ticks = svg::ticks(0, last, std::max(1.0, std::ceil(last / 5.0)));
  c.y.min = lo;
  c.y.max = hi > 0 ? hi * 1.05 : 1.0;
  c.y.ticks = svg::ticks(0, c.y.max, c.y.max / 5.0);
  c.y.tick_format = "%.3g";
  c.lines.push_back(std::move(line));
  return svg::render(c);
}

// [3, H, W] in [-1, 1] or [H, W, 3] uint8 -> an RGB cv::Mat.
cv::Mat chw_to_mat(const at::Tensor& chw) {
  const at::Tensor u8 = ((chw.detach().to(at::kCPU, at::kFloat) + 1.0) * 127.5).round().clamp(0, 255).to(at::kByte);
  return formats::tensor_to_mat(u8.permute({1, 2, 0}).contiguous()).clone();
}

void copy_file_atomic(const std::string& from, const fs::path& to) {
  fs::create_directories(to.parent_path());
  const fs::path tmp = to.string() + ".tmp";
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
  fs::rename(tmp, to);
}

TensorDict cpu_state(const torch::nn::Module& m) {
  TensorDict out;
  for (const auto& [name, t] : module_state(m)) out.insert(name, t.detach().to(at::kCPU).contiguous());
  return out;
}

// One copy of the models on one device. Replica 0 is the model being trained: the optimiser, EMA,
// checkpoints, sample grids and export use it alone. With run.devices listing several devices the
// others are loaded from the same files (identical weights and LoRA initialisation), each computes
// the loss of its shard of every batch, and their gradients are summed into replica 0's; after each
// optimiser step replica 0's trained tensors are copied back into them.
struct Replica {
  c10::Device device = c10::kCPU;
  UNet2DCondition unet{nullptr};
  CLIPTextModel text_model{nullptr};
  AutoencoderKL vae{nullptr};
  std::unique_ptr<Arc2FaceIdEncoder> encoder;
  std::unique_ptr<LoraAdapters> unet_lora, text_lora;
  Named trained;  // the same names in the same order on every replica

  void apply_lora() {
    if (unet_lora) unet_lora->apply();
    if (text_lora) text_lora->apply();
  }
};

// Loads the models onto `device` in float32 and selects what the config trains.
Replica load_replica(const TrainGeneratorConfig& cfg, const Arc2FaceModelPaths& paths, c10::Device device) {
  Replica r;
  r.device = device;
  r.unet = load_unet(paths.unet, device, at::kFloat);
  r.text_model = load_clip_text_model(paths.text_encoder, device, at::kFloat);
  r.vae = load_vae(paths.vae, device, at::kFloat);
  r.encoder = std::make_unique<Arc2FaceIdEncoder>(r.text_model);
  for (auto& p : r.vae->parameters()) p.set_requires_grad(false);
  r.vae->eval();  // no dropout or batch statistics: train() and eval() compute the same
  if (cfg.train.target == "vae") {
    for (auto& p : r.unet->parameters()) p.set_requires_grad(false);
    for (auto& p : r.text_model->parameters()) p.set_requires_grad(false);
    r.vae->set_record_gradients(true);
    for (auto& p : r.vae->named_parameters()) {
      p.value().set_requires_grad(true);
      r.trained.emplace_back("vae." + p.key(), p.value());
    }
  } else if (cfg.train.lora_rank > 0) {
    LoraTrainOptions lo;
    lo.rank = cfg.train.lora_rank;
    lo.alpha = cfg.train.lora_alpha;
    lo.convolutions = cfg.train.lora_convolutions;
    for (auto& p : r.unet->parameters()) p.set_requires_grad(false);
    for (auto& p : r.text_model->parameters()) p.set_requires_grad(false);
    if (cfg.train.unet) {
      r.unet_lora = std::make_unique<LoraAdapters>(*r.unet, "unet", lo, static_cast<uint64_t>(cfg.run.seed));
      for (auto& [n, t] : r.unet_lora->named_parameters()) r.trained.emplace_back("unet." + n, t);
    }
    if (cfg.train.encoder) {
      LoraTrainOptions text_options = lo;
      text_options.convolutions = false;  // CLIP has none
      r.text_lora = std::make_unique<LoraAdapters>(*r.text_model, "text_encoder", text_options, static_cast<uint64_t>(cfg.run.seed) + 1);
      for (auto& [n, t] : r.text_lora->named_parameters()) r.trained.emplace_back("text_encoder." + n, t);
    }
  } else {
    for (auto& p : r.unet->named_parameters()) {
      p.value().set_requires_grad(cfg.train.unet);
      if (cfg.train.unet) r.trained.emplace_back("unet." + p.key(), p.value());
    }
    for (auto& p : r.text_model->named_parameters()) {
      p.value().set_requires_grad(cfg.train.encoder);
      if (cfg.train.encoder) r.trained.emplace_back("text_encoder." + p.key(), p.value());
    }
  }
  IDSYNTH_CHECK(!r.trained.empty(), "train-generator: nothing to train (train.unet and train.encoder select no parameters)");
  if (cfg.model.gradient_checkpointing) r.unet->set_gradient_checkpointing(true);
  r.unet->train();
  r.text_model->train();
  return r;
}

// Contiguous shards of a batch of n over `replicas`, as even as possible (the first ones get the
// remainder); a batch smaller than the replica count leaves the last ones idle (size 0).
std::vector<int64_t> shard_sizes(int64_t n, size_t replicas) {
  std::vector<int64_t> sizes(replicas, 0);
  const auto count = static_cast<int64_t>(replicas);
  for (int64_t i = 0; i < count; ++i) sizes[static_cast<size_t>(i)] = n / count + (i < n % count ? 1 : 0);
  return sizes;
}

// The frozen VAE's posterior (mean, std) of every training image as the model sees it, centre
// cropped and, when data.flip_p > 0, mirrored too: training then samples latents from it instead of
// encoding every batch again (the miniature's 32² steps ran 76 instead of 69 pairs/s on 2 threads). The
// images are encoded in fixed chunks of the batch size in index order, so the numbers are the same
// after any resume and on any device count.
struct LatentCache {
  at::Tensor mean, std;  // [pairs · orientations, C, h, w] float32 on the CPU
  int64_t orientations = 1;

  bool empty() const { return !mean.defined(); }
  // The posterior of a batch's rows: [B, C, h, w] each.
  std::pair<at::Tensor, at::Tensor> rows(const GeneratorBatch& batch) const {
    std::vector<int64_t> index(batch.samples.size());
    for (size_t k = 0; k < index.size(); ++k)
      index[k] = batch.samples[k] * orientations + (orientations > 1 ? batch.flipped[k] : 0);
    const at::Tensor i = at::tensor(index, at::kLong);
    return {mean.index_select(0, i), std.index_select(0, i)};
  }
};

constexpr double kLatentCacheLimitBytes = 2.0 * (1 << 30);

LatentCache build_latent_cache(const TrainGeneratorConfig& cfg, const GeneratorTrainData& data, AutoencoderKL& vae,
                               c10::Device device, int64_t latent_side) {
  LatentCache cache;
  if (cfg.train.target == "vae" || cfg.train.cache_latents == "off") return cache;
  cache.orientations = cfg.data.flip_p > 0 ? 2 : 1;
  const int64_t channels = vae->config().latent_channels, rows = data.size() * cache.orientations;
  const double bytes = 2.0 * 4.0 * static_cast<double>(rows * channels * latent_side * latent_side);
  if (cfg.data.crop != "center") {
    LOG_INF("train.cache_latents auto: data.crop random changes each image at every step; the VAE encodes every batch");
    return LatentCache{};
  }
  if (bytes > kLatentCacheLimitBytes) {
    LOG_INF("train.cache_latents auto: the posteriors would take ", static_cast<int64_t>(bytes / (1 << 20)),
            " MB (limit 2048 MB); the VAE encodes every batch");
    return LatentCache{};
  }
  torch::NoGradGuard no_grad;
  cache.mean = at::empty({rows, channels, latent_side, latent_side}, at::kFloat);
  cache.std = at::empty_like(cache.mean);
  const int64_t chunk = cfg.data.batch_size;
  Progress progress(rows, "VAE posteriors", "images");
  for (int64_t first = 0; first < rows; first += chunk) {
    const int64_t n = std::min(chunk, rows - first);
    std::vector<at::Tensor> images;
    for (int64_t r = first; r < first + n; ++r) images.push_back(data.image(r / cache.orientations, r % cache.orientations == 1));
    const LatentDistribution dist = vae->encode(at::stack(images).to(device));
    cache.mean.narrow(0, first, n).copy_(dist.mean.to(at::kCPU, at::kFloat));
    cache.std.narrow(0, first, n).copy_(dist.std().to(at::kCPU, at::kFloat));
    progress.advance(n);
  }
  progress.finish();
  LOG_INF("cached the VAE posteriors of ", data.size(), " pairs", cache.orientations > 1 ? " and their mirror images" : "", " (",
          std::round(bytes / (1 << 20) * 10) / 10, " MB; train.cache_latents: off encodes every batch instead)");
  return cache;
}

}  // namespace

GeneratorTrainResult train_generator(const TrainGeneratorConfig& cfg, const GeneratorTrainHooks& hooks,
                                     const std::string& resume) {
  log::Stopwatch total_watch;
  const StopSignals signals(hooks.handle_signals);
  GeneratorTrainResult result;

  // 1. devices (the first holds the trained model), output, threads
  const std::vector<c10::Device> devices =
      resolve_devices(cfg.run.device_list(), cfg.run.devices.empty() ? "train-generator config: run.device" : "train-generator config: run.devices");
  const c10::Device device = devices.front();
  for (const auto& d : devices)
    IDSYNTH_CHECK(d.type() == device.type(), "train-generator config: run.devices: expected devices of one kind, found ", device.str(),
                  " and ", d.str());
  IDSYNTH_CHECK(cfg.data.batch_size >= static_cast<int64_t>(devices.size()), "train-generator config: data.batch_size: expected at least one pair per device (",
                devices.size(), " devices), found ", cfg.data.batch_size);
  if (cfg.run.threads > 0) configure_threads(static_cast<int>(cfg.run.threads));
  const bool amp_fp16 = cfg.model.mixed_precision == "fp16" && device.is_cuda();
  const bool amp_bf16 = cfg.model.mixed_precision == "bf16" && device.is_cuda();
  if (cfg.model.mixed_precision != "no" && !device.is_cuda())
    LOG_WRN("model.mixed_precision: autocast needs CUDA; training in float32 on ", device.str());
  fs::create_directories(cfg.run.output);
  const std::string config_yaml = config::to_yaml(cfg);
  config::write_resolved(cfg, (fs::path(cfg.run.output) / "config.resolved.yaml").string());
  LOG_INF("train-generator config:\n", config_yaml);

  // 2. the model: float32 master weights on the device
  const Arc2FaceModelPaths paths = Arc2FaceModelPaths::resolve(cfg.model.dir, cfg.model.base_dir, cfg.model.variant);
  std::vector<Replica> replicas;
  for (const auto& d : devices) replicas.push_back(load_replica(cfg, paths, d));
  Replica& primary = replicas.front();
  UNet2DCondition& unet = primary.unet;
  CLIPTextModel& text_model = primary.text_model;
  AutoencoderKL& vae = primary.vae;
  Arc2FaceIdEncoder& encoder = *primary.encoder;
  const json::Value scheduler_json =
      paths.scheduler_config.empty() ? sd15_scheduler_config() : json::parse_file(paths.scheduler_config);
  const std::string scheduler_source = paths.scheduler_config.empty() ? "Stable Diffusion 1.5 scheduler config" : paths.scheduler_config;
  const auto noise_schedule = make_scheduler("ddim", scheduler_json, scheduler_source);
  const at::Tensor alphas_cumprod = noise_schedule->alphas_cumprod().to(device);
  const int64_t num_train_timesteps = alphas_cumprod.size(0);
  DiffusionLossOptions loss_options;
  loss_options.prediction_type = cfg.train.prediction_type;
  if (loss_options.prediction_type.empty()) {
    const json::Value* p = scheduler_json.find("prediction_type");
    loss_options.prediction_type = p ? p->as_string("prediction_type") : "epsilon";
  }
  IDSYNTH_CHECK(loss_options.prediction_type == "epsilon" || loss_options.prediction_type == "v_prediction", scheduler_source,
                ": prediction_type: expected epsilon or v_prediction for training, found '", loss_options.prediction_type, "'");
  loss_options.snr_gamma = cfg.train.snr_gamma;
  // A v-prediction run on an epsilon model makes a v-prediction model: the sample grid and the
  // exported scheduler config say so.
  json::Value trained_scheduler_json = scheduler_json;
  trained_scheduler_json.set("prediction_type", loss_options.prediction_type);
  if (cfg.train.lora_rank > 0 && !cfg.train.prediction_type.empty() && scheduler_json.find("prediction_type") &&
      scheduler_json.find("prediction_type")->as_string() != cfg.train.prediction_type)
    LOG_WRN("train.prediction_type ", cfg.train.prediction_type, " differs from the model's scheduler config: sampling with the LoRA needs a scheduler config with prediction_type ",
            cfg.train.prediction_type);
  const int64_t vae_factor = vae->config().spatial_factor();
  const int64_t sample_size = unet->config().sample_size.value_or(0);
  const int64_t resolution = cfg.data.resolution > 0 ? cfg.data.resolution : sample_size * vae_factor;
  IDSYNTH_CHECK(resolution > 0 && resolution % vae_factor == 0, "train-generator config: data.resolution: expected a multiple of the VAE factor ",
                vae_factor, " (or 0 with a UNet sample_size), found ", resolution);

  // 3. data
  const GeneratorTrainData data(cfg.data, resolution, (fs::path(cfg.run.output) / "id_vectors.safetensors").string(),
                                cfg.train.target != "vae");
  IDSYNTH_CHECK(data.id_width() <= encoder.hidden_size(), "train-generator: data: the ID vectors are ", data.id_width(),
                " wide, but the encoder (", paths.text_encoder.config.empty() ? paths.text_encoder.weights : paths.text_encoder.config,
                " hidden_size) takes at most ", encoder.hidden_size(), "; use the recogniser the model was trained with");
  const int64_t accumulation = cfg.optim.gradient_accumulation;
  const int64_t total_steps = cfg.schedule.max_steps;
  const LatentCache latent_cache = build_latent_cache(cfg, data, vae, device, resolution / vae_factor);

  // 4. what is trained (selected by load_replica)
  const bool train_vae = cfg.train.target == "vae";
  const Named& trained = primary.trained;
  int64_t trained_count = 0;
  std::vector<at::Tensor> params;
  for (const auto& [n, t] : trained) {
    trained_count += t.numel();
    params.push_back(t);
  }
  // Replica 0's trained tensors into the others (after resume and after every optimiser step).
  const auto broadcast = [&] {
    torch::NoGradGuard no_grad;
    for (size_t r = 1; r < replicas.size(); ++r) {
      recognition::CurrentDevice current(replicas[r].device);
      for (size_t k = 0; k < trained.size(); ++k) replicas[r].trained[k].second.copy_(trained[k].second);
    }
  };

  // 5. optimiser, EMA, loss scaling
  torch::optim::AdamW adamw(params, torch::optim::AdamWOptions(cfg.optim.lr)
                                        .betas({cfg.optim.beta1, cfg.optim.beta2})
                                        .eps(cfg.optim.eps)
                                        .weight_decay(cfg.optim.weight_decay));
  std::unique_ptr<EmaWeights> ema;
  if (cfg.ema.enabled) ema = std::make_unique<EmaWeights>(trained, cfg.ema.decay);
  recognition::LossScaler scaler(amp_fp16, cfg.optim.loss_scale, cfg.optim.loss_scale_growth_interval);

  // 6. resume
  int64_t step = 0;
  std::vector<LogRow> log_rows;
  const std::string resume_path = resume == "auto" ? recognition::latest_checkpoint(cfg.run.output) : resume;
  if (!resume_path.empty()) {
    const SafeTensorsFile file(resume_path);
    const auto& meta = file.metadata();
    auto get = [&](const char* key) {
      auto it = meta.find(key);
      IDSYNTH_CHECK(it != meta.end(), resume_path, ": metadata '", key, "': expected in a train-generator checkpoint, not found");
      return it->second;
    };
    IDSYNTH_CHECK(get("format") == kCheckpointFormat, resume_path, ": metadata 'format': expected ", kCheckpointFormat,
                  ", found ", get("format"));
    if (get("config") != config_yaml)
      LOG_WRN(resume_path, ": the checkpoint was written with a different config; resuming with the current one");
    const TensorDict all = file.all();
    torch::NoGradGuard no_grad;
    const int64_t adam_step = std::stoll(get("adam_step"));
    for (const auto& [name, t] : trained) {
      const at::Tensor* v = all.find("param." + name);
      IDSYNTH_CHECK(v != nullptr, resume_path, ": tensor 'param.", name,
                    "': expected (the config trains it), not found: the checkpoint is from a run that trained other weights");
      IDSYNTH_CHECK(v->sizes() == t.sizes(), resume_path, ": tensor 'param.", name, "': expected shape ", t.sizes(), ", found ", v->sizes());
      t.copy_(*v);
      const at::Tensor *m = all.find("adam.exp_avg." + name), *s2 = all.find("adam.exp_avg_sq." + name);
      if (m && s2 && adam_step > 0) set_adam_state(adamw, t, adam_step, *m, *s2);
    }
    if (ema) {
      Named shadows;
      for (const auto& [name, t] : trained) {
        const at::Tensor* v = all.find("ema." + name);
        IDSYNTH_CHECK(v != nullptr, resume_path, ": tensor 'ema.", name, "': expected with ema.enabled, not found");
        shadows.emplace_back(name, *v);
      }
      ema->restore(shadows, std::stoll(get("ema_step")));
    }
    scaler.restore(std::stod(get("loss_scale")), std::stoll(get("loss_scale_growth_tracker")));
    step = std::stoll(get("step"));
    log_rows = read_log(cfg.run.output, step);
    LOG_INF("resumed from ", resume_path, " at step ", step);
  }
  broadcast();

  auto save_checkpoint = [&] {
    Named tensors;
    int64_t adam_step = 0;
    for (const auto& [name, t] : trained) {
      tensors.emplace_back("param." + name, t.detach());
      if (auto* s = adam_state(adamw, t)) {
        tensors.emplace_back("adam.exp_avg." + name, s->exp_avg());
        tensors.emplace_back("adam.exp_avg_sq." + name, s->exp_avg_sq());
        adam_step = s->step();
      }
    }
    if (ema)
      for (const auto& [name, t] : ema->shadows()) tensors.emplace_back("ema." + name, t);
    char scale[64];
    std::snprintf(scale, sizeof scale, "%.17g", scaler.scale());
    const std::string path = (fs::path(cfg.run.output) / step_name("checkpoint", step, ".safetensors")).string();
    save_safetensors(path, tensors,
                     {{"format", kCheckpointFormat},
                      {"step", std::to_string(step)},
                      {"adam_step", std::to_string(adam_step)},
                      {"ema_step", std::to_string(ema ? ema->optimization_step() : 0)},
                      {"loss_scale", scale},
                      {"loss_scale_growth_tracker", std::to_string(scaler.growth_tracker())},
                      {"config", config_yaml}});
    // older checkpoints beyond `keep`
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(cfg.run.output)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("checkpoint-", 0) == 0 && e.path().extension() == ".safetensors") found.push_back(e.path().string());
    }
    std::sort(found.begin(), found.end());
    for (size_t i = 0; i + static_cast<size_t>(cfg.checkpoint.keep) < found.size(); ++i) fs::remove(found[i]);
    write_log(cfg.run.output, log_rows);
    result.last_checkpoint = path;
    LOG_INF("checkpoint ", path);
  };

  // 7. the sample grid: rows = the first pairs of distinct ID vectors, first column their image
  std::vector<int64_t> grid_pairs;
  for (int64_t i = 0; i < data.size() && static_cast<int64_t>(grid_pairs.size()) < cfg.samples.identities; ++i) {
    bool distinct = true;
    if (train_vae) {  // no vectors: rows of distinct labels
      for (int64_t j : grid_pairs) distinct = distinct && data.label(i) != data.label(j);
    } else {
      const at::Tensor v = data.id_vector(i);
      for (int64_t j : grid_pairs) distinct = distinct && (v * data.id_vector(j)).sum().item<double>() < 0.999 * v.norm().item<double>() * data.id_vector(j).norm().item<double>();
    }
    if (distinct) grid_pairs.push_back(i);
  }
  std::vector<std::string> grids;
  auto draw_grid = [&](int64_t at_step) {
    log::Stopwatch w;
    torch::NoGradGuard no_grad;
    unet->eval();
    text_model->eval();
    primary.apply_lora();
    const int64_t rows = static_cast<int64_t>(grid_pairs.size()), cols = train_vae ? 1 : cfg.samples.seeds;
    at::Tensor images;
    if (train_vae) {
      // the VAE's reconstruction (posterior mean) of each row's image
      std::vector<at::Tensor> x;
      for (int64_t i : grid_pairs) x.push_back(data.image(i));
      const at::Tensor rec = vae->decode(vae->encode(at::stack(x).to(device)).mean).to(at::kCPU, at::kFloat);
      images = Arc2FacePipeline::to_uint8((rec / 2 + 0.5).clamp(0, 1).permute({0, 2, 3, 1}));
    } else {
      std::vector<at::Tensor> ids, latents;
      std::vector<at::Generator> gens;
      PipelineOptions po;
      po.device = device;
      Arc2FacePipeline pipe(text_model, unet, vae, make_scheduler(cfg.samples.scheduler, trained_scheduler_json, scheduler_source), po);
      for (int64_t r = 0; r < rows; ++r) {
        ids.push_back(data.id_vector(grid_pairs[static_cast<size_t>(r)]).to(at::kFloat).view({1, -1}));
        for (int64_t c = 0; c < cols; ++c) {
          gens.push_back(at::detail::createCPUGenerator(static_cast<uint64_t>(c)));
          latents.push_back(pipe.draw_latents(gens.back(), 1, resolution, resolution));
        }
      }
      SampleOptions so;
      so.num_inference_steps = cfg.samples.steps;
      so.guidance_scale = cfg.samples.guidance_scale;
      images = Arc2FacePipeline::to_uint8(pipe.sample(at::cat(ids), at::cat(latents), so, nullptr, gens));
    }
    cv::Mat grid(static_cast<int>(rows * resolution), static_cast<int>((cols + 1) * resolution), CV_8UC3, cv::Scalar(0, 0, 0));
    for (int64_t r = 0; r < rows; ++r) {
      chw_to_mat(data.image(grid_pairs[static_cast<size_t>(r)]))
          .copyTo(grid(cv::Rect(0, static_cast<int>(r * resolution), static_cast<int>(resolution), static_cast<int>(resolution))));
      for (int64_t c = 0; c < cols; ++c)
        formats::tensor_to_mat(images[r * cols + c].contiguous())
            .copyTo(grid(cv::Rect(static_cast<int>((c + 1) * resolution), static_cast<int>(r * resolution),
                                  static_cast<int>(resolution), static_cast<int>(resolution))));
    }
    const std::string name = step_name("step", at_step, ".png");
    fs::create_directories(fs::path(cfg.run.output) / "samples");
    formats::write_image_rgb((fs::path(cfg.run.output) / "samples" / name).string(), grid);
    if (std::find(grids.begin(), grids.end(), name) == grids.end()) grids.push_back(name);
    unet->train();
    text_model->train();
    LOG_INF("sample grid samples/", name, " (", rows, " IDs x ", cols, train_vae ? " reconstructions" : cat(" seeds, ", cfg.samples.steps, " ", cfg.samples.scheduler, " steps"),
            ") in ", w.seconds(), " s");
  };
  if (fs::is_directory(fs::path(cfg.run.output) / "samples"))
    for (const auto& e : fs::directory_iterator(fs::path(cfg.run.output) / "samples")) grids.push_back(e.path().filename().string());
  std::sort(grids.begin(), grids.end());
  if (step == 0 && !grid_pairs.empty()) draw_grid(0);

  std::string device_names;
  for (const auto& d : devices) device_names += (device_names.empty() ? "" : ", ") + d.str();
  LOG_INF("training ", cfg.train.lora_rank > 0 ? cat("LoRA rank ", cfg.train.lora_rank, " adapters of ") : std::string(),
          train_vae ? "the VAE" : cfg.train.unet && cfg.train.encoder ? "the UNet and the ID encoder" : cfg.train.unet ? "the UNet" : "the ID encoder",
          ": ", trained.size(), " tensors, ", trained_count, " parameters; ", data.size(), " pairs at ", resolution, "x", resolution,
          ", batch ", cfg.data.batch_size, accumulation > 1 ? cat(" x ", accumulation, " accumulated") : std::string(), ", ",
          total_steps, " steps on ", device_names,
          devices.size() > 1 ? cat(" (data parallel, ", shard_sizes(cfg.data.batch_size, devices.size()).front(), " pairs per replica)") : std::string(),
          amp_fp16 ? " (fp16 autocast)" : amp_bf16 ? " (bf16 autocast)" : "",
          cfg.model.gradient_checkpointing ? ", gradient checkpointing" : "", "; ", loss_options.prediction_type,
          loss_options.snr_gamma > 0 ? cat(", min-SNR gamma ", loss_options.snr_gamma) : std::string());

  // 8. the loop
  const double scaling_factor = vae->config().scaling_factor;
  double interval_loss = 0, interval_start = total_watch.seconds();
  int64_t interval_steps = 0, interval_samples = 0;
  const int64_t first_step = step;
  const double loop_start = total_watch.seconds();
  while (step < total_steps) {
    if (stop_signal() != 0) {
      result.interrupted = stop_signal();
      break;
    }
    double step_loss = 0;
    for (int64_t micro = 0; micro < accumulation; ++micro) {
      const int64_t position = step * accumulation + micro;
      const GeneratorBatch batch = data.batch(position, static_cast<uint64_t>(cfg.run.seed));
      const int64_t b = batch.images.size(0);
      // Every random draw of the batch, on the CPU and in a fixed order, before it is split: any
      // device count trains on the same numbers.
      at::Generator gen = step_generator(static_cast<uint64_t>(cfg.run.seed), position);
      const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat);
      const std::vector<int64_t> latent_shape = {b, vae->config().latent_channels, resolution / vae_factor, resolution / vae_factor};
      DiffusionStepInputs draws;
      const at::Tensor vae_noise = at::randn(latent_shape, gen, f32);
      if (!train_vae) {
        draws.noise = at::randn(latent_shape, gen, f32);
        draws.timesteps = at::randint(0, num_train_timesteps, {b}, gen, at::TensorOptions().dtype(at::kLong));
        draws.drop_mask = at::rand({b}, gen) < cfg.train.condition_dropout;
        draws.id_vectors = batch.id_vectors;
      }
      const std::vector<int64_t> shards = shard_sizes(b, replicas.size());
      std::vector<double> losses(replicas.size(), 0.0);
      const size_t used = static_cast<size_t>(std::count_if(shards.begin(), shards.end(), [](int64_t n) { return n > 0; }));
      recognition::parallel_apply(used, [&](size_t i) {
        Replica& r = replicas[i];
        recognition::CurrentDevice current(r.device);
        int64_t offset = 0;
        for (size_t k = 0; k < i; ++k) offset += shards[k];
        const auto shard = [&](const at::Tensor& t) { return t.narrow(0, offset, shards[i]).to(r.device); };
        // The batch loss is the mean over its pairs, so a shard's loss counts by its share.
        const double share = static_cast<double>(shards[i]) / static_cast<double>(b);
        at::Tensor loss;
        if (train_vae) {
          // LDM's autoencoder objective without its discriminator: L1 of the reconstruction from a
          // posterior sample, plus a small KL to N(0, 1) (summed over latent cells, mean over images).
          const at::Tensor x = shard(batch.images);
          const LatentDistribution dist = r.vae->encode(x);
          const at::Tensor rec = r.vae->decode(dist.mean + dist.std() * shard(vae_noise));
          const at::Tensor kl = 0.5 * (dist.mean.pow(2) + dist.logvar.exp() - 1.0 - dist.logvar).sum({1, 2, 3}).mean();
          loss = (rec - x).abs().mean() + cfg.train.vae_kl_weight * kl;
        } else {
          DiffusionStepInputs in;
          {
            torch::NoGradGuard no_grad;
            if (latent_cache.empty()) {
              const LatentDistribution dist = r.vae->encode(shard(batch.images));
              in.latents = ((dist.mean + dist.std() * shard(vae_noise)) * scaling_factor).to(at::kFloat);
            } else {
              const auto [mean_rows, std_rows] = latent_cache.rows(batch);
              in.latents = (shard(mean_rows) + shard(std_rows) * shard(vae_noise)) * scaling_factor;
            }
          }
          in.noise = shard(draws.noise);
          in.timesteps = shard(draws.timesteps);
          in.drop_mask = shard(draws.drop_mask);
          in.id_vectors = shard(draws.id_vectors);
          r.apply_lora();
          recognition::AutocastScope fp16(amp_fp16);
          Bf16AutocastScope bf16(amp_bf16);
          loss = diffusion_step(r.unet, *r.encoder, alphas_cumprod.to(r.device), in, loss_options).loss;
        }
        losses[i] = loss.item<double>() * share;
        (loss * (scaler.scale() * share / static_cast<double>(accumulation))).backward();
      });
      double loss = 0;
      for (double l : losses) loss += l;
      if (!std::isfinite(loss) && train_vae) fail("train-generator stopped: VAE loss is not finite at step ", step + 1, "; lower optim.lr");
      if (!std::isfinite(loss))
        fail("train-generator stopped: loss is ", std::isnan(loss) ? "NaN" : "inf", " at step ", step + 1, " (batch position ",
             position, ", first pair ", data.describe(batch.samples.front()), "); last checkpoint: ",
             result.last_checkpoint.empty() ? std::string("none") : result.last_checkpoint, ". Lower optim.lr or check the data.");
      // reduce: replica 0 += replica 1 + replica 2 + ... (fixed order); the others' gradients cleared
      {
        torch::NoGradGuard no_grad;
        for (size_t r = 1; r < used; ++r)
          for (size_t k = 0; k < trained.size(); ++k) {
            at::Tensor& g = replicas[r].trained[k].second.mutable_grad();
            if (!g.defined()) continue;
            at::Tensor& dst = trained[k].second.mutable_grad();
            if (dst.defined()) {
              dst.add_(g.to(dst.device()));
            } else {
              dst = g.to(trained[k].second.device()).clone();
            }
            g = at::Tensor();
          }
      }
      step_loss += loss / static_cast<double>(accumulation);
      interval_samples += b;
    }
    const bool finite = scaler.unscale(params);
    const double lr = lr_at(cfg.schedule, cfg.optim.lr, step);
    if (finite) {
      if (cfg.optim.clip_grad_norm > 0) torch::nn::utils::clip_grad_norm_(params, cfg.optim.clip_grad_norm);
      recognition::set_lr(adamw, lr);
      adamw.step();
      if (ema) ema->update();
      broadcast();
    } else {
      LOG_WRN("step ", step + 1, ": non-finite gradient at loss scale ", scaler.scale(), "; step skipped");
    }
    scaler.update(finite);
    recognition::set_grads_to_none(adamw);
    ++step;
    interval_loss += step_loss;
    ++interval_steps;
    if (hooks.after_step) hooks.after_step(step, step_loss);
    if (step % cfg.run.log_every == 0 || step == total_steps) {
      const double now = total_watch.seconds();
      LogRow row{step, interval_loss / static_cast<double>(interval_steps), lr,
                 static_cast<double>(interval_samples) / std::max(1e-9, now - interval_start), now};
      if (result.first_loss == 0) result.first_loss = row.loss;
      result.last_loss = row.loss;
      const double per_step = (now - loop_start) / static_cast<double>(step - first_step);
      LOG_INF("step ", step, "/", total_steps, "  loss ", row.loss, "  lr ", lr, "  ", row.samples_per_s, " samples/s  ETA ",
              eta_string(per_step * static_cast<double>(total_steps - step)), "  peak RSS ", static_cast<int64_t>(peak_rss_mb()),
              " MB", scaler.enabled() ? cat("  scale ", scaler.scale()) : std::string());
      log_rows.push_back(row);
      interval_loss = 0;
      interval_steps = interval_samples = 0;
      interval_start = now;
    }
    if (cfg.checkpoint.every_steps > 0 && step % cfg.checkpoint.every_steps == 0 && step < total_steps) save_checkpoint();
    if (cfg.samples.every_steps > 0 && step % cfg.samples.every_steps == 0 && step < total_steps && !grid_pairs.empty())
      draw_grid(step);
  }
  result.steps = step;
  save_checkpoint();
  if (result.interrupted != 0) {
    LOG_WRN("stopped by signal ", result.interrupted, " after step ", step, "; rerun with --resume to continue");
    return result;
  }

  // 9. the final weights: the EMA's when kept (as diffusers saves ema_unet), then the grid and export
  if (ema) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < trained.size(); ++i) trained[i].second.copy_(ema->shadows()[i].second);
  }
  if (!grid_pairs.empty()) draw_grid(step);
  {
    torch::NoGradGuard no_grad;
    if (cfg.train.lora_rank > 0) {
      std::vector<const LoraAdapters*> adapters;
      if (primary.unet_lora) adapters.push_back(primary.unet_lora.get());
      if (primary.text_lora) adapters.push_back(primary.text_lora.get());
      result.lora_path = (fs::path(cfg.run.output) / "lora.safetensors").string();
      write_lora_file(result.lora_path, adapters, at::kHalf,
                      {{"ss_base_model", cfg.model.dir}, {"ss_steps", std::to_string(step)}, {"idsynth", "train-generator"}});
      LOG_INF("LoRA file ", result.lora_path, " (load it with sample --model ", cfg.model.dir, " --lora ", result.lora_path, ")");
    } else {
      const fs::path root = fs::path(cfg.run.output) / "model";
      const fs::path unet_dir = root / "arc2face", enc_dir = root / "encoder";
      fs::create_directories(unet_dir);
      fs::create_directories(enc_dir);
      json::write_file((unet_dir / "config.json").string(), unet->config().to_json());
      save_safetensors((unet_dir / "diffusion_pytorch_model.safetensors").string(), cpu_state(*unet), {{"format", "pt"}});
      IDSYNTH_CHECK(!paths.text_encoder.config.empty(), paths.text_encoder.weights,
                    ": the encoder's config.json is needed to export the trained encoder; found a single-file checkpoint without one");
      copy_file_atomic(paths.text_encoder.config, enc_dir / "config.json");
      save_safetensors((enc_dir / "model.safetensors").string(), cpu_state(*text_model), {{"format", "pt"}});
      const fs::path vae_dir = root / "vae";
      fs::create_directories(vae_dir);
      json::Value vae_json = vae->config().to_json();
      if (train_vae) {
        // The latent scale the diffusion model will see: 1 / std of the posterior means over (up
        // to) 256 training images, as LDM chose SD's 0.18215, so noised latents have unit variance.
        double sum = 0, sum_sq = 0;
        int64_t count = 0;
        for (int64_t i = 0; i < std::min<int64_t>(data.size(), 256); ++i) {
          const at::Tensor z = vae->encode(data.image(i).unsqueeze(0).to(device)).mean.to(at::kDouble);
          sum += z.sum().item<double>();
          sum_sq += z.pow(2).sum().item<double>();
          count += z.numel();
        }
        const double mean = sum / static_cast<double>(count);
        const double std = std::sqrt(std::max(1e-12, sum_sq / static_cast<double>(count) - mean * mean));
        vae_json.set("scaling_factor", 1.0 / std);
        LOG_INF("VAE scaling_factor ", 1.0 / std, " (latent std ", std, " over ", std::min<int64_t>(data.size(), 256), " images)");
      }
      json::write_file((vae_dir / "config.json").string(), vae_json);
      save_safetensors((vae_dir / "diffusion_pytorch_model.safetensors").string(), cpu_state(*vae), {{"format", "pt"}});
      fs::create_directories(root / "scheduler");
      json::write_file((root / "scheduler" / "scheduler_config.json").string(), trained_scheduler_json);
      result.model_dir = root.string();
      LOG_INF("model ", result.model_dir, " (Arc2Face layout: arc2face/ encoder/ vae/ scheduler/)");
    }
  }

  // 10. the report
  {
    std::ostringstream html;
    html << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>idsynth train-generator</title>"
         << "<style>body{font-family:sans-serif;margin:2em}img{image-rendering:pixelated;max-width:100%}td,th{padding:2px 8px}</style>"
         << "</head><body>\n<h1>idsynth train-generator</h1>\n<table>\n"
         << "<tr><th>model</th><td>" << cfg.model.dir << "</td></tr>\n"
         << "<tr><th>trained</th><td>" << trained.size() << " tensors, " << trained_count << " parameters"
         << (cfg.train.lora_rank > 0 ? cat(" (LoRA rank ", cfg.train.lora_rank, ")") : std::string()) << "</td></tr>\n"
         << "<tr><th>data</th><td>" << data.size() << " pairs at " << resolution << "x" << resolution << "</td></tr>\n"
         << "<tr><th>steps</th><td>" << step << " (batch " << cfg.data.batch_size << " x " << accumulation << ")</td></tr>\n"
         << "<tr><th>loss</th><td>first interval " << result.first_loss << ", last " << result.last_loss << "</td></tr>\n"
         << "<tr><th>output</th><td>" << (result.lora_path.empty() ? result.model_dir : result.lora_path) << "</td></tr>\n"
         << "</table>\n<h2>Loss</h2>\n" << (log_rows.empty() ? std::string("<p>no steps logged</p>") : loss_svg(log_rows))
         << "\n<h2>Samples</h2>\n<p>Rows: identities (first column: their training image); columns: seeds 0.."
         << cfg.samples.seeds - 1 << ", " << cfg.samples.steps << " " << cfg.samples.scheduler << " steps, guidance "
         << cfg.samples.guidance_scale << ".</p>\n";
    for (const auto& g : grids) html << "<h3>" << g << "</h3>\n<img src=\"samples/" << g << "\" alt=\"" << g << "\">\n";
    html << "</body></html>\n";
    result.report_path = (fs::path(cfg.run.output) / "report.html").string();
    write_file_atomic(result.report_path, html.str());
    if (!log_rows.empty()) write_file_atomic((fs::path(cfg.run.output) / "loss_curve.svg").string(), loss_svg(log_rows));
  }
  LOG_INF("train-generator completed, taking ", total_watch.seconds(), " s: ", step, " steps, peak RSS ",
          static_cast<int64_t>(peak_rss_mb()), " MB, report ", result.report_path);
  return result;
}

}  // namespace idsynth::generator
