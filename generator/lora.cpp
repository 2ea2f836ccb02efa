#include "generator/lora.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <unordered_map>
#include <unordered_set>

#include "core/check.h"
#include "core/json.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/weights.h"

namespace idsynth::generator {

namespace {

namespace fs = std::filesystem;

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
std::string strip_suffix(const std::string& s, const std::string& suffix) { return s.substr(0, s.size() - suffix.size()); }

// "32, 3, 3": the dimensions of a shape without brackets.
std::string dims_text(at::IntArrayRef dims) {
  std::string s;
  for (const int64_t d : dims) s += cat(s.empty() ? "" : ", ", d);
  return s;
}

std::string underscored(std::string s) {
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

// Where each form keeps the two halves.
struct FormNames {
  const char* down;
  const char* up;
};
FormNames form_names(LoraForm form) {
  switch (form) {
    case LoraForm::kohya: return {".lora_down.weight", ".lora_up.weight"};
    case LoraForm::diffusers: return {".down.weight", ".up.weight"};
    case LoraForm::peft: return {".lora_A.weight", ".lora_B.weight"};
  }
  return {"", ""};
}

// diffusers' attention-processor names (LoRAAttnProcessor's to_q_lora, ...) for the module each
// one wraps: the UNet's Attention has to_q/to_k/to_v/to_out.0, CLIP's attention q_proj/k_proj/...
std::string processor_target(const std::string& leaf, Component component) {
  static const std::map<std::string, std::pair<const char*, const char*>> table = {
      {"to_q_lora", {"to_q", "q_proj"}},
      {"to_k_lora", {"to_k", "k_proj"}},
      {"to_v_lora", {"to_v", "v_proj"}},
      {"to_out_lora", {"to_out.0", "out_proj"}}};
  const auto it = table.find(leaf);
  if (it == table.end()) return "";
  return component == Component::kUNet ? it->second.first : it->second.second;
}

// The component a prefixed dotted name belongs to, and the name without the prefix.
std::pair<Component, std::string> split_component(const std::string& name) {
  if (starts_with(name, "unet.")) return {Component::kUNet, name.substr(5)};
  if (starts_with(name, "text_encoder.")) return {Component::kTextEncoder, name.substr(13)};
  std::string rest = starts_with(name, "base_model.model.") ? name.substr(17) : name;
  // unet.save_attn_procs and a bare peft adapter carry no component prefix.
  return {starts_with(rest, "text_model.") ? Component::kTextEncoder : Component::kUNet, rest};
}

double metadata_number(const std::map<std::string, std::string>& metadata, const std::string& key,
                       const std::string& path) {
  const auto it = metadata.find(key);
  if (it == metadata.end()) return NAN;
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  IDSYNTH_CHECK(end != it->second.c_str() && *end == '\0' && std::isfinite(v) && v > 0, path, ": metadata '", key,
                "': expected a positive number, found '", it->second, "'");
  return v;
}

void check_finite(const at::Tensor& t, const std::string& path, const std::string& key) {
  if (!t.is_floating_point()) fail(path, ": key '", key, "': expected a floating-point tensor, found ", dtype_name(t.scalar_type()));
  IDSYNTH_CHECK(at::isfinite(t).all().item<bool>(), path, ": key '", key, "': expected finite values, found ",
                at::isnan(t).sum().item<int64_t>(), " NaN and ", at::isinf(t).sum().item<int64_t>(), " infinite");
}

}  // namespace

LoraSpec parse_lora_spec(const std::string& text) {
  LoraSpec spec;
  spec.path = text;
  const size_t colon = text.rfind(':');
  if (colon != std::string::npos && colon + 1 < text.size()) {
    const std::string tail = text.substr(colon + 1);
    char* end = nullptr;
    const double v = std::strtod(tail.c_str(), &end);
    if (end != tail.c_str() && *end == '\0') {
      IDSYNTH_CHECK(std::isfinite(v), "LoRA '", text, "': scale: expected a finite number, found '", tail, "'");
      spec.path = text.substr(0, colon);
      spec.scale = v;
    }
  }
  IDSYNTH_CHECK(!spec.path.empty(), "LoRA '", text, "': expected FILE or FILE:SCALE, found no file");
  return spec;
}

std::string lora_spec_string(const LoraSpec& spec) { return cat(spec.path, ":", format_number("%g", spec.scale)); }

const char* lora_form_name(LoraForm form) {
  switch (form) {
    case LoraForm::kohya: return "kohya";
    case LoraForm::diffusers: return "diffusers";
    case LoraForm::peft: return "peft";
  }
  return "?";
}

bool looks_like_lora(const TensorDict& tensors) {
  if (tensors.empty()) return false;
  for (const auto& [name, t] : tensors) {
    const bool lora = ends_with(name, ".lora_down.weight") || ends_with(name, ".lora_up.weight") ||
                      ends_with(name, ".alpha") || ends_with(name, ".lora_A.weight") ||
                      ends_with(name, ".lora_B.weight") || ends_with(name, "lora.down.weight") ||
                      ends_with(name, "lora.up.weight") || ends_with(name, "_lora.down.weight") ||
                      ends_with(name, "_lora.up.weight") || ends_with(name, "lora_linear_layer.down.weight") ||
                      ends_with(name, "lora_linear_layer.up.weight");
    if (!lora) return false;
  }
  return true;
}

LoraFile lora_from_tensors(const TensorDict& tensors, const std::string& path,
                           const std::map<std::string, std::string>& metadata) {
  LoraFile out;
  out.path = path;
  out.metadata = metadata;
  IDSYNTH_CHECK(!tensors.empty(), path, ": expected LoRA tensors, found an empty file");

  // The form, from the down halves' names; files mixing forms are not something any tool writes.
  int kohya = 0, diffusers = 0, peft = 0;
  for (const auto& [name, t] : tensors) {
    if (starts_with(name, "lora_te2_") || starts_with(name, "text_encoder_2.")) {
      fail(path, ": key '", name, "': expected a LoRA for Stable Diffusion 1.5 (one text encoder), found a second text "
           "encoder's key: an SDXL LoRA");
    }
    if (name.find("dora_scale") != std::string::npos || name.find("lora_magnitude_vector") != std::string::npos)
      fail(path, ": key '", name, "': expected a LoRA, found a DoRA magnitude (DoRA is not supported)");
    if (ends_with(name, ".lora_down.weight")) ++kohya;
    else if (ends_with(name, ".lora_A.weight")) ++peft;
    else if (ends_with(name, ".down.weight")) ++diffusers;
  }
  if (kohya + diffusers + peft == 0) {
    fail(path, ": expected LoRA tensors ('*.lora_down.weight', '*.lora.down.weight' or '*.lora_A.weight'), found none (first "
         "tensor '", tensors.items().front().first, "')");
  }
  IDSYNTH_CHECK((kohya > 0) + (diffusers > 0) + (peft > 0) == 1, path, ": expected one LoRA form, found ", kohya,
                " kohya, ", diffusers, " diffusers and ", peft, " peft down tensors");
  out.form = kohya > 0 ? LoraForm::kohya : peft > 0 ? LoraForm::peft : LoraForm::diffusers;
  const FormNames names = form_names(out.form);

  // peft keeps alpha in its adapter config: scaling = lora_alpha / r (or / sqrt(r) with rsLoRA).
  const double peft_alpha = metadata_number(metadata, "lora_alpha", path);
  const bool rslora = metadata.count("use_rslora") != 0 && metadata.at("use_rslora") == "true";

  std::unordered_set<std::string> used;
  for (const auto& [name, down] : tensors) {
    if (!ends_with(name, names.down)) continue;
    const std::string base = strip_suffix(name, names.down);
    const std::string up_name = base + names.up;
    const at::Tensor* up = tensors.find(up_name);
    IDSYNTH_CHECK(up != nullptr, path, ": key '", name, "': expected its up half '", up_name, "', found none");
    LoraLayer layer;
    layer.key = name;
    layer.down = down;
    layer.up = *up;
    used.insert(name);
    used.insert(up_name);
    if (out.form == LoraForm::kohya) {
      if (starts_with(base, "lora_unet_")) {
        layer.component = Component::kUNet;
        layer.module = base.substr(10);
      } else if (starts_with(base, "lora_te_") || starts_with(base, "lora_te1_")) {
        layer.component = Component::kTextEncoder;
        layer.module = base.substr(starts_with(base, "lora_te_") ? 8 : 9);
      } else {
        fail(path, ": key '", name, "': expected a name starting 'lora_unet_' or 'lora_te_', found another");
      }
    } else {
      auto [component, module] = split_component(base);
      layer.component = component;
      if (out.form == LoraForm::diffusers) {
        if (ends_with(module, ".lora")) {
          module = strip_suffix(module, ".lora");
        } else if (ends_with(module, ".lora_linear_layer")) {
          module = strip_suffix(module, ".lora_linear_layer");
        } else {
          const size_t dot = module.rfind('.');
          const std::string leaf = dot == std::string::npos ? module : module.substr(dot + 1);
          std::string parent = dot == std::string::npos ? "" : module.substr(0, dot);
          const std::string target = processor_target(leaf, component);
          IDSYNTH_CHECK(!target.empty(), path, ": key '", name,
                        "': expected a diffusers LoRA name ('….lora.down.weight' or an attention processor's "
                        "to_q_lora/to_k_lora/to_v_lora/to_out_lora), found '", leaf, "'");
          if (ends_with(parent, ".processor")) parent = strip_suffix(parent, ".processor");
          module = parent.empty() ? target : parent + "." + target;
        }
      }
      layer.module = module;
    }
    const int64_t rank = layer.down.dim() >= 1 ? layer.down.size(0) : 0;
    const bool down_ok = (layer.down.dim() == 2 || layer.down.dim() == 4) && rank > 0;
    const bool up_ok = (layer.up.dim() == 2 || (layer.up.dim() == 4 && layer.up.size(2) == 1 && layer.up.size(3) == 1)) &&
                       layer.up.size(1) == rank;
    IDSYNTH_CHECK(down_ok && up_ok, path, ": key '", name, "': expected down [rank, in(, kh, kw)] and up [out, rank(, 1, 1)] "
                  "of one rank, found down ", shape_string(layer.down.sizes()), " and up ", shape_string(layer.up.sizes()));
    check_finite(layer.down, path, name);
    check_finite(layer.up, path, up_name);
    layer.alpha = static_cast<double>(rank);
    if (out.form == LoraForm::kohya) {
      const std::string alpha_name = base + ".alpha";
      if (const at::Tensor* alpha = tensors.find(alpha_name)) {
        IDSYNTH_CHECK(alpha->numel() == 1, path, ": key '", alpha_name, "': expected one number, found ",
                      shape_string(alpha->sizes()));
        const double a = alpha->to(at::kDouble).item<double>();
        IDSYNTH_CHECK(std::isfinite(a), path, ": key '", alpha_name, "': expected a finite alpha, found ", a);
        layer.alpha = a;
        used.insert(alpha_name);
      }
    } else if (out.form == LoraForm::peft && std::isfinite(peft_alpha)) {
      layer.alpha = rslora ? peft_alpha * std::sqrt(static_cast<double>(rank)) : peft_alpha;
    }
    out.layers.push_back(std::move(layer));
  }
  for (const auto& [name, t] : tensors) {
    if (used.count(name) == 0) {
      fail(path, ": key '", name, "' ", shape_string(t.sizes()), ": expected a ", lora_form_name(out.form),
           " LoRA tensor of a down/up pair (or its alpha), found one that belongs to none");
    }
  }
  return out;
}

LoraFile read_lora(const std::string& path) {
  IDSYNTH_CHECK(fs::is_regular_file(path), path, ": LoRA file: expected a file, found ",
                fs::exists(path) ? "something else" : "nothing");
  std::map<std::string, std::string> metadata;
  TensorDict tensors;
  if (looks_like_safetensors(path)) {
    SafeTensorsFile file(path);
    metadata = file.metadata();
    tensors = file.all();
  } else {
    tensors = read_weights(path);
  }
  // peft saves adapter_model.safetensors beside adapter_config.json, which holds lora_alpha.
  const fs::path config = fs::path(path).parent_path() / "adapter_config.json";
  if (fs::is_regular_file(config) && metadata.count("lora_alpha") == 0) {
    const json::Value c = json::parse_file(config.string());
    if (const json::Value* alpha = c.find("lora_alpha")) metadata["lora_alpha"] = format_number("%.17g", alpha->as_double(config.string() + ": lora_alpha"));
    if (const json::Value* rs = c.find("use_rslora"); rs != nullptr && rs->is_bool() && rs->as_bool()) metadata["use_rslora"] = "true";
    for (const char* key : {"alpha_pattern", "rank_pattern"}) {
      const json::Value* pattern = c.find(key);
      IDSYNTH_CHECK(pattern == nullptr || pattern->is_null() || (pattern->is_object() && pattern->as_object().empty()),
                    config.string(), ": ", key, ": expected none or {}, found per-module values (not supported)");
    }
  }
  return lora_from_tensors(tensors, path, metadata);
}

std::string describe_lora(const LoraFile& lora) {
  std::map<std::string, int64_t> kinds;
  int64_t unet = 0, te = 0, min_rank = INT64_MAX, max_rank = 0;
  double min_alpha = INFINITY, max_alpha = -INFINITY;
  for (const LoraLayer& l : lora.layers) {
    (l.component == Component::kUNet ? unet : te) += 1;
    min_rank = std::min(min_rank, l.rank());
    max_rank = std::max(max_rank, l.rank());
    min_alpha = std::min(min_alpha, l.alpha);
    max_alpha = std::max(max_alpha, l.alpha);
    // The module kind: the last path element that is not a number (to_out.0 -> to_out).
    std::string m = l.module;
    if (lora.form == LoraForm::kohya) {
      for (const char* leaf : {"to_out_0", "ff_net_0_proj", "ff_net_2", "conv_shortcut", "time_emb_proj", "proj_in",
                               "proj_out", "downsamplers_0_conv", "upsamplers_0_conv", "q_proj", "k_proj", "v_proj",
                               "out_proj", "to_q", "to_k", "to_v", "conv1", "conv2", "fc1", "fc2", "in_layers_2",
                               "out_layers_3", "emb_layers_1", "skip_connection", "op", "conv"}) {
        if (ends_with(m, std::string("_") + leaf) || m == leaf) {
          m = leaf;
          break;
        }
      }
    } else {
      const size_t dot = m.rfind('.');
      std::string leaf = dot == std::string::npos ? m : m.substr(dot + 1);
      if (!leaf.empty() && std::isdigit(static_cast<unsigned char>(leaf[0])) && dot != std::string::npos) {
        const size_t dot2 = m.rfind('.', dot - 1);
        leaf = m.substr(dot2 == std::string::npos ? 0 : dot2 + 1);
      }
      m = leaf;
    }
    kinds[m] += 1;
  }
  std::string targets;
  for (const auto& [k, n] : kinds) targets += cat(targets.empty() ? "" : ", ", k, " x", n);
  const auto range = [](auto lo, auto hi) { return lo == hi ? cat(lo) : cat(lo, "-", hi); };
  return cat("LoRA (", lora_form_name(lora.form), " form): ", lora.layers.size(), " layers (UNet ", unet, ", text encoder ",
             te, "), rank ", range(min_rank, max_rank), ", alpha ", range(min_alpha, max_alpha), "; targets: ", targets);
}

std::vector<LoraToApply> read_loras(const std::vector<LoraSpec>& specs) {
  std::vector<LoraToApply> loras;
  for (const LoraSpec& spec : specs) {
    log::Stopwatch watch;
    LoraToApply l{read_lora(spec.path), spec.scale};
    LOG_INF("read ", describe_lora(l.file), " from ", spec.path, ", scale ", spec.scale, ", taking ", watch.seconds(), " s");
    loras.push_back(std::move(l));
  }
  return loras;
}

TensorDict fuse_loras(const TensorDict& weights, Component component, const std::vector<LoraToApply>& loras,
                      const std::vector<std::pair<std::string, std::string>>& ldm_names) {
  bool any = false;
  for (const auto& l : loras)
    for (const auto& layer : l.file.layers) any = any || layer.component == component;
  if (!any) return weights;
  log::Stopwatch watch;

  // kohya names a module by its dotted path with '.' -> '_', of the diffusers or the LDM layout.
  std::unordered_map<std::string, std::string> kohya_names;
  for (const auto& [name, t] : weights)
    if (ends_with(name, ".weight")) kohya_names.emplace(underscored(strip_suffix(name, ".weight")), name);
  for (const auto& [ldm, diffusers] : ldm_names)
    if (ends_with(ldm, ".weight")) kohya_names.emplace(underscored(strip_suffix(ldm, ".weight")), diffusers);

  std::unordered_map<std::string, at::Tensor> fused;  // float32 copies, the file's tensors stay as read
  int64_t count = 0;
  for (const LoraToApply& lora : loras) {
    const std::string& path = lora.file.path;
    for (const LoraLayer& layer : lora.file.layers) {
      if (layer.component != component) continue;
      std::string target;
      if (lora.file.form == LoraForm::kohya) {
        const auto it = kohya_names.find(layer.module);
        if (it != kohya_names.end()) target = it->second;
      } else if (weights.contains(layer.module + ".weight")) {
        target = layer.module + ".weight";
      }
      if (target.empty()) {
        fail(path, ": key '", layer.key, "': expected a ", component_name(component), " module named '", layer.module,
             "', found none (", weights.size(), " tensors; is the LoRA for another model?)");
      }
      auto f = fused.find(target);
      if (f == fused.end()) f = fused.emplace(target, weights.at(target).to(at::kFloat, false, /*copy=*/true)).first;
      at::Tensor& w = f->second;
      const at::Tensor down = layer.down.to(at::kFloat).flatten(1);
      const at::Tensor up = layer.up.to(at::kFloat).flatten(1);
      const bool kernel_ok = layer.down.dim() != 4 || w.dim() != 4 ||
                             layer.down.sizes().slice(1) == w.sizes().slice(1);
      if (w.dim() < 2 || up.size(0) != w.size(0) || down.size(1) != w.numel() / w.size(0) || !kernel_ok) {
        fail(path, ": key '", layer.key, "': expected down [rank, ", dims_text(w.sizes().slice(1)), "] and up [",
             w.dim() >= 1 ? w.size(0) : 0, ", rank] for ", component_name(component), " weight '", target, "' ",
             shape_string(w.sizes()), ", found down ", shape_string(layer.down.sizes()), " and up ",
             shape_string(layer.up.sizes()));
      }
      // peft: scaling = lora_alpha / r, times the fuse scale; delta = (B @ A) * scaling; W += delta.
      const double scaling = (layer.alpha / static_cast<double>(layer.rank())) * lora.scale;
      w.add_(up.mm(down).reshape(w.sizes()).mul_(scaling));
      ++count;
    }
  }
  TensorDict out;
  out.set_source(weights.source());
  for (const auto& [name, t] : weights) {
    const auto f = fused.find(name);
    out.insert(name, f == fused.end() ? t : f->second);
  }
  LOG_INF("fused ", count, " LoRA layers into ", fused.size(), " ", component_name(component), " weights, taking ",
          watch.seconds(), " s");
  return out;
}

}  // namespace idsynth::generator
