// `idsynth train`: an IResNet trained with a margin softmax loss on idsynth shards or RecordIO, the
// way insightface arcface_torch's train_v2.py does it, in one process on one device or data
// parallel over several (run.devices; recognition/train_parallel.h).
//
// Output folder: config.resolved.yaml, checkpoint-<step>.safetensors (atomic; backbone, head,
// momentum buffers, step, sampler position, CPU and CUDA generator states, loss-scale state), train_log.csv/.json,
// validation.csv, loss_curve.svg, and at the end model.safetensors + model.pt: the backbone's state
// dict under arcface_torch names (`get_model(name).load_state_dict(torch.load("model.pt"))`;
// `idsynth embed --recognizer model.safetensors`).
// Ref: insightface recognition/arcface_torch/train_v2.py (main), utils/utils_callbacks.py.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "recognition/iresnet.h"
#include "recognition/margin_losses.h"
#include "recognition/train_config.h"
#include "recognition/train_data.h"

namespace idsynth::recognition {

struct ValidationScore {
  std::string name;  // benchmark, e.g. "lfw"
  double accuracy = 0;
  double std = 0;
  double xnorm = 0;
};

// Runs the verification benchmarks on the backbone (already in eval mode, no gradient). The trainer
// does not know the benchmarks: the CLI wires eval/ in through this callback.
using ValidationFn = std::function<std::vector<ValidationScore>(IResNet& backbone, c10::Device device)>;

struct TrainHooks {
  ValidationFn validate;
  // Sees every batch before the forward pass (tests use it to inject a NaN).
  std::function<void(int64_t step, TrainBatch& batch)> on_batch;
};

struct TrainResult {
  int64_t steps = 0;            // optimiser steps done in total (including before a resume)
  int64_t replicas = 1;         // backbone replicas (devices) trained on
  double last_loss = 0;         // mean over the last log interval
  double last_accuracy = 0;
  double first_loss = 0;        // mean over the first log interval of this run
  int64_t corrupt_images = 0;   // skipped in this run
  std::string last_checkpoint;
  std::string model_path;       // exported backbone (safetensors)
  std::vector<ValidationScore> validation;  // at the end
};

// Trains from scratch, or from `resume`: a checkpoint file, or "auto" for the newest checkpoint in
// cfg.run.output (none there: from scratch).
TrainResult train(const TrainConfig& cfg, const TrainHooks& hooks = {}, const std::string& resume = "");

// The backbone config from the model section (network depth, widths, embedding size, dropout).
IResNetConfig backbone_config(const TrainModelConfig& model);

// Newest checkpoint-<step>.safetensors of a folder ("" when none).
std::string latest_checkpoint(const std::string& dir);

}  // namespace idsynth::recognition
