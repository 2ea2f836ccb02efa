// Diffusion schedulers of diffusers 0.29.2, built from a `scheduler_config.json`:
// DPM-Solver++ multistep (Arc2Face's sampler), DDIM (eta 0), Euler discrete and LCM (the
// latent-consistency sampler of Arc2Face's LCM-LoRA mode).
// All update arithmetic runs in float32 (0-d float32 tensors for the scalars, in the reference's
// order of operations, so results match diffusers bit for bit on the CPU), whatever the dtype of
// the sample; the result is cast back to the sample's dtype.
// Ref: diffusers/schedulers/scheduling_dpmsolver_multistep.py (DPMSolverMultistepScheduler),
//      scheduling_ddim.py (DDIMScheduler), scheduling_euler_discrete.py (EulerDiscreteScheduler),
//      scheduling_lcm.py (LCMScheduler).
#pragma once

#include <torch/types.h>

#include <limits>
#include <memory>
#include <optional>
#include <utility>
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

// LCMScheduler's keys. timestep_spacing is read (diffusers stores it) but LCM's schedule does not
// use it: the timesteps always come from the original_inference_steps grid.
struct LCMConfig : NoiseScheduleConfig {
  int64_t original_inference_steps = 50;  // the distillation grid: t = k * (T / 50) - 1
  bool clip_sample = false;
  double clip_sample_range = 1.0;
  bool set_alpha_to_one = true;
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  double timestep_scaling = 10.0;  // t is multiplied by this in c_skip / c_out
  LCMConfig() {
    beta_start = 0.00085;
    beta_end = 0.012;
    beta_schedule = "scaled_linear";
    timestep_spacing = "leading";
  }

  static LCMConfig from_json(const json::Value& root, const std::string& source);
  void check(const std::string& source) const;
};

// One denoising schedule. Usage as in diffusers:
//   s->set_timesteps(n); x = noise * s->init_noise_sigma();
//   for i in 0..n-1: x = s->step(unet(s->scale_model_input(x, i), s->timesteps()[i]), i, x);
// A scheduler keeps per-run state (DPM's history): use one per concurrent run (clone()).
// Stochastic schedulers (LCM) add fresh Gaussian noise between steps. A scheduler holds no random
// generator: the caller draws that noise, so it decides which generator's stream it continues
// (diffusers passes the pipeline's `generator` to step()). Such a step is
//   x = s->step_needs_noise(i) ? s->step_with_noise(out, i, x, randn(x.sizes(), gen)) : s->step(out, i, x);
// Deterministic schedulers never need noise, so their callers and results are unchanged.
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
  // Whether step `step_index` consumes noise (after set_timesteps()); false for every step of the
  // deterministic schedulers.
  virtual bool step_needs_noise(int64_t step_index) const { return false; }
  // Whether any step of the current schedule consumes noise.
  bool needs_step_noise() const;
  // step() given that noise: float32 standard normal, the sample's shape. Deterministic
  // schedulers accept only an undefined tensor (then it is step()).
  virtual torch::Tensor step_with_noise(const torch::Tensor& model_output, int64_t step_index, const torch::Tensor& sample,
                                        const torch::Tensor& noise);

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

// Latent consistency model sampling (Luo et al. 2023, arXiv:2310.04378, Algorithm 1): each step maps
// x_t to the consistency function's estimate of x0,
//   denoised = c_out(t) * x0_pred + c_skip(t) * x_t,
// then, except after the last step, re-noises it to the next timestep:
//   x_prev = sqrt(alpha_prod_prev) * denoised + sqrt(1 - alpha_prod_prev) * noise.
// Steps 0..n-2 need noise (step_with_noise); the last returns `denoised` and takes none.
class LCMScheduler : public Scheduler {
 public:
  explicit LCMScheduler(LCMConfig config, const std::string& source = "LCMScheduler");
  const char* name() const override { return "LCMScheduler"; }
  std::unique_ptr<Scheduler> clone() const override { return std::make_unique<LCMScheduler>(*this); }
  // n in 1..original_inference_steps (an error names the range otherwise).
  void set_timesteps(int64_t num_inference_steps) override;
  bool step_needs_noise(int64_t step_index) const override;
  // Only the last step (which adds no noise); earlier ones are an error naming step_with_noise.
  torch::Tensor step(const torch::Tensor& model_output, int64_t step_index, const torch::Tensor& sample) override;
  torch::Tensor step_with_noise(const torch::Tensor& model_output, int64_t step_index, const torch::Tensor& sample,
                                const torch::Tensor& noise) override;
  // get_scalings_for_boundary_condition_discrete at timesteps()[step_index]: {c_skip, c_out},
  // 0-d float32.
  std::pair<torch::Tensor, torch::Tensor> boundary_scalings(int64_t step_index) const;
  // The `denoised` of the latest step (diffusers' LCMSchedulerOutput.denoised), float32.
  const torch::Tensor& denoised() const { return denoised_; }
  const LCMConfig& config() const { return config_; }

 private:
  LCMConfig config_;
  torch::Tensor final_alpha_cumprod_;  // 0-d
  torch::Tensor denoised_;
};

// The accepted scheduler kinds: "dpmsolver++", "ddim", "euler", "lcm" (diffusers class names work too);
// the one list configs and command-line help take them from.
const std::vector<std::string>& scheduler_kinds();
// "dpmsolver++ | ddim | euler | lcm", for help texts.
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
