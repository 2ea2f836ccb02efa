// Ref: torch/optim/sgd.py, torch/cuda/amp/grad_scaler.py, torch/cuda/random.py,
//      torch/amp/autocast_mode.py, arcface_torch/lr_scheduler.py
#include "recognition/train_optim.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include "core/check.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/log.h"

namespace idsynth::recognition {

// ---------------------------------------------------------------------------------------------
// SGD

Sgd::Sgd(std::vector<SgdParam> params, double momentum, double weight_decay)
    : params_(std::move(params)), momentum_(momentum), weight_decay_(weight_decay) {}

void Sgd::zero_grad() {
  for (auto& p : params_)
    if (p.param.grad().defined()) p.param.mutable_grad() = torch::Tensor();  // set_to_none, as PyTorch 2.x
}

void Sgd::step(double lr) {
  torch::NoGradGuard no_grad;
  for (auto& p : params_) {
    const torch::Tensor& grad = p.param.grad();
    if (!grad.defined()) continue;
    torch::Tensor d = (p.decay && weight_decay_ != 0) ? grad.add(p.param, weight_decay_) : grad;
    if (momentum_ != 0) {
      if (!p.momentum.defined()) {
        p.momentum = d.clone().detach();
      } else {
        p.momentum.mul_(momentum_).add_(d);
      }
      d = p.momentum;
    }
    p.param.add_(d, -lr);
  }
}

std::vector<SgdParam> sgd_params(torch::nn::Module& module, const std::string& prefix,
                                 const std::vector<std::string>& no_decay) {
  auto wants = [&](const char* kind) { return std::find(no_decay.begin(), no_decay.end(), kind) != no_decay.end(); };
  std::set<std::string> exempt;
  for (const auto& item : module.named_modules()) {
    const torch::nn::Module& m = *item.value();
    const bool bn = dynamic_cast<const torch::nn::BatchNorm2dImpl*>(&m) || dynamic_cast<const torch::nn::BatchNorm1dImpl*>(&m);
    const bool prelu = dynamic_cast<const torch::nn::PReLUImpl*>(&m) != nullptr;
    if ((bn && wants("bn")) || (prelu && wants("prelu")))
      for (const auto& p : m.named_parameters(false)) exempt.insert(item.key().empty() ? p.key() : item.key() + "." + p.key());
  }
  std::vector<SgdParam> out;
  for (const auto& p : module.named_parameters(true)) {
    const std::string& name = p.key();
    const bool bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    SgdParam sp;
    sp.name = prefix + name;
    sp.param = p.value();
    sp.decay = exempt.count(name) == 0 && !(bias && wants("bias"));
    out.push_back(sp);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Schedule

LrSchedule::LrSchedule(const TrainScheduleConfig& cfg, double base_lr, int64_t total_steps, int64_t steps_per_epoch)
    : cfg_(cfg), base_(base_lr), total_(total_steps), per_epoch_(steps_per_epoch) {
  warmup_ = static_cast<int64_t>(cfg.warmup_epochs * static_cast<double>(steps_per_epoch));
  IDSYNTH_CHECK(warmup_ < total_ || warmup_ == 0, "train config: schedule.warmup_epochs: expected fewer warmup steps (",
                warmup_, ") than training steps (", total_, ")");
}

double LrSchedule::lr(int64_t step) const {
  if (step < warmup_) return base_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  const double progress = static_cast<double>(step - warmup_) / static_cast<double>(std::max<int64_t>(1, total_ - warmup_));
  if (cfg_.type == "polynomial") return base_ * std::pow(std::max(0.0, 1.0 - progress), cfg_.power);
  if (cfg_.type == "cosine") return cfg_.min_lr + (base_ - cfg_.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  if (cfg_.type == "step") {
    const double epoch = static_cast<double>(step) / static_cast<double>(per_epoch_);
    double lr = base_;
    for (const auto& m : cfg_.milestones)
      if (epoch >= std::stod(m)) lr *= cfg_.gamma;
    return lr;
  }
  return base_;  // constant
}

// ---------------------------------------------------------------------------------------------
// Loss scaling

LossScaler::LossScaler(bool enabled, double init_scale, int64_t growth_interval)
    : enabled_(enabled), scale_(init_scale), interval_(growth_interval) {}

bool LossScaler::unscale(const std::vector<SgdParam>& params) const {
  if (!enabled_) return true;
  torch::NoGradGuard no_grad;
  // Per device, one flag per gradient, reduced once at the end: no host sync per tensor.
  std::vector<std::pair<c10::Device, std::vector<torch::Tensor>>> flags;
  for (const auto& p : params) {
    torch::Tensor g = p.param.mutable_grad();
    if (!g.defined()) continue;
    g.mul_(1.0 / scale_);
    auto it = std::find_if(flags.begin(), flags.end(), [&](const auto& f) { return f.first == g.device(); });
    if (it == flags.end()) it = flags.insert(flags.end(), {g.device(), {}});
    it->second.push_back(torch::isfinite(g).all());
  }
  bool finite = true;
  for (const auto& [device, f] : flags) finite = finite && torch::stack(f).all().item<bool>();
  return finite;
}

void LossScaler::update(bool finite) {
  if (!enabled_) return;
  if (!finite) {
    scale_ *= 0.5;
    tracker_ = 0;
  } else if (++tracker_ == interval_) {
    scale_ *= 2.0;
    tracker_ = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Autocast

// PyTorch 2.4 renamed the CUDA autocast switches (device type as an argument) and deprecated the old
// names; warnings are errors here, so pick by version.
namespace {
bool cuda_autocast_enabled() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}
void set_cuda_autocast(bool on) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCUDA, on);
#else
  at::autocast::set_enabled(on);
#endif
}
}  // namespace

AutocastScope::AutocastScope(bool on) : on_(on) {
  if (!on_) return;
  prev_ = cuda_autocast_enabled();
  set_cuda_autocast(true);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!on_) return;
  // Leaving the outermost scope drops the cached float16 copies of the weights, as torch.autocast.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_cuda_autocast(prev_);
}

// ---------------------------------------------------------------------------------------------
// Generator states

std::vector<std::pair<std::string, at::Tensor>> rng_states() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto state_of = [](at::Generator gen) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state();
  };
  out.emplace_back("rng.cpu", state_of(at::globalContext().defaultGenerator(c10::kCPU)));
  const size_t n_cuda = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  for (size_t i = 0; i < n_cuda; ++i)
    out.emplace_back(cat("rng.cuda.", i),
                     state_of(at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(i)))));
  return out;
}

