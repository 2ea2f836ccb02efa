// The pieces of the training loop that hold state: the optimiser (libtorch's torch::optim::SGD in
// arcface_torch's parameter groups, with and without weight decay, and access to its momentum
// buffers for checkpoints), the learning-rate schedule, the dynamic loss scaler and the autocast
// scope of mixed precision, the random generators' states for checkpoints, and the training log
// (CSV, JSON, loss-curve SVG). Libtorch only (idsynth_recognition_models), so the training math also
// builds and runs on a machine with nothing but PyTorch.
// Ref: torch/optim/sgd.py (_single_tensor_sgd), torch/cuda/amp/grad_scaler.py (GradScaler),
//      torch/cuda/random.py (get_rng_state_all), torch/amp/autocast_mode.py (autocast),
//      insightface recognition/arcface_torch/lr_scheduler.py (PolynomialLRWarmup).
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/sgd.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor_dict.h"
#include "recognition/train_config.h"

namespace idsynth::recognition {

// arcface_torch's optimiser: torch.optim.SGD with momentum, dampening 0, no Nesterov; per parameter
// d = g + wd·p; buf = d on the first step, else momentum·buf + d; p −= lr·buf. The parameters of
// `modules` in two groups: [0] with `weight_decay`, [1] without it: those of BatchNorm / PReLU modules
// and biases when `no_decay` names "bn" / "prelu" / "bias". The learning rate is 0 until set_lr.
torch::optim::SGD make_sgd(const std::vector<torch::nn::Module*>& modules, const std::vector<std::string>& no_decay,
                           double momentum, double weight_decay);

// The schedule's learning rate for the next step, on every parameter group.
void set_lr(torch::optim::Optimizer& optimizer, double lr);

// Every parameter of the optimiser, group by group.
std::vector<torch::Tensor> optimizer_params(const torch::optim::Optimizer& optimizer);

// Drops the gradients (PyTorch 2.x's zero_grad(set_to_none=True)). libtorch 1.13's zero_grad() fills
// them with zeros instead, and a parameter holding a zero gradient is still stepped (momentum, weight
// decay) when a backward pass leaves it out.
void set_grads_to_none(torch::optim::Optimizer& optimizer);

// The momentum buffer of `param` in the optimiser's state; undefined before its first step. The
// trainer saves it as "momentum.backbone.<param>" / "momentum.head.<param>".
torch::Tensor momentum_buffer(const torch::optim::SGD& sgd, const torch::Tensor& param);
// Resume: the next step continues from a copy of `buffer` on the parameter's device and dtype; an
// undefined `buffer` makes the next step start afresh (buf = d).
void set_momentum_buffer(torch::optim::SGD& sgd, const torch::Tensor& param, const torch::Tensor& buffer);

// lr at step l (0-based) of `total`: linear warmup base·(l + 1)/w over w steps, then polynomial
// base·(1 − (l − w)/(total − w))^power, step base·gamma^(milestones passed, in epochs) or cosine.
class LrSchedule {
 public:
  LrSchedule(const TrainScheduleConfig& cfg, double base_lr, int64_t total_steps, int64_t steps_per_epoch);
  double lr(int64_t step) const;
  int64_t total_steps() const { return total_; }

 private:
  TrainScheduleConfig cfg_;
  double base_;
  int64_t total_, per_epoch_, warmup_;
};

// Dynamic loss scaling: gradients are unscaled in place; a step with a non-finite gradient is
// skipped and halves the scale; `growth_interval` clean steps double it.
class LossScaler {
 public:
  LossScaler(bool enabled, double init_scale, int64_t growth_interval);
  bool enabled() const { return enabled_; }
  double scale() const { return enabled_ ? scale_ : 1.0; }
  // Divides every gradient of `params` by the scale; true when all are finite (one device sync per
  // device, not one per tensor).
  bool unscale(const std::vector<torch::Tensor>& params) const;
  void update(bool finite);
  int64_t growth_tracker() const { return tracker_; }
  void restore(double scale, int64_t tracker) {
    scale_ = scale;
    tracker_ = tracker;
  }

 private:
  bool enabled_;
  double scale_;
  int64_t interval_;
  int64_t tracker_ = 0;
};

// Mixed precision (torch.autocast("cuda"), float16) on the calling thread while in scope; a no-op
// when `on` is false. Autocast state is per thread: every thread that runs a forward pass needs its
// own scope.
class AutocastScope {
 public:
  explicit AutocastScope(bool on);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool on_;
  bool prev_ = false;
};

// The default random generators' states, as checkpoint tensors: "rng.cpu" (torch.get_rng_state())
// and, where CUDA is available, "rng.cuda.<i>" for every CUDA device (torch.cuda.get_rng_state_all()).
std::vector<std::pair<std::string, at::Tensor>> rng_states();
// Sets the generators from such tensors. "rng.cpu" is required; a CUDA state for a device this
// machine lacks (or a machine without CUDA) is skipped with a warning naming `source`.
void restore_rng_states(const TensorDict& tensors, const std::string& source);

struct LogRow {
  int64_t step = 0;
  int64_t epoch = 0;
  double loss = 0;
  double accuracy = 0;
  double lr = 0;
  double samples_per_s = 0;
  double elapsed_s = 0;
};

struct ValidationRow {
  int64_t step = 0;
  std::string name;
  double accuracy = 0;
  double std = 0;
  double xnorm = 0;
};

// <output>/train_log.csv, validation.csv, train_log.json and loss_curve.svg.
class TrainLog {
 public:
  explicit TrainLog(std::string output_dir);
  // Reads an earlier run's CSV files and keeps the rows up to `step` (resume).
  void reload(int64_t step);
  void add(const LogRow& row);
  void add(const ValidationRow& row);
  const std::vector<LogRow>& rows() const { return rows_; }
  const std::vector<ValidationRow>& validation() const { return validation_; }
  // Rewrites all four files (atomically).
  void write() const;

 private:
  std::string dir_;
  std::vector<LogRow> rows_;
  std::vector<ValidationRow> validation_;
};

// A standalone SVG of the loss (and accuracy) against the step.
std::string loss_curve_svg(const std::vector<LogRow>& rows);

}  // namespace idsynth::recognition
