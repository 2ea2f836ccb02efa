#include "core/weights.h"

#include <torch/types.h>

#include <cstring>
#include <fstream>
#include <set>

#include "core/check.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"

namespace idsynth {

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::safetensors: return "safetensors";
    case WeightFormat::torch_zip: return "torch zip checkpoint";
    case WeightFormat::torch_legacy: return "torch legacy checkpoint";
    case WeightFormat::onnx: return "ONNX";
    case WeightFormat::unknown: return "unknown";
  }
  return "unknown";
}

WeightFormat detect_weight_format(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IDSYNTH_CHECK(in.good(), path, ": cannot open for reading");
  unsigned char head[16] = {0};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = static_cast<size_t>(in.gcount());
  if (got >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) return WeightFormat::torch_zip;
  // Before the pickle test: a header length such as 0x0280 also begins with the bytes 80 02.
  if (looks_like_safetensors(path)) return WeightFormat::safetensors;
  // Legacy torch.save: PROTO n, then the magic number as a 10-byte LONG1.
  if (got >= 4 && head[0] == 0x80 && head[1] <= 5 && head[2] == 0x8a && head[3] == 0x0a) return WeightFormat::torch_legacy;
  // ONNX ModelProto starts with field 1 (ir_version, varint: 0x08) in every exporter we know.
  if (got >= 2 && head[0] == 0x08 && head[1] < 0x80) return WeightFormat::onnx;
  return WeightFormat::unknown;
}

TensorDict read_weights(const std::string& path) {
  switch (detect_weight_format(path)) {
    case WeightFormat::safetensors: return SafeTensorsFile(path).all();
    case WeightFormat::torch_zip:
    case WeightFormat::torch_legacy: return read_torch_checkpoint(path);
    case WeightFormat::onnx: fail(path, ": ONNX file: expected safetensors or a torch checkpoint here (ONNX models load through core/onnx)");
    case WeightFormat::unknown: break;
  }
  fail(path, ": expected a safetensors file or a torch.save checkpoint, found neither (unrecognised first bytes)");
}

TensorDict module_state(const torch::nn::Module& module) {
  TensorDict out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.insert(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.insert(b.key(), b.value());
  return out;
}

namespace {
bool ignorable(const std::string& name, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (p.empty()) continue;
    if (name == p) return true;
    if (p.back() == '.' && name.compare(0, p.size(), p) == 0) return true;
    if (p.front() == '.' && name.size() >= p.size() && name.compare(name.size() - p.size(), p.size(), p) == 0) return true;
  }
  return false;
}

std::string list_lines(const std::vector<std::string>& items, size_t max_items = 25) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < max_items; ++i) s += "\n    " + items[i];
  if (items.size() > max_items) s += cat("\n    ... and ", items.size() - max_items, " more");
  return s;
}
}  // namespace

void load_state_dict(torch::nn::Module& module, const TensorDict& weights, const LoadOptions& options) {
  const std::string& source = weights.source().empty() ? std::string("<weights>") : weights.source();
  TensorDict target = module_state(module);

  std::set<std::string> used;
  std::vector<std::string> missing, mismatched, unexpected;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  for (const auto& [name, dst] : target) {
    const at::Tensor* src = weights.find(options.strip_prefix + name);
    if (src == nullptr) {
      missing.push_back(name + " " + shape_string(dst.sizes()));
      continue;
    }
    used.insert(options.strip_prefix + name);
    if (src->sizes() != dst.sizes()) {
      mismatched.push_back(cat(name, ": expected ", shape_string(dst.sizes()), ", found ", shape_string(src->sizes())));
      continue;
    }
    copies.emplace_back(dst, *src);
  }
  for (const auto& [name, t] : weights) {
    if (used.count(name) != 0) continue;
    if (!options.strip_prefix.empty() && name.compare(0, options.strip_prefix.size(), options.strip_prefix) != 0) continue;
    if (ignorable(name, options.ignore_unexpected)) continue;
    unexpected.push_back(name + " " + shape_string(t.sizes()));
  }
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::string msg = cat(source, ": weights do not match the model (", missing.size(), " missing, ", unexpected.size(),
                          " unexpected, ", mismatched.size(), " with the wrong shape)");
    if (!missing.empty()) msg += "\n  missing from the file:" + list_lines(missing);
    if (!unexpected.empty()) msg += "\n  not in the model:" + list_lines(unexpected);
    if (!mismatched.empty()) msg += "\n  wrong shape:" + list_lines(mismatched);
    throw Error(msg);
  }
  torch::NoGradGuard no_grad;
  for (auto& [dst, src] : copies) dst.copy_(src);
  LOG_DBG(source, ": loaded ", copies.size(), " tensors");
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace idsynth
