#include "generator/schedulers.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/log.h"
#include "generator/config_reader.h"

namespace idsynth::generator {

// =============================================================================================
// numpy-compatible float64 helpers (timesteps are computed in numpy by the reference)

std::vector<double> np_linspace(double start, double stop, int64_t num) {
  std::vector<double> y(static_cast<size_t>(std::max<int64_t>(num, 0)));
  const int64_t div = num - 1;
  const double delta = stop - start;
  if (div > 0) {
    const double step = delta / div;
    for (int64_t i = 0; i < num; ++i)
      y[static_cast<size_t>(i)] = (step == 0 ? static_cast<double>(i) / div * delta : static_cast<double>(i) * step) + start;
    y.back() = stop;  // numpy pins the endpoint
  } else {
    for (int64_t i = 0; i < num; ++i) y[static_cast<size_t>(i)] = static_cast<double>(i) * delta + start;
  }
  return y;
}

std::vector<double> np_arange(double start, double stop, double step) {
  // numpy: length ceil((stop - start) / step); element 1 is start + step, later ones
  // start + i * ((start + step) - start).
  const double len_f = std::ceil((stop - start) / step);
  const int64_t len = len_f > 0 ? static_cast<int64_t>(len_f) : 0;
  std::vector<double> y(static_cast<size_t>(len));
  if (len > 0) y[0] = start;
  if (len > 1) y[1] = start + step;
  const double delta = (start + step) - start;
  for (int64_t i = 2; i < len; ++i) y[static_cast<size_t>(i)] = start + static_cast<double>(i) * delta;
  return y;
}

std::vector<double> np_interp(const std::vector<double>& x, const std::vector<double>& fp) {
  IDSYNTH_CHECK(!fp.empty(), "np_interp: empty table");
  const auto last = static_cast<int64_t>(fp.size()) - 1;
  std::vector<double> out;
  out.reserve(x.size());
  for (double v : x) {
    if (std::isnan(v)) {
      out.push_back(v);
    } else if (v <= 0) {
      out.push_back(fp[0]);
    } else if (v >= static_cast<double>(last)) {
      out.push_back(fp[static_cast<size_t>(last)]);
    } else {
      const auto j = static_cast<int64_t>(std::floor(v));
      // xp[j + 1] - xp[j] == 1
      const double slope = (fp[static_cast<size_t>(j) + 1] - fp[static_cast<size_t>(j)]) / 1.0;
      out.push_back(v == static_cast<double>(j) ? fp[static_cast<size_t>(j)]
                                                : slope * (v - static_cast<double>(j)) + fp[static_cast<size_t>(j)]);
    }
  }
  return out;
}

namespace {

std::vector<double> np_round(std::vector<double> v) {
  for (auto& x : v) x = std::nearbyint(x);  // round half to even, as np.round
  return v;
}

std::vector<double> to_doubles(const torch::Tensor& t) {
  auto c = t.to(torch::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

torch::Tensor int_tensor(const std::vector<double>& v) {
  std::vector<int64_t> ints(v.size());
  std::transform(v.begin(), v.end(), ints.begin(), [](double x) { return static_cast<int64_t>(x); });
  return torch::tensor(ints, torch::kLong);
}

torch::Tensor float_tensor(const std::vector<double>& v) {
  return torch::tensor(v, torch::kDouble).to(torch::kFloat);
}

void check_one_of(const std::string& value, std::initializer_list<const char*> accepted, const std::string& source,
                  const char* field) {
  std::string list;
  for (const char* a : accepted) {
    if (value == a) return;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  fail(source, ": ", field, ": expected one of ", list, ", found '", value, "'");
}

void read_noise_schedule(ConfigReader& r, NoiseScheduleConfig& c) {
  r.get("num_train_timesteps", c.num_train_timesteps);
  r.get("beta_start", c.beta_start);
  r.get("beta_end", c.beta_end);
  r.get("beta_schedule", c.beta_schedule);
  r.get("trained_betas", c.trained_betas);
  r.get("prediction_type", c.prediction_type);
  r.get("timestep_spacing", c.timestep_spacing);
  r.get("steps_offset", c.steps_offset);
  r.get("rescale_betas_zero_snr", c.rescale_betas_zero_snr);
}

void check_noise_schedule(const NoiseScheduleConfig& c, const std::string& source) {
  IDSYNTH_CHECK(c.num_train_timesteps > 1, source, ": num_train_timesteps: expected > 1, found ", c.num_train_timesteps);
  if (c.trained_betas.empty())
    check_one_of(c.beta_schedule, {"linear", "scaled_linear", "squaredcos_cap_v2"}, source, "beta_schedule");
  else
    IDSYNTH_CHECK(static_cast<int64_t>(c.trained_betas.size()) == c.num_train_timesteps, source,
                  ": trained_betas: expected num_train_timesteps = ", c.num_train_timesteps, " values, found ",
                  c.trained_betas.size());
  check_one_of(c.prediction_type, {"epsilon", "sample", "v_prediction"}, source, "prediction_type");
  check_one_of(c.timestep_spacing, {"linspace", "leading", "trailing"}, source, "timestep_spacing");
  IDSYNTH_CHECK(!c.rescale_betas_zero_snr, source, ": rescale_betas_zero_snr: expected false (not implemented), found true");
}

// Scalars of the update formulas stay 0-d float32 tensors: the same kernels as the reference.
struct AlphaSigma {
  torch::Tensor alpha, sigma;
};
AlphaSigma alpha_sigma(const torch::Tensor& sigma) {
  auto alpha = torch::pow(torch::pow(sigma, 2) + 1, 0.5).reciprocal();
  return {alpha, sigma * alpha};
}
torch::Tensor lambda_of(const AlphaSigma& as) { return torch::log(as.alpha) - torch::log(as.sigma); }

}  // namespace

// =============================================================================================
// Scheduler base

void Scheduler::init_noise_schedule(const NoiseScheduleConfig& c, const std::string& source) {
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  if (!c.trained_betas.empty()) {
    betas_ = torch::tensor(c.trained_betas, torch::kDouble).to(torch::kFloat);
  } else if (c.beta_schedule == "linear") {
    betas_ = torch::linspace(c.beta_start, c.beta_end, c.num_train_timesteps, f32);
  } else if (c.beta_schedule == "scaled_linear") {
    // Latent diffusion's schedule: linear in sqrt(beta).
    betas_ = torch::pow(torch::linspace(std::sqrt(c.beta_start), std::sqrt(c.beta_end), c.num_train_timesteps, f32), 2);
  } else if (c.beta_schedule == "squaredcos_cap_v2") {
    // Glide cosine schedule (betas_for_alpha_bar, max_beta 0.999), in float64 like Python.
    auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2); };
    std::vector<double> b;
    const auto n = static_cast<double>(c.num_train_timesteps);
    for (int64_t i = 0; i < c.num_train_timesteps; ++i)
      b.push_back(std::min(1 - alpha_bar((static_cast<double>(i) + 1) / n) / alpha_bar(static_cast<double>(i) / n), 0.999));
    betas_ = torch::tensor(b, torch::kDouble).to(torch::kFloat);
  } else {
    fail(source, ": beta_schedule: unsupported '", c.beta_schedule, "'");
  }
  alphas_cumprod_ = torch::cumprod(1.0 - betas_, 0);
}

void Scheduler::check_step(int64_t step_index) const {
  IDSYNTH_CHECK(num_inference_steps() > 0, name(), ": step() before set_timesteps()");
  IDSYNTH_CHECK(step_index >= 0 && step_index < num_inference_steps(), name(), ": step index ", step_index,
                " out of range [0, ", num_inference_steps(), ")");
}

torch::Tensor Scheduler::step_at_timestep(const torch::Tensor& model_output, double timestep, const torch::Tensor& sample) {
  const auto ts = to_doubles(timesteps_);
  std::vector<int64_t> matches;
  for (size_t i = 0; i < ts.size(); ++i)
    if (ts[i] == timestep) matches.push_back(static_cast<int64_t>(i));
  const int64_t index = matches.empty() ? num_inference_steps() - 1 : matches[matches.size() > 1 ? 1 : 0];
  return step(model_output, index, sample);
}

bool Scheduler::needs_step_noise() const {
  for (int64_t i = 0; i < num_inference_steps(); ++i)
    if (step_needs_noise(i)) return true;
  return false;
}

torch::Tensor Scheduler::step_with_noise(const torch::Tensor& model_output, int64_t step_index, const torch::Tensor& sample,
                                         const torch::Tensor& noise) {
  // A deterministic scheduler given noise means the caller's loop is wrong; say so rather than
  // silently dropping random numbers the caller thinks it used.
  IDSYNTH_CHECK(!noise.defined(), name(), ": step ", step_index, " takes no noise (a deterministic scheduler)");
  return step(model_output, step_index, sample);
}

// =============================================================================================
// DPM-Solver++ multistep

DPMSolverMultistepConfig DPMSolverMultistepConfig::from_json(const json::Value& root, const std::string& source) {
  DPMSolverMultistepConfig c;
  ConfigReader r(root, source);
  read_noise_schedule(r, c);
  r.get("solver_order", c.solver_order);
  r.get("thresholding", c.thresholding);
  r.get("dynamic_thresholding_ratio", c.dynamic_thresholding_ratio);
  r.get("sample_max_value", c.sample_max_value);
  r.get("algorithm_type", c.algorithm_type);
  r.get("solver_type", c.solver_type);
  r.get("lower_order_final", c.lower_order_final);
  r.get("euler_at_final", c.euler_at_final);
  r.get("use_karras_sigmas", c.use_karras_sigmas);
  r.get("use_lu_lambdas", c.use_lu_lambdas);
  r.get("final_sigmas_type", c.final_sigmas_type);
  r.get("lambda_min_clipped", c.lambda_min_clipped);
  r.get("variance_type", c.variance_type);
  r.finish("DPMSolverMultistepScheduler");
  // diffusers maps these aliases when it builds the scheduler.
  if (c.algorithm_type == "deis") c.algorithm_type = "dpmsolver++";
  if (c.solver_type == "logrho" || c.solver_type == "bh1" || c.solver_type == "bh2") c.solver_type = "midpoint";
  c.check(source);
  return c;
}

void DPMSolverMultistepConfig::check(const std::string& source) const {
  check_noise_schedule(*this, source);
  IDSYNTH_CHECK(algorithm_type == "dpmsolver++", source, ": algorithm_type: expected dpmsolver++ (the only one implemented; ",
                "dpmsolver, sde-dpmsolver and sde-dpmsolver++ are not), found '", algorithm_type, "'");
  check_one_of(solver_type, {"midpoint", "heun"}, source, "solver_type");
  IDSYNTH_CHECK(solver_order == 1 || solver_order == 2, source,
                ": solver_order: expected 1 or 2 (third order is not implemented), found ", solver_order);
  IDSYNTH_CHECK(!thresholding, source, ": thresholding: expected false (not implemented), found true");
  IDSYNTH_CHECK(!use_karras_sigmas, source, ": use_karras_sigmas: expected false (not implemented), found true");
  IDSYNTH_CHECK(!use_lu_lambdas, source, ": use_lu_lambdas: expected false (not implemented), found true");
  check_one_of(final_sigmas_type, {"zero", "sigma_min"}, source, "final_sigmas_type");
  IDSYNTH_CHECK(!variance_type.has_value(), source, ": variance_type: expected null (learned variances are not implemented), found '",
                variance_type.value_or(""), "'");
}

DPMSolverMultistepScheduler::DPMSolverMultistepScheduler(DPMSolverMultistepConfig config, const std::string& source)
    : config_(std::move(config)) {
  config_.check(source);
  init_noise_schedule(config_, source);
  lambda_t_ = torch::log(torch::sqrt(alphas_cumprod_)) - torch::log(torch::sqrt(1 - alphas_cumprod_));
}

void DPMSolverMultistepScheduler::set_timesteps(int64_t n) {
  IDSYNTH_CHECK(n >= 1, name(), ": num_inference_steps: expected >= 1, found ", n);
  const int64_t train = config_.num_train_timesteps;
  // 1. timesteps (numpy float64, then int64), clipped where lambda(t) < lambda_min_clipped
  int64_t clipped = 0;
  for (double l : to_doubles(lambda_t_.flip(0)))
    if (static_cast<float>(l) < static_cast<float>(config_.lambda_min_clipped)) ++clipped;
  const int64_t last_timestep = train - clipped;
  std::vector<double> ts;
  if (config_.timestep_spacing == "linspace") {
    ts = np_round(np_linspace(0, static_cast<double>(last_timestep - 1), n + 1));
    std::reverse(ts.begin(), ts.end());
    ts.pop_back();
  } else if (config_.timestep_spacing == "leading") {
    const int64_t ratio = last_timestep / (n + 1);
    for (int64_t i = n; i >= 1; --i) ts.push_back(static_cast<double>(i * ratio + config_.steps_offset));
  } else {  // trailing
    ts = np_round(np_arange(static_cast<double>(last_timestep), 0, -static_cast<double>(train) / static_cast<double>(n)));
    for (auto& t : ts) t -= 1;
  }
  IDSYNTH_CHECK(!ts.empty(), name(), ": no timesteps for ", n, " steps");
  // 2. sigmas at those timesteps (float32 table, interpolated in float64), then the final sigma
  auto table = torch::pow((1 - alphas_cumprod_) / alphas_cumprod_, 0.5);
  auto sig = np_interp(ts, to_doubles(table));
  sig.push_back(config_.final_sigmas_type == "zero" ? 0.0 : to_doubles(table.slice(0, 0, 1))[0]);
  sigmas_ = float_tensor(sig);
  timesteps_ = int_tensor(ts);
  model_outputs_.assign(static_cast<size_t>(config_.solver_order), torch::Tensor());
  lower_order_nums_ = 0;
  next_step_ = 0;
}

torch::Tensor DPMSolverMultistepScheduler::convert_model_output(const torch::Tensor& model_output, int64_t i,
                                                                const torch::Tensor& sample) const {
  // DPM-Solver++ works with the data prediction x0 (Lu et al. 2022, arXiv:2211.01095, eq. 8).
  if (config_.prediction_type == "sample") return model_output;
  const auto as = alpha_sigma(sigmas_[i]);
  if (config_.prediction_type == "epsilon") return (sample - as.sigma * model_output) / as.alpha;
  return as.alpha * sample - as.sigma * model_output;  // v_prediction
}

torch::Tensor DPMSolverMultistepScheduler::first_order_update(const torch::Tensor& m0, int64_t i, const torch::Tensor& sample) const {
  // DPM-Solver++(1) = DDIM in data-prediction form (arXiv:2211.01095, eq. 10).
  const auto t = alpha_sigma(sigmas_[i + 1]);
  const auto s = alpha_sigma(sigmas_[i]);
  const auto h = lambda_of(t) - lambda_of(s);
  return (t.sigma / s.sigma) * sample - (t.alpha * (torch::exp(-h) - 1.0)) * m0;
}

torch::Tensor DPMSolverMultistepScheduler::second_order_update(int64_t i, const torch::Tensor& sample) const {
  // Multistep DPM-Solver++(2M) (arXiv:2211.01095, Algorithm 2), midpoint or Heun form of D1.
  const auto t = alpha_sigma(sigmas_[i + 1]);
  const auto s0 = alpha_sigma(sigmas_[i]);
  const auto s1 = alpha_sigma(sigmas_[i - 1]);
  const auto lambda_t = lambda_of(t), lambda_s0 = lambda_of(s0), lambda_s1 = lambda_of(s1);
  const auto& m0 = model_outputs_[model_outputs_.size() - 1];
  const auto& m1 = model_outputs_[model_outputs_.size() - 2];
  const auto h = lambda_t - lambda_s0, h0 = lambda_s0 - lambda_s1;
  const auto r0 = h0 / h;
  const auto& d0 = m0;
  const auto d1 = r0.reciprocal() * (m0 - m1);
  const auto phi = t.alpha * (torch::exp(-h) - 1.0);
  if (config_.solver_type == "midpoint") return (t.sigma / s0.sigma) * sample - phi * d0 - 0.5 * phi * d1;
  return (t.sigma / s0.sigma) * sample - phi * d0 + (t.alpha * ((torch::exp(-h) - 1.0) / h + 1.0)) * d1;  // heun
}

torch::Tensor DPMSolverMultistepScheduler::step(const torch::Tensor& model_output, int64_t i, const torch::Tensor& sample) {
  check_step(i);
  IDSYNTH_CHECK(i == 0 || i == next_step_, name(), ": steps must run in order: expected step ", next_step_, ", found ", i);
  if (i == 0) {
    model_outputs_.assign(static_cast<size_t>(config_.solver_order), torch::Tensor());
    lower_order_nums_ = 0;
  }
  const int64_t n = num_inference_steps();
  // 1. order of this step: first order at the start, and at the end when asked (or forced by a zero final sigma)
  const bool lower_order_final =
      i == n - 1 && (config_.euler_at_final || (config_.lower_order_final && n < 15) || config_.final_sigmas_type == "zero");
  // 2. data prediction in float32, history shifted
  const auto x = sample.to(torch::kFloat);
  const auto m0 = convert_model_output(model_output.to(torch::kFloat), i, x);
  std::rotate(model_outputs_.begin(), model_outputs_.begin() + 1, model_outputs_.end());
  model_outputs_.back() = m0;
  // 3. update
  torch::Tensor prev;
  // (diffusers' lower_order_second only matters for third order, which is not implemented.)
  if (config_.solver_order == 1 || lower_order_nums_ < 1 || lower_order_final) {
    prev = first_order_update(m0, i, x);
  } else {
    prev = second_order_update(i, x);
  }
  lower_order_nums_ = std::min(lower_order_nums_ + 1, config_.solver_order);
  next_step_ = i + 1;
  return prev.to(sample.scalar_type());
}

// =============================================================================================
// DDIM (eta = 0)

DDIMConfig DDIMConfig::from_json(const json::Value& root, const std::string& source) {
  DDIMConfig c;
  ConfigReader r(root, source);
  read_noise_schedule(r, c);
  r.get("clip_sample", c.clip_sample);
  r.get("set_alpha_to_one", c.set_alpha_to_one);
  r.get("thresholding", c.thresholding);
  r.get("dynamic_thresholding_ratio", c.dynamic_thresholding_ratio);
  r.get("clip_sample_range", c.clip_sample_range);
  r.get("sample_max_value", c.sample_max_value);
  r.finish("DDIMScheduler");
  c.check(source);
  return c;
}

void DDIMConfig::check(const std::string& source) const {
  check_noise_schedule(*this, source);
  IDSYNTH_CHECK(!thresholding, source, ": thresholding: expected false (not implemented), found true");
}

DDIMScheduler::DDIMScheduler(DDIMConfig config, const std::string& source) : config_(std::move(config)) {
  config_.check(source);
  init_noise_schedule(config_, source);
  // The "previous" alpha of the last step: 1 (clean image) or alphas_cumprod[0], per the config.
  final_alpha_cumprod_ = config_.set_alpha_to_one ? torch::tensor(1.0f) : alphas_cumprod_[0].clone();
}

void DDIMScheduler::set_timesteps(int64_t n) {
  const int64_t train = config_.num_train_timesteps;
  IDSYNTH_CHECK(n >= 1 && n <= train, name(), ": num_inference_steps: expected 1..", train, ", found ", n);
  std::vector<double> ts;
  if (config_.timestep_spacing == "linspace") {
    ts = np_round(np_linspace(0, static_cast<double>(train - 1), n));
    std::reverse(ts.begin(), ts.end());
  } else if (config_.timestep_spacing == "leading") {
    const int64_t ratio = train / n;
    for (int64_t i = n - 1; i >= 0; --i) ts.push_back(static_cast<double>(i * ratio + config_.steps_offset));
  } else {  // trailing
    ts = np_round(np_arange(static_cast<double>(train), 0, -static_cast<double>(train) / static_cast<double>(n)));
    for (auto& t : ts) t -= 1;
  }
  timesteps_ = int_tensor(ts);
}

torch::Tensor DDIMScheduler::step(const torch::Tensor& model_output, int64_t i, const torch::Tensor& sample) {
  // Song et al. 2020 (arXiv:2010.02502) eq. 12 with sigma_t = 0.
  check_step(i);
  const int64_t t = timesteps_[i].item<int64_t>();
  const int64_t prev_t = t - config_.num_train_timesteps / num_inference_steps();
  IDSYNTH_CHECK(t >= 0 && t < config_.num_train_timesteps, name(), ": timestep ", t, " out of range");
  // 1. alphas of this and the previous timestep
  const auto alpha_prod_t = alphas_cumprod_[t];
  const auto alpha_prod_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : final_alpha_cumprod_;
  const auto beta_prod_t = 1 - alpha_prod_t;
  // 2. predicted x0 and epsilon (float32)
  const auto x = sample.to(torch::kFloat);
  const auto out = model_output.to(torch::kFloat);
  torch::Tensor x0, eps;
  if (config_.prediction_type == "epsilon") {
    x0 = (x - torch::pow(beta_prod_t, 0.5) * out) / torch::pow(alpha_prod_t, 0.5);
    eps = out;
  } else if (config_.prediction_type == "sample") {
    x0 = out;
    eps = (x - torch::pow(alpha_prod_t, 0.5) * x0) / torch::pow(beta_prod_t, 0.5);
  } else {  // v_prediction
    x0 = torch::pow(alpha_prod_t, 0.5) * x - torch::pow(beta_prod_t, 0.5) * out;
    eps = torch::pow(alpha_prod_t, 0.5) * out + torch::pow(beta_prod_t, 0.5) * x;
  }
  if (config_.clip_sample) x0 = x0.clamp(-config_.clip_sample_range, config_.clip_sample_range);
  // 3. direction pointing to x_t, and x_{t-1}
  const auto direction = torch::pow(1 - alpha_prod_prev, 0.5) * eps;
  return (torch::pow(alpha_prod_prev, 0.5) * x0 + direction).to(sample.scalar_type());
}

// =============================================================================================
// Euler discrete

EulerDiscreteConfig EulerDiscreteConfig::from_json(const json::Value& root, const std::string& source) {
  EulerDiscreteConfig c;
  ConfigReader r(root, source);
  read_noise_schedule(r, c);
  r.get("interpolation_type", c.interpolation_type);
  r.get("use_karras_sigmas", c.use_karras_sigmas);
  r.get("timestep_type", c.timestep_type);
  r.get("final_sigmas_type", c.final_sigmas_type);
  r.skip({"sigma_min", "sigma_max"});  // used by Karras sigmas only
  r.finish("EulerDiscreteScheduler");
  c.check(source);
  return c;
}

void EulerDiscreteConfig::check(const std::string& source) const {
  check_noise_schedule(*this, source);
  IDSYNTH_CHECK(interpolation_type == "linear", source,
                ": interpolation_type: expected linear (log_linear is not implemented), found '", interpolation_type, "'");
  IDSYNTH_CHECK(!use_karras_sigmas, source, ": use_karras_sigmas: expected false (not implemented), found true");
  IDSYNTH_CHECK(timestep_type == "discrete", source, ": timestep_type: expected discrete (continuous is not implemented), found '",
                timestep_type, "'");
  check_one_of(final_sigmas_type, {"zero", "sigma_min"}, source, "final_sigmas_type");
}

EulerDiscreteScheduler::EulerDiscreteScheduler(EulerDiscreteConfig config, const std::string& source)
    : config_(std::move(config)) {
  config_.check(source);
  init_noise_schedule(config_, source);
}

void EulerDiscreteScheduler::set_timesteps(int64_t n) {
  const int64_t train = config_.num_train_timesteps;
  IDSYNTH_CHECK(n >= 1, name(), ": num_inference_steps: expected >= 1, found ", n);
  // 1. timesteps: float32 values (linspace spacing gives fractional ones)
  std::vector<double> ts;
  if (config_.timestep_spacing == "linspace") {
    ts = np_linspace(0, static_cast<double>(train - 1), n);
    std::reverse(ts.begin(), ts.end());
  } else if (config_.timestep_spacing == "leading") {
    const int64_t ratio = train / n;
    for (int64_t i = n - 1; i >= 0; --i) ts.push_back(static_cast<double>(i * ratio));
  } else {  // trailing
    ts = np_round(np_arange(static_cast<double>(train), 0, -static_cast<double>(train) / static_cast<double>(n)));
  }
  for (auto& t : ts) t = static_cast<double>(static_cast<float>(t));  // .astype(np.float32)
  if (config_.timestep_spacing == "leading")
    for (auto& t : ts) t = static_cast<double>(static_cast<float>(t) + static_cast<float>(config_.steps_offset));
  if (config_.timestep_spacing == "trailing")
    for (auto& t : ts) t = static_cast<double>(static_cast<float>(t) - 1.0f);
  // 2. sigmas interpolated at the timesteps, then the final sigma
  auto table = torch::pow((1 - alphas_cumprod_) / alphas_cumprod_, 0.5);
  auto sig = np_interp(ts, to_doubles(table));
  sig.push_back(config_.final_sigmas_type == "zero" ? 0.0 : to_doubles(table.slice(0, 0, 1))[0]);
  sigmas_ = float_tensor(sig);
  timesteps_ = float_tensor(ts);
}

double EulerDiscreteScheduler::init_noise_sigma() const {
  IDSYNTH_CHECK(sigmas_.defined(), name(), ": init_noise_sigma() before set_timesteps()");
  const auto max_sigma = sigmas_.max();
  if (config_.timestep_spacing == "linspace" || config_.timestep_spacing == "trailing") return max_sigma.item<double>();
  return torch::pow(torch::pow(max_sigma, 2) + 1, 0.5).item<double>();
}

torch::Tensor EulerDiscreteScheduler::scale_model_input(const torch::Tensor& sample, int64_t i) const {
  check_step(i);
  // Karras et al. 2022 c_in: the UNet expects unit-variance input.
  return sample / torch::pow(torch::pow(sigmas_[i], 2) + 1, 0.5).to(sample.scalar_type());
}

torch::Tensor EulerDiscreteScheduler::step(const torch::Tensor& model_output, int64_t i, const torch::Tensor& sample) {
  // Karras et al. 2022 (arXiv:2206.00364) Algorithm 2 with s_churn = 0 (gamma = 0, sigma_hat = sigma).
  check_step(i);
  const auto x = sample.to(torch::kFloat);
  const auto out = model_output.to(torch::kFloat);
  const auto sigma_hat = sigmas_[i] * 1.0;
  torch::Tensor x0;
  if (config_.prediction_type == "epsilon") {
    x0 = x - sigma_hat * out;
  } else if (config_.prediction_type == "sample") {
    x0 = out;
  } else {  // v_prediction
    x0 = out * (-sigmas_[i] / torch::pow(torch::pow(sigmas_[i], 2) + 1, 0.5)) + (x / (torch::pow(sigmas_[i], 2) + 1));
  }
  const auto derivative = (x - x0) / sigma_hat;
  const auto dt = sigmas_[i + 1] - sigma_hat;
  return (x + derivative * dt).to(sample.scalar_type());
}

// =============================================================================================
// LCM

LCMConfig LCMConfig::from_json(const json::Value& root, const std::string& source) {
  LCMConfig c;
  ConfigReader r(root, source);
  read_noise_schedule(r, c);
  r.get("original_inference_steps", c.original_inference_steps);
  r.get("clip_sample", c.clip_sample);
  r.get("clip_sample_range", c.clip_sample_range);
  r.get("set_alpha_to_one", c.set_alpha_to_one);
  r.get("thresholding", c.thresholding);
  r.get("dynamic_thresholding_ratio", c.dynamic_thresholding_ratio);
  r.get("sample_max_value", c.sample_max_value);
  r.get("timestep_scaling", c.timestep_scaling);
  r.finish("LCMScheduler");
  c.check(source);
  return c;
}

void LCMConfig::check(const std::string& source) const {
  check_noise_schedule(*this, source);
  IDSYNTH_CHECK(original_inference_steps >= 1 && original_inference_steps <= num_train_timesteps, source,
                ": original_inference_steps: expected 1..", num_train_timesteps, " (num_train_timesteps), found ",
                original_inference_steps);
  IDSYNTH_CHECK(!thresholding, source, ": thresholding: expected false (not implemented), found true");
}

LCMScheduler::LCMScheduler(LCMConfig config, const std::string& source) : config_(std::move(config)) {
  config_.check(source);
  init_noise_schedule(config_, source);
  // Only reached for a negative previous timestep, which LCM's own schedule never produces; kept
  // for the same meaning of set_alpha_to_one as DDIM.
  final_alpha_cumprod_ = config_.set_alpha_to_one ? torch::tensor(1.0f) : alphas_cumprod_[0].clone();
}

void LCMScheduler::set_timesteps(int64_t n) {
  const int64_t original = config_.original_inference_steps;
  // diffusers refuses n > original_inference_steps (the schedule is a subset of that grid); n = 0
  // is a division by zero there.
  IDSYNTH_CHECK(n >= 1 && n <= original, name(), ": num_inference_steps: expected 1..", original,
                " (original_inference_steps; LCM samples in 2-8 steps), found ", n);
  // 1. the distillation grid, descending: (original - j) * k - 1 for j = 0..original-1
  const int64_t k = config_.num_train_timesteps / original;
  // 2. n indices floor(linspace(0, original, n, endpoint=False)): numpy computes i * (original / n)
  std::vector<double> ts;
  const double stride = static_cast<double>(original) / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const auto j = static_cast<int64_t>(std::floor(static_cast<double>(i) * stride));
    ts.push_back(static_cast<double>((original - j) * k - 1));
  }
  timesteps_ = int_tensor(ts);
  denoised_ = torch::Tensor();
}

bool LCMScheduler::step_needs_noise(int64_t step_index) const {
  // Noise re-enters between steps only; the last step (and so one-step sampling) returns denoised.
  return step_index >= 0 && step_index < num_inference_steps() - 1;
}

std::pair<torch::Tensor, torch::Tensor> LCMScheduler::boundary_scalings(int64_t i) const {
  check_step(i);
  // diffusers computes these on the 0-d int64 timestep tensor: `t * timestep_scaling` promotes to
  // float32, and `0.25 / x` is reciprocal(x) * 0.25 in torch; the same ops keep it bit-exact.
  const double sigma_data_sq = 0.5 * 0.5;
  const auto scaled = timesteps_[i] * config_.timestep_scaling;
  const auto denom = torch::pow(scaled, 2) + sigma_data_sq;
  const auto c_skip = denom.reciprocal() * sigma_data_sq;
  const auto c_out = scaled / torch::pow(denom, 0.5);
  return {c_skip, c_out};
}

torch::Tensor LCMScheduler::step(const torch::Tensor& model_output, int64_t i, const torch::Tensor& sample) {
  check_step(i);
  IDSYNTH_CHECK(!step_needs_noise(i), name(), ": step ", i, " of ", num_inference_steps(),
                " adds noise: call step_with_noise with a standard normal tensor");
  return step_with_noise(model_output, i, sample, torch::Tensor());
}

torch::Tensor LCMScheduler::step_with_noise(const torch::Tensor& model_output, int64_t i, const torch::Tensor& sample,
                                            const torch::Tensor& noise) {
  check_step(i);
  const bool noisy = step_needs_noise(i);
  IDSYNTH_CHECK(noise.defined() == noisy, name(), ": step ", i, " of ", num_inference_steps(),
                noisy ? ": expected noise, found none" : ": the last step takes no noise, found a noise tensor");
  if (noisy)
    IDSYNTH_CHECK(noise.sizes() == sample.sizes(), name(), ": noise: expected the sample's shape ", sample.sizes(), ", found ",
                  noise.sizes());
  // 1. alphas of this timestep and the next one in the schedule (the last step uses its own)
  const int64_t t = timesteps_[i].item<int64_t>();
  const int64_t prev_t = i + 1 < num_inference_steps() ? timesteps_[i + 1].item<int64_t>() : t;
  IDSYNTH_CHECK(t >= 0 && t < config_.num_train_timesteps, name(), ": timestep ", t, " out of range");
  const auto alpha_prod_t = alphas_cumprod_[t];
  const auto alpha_prod_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : final_alpha_cumprod_;
  const auto beta_prod_t = 1 - alpha_prod_t;
  const auto beta_prod_prev = 1 - alpha_prod_prev;
  // 2. boundary-condition scalings (consistency models: c_skip(0) = 1, c_out(0) = 0)
  const auto [c_skip, c_out] = boundary_scalings(i);
  // 3. predicted x0 (float32)
  const auto x = sample.to(torch::kFloat);
  const auto out = model_output.to(torch::kFloat);
  torch::Tensor x0;
  if (config_.prediction_type == "epsilon") {
    x0 = (x - beta_prod_t.sqrt() * out) / alpha_prod_t.sqrt();
  } else if (config_.prediction_type == "sample") {
    x0 = out;
  } else {  // v_prediction
    x0 = alpha_prod_t.sqrt() * x - beta_prod_t.sqrt() * out;
  }
  if (config_.clip_sample) x0 = x0.clamp(-config_.clip_sample_range, config_.clip_sample_range);
  // 4. the consistency function's estimate, then re-noised to the next timestep between steps
  denoised_ = c_out * x0 + c_skip * x;
  if (!noisy) return denoised_.to(sample.scalar_type());
  const auto z = noise.to(x.device(), torch::kFloat);
  return (alpha_prod_prev.sqrt() * denoised_ + beta_prod_prev.sqrt() * z).to(sample.scalar_type());
}

// =============================================================================================
// Factory

namespace {
// The one list of schedulers: idsynth's name, another accepted spelling, diffusers' class name.
struct SchedulerKind {
  const char* name;
  const char* alias;
  const char* diffusers_class;
};
constexpr SchedulerKind kSchedulerKinds[] = {
    {"dpmsolver++", "dpm", "DPMSolverMultistepScheduler"},
    {"ddim", "ddim", "DDIMScheduler"},
    {"euler", "euler", "EulerDiscreteScheduler"},
    {"lcm", "lcm", "LCMScheduler"},
};

std::string canonical_kind(const std::string& kind, const std::string& source) {
  std::string names, classes;
  for (const auto& k : kSchedulerKinds) {
    if (kind == k.name || kind == k.alias || kind == k.diffusers_class) return k.name;
    names += cat(names.empty() ? "" : ", ", k.name);
    classes += cat(classes.empty() ? "" : ", ", k.diffusers_class);
  }
  fail(source, ": scheduler '", kind, "' is not supported: expected one of ", names, " (or the diffusers class names ",
       classes, ")");
}
}  // namespace

const std::vector<std::string>& scheduler_kinds() {
  static const std::vector<std::string> kinds = [] {
    std::vector<std::string> v;
    for (const auto& k : kSchedulerKinds) v.emplace_back(k.name);
    return v;
  }();
  return kinds;
}

std::string scheduler_kinds_text() {
  std::string text;
  for (const auto& k : scheduler_kinds()) text += (text.empty() ? "" : " | ") + k;
  return text;
}

std::unique_ptr<Scheduler> make_scheduler(const std::string& kind, const json::Value& config, const std::string& source) {
  std::string k = kind;
  if (k.empty()) {
    const json::Value* cls = config.find("_class_name");
    IDSYNTH_CHECK(cls != nullptr && cls->is_string(), source,
                  ": _class_name: expected a scheduler class name when no scheduler kind is given");
    k = cls->as_string();
  }
  k = canonical_kind(k, source);
  std::unique_ptr<Scheduler> s;
  if (k == "dpmsolver++") s = std::make_unique<DPMSolverMultistepScheduler>(DPMSolverMultistepConfig::from_json(config, source), source);
  else if (k == "ddim") s = std::make_unique<DDIMScheduler>(DDIMConfig::from_json(config, source), source);
  else if (k == "euler") s = std::make_unique<EulerDiscreteScheduler>(EulerDiscreteConfig::from_json(config, source), source);
  else s = std::make_unique<LCMScheduler>(LCMConfig::from_json(config, source), source);
  LOG_DBG("scheduler ", s->name(), " from ", source);
  return s;
}

std::unique_ptr<Scheduler> load_scheduler(const std::string& kind, const std::string& path) {
  return make_scheduler(kind, json::parse_file(path), path);
}

std::unique_ptr<Scheduler> make_scheduler(const std::string& kind) {
  return make_scheduler(kind, json::Value::object(), cat("<", kind, " defaults>"));
}

}  // namespace idsynth::generator
