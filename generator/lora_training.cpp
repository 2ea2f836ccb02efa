// Ref: peft tuners/lora/layer.py (LoraLayer.update_layer, reset_lora_parameters: kaiming_uniform_
//      a = sqrt(5) on A, zeros on B; Conv2d.get_delta_weight), kohya-ss sd-scripts networks/lora.py
//      (LoRAModule: conv down [r, in, kh, kw] with the layer's kernel, up [out, r, 1, 1]; lora_unet_ /
//      lora_te_ names, .alpha; ResnetBlock2D / Downsample2D / Upsample2D as the conv targets),
//      torch.nn.init.kaiming_uniform_ (bound = sqrt(3) * gain / sqrt(fan_in)).
#include "generator/lora_training.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>

#include "core/check.h"
#include "core/log.h"
#include "core/safetensors.h"

namespace idsynth::generator {

namespace {

bool ends_with_components(const std::string& name, const std::string& suffix) {
  if (name == suffix) return true;
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
         name[name.size() - suffix.size() - 1] == '.';
}

// CLIP's attention names the projections diffusers' Attention calls to_q/to_k/to_v/to_out.0; the
// same options then train the matching layers of both components.
std::string text_encoder_target(const std::string& target) {
  if (target == "to_q") return "q_proj";
  if (target == "to_k") return "k_proj";
  if (target == "to_v") return "v_proj";
  if (target == "to_out.0") return "out_proj";
  return target;
}

// kohya's LoCon set: the convolutions inside ResnetBlock2D, Downsample2D and Upsample2D.
bool is_block_convolution(const std::string& name) {
  return name.find(".resnets.") != std::string::npos || name.find(".downsamplers.") != std::string::npos ||
         name.find(".upsamplers.") != std::string::npos;
}

std::string underscored(std::string s) {
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

}  // namespace

struct LoraAdapters::Adapter {
  std::string name;
  std::shared_ptr<torch::nn::Module> module;  // keeps `weight` alive
  at::Tensor* weight = nullptr;                // the layer's member that forward() reads
  at::Tensor base;                             // the registered parameter W0
  at::Tensor down, up;                         // A [r, in(, kh, kw)], B [out, r(, 1, 1)], float32
};

LoraAdapters::LoraAdapters(torch::nn::Module& root, std::string component, const LoraTrainOptions& options, uint64_t seed)
    : component_(std::move(component)), options_(options) {
  IDSYNTH_CHECK(component_ == "unet" || component_ == "text_encoder",
                "LoRA component: expected unet or text_encoder, found '", component_, "'");
  IDSYNTH_CHECK(options_.rank >= 1, "LoRA rank: expected a positive integer, found ", options_.rank);
  IDSYNTH_CHECK(std::isfinite(options_.alpha) && options_.alpha >= 0,
                "LoRA alpha: expected a number >= 0 (0: alpha = rank), found ", options_.alpha);
  IDSYNTH_CHECK(!options_.targets.empty() || (options_.convolutions && component_ == "unet"),
                "LoRA targets (", component_, "): expected at least one module name, found none");
  if (options_.alpha == 0) options_.alpha = static_cast<double>(options_.rank);
  const bool text = component_ == "text_encoder";
  std::vector<std::string> targets;
  for (const std::string& t : options_.targets) targets.push_back(text ? text_encoder_target(t) : t);

  // 1. the layers, in module order; every target must find at least one
  std::vector<int64_t> hits(targets.size(), 0);
  std::set<std::string> leaf_kinds;  // for the "matches nothing" message
  std::set<const torch::nn::Module*> seen;  // a module registered twice is adapted once
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    const std::string& name = item.key();
    const std::shared_ptr<torch::nn::Module>& module = item.value();
    auto* linear = dynamic_cast<torch::nn::LinearImpl*>(module.get());
    auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(module.get());
    if (linear == nullptr && conv == nullptr) continue;
    const size_t dot = name.rfind('.');
    leaf_kinds.insert(dot == std::string::npos ? name : name.substr(dot + 1));
    bool take = false;
    for (size_t i = 0; i < targets.size(); ++i) {
      if (ends_with_components(name, targets[i])) {
        ++hits[i];
        take = true;
      }
    }
    take = take || (conv != nullptr && options_.convolutions && !text && is_block_convolution(name));
    if (!take || !seen.insert(module.get()).second) continue;
    if (conv != nullptr) {
      IDSYNTH_CHECK(conv->options.groups() == 1, "LoRA target ", name, ": expected a convolution with groups 1, found ",
                    conv->options.groups());
    }
    Adapter a;
    a.name = name;
    a.module = module;
    a.weight = linear != nullptr ? &linear->weight : &conv->weight;
    a.base = *module->named_parameters(/*recurse=*/false).find("weight");
    adapters_.push_back(std::move(a));
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    if (hits[i] > 0) continue;
    std::string kinds;
    for (const std::string& k : leaf_kinds) kinds += cat(kinds.empty() ? "" : ", ", k);
    fail("LoRA target '", targets[i], "' (", component_, "): expected Linear or Conv2d layers whose names end in it, "
         "found none (the layers end in: ", kinds, ")");
  }
  IDSYNTH_CHECK(!adapters_.empty(), "LoRA (", component_, "): expected layers to adapt, found none");

  // 2. the rank fits every layer: B·A has rank at most min(out, in·kh·kw)
  int64_t too_small = 0;
  std::string first;
  for (const Adapter& a : adapters_) {
    const int64_t out = a.base.size(0), in = a.base.numel() / a.base.size(0);
    if (options_.rank <= std::min(out, in)) continue;
    if (too_small++ == 0) first = cat(a.name, " (", out, " x ", in, ")");
  }
  IDSYNTH_CHECK(too_small == 0, "LoRA rank ", options_.rank, " is larger than ", first,
                too_small > 1 ? cat(" and ", too_small - 1, " more layers") : std::string(),
                ": expected a rank of at most the layer's smaller side");

