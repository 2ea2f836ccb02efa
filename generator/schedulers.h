// Diffusion schedulers of diffusers 0.29.2, built from a `scheduler_config.json`:
// DPM-Solver++ multistep (Arc2Face's sampler), DDIM (eta 0) and Euler discrete.
// All update arithmetic runs in float32 (0-d float32 tensors for the scalars, in the reference's
// order of operations, so results match diffusers bit for bit on the CPU), whatever the dtype of
// the sample; the result is cast back to the sample's dtype.
// Ref: diffusers/schedulers/scheduling_dpmsolver_multistep.py (DPMSolverMultistepScheduler),
//      scheduling_ddim.py (DDIMScheduler), scheduling_euler_discrete.py (EulerDiscreteScheduler).
#pragma once

#include <torch/types.h>

#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"

namespace idsynth::generator {

// The noise schedule keys every scheduler shares (names and defaults as diffusers; each scheduler
// class below overrides the defaults its diffusers class uses).
struct NoiseScheduleConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";  // linear | scaled_linear | squaredcos_cap_v2
  std::vector<double> trained_betas;     // null in the file -> empty
  std::string prediction_type = "epsilon";  // epsilon | sample | v_prediction
  std::string timestep_spacing = "linspace";  // linspace | leading | trailing
  int64_t steps_offset = 0;
  bool rescale_betas_zero_snr = false;
};

struct DPMSolverMultistepConfig : NoiseScheduleConfig {
  int64_t solver_order = 2;
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  std::string algorithm_type = "dpmsolver++";
  std::string solver_type = "midpoint";  // midpoint | heun
  bool lower_order_final = true;
  bool euler_at_final = false;
  bool use_karras_sigmas = false;
  bool use_lu_lambdas = false;
  std::string final_sigmas_type = "zero";  // zero | sigma_min
  double lambda_min_clipped = -std::numeric_limits<double>::infinity();
  std::optional<std::string> variance_type;

  static DPMSolverMultistepConfig from_json(const json::Value& root, const std::string& source);
  void check(const std::string& source) const;
};

struct DDIMConfig : NoiseScheduleConfig {
  bool clip_sample = true;
  bool set_alpha_to_one = true;
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double clip_sample_range = 1.0;
  double sample_max_value = 1.0;
  DDIMConfig() { timestep_spacing = "leading"; }

  static DDIMConfig from_json(const json::Value& root, const std::string& source);
  void check(const std::string& source) const;
};

struct EulerDiscreteConfig : NoiseScheduleConfig {
  std::string interpolation_type = "linear";
  bool use_karras_sigmas = false;
  std::string timestep_type = "discrete";
  std::string final_sigmas_type = "zero";

  static EulerDiscreteConfig from_json(const json::Value& root, const std::string& source);
  void check(const std::string& source) const;
};

// One denoising schedule. Usage as in diffusers:
//   s->set_timesteps(n); x = noise * s->init_noise_sigma();
//   for i in 0..n-1: x = s->step(unet(s->scale_model_input(x, i), s->timesteps()[i]), i, x);
// A scheduler keeps per-run state (DPM's history): use one per concurrent run (clone()).
class Scheduler {
 public:
  virtual ~Scheduler() = default;
  virtual const char* name() const = 0;  // the diffusers class name
  virtual std::unique_ptr<Scheduler> clone() const = 0;

  // Also resets the per-run state.
  virtual void set_timesteps(int64_t num_inference_steps) = 0;
  // [n] int64 (DPM, DDIM) or float32 (Euler), CPU: what the UNet receives at each step.
  const torch::Tensor& timesteps() const { return timesteps_; }
  int64_t num_inference_steps() const { return timesteps_.defined() ? timesteps_.size(0) : 0; }
  virtual double init_noise_sigma() const { return 1.0; }
  virtual torch::Tensor scale_model_input(const torch::Tensor& sample, int64_t step_index) const { return sample; }
  // The sample after step `step_index` (0-based into timesteps()). Multistep schedulers need the
  // steps in order from 0; step 0 resets their history.
  virtual torch::Tensor step(const torch::Tensor& model_output, int64_t step_index, const torch::Tensor& sample) = 0;
  // diffusers' call by timestep value (index_for_timestep: the second match if the value repeats).
  torch::Tensor step_at_timestep(const torch::Tensor& model_output, double timestep, const torch::Tensor& sample);

  const torch::Tensor& betas() const { return betas_; }                    // [T] float32
  const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }  // [T] float32

 protected:
  void init_noise_schedule(const NoiseScheduleConfig& config, const std::string& source);
  void check_step(int64_t step_index) const;

  torch::Tensor betas_, alphas_cumprod_, timesteps_;
};

