// Ref: insightface recognition/arcface_torch/train_v2.py (main), utils/utils_callbacks.py
#include "recognition/trainer.h"

#include <ATen/ATen.h>
#include <torch/nn/utils/clip_grad.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "core/check.h"
#include "core/config.h"
#include "core/device.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"
#include "core/weights.h"
#include "recognition/train_optim.h"
#include "recognition/train_parallel.h"

namespace idsynth::recognition {

namespace {

namespace fs = std::filesystem;

constexpr const char* kCheckpointFormat = "idsynth-train-checkpoint";

struct LoopState {
  int64_t step = 0;      // optimiser steps done
  int64_t position = 0;  // next loader batch
};

std::string checkpoint_name(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "checkpoint-%08lld.safetensors", static_cast<long long>(step));
  return buf;
}

// The momentum buffers are saved under the parameters' names, not as libtorch's optimiser archive,
// whose keys are addresses of this process's tensors.
std::vector<std::pair<std::string, at::Tensor>> named_params(IResNet& backbone, MarginHead& head) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : backbone->named_parameters()) out.emplace_back("backbone." + p.key(), p.value());
  for (const auto& p : head->named_parameters()) out.emplace_back("head." + p.key(), p.value());
  return out;
}

void save_checkpoint(const std::string& path, IResNet& backbone, MarginHead& head, const torch::optim::SGD& sgd,
                     const LossScaler& scaler, const LoopState& s, const std::string& config_yaml) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, t] : module_state(*backbone)) tensors.emplace_back("backbone." + name, t);
  for (const auto& [name, t] : module_state(*head)) tensors.emplace_back("head." + name, t);
  for (const auto& [name, param] : named_params(backbone, head)) {
    const at::Tensor buffer = momentum_buffer(sgd, param);
    if (buffer.defined()) tensors.emplace_back("momentum." + name, buffer);
  }
  for (auto& rng : rng_states()) tensors.push_back(std::move(rng));
  char scale[64];
  std::snprintf(scale, sizeof scale, "%.17g", scaler.scale());
  save_safetensors(path, tensors,
                   {{"format", kCheckpointFormat},
                    {"step", std::to_string(s.step)},
                    {"position", std::to_string(s.position)},
                    {"loss_scale", scale},
                    {"loss_scale_growth_tracker", std::to_string(scaler.growth_tracker())},
                    {"config", config_yaml}});
}

LoopState load_checkpoint(const std::string& path, IResNet& backbone, MarginHead& head, torch::optim::SGD& sgd,
                          LossScaler& scaler) {
  const SafeTensorsFile file(path);
  const auto& meta = file.metadata();
  auto get = [&](const char* key) {
    auto it = meta.find(key);
    IDSYNTH_CHECK(it != meta.end(), path, ": metadata '", key, "': expected in an idsynth training checkpoint, not found");
    return it->second;
  };
  IDSYNTH_CHECK(get("format") == kCheckpointFormat, path, ": metadata 'format': expected ", kCheckpointFormat, ", found ",
                get("format"));
  const TensorDict all = file.all();
  TensorDict bb, hd;
  bb.set_source(path + " (backbone.*)");
  hd.set_source(path + " (head.*)");
  for (const auto& [name, t] : all) {
    if (name.rfind("backbone.", 0) == 0) bb.insert(name.substr(9), t);
    if (name.rfind("head.", 0) == 0) hd.insert(name.substr(5), t);
  }
  load_state_dict(*backbone, bb);
  load_state_dict(*head, hd);
  for (const auto& [name, param] : named_params(backbone, head)) {
    const at::Tensor* m = all.find("momentum." + name);
    set_momentum_buffer(sgd, param, m ? *m : at::Tensor());
  }
  restore_rng_states(all, path);
  scaler.restore(std::stod(get("loss_scale")), std::stoll(get("loss_scale_growth_tracker")));
  return {std::stoll(get("step")), std::stoll(get("position"))};
}

void prune_checkpoints(const std::string& dir, int64_t keep) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("checkpoint-", 0) == 0 && e.path().extension() == ".safetensors") found.push_back(e.path().string());
  }
  std::sort(found.begin(), found.end());
  for (size_t i = 0; i + static_cast<size_t>(keep) < found.size(); ++i) fs::remove(found[i]);
}