  // 3. peft's initialisation, then only the adapters train
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const double a_neg = std::sqrt(5.0);
  const double gain = std::sqrt(2.0 / (1.0 + a_neg * a_neg));  // calculate_gain("leaky_relu", sqrt(5))
  for (Adapter& a : adapters_) {
    const at::Tensor& w = a.base;
    std::vector<int64_t> down_shape{options_.rank, w.size(1)}, up_shape{w.size(0), options_.rank};
    if (w.dim() == 4) {
      down_shape.insert(down_shape.end(), {w.size(2), w.size(3)});
      up_shape.insert(up_shape.end(), {1, 1});
    }
    int64_t fan_in = 1;
    for (size_t d = 1; d < down_shape.size(); ++d) fan_in *= down_shape[d];
    const double bound = std::sqrt(3.0) * gain / std::sqrt(static_cast<double>(fan_in));
    at::Tensor down = at::empty(down_shape, at::kFloat).uniform_(-bound, bound, gen);
    a.down = down.to(w.device()).set_requires_grad(true);
    a.up = at::zeros(up_shape, at::TensorOptions(at::kFloat).device(w.device())).set_requires_grad(true);
  }
  for (auto& p : root.parameters()) p.set_requires_grad(false);
  LOG_INF("LoRA adapters on ", adapters_.size(), " ", component_, " layers, rank ", options_.rank, ", alpha ",
          options_.alpha);
}

LoraAdapters::~LoraAdapters() { restore(); }

std::vector<at::Tensor> LoraAdapters::parameters() const {
  std::vector<at::Tensor> out;
  for (const Adapter& a : adapters_) {
    out.push_back(a.down);
    out.push_back(a.up);
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> LoraAdapters::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const Adapter& a : adapters_) {
    out.emplace_back(a.name + ".lora_A.weight", a.down);
    out.emplace_back(a.name + ".lora_B.weight", a.up);
  }
  return out;
}

double LoraAdapters::scale() const { return options_.alpha / static_cast<double>(options_.rank); }

int64_t LoraAdapters::layers() const { return static_cast<int64_t>(adapters_.size()); }

std::vector<std::string> LoraAdapters::layer_names() const {
  std::vector<std::string> out;
  for (const Adapter& a : adapters_) out.push_back(a.name);
  return out;
}

namespace {
// The update in float32, in the order generator/lora.cpp fuses it ((B @ A) * scale, then added), so
// a file written from these adapters fuses to the same weights bit for bit.
at::Tensor merged_weight(const at::Tensor& base, const at::Tensor& down, const at::Tensor& up, double scale) {
  const at::Tensor delta = up.flatten(1).mm(down.flatten(1)).mul(scale).reshape(base.sizes());
  // Half-precision weights take the sum in float32 (type promotion) and are rounded once.
  const at::Tensor w = base + delta;
  return w.scalar_type() == base.scalar_type() ? w : w.to(base.scalar_type());
}
}  // namespace

void LoraAdapters::apply() {
  IDSYNTH_CHECK(!fused_, "LoRA (", component_, "): apply() after fuse(): expected unfused adapters, found them fused");
  const double s = scale();
  for (Adapter& a : adapters_) *a.weight = merged_weight(a.base, a.down, a.up, s);
}

void LoraAdapters::restore() {
  for (Adapter& a : adapters_) *a.weight = a.base;
}

void LoraAdapters::fuse() {
  if (fused_) return;
  at::NoGradGuard no_grad;
  const double s = scale();
  for (Adapter& a : adapters_) {
    a.base.copy_(merged_weight(a.base, a.down, a.up, s));
    *a.weight = a.base;
  }
  fused_ = true;
}

void write_lora_file(const std::string& path, const std::vector<const LoraAdapters*>& adapters, c10::ScalarType dtype,
                     const std::map<std::string, std::string>& metadata) {
  IDSYNTH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, path,
                ": LoRA file dtype: expected float32, float16 or bfloat16, found ", c10::toString(dtype));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::set<std::string> written;
  for (const LoraAdapters* set : adapters) {
    IDSYNTH_CHECK(set != nullptr, path, ": LoRA file: expected adapter sets, found a null one");
    const std::string prefix = set->component() == "unet" ? "lora_unet_" : "lora_te_";
    const at::Tensor alpha = at::scalar_tensor(set->options().alpha, at::kFloat);
    const auto params = set->named_parameters();
    const auto names = set->layer_names();
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string base = prefix + underscored(names[i]);
      IDSYNTH_CHECK(written.insert(base).second, path, ": LoRA file: expected each layer once, found '", base, "' twice");
      tensors.emplace_back(base + ".lora_down.weight", params[2 * i].second.detach().to(at::kCPU, dtype).contiguous());
      tensors.emplace_back(base + ".lora_up.weight", params[2 * i + 1].second.detach().to(at::kCPU, dtype).contiguous());
      tensors.emplace_back(base + ".alpha", alpha);
    }
  }
  IDSYNTH_CHECK(!tensors.empty(), path, ": LoRA file: expected adapters to write, found none");
  std::map<std::string, std::string> meta = metadata;
  // kohya's keys, which its tools and web UIs read; one value each, the first set's (the UNet's).
  meta["ss_network_module"] = "networks.lora";
  meta["ss_network_dim"] = cat(adapters.front()->options().rank);
  meta["ss_network_alpha"] = format_number("%.9g", adapters.front()->options().alpha);
  save_safetensors(path, tensors, meta);  // atomic: temporary name, fsync, rename
}

}  // namespace idsynth::generator
