// LoRA files: low-rank weight updates for the UNet and the (ID) text encoder, read in the three
// forms users have and fused into the weights at load, so sampling costs nothing extra.
//  - kohya (sd-scripts, and the published LCM-LoRA): `lora_unet_<module path, '.' -> '_'>`
//    `.lora_down.weight` / `.lora_up.weight` / `.alpha`, `lora_te_…` for the text encoder; the
//    module path is diffusers' (`down_blocks_0_attentions_0_proj_in`) or the LDM one
//    (`input_blocks_1_1_proj_in`);
//  - diffusers' pre-peft form: `unet.<module>.lora.down.weight` / `.up.weight`, the attention
//    processors' `unet.<…>.attn1.processor.to_q_lora.down.weight` (to_q/to_k/to_v/to_out),
//    `text_encoder.<…>.self_attn.to_q_lora.down.weight` or `….q_proj.lora_linear_layer.down.weight`;
//  - peft: `<prefix>.<module>.lora_A.weight` / `.lora_B.weight` with prefix unet / text_encoder /
//    base_model.model; lora_alpha from an `adapter_config.json` beside the file or the
//    safetensors metadata key `lora_alpha`.
// Fusing: W += scale * (alpha / rank) * up @ down in float32 (convolution kernels flattened and
// reshaped back); no alpha means alpha = rank. The same update diffusers 0.29.2's fuse_lora makes.
// Ref: diffusers 0.29.2 loaders/lora_conversion_utils.py (_convert_non_diffusers_lora_to_diffusers,
//      _convert_unet_lora_key, _convert_text_encoder_lora_key, _maybe_map_sgm_blocks_to_diffusers),
//      utils/state_dict_utils.py (convert_unet_state_dict_to_peft); peft tuners/lora/layer.py
//      (get_delta_weight, scaling = lora_alpha / r).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor_dict.h"
#include "generator/model_files.h"

namespace idsynth::generator {

// `--lora FILE[:SCALE]` and `model.loras` entries.
struct LoraSpec {
  std::string path;
  double scale = 1.0;
};
// "FILE" or "FILE:SCALE" (the text after the last ':' when it is a number).
LoraSpec parse_lora_spec(const std::string& text);
std::string lora_spec_string(const LoraSpec& spec);

enum class LoraForm { kohya, diffusers, peft };
const char* lora_form_name(LoraForm form);  // "kohya", "diffusers", "peft"

// One low-rank update of one weight.
struct LoraLayer {
  Component component = Component::kUNet;  // kUNet or kTextEncoder
  // The target as the file names it: kohya's underscored path (without `lora_unet_` / `lora_te_`),
  // otherwise the dotted module path.
  std::string module;
  std::string key;  // the file's name of the down (A) tensor, for messages
  at::Tensor down;  // [rank, in(, kh, kw)]
  at::Tensor up;    // [out, rank(, 1, 1)]
  double alpha = 0;  // alpha / rank scales the update
  int64_t rank() const { return down.size(0); }
};

struct LoraFile {
  std::string path;
  LoraForm form = LoraForm::kohya;
  std::vector<LoraLayer> layers;
  std::map<std::string, std::string> metadata;  // safetensors metadata, when any
};

// True when the tensor names are one of the forms above (every tensor a LoRA tensor).
bool looks_like_lora(const TensorDict& tensors);

// Reads and checks a LoRA file (safetensors or torch checkpoint): pairs every down with its up and
// alpha, checks ranks agree and every value is finite. Errors name the file and the key: an
// unpaired or unknown key, a rank mismatch, a NaN, an SDXL file (second text encoder).
LoraFile read_lora(const std::string& path);
LoraFile lora_from_tensors(const TensorDict& tensors, const std::string& path,
                           const std::map<std::string, std::string>& metadata = {});

// One paragraph for `idsynth weights`: form, layer count per component, ranks, alphas and the
// kinds of module targeted ("to_q x16, conv1 x22, ...").
std::string describe_lora(const LoraFile& lora);

struct LoraToApply {
  LoraFile file;
  double scale = 1.0;
};
std::vector<LoraToApply> read_loras(const std::vector<LoraSpec>& specs);

// `weights` (a component's tensors under its module's names) with every layer of `component` from
// `loras` fused, in order, in float32; fused tensors are float32, the others untouched.
// `ldm_names` (UNet only: ldm_unet_names) lets kohya files name LDM modules. A layer whose module
// is not in `weights`, or whose shapes do not fit the weight, is an error naming the file and key.
TensorDict fuse_loras(const TensorDict& weights, Component component, const std::vector<LoraToApply>& loras,
                      const std::vector<std::pair<std::string, std::string>>& ldm_names = {});

}  // namespace idsynth::generator