void restore_rng_states(const TensorDict& tensors, const std::string& source) {
  auto set = [](at::Generator gen, const at::Tensor& state) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state.to(c10::kCPU).contiguous());
  };
  const at::Tensor* cpu = tensors.find("rng.cpu");
  IDSYNTH_CHECK(cpu != nullptr, source, ": tensor 'rng.cpu': expected in an idsynth training checkpoint, not found");
  set(at::globalContext().defaultGenerator(c10::kCPU), *cpu);
  const size_t n_cuda = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  const std::string prefix = "rng.cuda.";
  for (const auto& [name, state] : tensors) {
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string index = name.substr(prefix.size());
    IDSYNTH_CHECK(!index.empty() && index.find_first_not_of("0123456789") == std::string::npos, source, ": tensor '",
                  name, "': expected rng.cuda.<device index>");
    const size_t i = std::stoul(index);
    if (i >= n_cuda) {
      LOG_WRN(source, ": ", name, " not restored: this machine has ", n_cuda, " CUDA devices");
      continue;
    }
    set(at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(i))), state);
  }
}

// ---------------------------------------------------------------------------------------------
// Log

namespace {

namespace fs = std::filesystem;

std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  if (!fs::exists(path)) return rows;
  std::istringstream in(read_text_file(path));
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (header) {
      header = false;
      continue;
    }
    std::vector<std::string> cells;
    std::istringstream ls(line);
    std::string cell;
    while (std::getline(ls, cell, ',')) cells.push_back(cell);
    rows.push_back(cells);
  }
  return rows;
}

std::string fmt(double v, const char* spec = "%.6g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

}  // namespace

TrainLog::TrainLog(std::string output_dir) : dir_(std::move(output_dir)) {}

void TrainLog::reload(int64_t step) {
  rows_.clear();
  validation_.clear();
  for (const auto& c : read_csv((fs::path(dir_) / "train_log.csv").string())) {
    if (c.size() < 7 || std::stoll(c[0]) > step) continue;
    rows_.push_back({std::stoll(c[0]), std::stoll(c[1]), std::stod(c[2]), std::stod(c[3]), std::stod(c[4]),
                     std::stod(c[5]), std::stod(c[6])});
  }
  for (const auto& c : read_csv((fs::path(dir_) / "validation.csv").string())) {
    if (c.size() < 5 || std::stoll(c[0]) > step) continue;
    validation_.push_back({std::stoll(c[0]), c[1], std::stod(c[2]), std::stod(c[3]), std::stod(c[4])});
  }
}

void TrainLog::add(const LogRow& row) { rows_.push_back(row); }
void TrainLog::add(const ValidationRow& row) { validation_.push_back(row); }

