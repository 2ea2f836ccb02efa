// Weight files of any supported format, and strict loading into torch::nn::Modules by the
// reference parameter names.
#pragma once

#include <torch/nn/module.h>

#include <string>
#include <vector>

#include "core/tensor_dict.h"

namespace idsynth {

enum class WeightFormat { safetensors, torch_zip, torch_legacy, onnx, unknown };
const char* weight_format_name(WeightFormat f);

// Detects the format from the first bytes (never from the extension alone).
WeightFormat detect_weight_format(const std::string& path);

// Reads every tensor of a safetensors or torch.save file. ONNX files are read by core/onnx.
TensorDict read_weights(const std::string& path);

struct LoadOptions {
  // Names in the file that the module does not have and that are fine to ignore (exact names or
  // prefixes ending in '.', or suffixes beginning with '.'), e.g. "text_model.embeddings.position_ids".
  std::vector<std::string> ignore_unexpected;
  // Prefix stripped from the file's names before matching ("state_dict." for wrapped checkpoints).
  std::string strip_prefix;
};

// Copies every parameter and buffer of `module` from `weights`, converting to the module's dtype
// and device. Strict: if any tensor is missing, unexpected or mis-shaped, throws one
// idsynth::Error that lists all of them (with both shapes), naming `weights.source()`.
void load_state_dict(torch::nn::Module& module, const TensorDict& weights, const LoadOptions& options = {});

// The module's parameters and buffers by name, as load_state_dict sees them.
TensorDict module_state(const torch::nn::Module& module);
// Number of parameter elements (buffers not counted).
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace idsynth
