#include "generator/model_files.h"

#include <vector>

#include "core/check.h"
#include "core/file_util.h"

namespace idsynth::generator {

const char* component_name(Component kind) {
  switch (kind) {
    case Component::kUNet: return "UNet";
    case Component::kTextEncoder: return "text encoder";
    case Component::kVAE: return "VAE";
  }
  return "?";
}

ComponentFiles locate_component(const std::string& dir, Component kind) {
  ComponentFiles f;
  f.dir = dir;
  f.config = dir + "/config.json";
  IDSYNTH_CHECK(file_exists(f.config), f.config, ": not found (expected the ", component_name(kind),
                " config.json of folder ", dir, ")");
  const std::vector<std::string> names =
      kind == Component::kTextEncoder
          ? std::vector<std::string>{"model.safetensors", "pytorch_model.bin"}
          : std::vector<std::string>{"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"};
  std::string tried;
  for (const auto& n : names) {
    const std::string path = dir + "/" + n;
    if (file_exists(path)) {
      f.weights = path;
      return f;
    }
    tried += (tried.empty() ? "" : " or ") + path;
  }
  fail(tried, ": missing (", component_name(kind), " weights)");
}

}  // namespace idsynth::generator
