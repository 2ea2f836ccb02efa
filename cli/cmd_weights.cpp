// idsynth weights FILE: what is inside a weight file, whatever its format.
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/check.h"
#include "core/tensor_dict.h"
#include "core/weights.h"
#include "generator/lora.h"
#include "generator/model_files.h"
#include "generator/single_file.h"
#if __has_include("core/onnx_model.h")
#include "core/onnx_model.h"
#define IDSYNTH_HAVE_ONNX 1
#endif

namespace idsynth::cli {

namespace {

// What kind of checkpoint the names say it is, when it is one idsynth converts at load.
std::string layout_note(const TensorDict& tensors, const std::string& path) {
  if (generator::looks_like_lora(tensors)) {
    try {
      return cat(" (", generator::describe_lora(generator::read_lora(path)), ")");
    } catch (const Error& e) {
      return cat(" (LoRA names; loading fails: ", e.what(), ")");
    }
  }
  if (generator::looks_like_ldm_checkpoint(tensors))
    return cat(" (single-file LDM checkpoint, ", generator::single_file_kind_name(generator::detect_single_file_kind(tensors)),
               "; ", generator::count_ema_tensors(tensors), " model_ema tensors)");
  int64_t legacy = 0;
  try {
    generator::convert_legacy_attention_names(tensors, &legacy);
  } catch (const Error& e) {
    return cat(" (legacy attention names mixed with current ones; loading fails: ", e.what(), ")");
  }
  if (legacy > 0) return cat(" (diffusers, legacy attention names in ", legacy, " blocks: converted at load)");
  return "";
}

}  // namespace

int cmd_weights(const std::vector<std::string>& args) {
  po::options_description opts("options");
  opts.add_options()("file", po::value<std::string>()->required(), "weight file (safetensors, torch checkpoint, ONNX)")(
      "names-only", po::bool_switch(), "print only the tensor names");
  po::positional_options_description pos;
  pos.add("file", 1);
  auto parsed = parse_args("weights", "FILE [--names-only]",
                           "Lists every tensor of a weight file with its dtype and shape, and the total parameter count.\n"
                           "Formats are recognised from the content: safetensors, torch.save zip and legacy checkpoints, ONNX.\n"
                           "Single-file LDM checkpoints and LoRA files (form, rank, alpha, targeted modules) are named as such.",
                           opts, args, &pos);
  if (parsed.help) return kExitOk;
  const std::string path = parsed.vars["file"].as<std::string>();
  const WeightFormat format = detect_weight_format(path);
  TensorDict tensors;
  if (format == WeightFormat::onnx) {
#ifdef IDSYNTH_HAVE_ONNX
    tensors = read_onnx_initializers(path);
#else
    fail(path, ": ONNX support is not built into this idsynth");
#endif
  } else {
    tensors = read_weights(path);
  }
  if (parsed.vars["names-only"].as<bool>()) {
    for (const auto& [name, t] : tensors) std::cout << name << "\n";
    return kExitOk;
  }
  size_t width = 4;
  for (const auto& [name, t] : tensors) width = std::max(width, name.size());
  std::cout << path << ": " << weight_format_name(format) << ", " << tensors.size() << " tensors" << layout_note(tensors, path)
            << "\n";
  for (const auto& [name, t] : tensors) {
    std::string padded = name;
    padded.resize(width, ' ');
    std::string dt = dtype_name(t.scalar_type());
    dt.resize(5, ' ');
    std::cout << "  " << padded << "  " << dt << " " << shape_string(t.sizes()) << "\n";
  }
  std::cout << "total parameters: " << tensors.numel() << "\n";
  return kExitOk;
}

}  // namespace idsynth::cli
