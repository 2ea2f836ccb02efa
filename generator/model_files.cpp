// Ref: diffusers 0.29.2 models/modeling_utils.py (_convert_deprecated_attention_blocks),
//      utils/hub_utils.py (_add_variant).
#include "generator/model_files.h"

#include <regex>
#include <set>
#include <vector>

#include "core/check.h"
#include "core/file_util.h"
#include "core/log.h"
#include "core/weights.h"
#include "generator/single_file.h"

namespace idsynth::generator {

namespace {

// "diffusion_pytorch_model.safetensors" -> "diffusion_pytorch_model.fp16.safetensors"
std::string with_variant(const std::string& name, const std::string& variant) {
  const size_t dot = name.rfind('.');
  return name.substr(0, dot) + "." + variant + name.substr(dot);
}

std::vector<std::string> weight_names(Component kind) {
  if (kind == Component::kTextEncoder) return {"model.safetensors", "pytorch_model.bin"};
  return {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"};
}

// Variants diffusers publishes; a folder holding only such a file is used as it is.
const char* const kKnownVariants[] = {"fp16", "bf16", "fp32"};

// The old and new name of each projection of a deprecated attention block.
const std::pair<const char*, const char*> kLegacyAttention[] = {
    {"query", "to_q"}, {"key", "to_k"}, {"value", "to_v"}, {"proj_attn", "to_out.0"}};

}  // namespace

const char* component_name(Component kind) {
  switch (kind) {
    case Component::kUNet: return "UNet";
    case Component::kTextEncoder: return "text encoder";
    case Component::kVAE: return "VAE";
  }
  return "?";
}

ComponentFiles locate_component(const std::string& dir, Component kind, const std::string& variant) {
  ComponentFiles f;
  f.dir = dir;
  f.config = dir + "/config.json";
  IDSYNTH_CHECK(file_exists(f.config), f.config, ": not found (expected the ", component_name(kind),
                " config.json of folder ", dir, ")");
  // 1. candidates in order of preference
  std::vector<std::string> candidates;
  for (const auto& n : weight_names(kind)) {
    if (!variant.empty()) candidates.push_back(with_variant(n, variant));
  }
  for (const auto& n : weight_names(kind)) candidates.push_back(n);
  if (variant.empty())
    for (const char* v : kKnownVariants)
      for (const auto& n : weight_names(kind)) candidates.push_back(with_variant(n, v));
  // 2. the first present
  std::string tried;
  for (const auto& n : candidates) {
    const std::string path = dir + "/" + n;
    if (file_exists(path)) {
      f.weights = path;
      const bool plain = n == weight_names(kind)[0] || n == weight_names(kind)[1];
      if (!plain && variant.empty()) LOG_INF(dir, ": no plain ", component_name(kind), " weights; using the variant file ", n);
      if (plain && !variant.empty()) LOG_WRN(dir, ": no '", variant, "' variant of the ", component_name(kind), " weights; using ", n);
      return f;
    }
    tried += (tried.empty() ? "" : " or ") + path;
  }
  fail(tried, ": missing (", component_name(kind), " weights)");
}

ComponentFiles single_file_component(const std::string& path) {
  ComponentFiles f;
  f.weights = path;
  f.single_file = true;
  return f;
}

TensorDict convert_legacy_attention_names(const TensorDict& weights, int64_t* converted) {
  // 1. the attention blocks that use old names: "<P>.query.weight" and the like, where <P> ends in
  //    ".attentions.<n>" (blocks without a transformer; a Transformer2D block's names go through
  //    ".transformer_blocks." and never match)
  static const std::regex legacy(R"((.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias))");
  std::set<std::string> blocks;
  std::smatch m;
  for (const auto& [name, t] : weights)
    if (std::regex_match(name, m, legacy)) blocks.insert(m[1].str());
  if (converted != nullptr) *converted = static_cast<int64_t>(blocks.size());
  if (blocks.empty()) return weights;
  // 2. each such block must be entirely in the old layout
  for (const auto& p : blocks)
    for (const auto& [old_name, new_name] : kLegacyAttention)
      for (const char* leaf : {"weight", "bias"}) {
        const std::string o = cat(p, ".", old_name, ".", leaf), n = cat(p, ".", new_name, ".", leaf);
        IDSYNTH_CHECK(!weights.contains(n), weights.source(), ": ", n, ": expected the legacy name ", o,
                      " like the rest of ", p, " (the block mixes legacy and current attention names)");
        IDSYNTH_CHECK(weights.contains(o), weights.source(), ": ", o, ": expected in legacy layout like the rest of ", p,
                      ", found neither it nor ", n);
      }
  // 3. renamed, in file order; 1x1-conv projections ([C, C, 1, 1]) become linear weights
  TensorDict out;
  out.set_source(weights.source());
  for (const auto& [name, t] : weights) {
    if (!std::regex_match(name, m, legacy)) {
      out.insert(name, t);
      continue;
    }
    std::string new_name;
    for (const auto& [old_name, renamed] : kLegacyAttention)
      if (m[2].str() == old_name) new_name = cat(m[1].str(), ".", renamed, ".", m[3].str());
    at::Tensor v = t;
    if (v.dim() == 4 && v.size(2) == 1 && v.size(3) == 1) v = v.flatten(1);
    out.insert(new_name, v);
  }
  return out;
}

c10::ScalarType floating_dtype(const TensorDict& weights) {
  for (const auto& [name, t] : weights)
    if (t.is_floating_point()) return t.scalar_type();
  return c10::kFloat;
}

TensorDict read_component_weights(const ComponentFiles& files, Component kind,
                                  const std::function<TensorDict(const TensorDict&)>& from_ldm, LoadReport& report) {
  report.weights = files.weights;
  TensorDict weights;
  if (files.single_file) {
    const TensorDict checkpoint = read_single_file(files.weights);
    weights = from_ldm(checkpoint);
    report.layout = "single-file";
    if (const int64_t ema = count_ema_tensors(checkpoint); ema > 0)
      LOG_INF(files.weights, ": ignored ", ema, " model_ema.* tensors (EMA copies), as diffusers does without extract_ema");
  } else {
    int64_t legacy = 0;
    weights = convert_legacy_attention_names(read_weights(files.weights), &legacy);
    report.layout = legacy > 0 ? "legacy" : "diffusers";
    if (legacy > 0)
      LOG_INF(files.weights, ": converted the legacy attention names of ", legacy, " ", component_name(kind),
              " blocks (query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0), as diffusers does at load");
  }
  report.file_dtype = floating_dtype(weights);
  report.tensors = static_cast<int64_t>(weights.size());
  return weights;
}

}  // namespace idsynth::generator