std::string eta_string(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  return cat(s / 3600, "h", (s / 60) % 60 < 10 ? "0" : "", (s / 60) % 60, "m", s % 60 < 10 ? "0" : "", s % 60, "s");
}

}  // namespace

IResNetConfig backbone_config(const TrainModelConfig& model) {
  IResNetConfig c = IResNetConfig::from_name(model.network);
  if (!model.widths.empty()) {
    c.widths.clear();
    for (const auto& w : model.widths) c.widths.push_back(std::stoll(w));
  }
  c.num_features = model.embedding_size;
  c.dropout = model.dropout;
  c.check();
  return c;
}

std::string latest_checkpoint(const std::string& dir) {
  std::string best;
  if (!fs::is_directory(dir)) return best;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("checkpoint-", 0) == 0 && e.path().extension() == ".safetensors" && e.path().string() > best)
      best = e.path().string();
  }
  return best;
}

TrainResult train(const TrainConfig& cfg, const TrainHooks& hooks, const std::string& resume) {
  log::Stopwatch total_watch;
  // 1. devices (replica 0 is the primary: head, optimiser, checkpoints), output, seed
  const std::vector<c10::Device> devices = resolve_devices(cfg.run.devices, "train config: run.devices");
  const c10::Device device = devices.front();
  for (const auto& d : devices)
    IDSYNTH_CHECK(d.type() == device.type(), "train config: run.devices: expected devices of one kind, found ",
                  device.str(), " and ", d.str());
  IDSYNTH_CHECK(cfg.data.batch_size >= 2 * static_cast<int64_t>(devices.size()),
                "train config: data.batch_size: expected at least 2 images per device (BatchNorm statistics) for ",
                devices.size(), " devices, found ", cfg.data.batch_size);
  const bool amp = cfg.model.fp16 && device.is_cuda();
  if (cfg.model.fp16 && !amp) LOG_WRN("model.fp16: mixed precision needs CUDA; training in float32 on ", device.str());
  if (cfg.run.threads > 0) configure_threads(static_cast<int>(cfg.run.threads));
  fs::create_directories(cfg.run.output);
  const std::string config_yaml = config::to_yaml(cfg);
  config::write_resolved(cfg, (fs::path(cfg.run.output) / "config.resolved.yaml").string());
  LOG_INF("train config:\n", config_yaml);
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));

  // 2. data
  auto dataset = std::make_shared<TrainDataset>(cfg.data);
  TrainLoader loader(dataset, cfg.data, static_cast<uint64_t>(cfg.run.seed));
  const int64_t per_epoch = loader.batches_per_epoch();
  int64_t total_steps = per_epoch * cfg.schedule.epochs;
  if (cfg.schedule.max_steps > 0) total_steps = std::min(total_steps, cfg.schedule.max_steps);

  // 3. backbone, class centres + margin loss
  IResNet backbone(backbone_config(cfg.model));
  backbone->to(device);
  backbone->train();
  MarginLossOptions lo;
  lo.type = cfg.loss.type;
  lo.s = cfg.loss.s;
  lo.m1 = cfg.loss.m1;
  lo.m2 = cfg.loss.m2;
  lo.m3 = cfg.loss.m3;
  lo.interclass_filtering_threshold = cfg.loss.interclass_filtering_threshold;
  lo.adaface_m = cfg.loss.adaface_m;
  lo.adaface_h = cfg.loss.adaface_h;
  lo.adaface_t_alpha = cfg.loss.adaface_t_alpha;
  ClassCentresOptions co;
  co.num_classes = dataset->num_classes();
  co.embedding_size = cfg.model.embedding_size;
  co.sample_rate = cfg.loss.sample_rate;
  co.fp16 = cfg.loss.fp16_logits;
  MarginHead head(lo, co);
  head->to(device);
  head->train();
  LOG_INF("backbone IResNet ", backbone->config().to_string(), "; loss ", lo.to_string(), "; ", co.num_classes,
          " class centres: ", class_centre_bytes(co.num_classes, co.embedding_size) / 1e6, " MB with momentum, logits ",
          logits_bytes(cfg.data.batch_size, co.num_classes, co.fp16 && device.is_cuda()) / 1e6, " MB per step");

  // 4. optimiser, schedule, loss scaling
  torch::optim::SGD sgd =
      make_sgd({backbone.get(), head.get()}, cfg.optim.no_decay, cfg.optim.momentum, cfg.optim.weight_decay);
  const std::vector<torch::Tensor> params = optimizer_params(sgd), backbone_params = backbone->parameters();
  const LrSchedule schedule(cfg.schedule, cfg.optim.lr, total_steps, per_epoch);
  LossScaler scaler(amp, cfg.optim.loss_scale, cfg.optim.loss_scale_growth_interval);

  // 5. resume
  LoopState s;
  TrainLog tlog(cfg.run.output);
  const std::string resume_path = resume == "auto" ? latest_checkpoint(cfg.run.output) : resume;
  if (!resume_path.empty()) {
    s = load_checkpoint(resume_path, backbone, head, sgd, scaler);
    tlog.reload(s.step);
    LOG_INF("resumed from ", resume_path, " at step ", s.step, " (batch position ", s.position, ")");
  }
  // Replicas copy the primary after any resume; they never hold state of their own between steps.
  DataParallel parallel(backbone, devices, amp);
  std::string device_list;
  for (const auto& d : devices) device_list += (device_list.empty() ? "" : ", ") + d.str();
  const std::vector<int64_t> shards = DataParallel::shard_sizes(cfg.data.batch_size, devices.size());
  LOG_INF("training: ", dataset->size(), " images, batch ", cfg.data.batch_size, ", ", per_epoch, " steps per epoch, ",
          total_steps, " steps on ", device_list, amp ? " with fp16 mixed precision" : "",
          devices.size() > 1 ? cat(" (data parallel, ", shards.front(), " images per replica)") : std::string());

  // 6. the loop
  TrainResult result;
  std::string last_ckpt = resume_path;
  std::map<std::string, double> highest;
  auto run_validation = [&](int64_t step) {
    if (!hooks.validate) return std::vector<ValidationScore>{};
    log::Stopwatch w;
    backbone->eval();
    std::vector<ValidationScore> scores;
    {
      torch::NoGradGuard no_grad;
      scores = hooks.validate(backbone, device);
    }
    backbone->train();
    for (const auto& v : scores) {
      highest[v.name] = std::max(highest[v.name], v.accuracy);
      LOG_INF("[", v.name, "][", step, "] XNorm: ", v.xnorm, "  Accuracy-Flip: ", v.accuracy, "+-", v.std,
              "  Accuracy-Highest: ", highest[v.name]);
      tlog.add(ValidationRow{step, v.name, v.accuracy, v.std, v.xnorm});
    }
    LOG_INF("validation completed, taking ", w.seconds(), " s");
    return scores;
  };
  auto checkpoint = [&]() {
    last_ckpt = (fs::path(cfg.run.output) / checkpoint_name(s.step)).string();
    save_checkpoint(last_ckpt, backbone, head, sgd, scaler, s, config_yaml);
    prune_checkpoints(cfg.run.output, cfg.checkpoint.keep);
    tlog.write();
    LOG_INF("checkpoint ", last_ckpt);
  };

  loader.start(s.position);
  double sum_loss = 0, interval_start = total_watch.seconds();
  int64_t sum_correct = 0, sum_samples = 0, interval_steps = 0;
  const int64_t first_step = s.step;
  const double loop_start = total_watch.seconds();
  while (s.step < total_steps) {
    TrainBatch batch = loader.next();
    ++s.position;
    result.corrupt_images += batch.corrupt;
    if (batch.labels.size(0) == 0) {
      LOG_WRN("epoch ", batch.epoch, " batch ", batch.index, ": every image failed to decode; no step");
      continue;
    }
    if (hooks.on_batch) hooks.on_batch(s.step, batch);
    // forward: the batch split over the replicas (autocast on CUDA), margin loss in float32 on the
    // primary over the whole batch
    const MarginHeadImpl::Output out = parallel.forward(batch.images, batch.labels, *head);
    const double loss = out.loss.item<double>();
    if (!std::isfinite(loss)) {
      std::string samples;
      for (size_t k = 0; k < batch.samples.size() && k < 4; ++k)
        samples += (k ? ", " : "") + dataset->describe(batch.samples[k]);
      fail("training stopped: loss is ", std::isnan(loss) ? "NaN" : (loss > 0 ? "inf" : "-inf"), " at step ", s.step + 1, " of ", total_steps, " (epoch ", batch.epoch,
           ", batch ", batch.index, " of the epoch, global batch ", batch.position, "; first samples ", samples,
           batch.samples.size() > 4 ? ", ..." : "", "); last checkpoint: ",
           last_ckpt.empty() ? std::string("none") : last_ckpt, ". Lower optim.lr or check the data.");
    }
    // backward (replica gradients summed into the primary), unscale, clip the backbone's gradient
    // norm, SGD step, new weights to the replicas
    parallel.backward(scaler.enabled() ? out.loss * scaler.scale() : out.loss);
    const bool finite = scaler.unscale(params);
    const double lr = schedule.lr(s.step);
    if (finite) {
      if (cfg.optim.clip_grad_norm > 0) torch::nn::utils::clip_grad_norm_(backbone_params, cfg.optim.clip_grad_norm);
      set_lr(sgd, lr);
      sgd.step();
    } else {
      LOG_WRN("step ", s.step + 1, ": non-finite gradient at loss scale ", scaler.scale(), "; step skipped");
    }
    scaler.update(finite);
    set_grads_to_none(sgd);
    parallel.broadcast();
    ++s.step;
    // logs
    sum_loss += loss;
    sum_correct += out.correct.item<int64_t>();
    sum_samples += batch.labels.size(0);
    ++interval_steps;
    if (s.step % cfg.run.log_every == 0 || s.step == total_steps) {
      const double now = total_watch.seconds();
      LogRow row{s.step, batch.epoch, sum_loss / static_cast<double>(interval_steps),
                 static_cast<double>(sum_correct) / static_cast<double>(std::max<int64_t>(1, sum_samples)), lr,
                 static_cast<double>(sum_samples) / std::max(1e-9, now - interval_start), now};
      if (result.first_loss == 0) result.first_loss = row.loss;
      result.last_loss = row.loss;
      result.last_accuracy = row.accuracy;
      const double per_step = (now - loop_start) / static_cast<double>(s.step - first_step);
      LOG_INF("step ", s.step, "/", total_steps, " epoch ", batch.epoch, "  loss ", row.loss, "  acc ", row.accuracy,
              "  lr ", lr, "  ", static_cast<int64_t>(row.samples_per_s), " samples/s  ETA ",
              eta_string(per_step * static_cast<double>(total_steps - s.step)),
              scaler.enabled() ? cat("  scale ", scaler.scale()) : std::string());
      tlog.add(row);
      sum_loss = 0;
      sum_correct = sum_samples = interval_steps = 0;
      interval_start = now;
    }
    if (cfg.checkpoint.every_steps > 0 && s.step % cfg.checkpoint.every_steps == 0 && s.step < total_steps) checkpoint();
    if (cfg.validation.every_steps > 0 && s.step % cfg.validation.every_steps == 0 && s.step < total_steps)
      run_validation(s.step);
  }

  // 7. final checkpoint, validation, export
  checkpoint();
  result.validation = run_validation(s.step);
  tlog.write();
  TensorDict exported;
  for (const auto& [name, t] : module_state(*backbone)) exported.insert(name, t.detach().to(torch::kCPU).contiguous());
  result.model_path = (fs::path(cfg.run.output) / "model.safetensors").string();
  save_safetensors(result.model_path, exported,
                   {{"format", "arcface_torch IResNet state_dict"}, {"network", cfg.model.network},
                    {"iresnet", backbone->config().to_string()}});
  save_torch_checkpoint((fs::path(cfg.run.output) / "model.pt").string(), exported);
  result.steps = s.step;
  result.replicas = static_cast<int64_t>(devices.size());
  result.last_checkpoint = last_ckpt;
  if (loader.corrupt_total() > 0)
    LOG_WRN(loader.corrupt_total(), " images did not decode and were skipped");
  LOG_INF("training completed, taking ", total_watch.seconds(), " s: ", s.step, " steps, model ", result.model_path);
  return result;
}

}  // namespace idsynth::recognition
