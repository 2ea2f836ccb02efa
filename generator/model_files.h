// Where the files of a model component are: its config and its weights, located once. The loaders
// (load_unet, load_vae, load_clip_text_model) take the located files and never search again.
#pragma once

#include <string>

namespace idsynth::generator {

enum class Component { kUNet, kTextEncoder, kVAE };

struct ComponentFiles {
  std::string dir;      // the component folder
  std::string config;   // <dir>/config.json
  std::string weights;  // the weight file found in <dir>
};

// The config.json and the first weight file present in `dir`, by the names diffusers and
// transformers save: diffusion_pytorch_model.{safetensors,bin} (UNet, VAE), model.safetensors /
// pytorch_model.bin (text encoder). A missing file is one error naming the paths tried.
ComponentFiles locate_component(const std::string& dir, Component kind);

// "UNet", "text encoder", "VAE" (for messages).
const char* component_name(Component kind);

}  // namespace idsynth::generator
