// Single-file Stable Diffusion checkpoints in the original LDM / CompVis layout
// (v1-5-pruned-emaonly.safetensors, v1-5-pruned.ckpt, ...): reading them, telling which model family
// they hold, renaming the UNet and VAE tensors to the diffusers names idsynth's modules use, and the
// diffusers configs SD-1.5's own repository ships (a single file comes without any config.json).
// Ref: diffusers 0.29.2 src/diffusers/loaders/single_file_utils.py (load_single_file_checkpoint,
//      infer_diffusers_model_type, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/json.h"
#include "core/tensor_dict.h"
#include "generator/autoencoder_kl.h"
#include "generator/unet_2d_condition.h"

namespace idsynth::generator {

// The model family of a single file, decided from tensor names and shapes only.
enum class SingleFileKind { sd1, sd2, sdxl, other };
const char* single_file_kind_name(SingleFileKind kind);  // "SD-1.x", "SD-2.x", "SDXL", "other"

// Follows diffusers' infer_diffusers_model_type: inpainting (9 input channels) and the other
// special families are `other`; a 1024-wide cross-attention key width is SD-2; `conditioner.embedders.*`
// is SDXL; anything else with an SD UNet (or no UNet at all) is SD-1, as diffusers' default "v1".
// `why`, when given, receives the tensor that decided it ("... is [320, 1024]").
SingleFileKind detect_single_file_kind(const TensorDict& checkpoint, std::string* why = nullptr);

// True when some name starts with "model.diffusion_model." or "first_stage_model.".
bool looks_like_ldm_checkpoint(const TensorDict& checkpoint);

// Number of "model_ema.*" tensors: LitEma copies (flattened names) that the converters ignore, as
// diffusers does without extract_ema. The caller logs it.
int64_t count_ema_tensors(const TensorDict& checkpoint);

// Reads a safetensors file or a torch.save checkpoint (zip or legacy) through core's restricted
// readers, descending into "state_dict" as long as there is one (Lightning's
// {"state_dict": {...}, "global_step": N} wrapper). Returns the flat LDM names; source() is `path`.
TensorDict read_single_file(const std::string& path);

// The UNet's "model.diffusion_model.*" tensors renamed to UNet2DCondition's names (exactly the set
// load_state_dict expects for `config`), every shape checked against what `config` implies.
// Throws idsynth::Error naming `source` on a checkpoint of another family (saying which), the first
// missing tensor, the first mis-shaped one, or a tensor the config has no place for. Tensors keep
// their dtype and share storage with `checkpoint`.
TensorDict ldm_unet_to_diffusers(const TensorDict& checkpoint, const UNet2DConditionConfig& config,
                                 const std::string& source);

// Every UNet tensor name pair (LDM name without the "model.diffusion_model." prefix, diffusers
// name) that `config` implies, in the order ldm_unet_to_diffusers checks them. LoRA files made for
// the LDM layout (kohya's `lora_unet_input_blocks_4_1_proj_in`) are matched through it.
std::vector<std::pair<std::string, std::string>> ldm_unet_names(const UNet2DConditionConfig& config);

// The VAE's tensors ("first_stage_model.*" when any name has that prefix, else every name: a
// standalone VAE file such as vae-ft-mse-840000-ema-pruned) renamed to AutoencoderKL's names. The
// mid-block attention's 1x1-conv weights [C, C, 1, 1] become the linear [C, C]. Errors as above.
TensorDict ldm_vae_to_diffusers(const TensorDict& checkpoint, const AutoencoderKLConfig& config,
                                const std::string& source);

// The configs of the runwayml/stable-diffusion-v1-5 repository (unet/config.json, vae/config.json,
// scheduler/scheduler_config.json, written by diffusers 0.6.0): what diffusers' from_single_file
// uses for an SD-1 file when the user gives no config. The VAE file has no scaling_factor, so the
// AutoencoderKL default 0.18215 applies; the scheduler is PNDMScheduler.
json::Value sd15_unet_config();
json::Value sd15_vae_config();
json::Value sd15_scheduler_config();

}  // namespace idsynth::generator