void TrainLog::write() const {
  std::string csv = "step,epoch,loss,accuracy,lr,samples_per_s,elapsed_s\n";
  json::Value steps = json::Value::array();
  for (const auto& r : rows_) {
    csv += cat(r.step, ",", r.epoch, ",", fmt(r.loss, "%.8g"), ",", fmt(r.accuracy, "%.8g"), ",", fmt(r.lr, "%.8g"), ",",
               fmt(r.samples_per_s, "%.6g"), ",", fmt(r.elapsed_s, "%.6g"), "\n");
    json::Value o = json::Value::object();
    o.set("step", r.step);
    o.set("epoch", r.epoch);
    o.set("loss", r.loss);
    o.set("accuracy", r.accuracy);
    o.set("lr", r.lr);
    o.set("samples_per_s", r.samples_per_s);
    o.set("elapsed_s", r.elapsed_s);
    steps.push_back(o);
  }
  std::string vcsv = "step,name,accuracy,std,xnorm\n";
  json::Value val = json::Value::array();
  for (const auto& v : validation_) {
    vcsv += cat(v.step, ",", v.name, ",", fmt(v.accuracy, "%.8g"), ",", fmt(v.std, "%.8g"), ",", fmt(v.xnorm, "%.8g"), "\n");
    json::Value o = json::Value::object();
    o.set("step", v.step);
    o.set("name", v.name);
    o.set("accuracy", v.accuracy);
    o.set("std", v.std);
    o.set("xnorm", v.xnorm);
    val.push_back(o);
  }
  json::Value root = json::Value::object();
  root.set("steps", steps);
  root.set("validation", val);
  fs::create_directories(dir_);
  write_file_atomic((fs::path(dir_) / "train_log.csv").string(), csv);
  write_file_atomic((fs::path(dir_) / "validation.csv").string(), vcsv);
  write_file_atomic((fs::path(dir_) / "train_log.json").string(), root.dump());
  write_file_atomic((fs::path(dir_) / "loss_curve.svg").string(), loss_curve_svg(rows_));
}

std::string loss_curve_svg(const std::vector<LogRow>& rows) {
  const double W = 720, H = 360, left = 60, right = 60, top = 30, bottom = 40;
  const double pw = W - left - right, ph = H - top - bottom;
  double max_step = 1, max_loss = 1e-9;
  for (const auto& r : rows) {
    max_step = std::max(max_step, static_cast<double>(r.step));
    if (std::isfinite(r.loss)) max_loss = std::max(max_loss, r.loss);
  }
  auto x = [&](double step) { return left + pw * step / max_step; };
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << W / 2 << "\" y=\"18\" text-anchor=\"middle\">training loss (blue, left) and batch accuracy (orange, right)</text>\n"
    << "<line x1=\"" << left << "\" y1=\"" << top + ph << "\" x2=\"" << left + pw << "\" y2=\"" << top + ph << "\" stroke=\"black\"/>\n"
    << "<line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\"" << top + ph << "\" stroke=\"black\"/>\n"
    << "<line x1=\"" << left + pw << "\" y1=\"" << top << "\" x2=\"" << left + pw << "\" y2=\"" << top + ph << "\" stroke=\"black\"/>\n";
  for (int k = 0; k <= 4; ++k) {
    const double f = k / 4.0;
    s << "<text x=\"" << left - 6 << "\" y=\"" << top + ph * (1 - f) + 4 << "\" text-anchor=\"end\">" << fmt(max_loss * f, "%.3g")
      << "</text>\n<text x=\"" << left + pw + 6 << "\" y=\"" << top + ph * (1 - f) + 4 << "\">" << fmt(f, "%.2f") << "</text>\n"
      << "<text x=\"" << x(max_step * f) << "\" y=\"" << top + ph + 16 << "\" text-anchor=\"middle\">"
      << static_cast<int64_t>(max_step * f) << "</text>\n";
  }
  s << "<text x=\"" << left + pw / 2 << "\" y=\"" << H - 6 << "\" text-anchor=\"middle\">step</text>\n";
  std::ostringstream loss_pts, acc_pts;
  for (const auto& r : rows) {
    if (std::isfinite(r.loss)) loss_pts << fmt(x(static_cast<double>(r.step)), "%.1f") << "," << fmt(top + ph * (1 - r.loss / max_loss), "%.1f") << " ";
    acc_pts << fmt(x(static_cast<double>(r.step)), "%.1f") << "," << fmt(top + ph * (1 - r.accuracy), "%.1f") << " ";
  }
  s << "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"" << loss_pts.str() << "\"/>\n"
    << "<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"1.5\" points=\"" << acc_pts.str() << "\"/>\n</svg>\n";
  return s.str();
}

}  // namespace idsynth::recognition
