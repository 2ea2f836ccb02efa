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
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <type_traits>
#include <utility>

#include "core/check.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/log.h"
#include "core/svg_chart.h"

namespace idsynth::recognition {

// ---------------------------------------------------------------------------------------------
// SGD

namespace {

// libtorch keys an optimiser's state by the parameter's TensorImpl: 1.13 by its address as text
// (c10::guts::to_string, which streams the pointer), later versions by the pointer itself. A
// template, so that only the branch of the libtorch at hand is compiled.
using StateKey = std::remove_reference_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

template <typename Key = StateKey>
Key state_key(const torch::Tensor& param) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;
    s << param.unsafeGetTensorImpl();
    return s.str();
  } else {
    return param.unsafeGetTensorImpl();
  }
}

}  // namespace

torch::optim::SGD make_sgd(const std::vector<torch::nn::Module*>& modules, const std::vector<std::string>& no_decay,
                           double momentum, double weight_decay) {
  auto wants = [&](const char* kind) { return std::find(no_decay.begin(), no_decay.end(), kind) != no_decay.end(); };
  std::vector<torch::Tensor> decayed, exempt;
  for (torch::nn::Module* module : modules) {
    std::set<std::string> exempt_names;
    for (const auto& item : module->named_modules()) {
      const torch::nn::Module& m = *item.value();
      const bool bn = dynamic_cast<const torch::nn::BatchNorm2dImpl*>(&m) || dynamic_cast<const torch::nn::BatchNorm1dImpl*>(&m);
      const bool prelu = dynamic_cast<const torch::nn::PReLUImpl*>(&m) != nullptr;
      if ((bn && wants("bn")) || (prelu && wants("prelu")))
        for (const auto& p : m.named_parameters(false))
          exempt_names.insert(item.key().empty() ? p.key() : item.key() + "." + p.key());
    }
    for (const auto& p : module->named_parameters(true)) {
      const std::string& name = p.key();
      const bool bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
      (exempt_names.count(name) == 0 && !(bias && wants("bias")) ? decayed : exempt).push_back(p.value());
    }
  }
  auto options = [&](double wd) { return torch::optim::SGDOptions(0.0).momentum(momentum).weight_decay(wd); };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, std::make_unique<torch::optim::SGDOptions>(options(weight_decay)));
  groups.emplace_back(exempt, std::make_unique<torch::optim::SGDOptions>(options(0.0)));
  return torch::optim::SGD(std::move(groups), options(weight_decay));
}

void set_lr(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

std::vector<torch::Tensor> optimizer_params(const torch::optim::Optimizer& optimizer) {
  std::vector<torch::Tensor> out;
  for (const auto& group : optimizer.param_groups()) out.insert(out.end(), group.params().begin(), group.params().end());
  return out;
}

void set_grads_to_none(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params())
      if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

torch::Tensor momentum_buffer(const torch::optim::SGD& sgd, const torch::Tensor& param) {
  const auto& state = sgd.state();
  const auto it = state.find(state_key(param));
  if (it == state.end()) return {};
  return static_cast<const torch::optim::SGDParamState&>(*it->second).momentum_buffer();
}

void set_momentum_buffer(torch::optim::SGD& sgd, const torch::Tensor& param, const torch::Tensor& buffer) {
  auto& state = sgd.state();
  if (!buffer.defined()) {
    state.erase(state_key(param));
    return;
  }
  auto s = std::make_unique<torch::optim::SGDParamState>();
  // A copy: step() updates the buffer in place.
  s->momentum_buffer(buffer.to(param.device(), param.scalar_type()).clone());
  state[state_key(param)] = std::move(s);
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

bool LossScaler::unscale(const std::vector<torch::Tensor>& params) const {
  if (!enabled_) return true;
  torch::NoGradGuard no_grad;
  // Per device, one flag per gradient, reduced once at the end: no host sync per tensor.
  std::vector<std::pair<c10::Device, std::vector<torch::Tensor>>> flags;
  for (const auto& p : params) {
    torch::Tensor g = p.mutable_grad();
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
    csv += cat(r.step, ",", r.epoch, ",", format_number("%.8g", r.loss), ",", format_number("%.8g", r.accuracy), ",", format_number("%.8g", r.lr), ",",
               format_number("%.6g", r.samples_per_s), ",", format_number("%.6g", r.elapsed_s), "\n");
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
    vcsv += cat(v.step, ",", v.name, ",", format_number("%.8g", v.accuracy), ",", format_number("%.8g", v.std), ",", format_number("%.8g", v.xnorm), "\n");
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
  // Loss on the left axis from 0 to its largest finite value; batch accuracy on the right, 0..1.
  double max_step = 1, max_loss = 1e-9;
  for (const auto& r : rows) {
    max_step = std::max(max_step, static_cast<double>(r.step));
    if (std::isfinite(r.loss)) max_loss = std::max(max_loss, r.loss);
  }
  svg::Chart chart;
  chart.css_class = "loss-curve";
  chart.title = "training loss and batch accuracy";
  chart.plot_width = 600;
  chart.plot_height = 290;
  chart.x = {"step", 0.0, max_step, svg::ticks(0.0, max_step, std::max(1.0, max_step / 4)), "%.0f"};
  chart.y = {"loss", 0.0, max_loss, svg::ticks(0.0, max_loss, max_loss / 4), "%.3g"};
  chart.y_right = svg::Axis{"batch accuracy", 0.0, 1.0, svg::ticks(0.0, 1.0, 0.25), "%.2f"};
  svg::Line loss{"loss (left axis)", svg::series_color(0), {}, {}, false};
  svg::Line accuracy{"batch accuracy (right axis)", svg::series_color(4), {}, {}, true};
  for (const auto& r : rows) {
    loss.x.push_back(static_cast<double>(r.step));
    loss.y.push_back(r.loss);
    accuracy.x.push_back(static_cast<double>(r.step));
    accuracy.y.push_back(r.accuracy);
  }
  chart.lines = {loss, accuracy};
  return svg::render(chart);
}

}  // namespace idsynth::recognition
