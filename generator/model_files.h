// Where the files of a model component are (its config and its weights, located once), and how
// their tensors become the names idsynth's modules have. The loaders (load_unet, load_vae,
// load_clip_text_model) take the located files and never search again.
//
// Layouts users have (diffusers 0.29.2 reads all of them):
//  - diffusers: current names (what diffusers >= 0.14 saves);
//  - legacy: diffusers' deprecated attention names in attention blocks without a transformer, as
//    Stable Diffusion 1.5's published vae/ still has them (`mid_block.attentions.0.query`, `key`,
//    `value`, `proj_attn`); renamed at load to `to_q`, `to_k`, `to_v`, `to_out.0`, as diffusers'
//    ModelMixin._convert_deprecated_attention_blocks does, with 1x1-conv shaped weights squeezed;
//  - single-file: one original LDM checkpoint (v1-5-pruned-emaonly.safetensors / .ckpt) holding
//    every component under `model.diffusion_model.` / `first_stage_model.`; its configs are
//    Stable Diffusion 1.5's (generator/single_file.h).
// Weight-file variants (`diffusion_pytorch_model.fp16.safetensors`, `model.fp16.safetensors`,
// `pytorch_model.fp16.bin`): the plain file wins when both exist, unless a variant is asked for.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <string>

#include "core/tensor_dict.h"

namespace idsynth::generator {

enum class Component { kUNet, kTextEncoder, kVAE };

struct ComponentFiles {
  std::string dir;      // the component folder ("" for a single file)
  std::string config;   // <dir>/config.json; for a single file "" (Stable Diffusion 1.5's) or a given config
  std::string weights;  // the weight file found in <dir>, or the single file
  bool single_file = false;
};

// The config.json and the weight file of `dir`, by the names diffusers and transformers save:
// diffusion_pytorch_model[.<variant>].{safetensors,bin} (UNet, VAE), model[.<variant>].safetensors /
// pytorch_model[.<variant>].bin (text encoder). `variant` empty: the plain file, else any variant
// file present (one log line says which); `variant` set: that variant, else the plain file. A
// missing file is one error naming the paths tried.
ComponentFiles locate_component(const std::string& dir, Component kind, const std::string& variant = "");
// A component taken from an LDM single-file checkpoint.
ComponentFiles single_file_component(const std::string& path);

// "UNet", "text encoder", "VAE" (for messages).
const char* component_name(Component kind);

// What a loader read, for `idsynth check-model` and the load log.
struct LoadReport {
  std::string weights;   // the file
  std::string layout;    // diffusers | legacy | single-file
  c10::ScalarType file_dtype = c10::kFloat;  // of the file's floating-point tensors
  int64_t tensors = 0;       // in the file for this component
  int64_t parameters = 0;    // of the built module
};

// `weights` with diffusers' deprecated attention names (see above) renamed; `converted` receives the
// number of attention blocks renamed. A block that mixes old and new names, or lacks some old ones,
// is one error naming the file and the first offending tensor.
TensorDict convert_legacy_attention_names(const TensorDict& weights, int64_t* converted);

// The dtype of the first floating-point tensor (the file's precision).
c10::ScalarType floating_dtype(const TensorDict& weights);

// A component's tensors under its module's names: a single file's through `from_ldm` (the
// component's LDM -> diffusers mapping), anything else as stored with legacy attention names
// converted. Fills report's weights, layout, file_dtype and tensors, and logs a converted layout.
TensorDict read_component_weights(const ComponentFiles& files, Component kind,
                                  const std::function<TensorDict(const TensorDict&)>& from_ldm, LoadReport& report);

}  // namespace idsynth::generator
