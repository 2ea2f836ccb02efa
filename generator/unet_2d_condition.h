// diffusers UNet2DConditionModel (the Stable Diffusion 1.x / Arc2Face UNet) as a libtorch module whose
// parameter names are the keys of diffusion_pytorch_model.safetensors.
// Ref: diffusers 0.29.2 src/diffusers/models/unets/unet_2d_condition.py
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "generator/lora.h"
#include "generator/model_files.h"
#include "generator/nn_blocks.h"
#include "generator/unet_2d_blocks.h"

namespace idsynth::generator {

// Every key of diffusers' UNet2DConditionModel config, in constructor order, with diffusers'
// defaults. Keys Arc2Face / SD-1.x do not use are accepted only at their "off" value (null / false /
// "default" / "positional"); check() rejects any other value by name.
// Keys diffusers accepts as "int or one per block" (layers_per_block, cross_attention_dim,
// transformer_layers_per_block, attention_head_dim, only_cross_attention) hold one value for the
// scalar form and one per down block for the list form; per_block() resolves either.
struct UNet2DConditionConfig {
  std::optional<int64_t> sample_size;  // latent size; informational (64 for SD-1.5 at 512 px)
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  bool center_input_sample = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "CrossAttnDownBlock2D", "DownBlock2D"};
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"};
  std::vector<bool> only_cross_attention = {false};  // only false is supported
  std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
  std::vector<int64_t> layers_per_block = {2};
  int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1;
  double dropout = 0;  // training only
  std::string act_fn = "silu";
  int64_t norm_num_groups = 32;  // null (no conv_norm_out) is not supported
  double norm_eps = 1e-5;
  std::vector<int64_t> cross_attention_dim = {1280};  // 768 for SD-1.x, 1024 for SD-2.x
  std::vector<int64_t> transformer_layers_per_block = {1};
  json::Value reverse_transformer_layers_per_block;  // only null
  std::optional<int64_t> encoder_hid_dim;            // only null
  std::optional<std::string> encoder_hid_dim_type;   // only null
  // Misnamed in diffusers: for these configs it is the NUMBER OF HEADS per block (head dim =
  // channels / heads), because num_attention_heads did not exist when SD-1.x configs were written.
  std::vector<int64_t> attention_head_dim = {8};
  std::vector<int64_t> num_attention_heads;  // only null (diffusers 0.29 itself refuses it)
  bool dual_cross_attention = false;         // only false
  bool use_linear_projection = false;        // true for SD-2.x
  std::optional<std::string> class_embed_type;      // only null
  std::optional<std::string> addition_embed_type;   // only null
  std::optional<int64_t> addition_time_embed_dim;   // only null
  std::optional<int64_t> num_class_embeds;          // only null
  bool upcast_attention = false;                    // true for SD-2.1: q k^T in float32
  std::string resnet_time_scale_shift = "default";  // only "default"
  bool resnet_skip_time_act = false;                // only false
  double resnet_out_scale_factor = 1.0;
  std::string time_embedding_type = "positional";  // only "positional"
  std::optional<int64_t> time_embedding_dim;       // null: 4 * block_out_channels[0]
  std::optional<std::string> time_embedding_act_fn;  // only null
  std::optional<std::string> timestep_post_act;      // only null
  std::optional<int64_t> time_cond_proj_dim;         // only null
  int64_t conv_in_kernel = 3;
  int64_t conv_out_kernel = 3;
  std::optional<int64_t> projection_class_embeddings_input_dim;  // only null
  std::string attention_type = "default";                        // only "default"
  bool class_embeddings_concat = false;                          // only false
  std::optional<bool> mid_block_only_cross_attention;            // null or false
  std::optional<std::string> cross_attention_norm;               // only null
  int64_t addition_embed_type_num_heads = 64;                    // unused without addition_embed_type

  // Where the values came from, for error messages.
  std::string source = "<UNet2DConditionConfig>";

  // Reads a diffusers config.json object; `source` names the file in messages. Calls check().
  static UNet2DConditionConfig from_json(const json::Value& root, const std::string& source);
  static UNet2DConditionConfig from_file(const std::string& path);
  // A config.json diffusers 0.29.2 reads back to the same model (sorted keys, as diffusers writes).
  json::Value to_json() const;

  // Validates list lengths, divisibility, block names and every unsupported setting; throws
  // idsynth::Error naming the source, the key, the expected and the found value.
  void check() const;

  size_t num_blocks() const { return down_block_types.size(); }
  // value of a scalar-or-per-block key for down block `block`
  static int64_t per_block(const std::vector<int64_t>& values, size_t block) {
    return values.size() == 1 ? values[0] : values.at(block);
  }
  int64_t heads(size_t block) const { return per_block(attention_head_dim, block); }
  int64_t time_embed_dim() const { return time_embedding_dim ? *time_embedding_dim : block_out_channels[0] * 4; }
};

class UNet2DConditionImpl : public torch::nn::Module {
 public:
  explicit UNet2DConditionImpl(UNet2DConditionConfig config);

  // sample [B, in_channels, H, W]; timestep: 0-d, [1] or [B], integer or float; encoder_hidden_states
  // [B, L, cross_attention_dim] -> [B, out_channels, H, W] (the noise prediction).
  // Inputs are moved to the module's device and dtype; the output is in that dtype. H and W need not
  // be multiples of 2^levels. Inference runs under no-grad mode (plain tensors, safe to update in
  // place). The graph is recorded when grad mode is on and the module is in training mode (train())
  // or an input requires grad; trainers must call train() (LoRA's frozen parameters included).
  at::Tensor forward(const at::Tensor& sample, const at::Tensor& timestep, const at::Tensor& encoder_hidden_states);

  const UNet2DConditionConfig& config() const { return config_; }
  // Channels-last activations (NHWC memory) make the transformer's token reshapes free and suit
  // oneDNN and cuDNN; on by default. Results are the same to rounding.
  // Also gives the convolution weights the matching memory format.
  void set_channels_last(bool on);
  bool channels_last() const { return channels_last_; }
  // diffusers enable_gradient_checkpointing: while training, each down block, the mid block and each
  // up block keeps no activations and runs again in backward (checkpoint() in nn_blocks.h). Same
  // gradients, less memory, one more forward of the blocks per step. Off by default.
  void set_gradient_checkpointing(bool on) { gradient_checkpointing_ = on; }
  bool gradient_checkpointing() const { return gradient_checkpointing_; }

 private:
  UNet2DConditionConfig config_;
  bool channels_last_ = true;
  bool gradient_checkpointing_ = false;
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  TimestepEmbedding time_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  std::vector<std::shared_ptr<UNetDownBlock>> down_;
  std::vector<std::shared_ptr<UNetUpBlock>> up_;
  std::shared_ptr<UNetMidBlock> mid_block;
  torch::nn::GroupNorm conv_norm_out{nullptr};
  int64_t num_upsamplers_ = 0;
};
TORCH_MODULE(UNet2DCondition);

// Builds the UNet from `folder`/config.json and loads `folder`/diffusion_pytorch_model.safetensors
// (or .bin) strictly onto `device` in `dtype`, with `loras` fused in float32 first. Logs parameter
// count and load time.
UNet2DCondition load_unet(const ComponentFiles& files, c10::Device device = c10::kCPU,
                          c10::ScalarType dtype = c10::kFloat, LoadReport* report = nullptr,
                          const std::vector<LoraToApply>& loras = {});
// The same for a component folder (locate_component).
UNet2DCondition load_unet(const std::string& folder, c10::Device device = c10::kCPU,
                          c10::ScalarType dtype = c10::kFloat);


}  // namespace idsynth::generator