class DPMSolverMultistepScheduler : public Scheduler {
 public:
  explicit DPMSolverMultistepScheduler(DPMSolverMultistepConfig config, const std::string& source = "DPMSolverMultistepScheduler");
  const char* name() const override { return "DPMSolverMultistepScheduler"; }
  std::unique_ptr<Scheduler> clone() const override { return std::make_unique<DPMSolverMultistepScheduler>(*this); }
  void set_timesteps(int64_t num_inference_steps) override;
  torch::Tensor step(const torch::Tensor& model_output, int64_t step_index, const torch::Tensor& sample) override;
  const torch::Tensor& sigmas() const { return sigmas_; }  // [n + 1] float32, last = final sigma
  const DPMSolverMultistepConfig& config() const { return config_; }

 private:
  torch::Tensor convert_model_output(const torch::Tensor& model_output, int64_t i, const torch::Tensor& sample) const;
  torch::Tensor first_order_update(const torch::Tensor& m0, int64_t i, const torch::Tensor& sample) const;
  torch::Tensor second_order_update(int64_t i, const torch::Tensor& sample) const;

  DPMSolverMultistepConfig config_;
  torch::Tensor lambda_t_;  // [T]
  torch::Tensor sigmas_;
  std::vector<torch::Tensor> model_outputs_;  // the last solver_order data predictions, newest last
  int64_t lower_order_nums_ = 0;
  int64_t next_step_ = 0;
};

class DDIMScheduler : public Scheduler {
 public:
  explicit DDIMScheduler(DDIMConfig config, const std::string& source = "DDIMScheduler");
  const char* name() const override { return "DDIMScheduler"; }
  std::unique_ptr<Scheduler> clone() const override { return std::make_unique<DDIMScheduler>(*this); }
  void set_timesteps(int64_t num_inference_steps) override;
  // eta = 0 (deterministic DDIM).
  torch::Tensor step(const torch::Tensor& model_output, int64_t step_index, const torch::Tensor& sample) override;
  const DDIMConfig& config() const { return config_; }

 private:
  DDIMConfig config_;
  torch::Tensor final_alpha_cumprod_;  // 0-d
};

class EulerDiscreteScheduler : public Scheduler {
 public:
  explicit EulerDiscreteScheduler(EulerDiscreteConfig config, const std::string& source = "EulerDiscreteScheduler");
  const char* name() const override { return "EulerDiscreteScheduler"; }
  std::unique_ptr<Scheduler> clone() const override { return std::make_unique<EulerDiscreteScheduler>(*this); }
  void set_timesteps(int64_t num_inference_steps) override;
  double init_noise_sigma() const override;
  torch::Tensor scale_model_input(const torch::Tensor& sample, int64_t step_index) const override;
  // s_churn = 0 (no noise is added).
  torch::Tensor step(const torch::Tensor& model_output, int64_t step_index, const torch::Tensor& sample) override;
  const torch::Tensor& sigmas() const { return sigmas_; }
  const EulerDiscreteConfig& config() const { return config_; }

 private:
  EulerDiscreteConfig config_;
  torch::Tensor sigmas_;  // [n + 1] float32
};

// The accepted scheduler kinds: "dpmsolver++", "ddim", "euler" (diffusers class names work too);
// the one list configs and command-line help take them from.
const std::vector<std::string>& scheduler_kinds();
// "dpmsolver++ | ddim | euler", for help texts.
std::string scheduler_kinds_text();
// Builds `kind` from a diffusers scheduler config, as `<Class>.from_config(config)` does: keys the
// file has override the class defaults, the rest stay at the class defaults (so SD-1.5's PNDM file
// gives DPM-Solver++ linspace spacing, as Arc2Face ends up with). An empty kind uses the file's
// "_class_name". Unknown kinds and unsupported values are errors naming `source` and the value.
std::unique_ptr<Scheduler> make_scheduler(const std::string& kind, const json::Value& config, const std::string& source);
// The same from a scheduler_config.json file.
std::unique_ptr<Scheduler> load_scheduler(const std::string& kind, const std::string& path);
// `kind` with the class defaults and no file.
std::unique_ptr<Scheduler> make_scheduler(const std::string& kind);

// numpy-compatible helpers (exposed for tests): np.linspace / np.arange(float) / np.interp in float64.
std::vector<double> np_linspace(double start, double stop, int64_t num);
std::vector<double> np_arange(double start, double stop, double step);
std::vector<double> np_interp(const std::vector<double>& x, const std::vector<double>& fp);  // xp = 0..len-1

}  // namespace idsynth::generator
