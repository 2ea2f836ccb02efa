// The down, mid and up blocks of diffusers' UNet2DConditionModel, built by type name through one
// factory (get_down_block / get_up_block / the mid-block switch in diffusers).
// Ref: diffusers 0.29.2 src/diffusers/models/unets/unet_2d_blocks.py
#pragma once

#include <ATen/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "generator/nn_blocks.h"

namespace idsynth::generator {

// Arguments a block receives from the UNet constructor (diffusers get_down_block/get_up_block).
struct UNetBlockArgs {
  int64_t num_layers = 1;
  int64_t transformer_layers = 1;  // transformer blocks per Transformer2DModel
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t prev_output_channel = 0;  // up blocks: channels coming from the block below
  int64_t temb_channels = 0;
  bool add_sample = false;  // add_downsample / add_upsample
  double resnet_eps = 1e-5;
  std::string act_fn = "silu";
  int64_t resnet_groups = 32;
  double output_scale_factor = 1.0;
  int64_t downsample_padding = 1;
  int64_t num_attention_heads = 8;  // heads; head dim = out_channels / heads (SD-1.x semantics)
  int64_t cross_attention_dim = 768;
  bool use_linear_projection = false;
  bool upcast_attention = false;
};

// A down block appends the states kept for the skip connections to `skips`.
class UNetDownBlock : public torch::nn::Module {
 public:
  virtual at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& encoder_hidden_states,
                             std::vector<at::Tensor>& skips) = 0;
};

class UNetMidBlock : public torch::nn::Module {
 public:
  virtual at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& encoder_hidden_states) = 0;
};

// An up block consumes num_resnets() skip states from the back of `skips`.
class UNetUpBlock : public torch::nn::Module {
 public:
  virtual int64_t num_resnets() const = 0;
  virtual at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& encoder_hidden_states,
                             std::vector<at::Tensor>& skips, c10::optional<std::vector<int64_t>> upsample_size) = 0;
};

// Type names the factory builds, for config checks and error messages.
const std::vector<std::string>& unet_down_block_types();  // CrossAttnDownBlock2D, DownBlock2D
const std::vector<std::string>& unet_mid_block_types();   // UNetMidBlock2DCrossAttn
const std::vector<std::string>& unet_up_block_types();    // CrossAttnUpBlock2D, UpBlock2D
// Throws "<where>: expected one of A, B, found 'name'" for names the factory cannot build.
void check_unet_block_type(const std::vector<std::string>& accepted, const std::string& name, const std::string& where);

std::shared_ptr<UNetDownBlock> make_unet_down_block(const std::string& type, const UNetBlockArgs& args,
                                                    const std::string& where);
std::shared_ptr<UNetMidBlock> make_unet_mid_block(const std::string& type, const UNetBlockArgs& args,
                                                  const std::string& where);
std::shared_ptr<UNetUpBlock> make_unet_up_block(const std::string& type, const UNetBlockArgs& args,
                                                const std::string& where);

// ---------------------------------------------------------------------------------------------
// Block classes (diffusers names); members resnets / attentions / downsamplers / upsamplers.
// ---------------------------------------------------------------------------------------------
class DownBlock2DImpl : public UNetDownBlock {
 public:
  explicit DownBlock2DImpl(const UNetBlockArgs& args);
  at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& encoder_hidden_states,
                     std::vector<at::Tensor>& skips) override;

 private:
  std::vector<ResnetBlock2D> resnets_;
  Downsample2D downsampler_{nullptr};
};

class CrossAttnDownBlock2DImpl : public UNetDownBlock {
 public:
  explicit CrossAttnDownBlock2DImpl(const UNetBlockArgs& args);
  at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& encoder_hidden_states,
                     std::vector<at::Tensor>& skips) override;

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
  Downsample2D downsampler_{nullptr};
};

class UNetMidBlock2DCrossAttnImpl : public UNetMidBlock {
 public:
  explicit UNetMidBlock2DCrossAttnImpl(const UNetBlockArgs& args);
  at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& encoder_hidden_states) override;

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
};

class UpBlock2DImpl : public UNetUpBlock {
 public:
  explicit UpBlock2DImpl(const UNetBlockArgs& args);
  int64_t num_resnets() const override { return static_cast<int64_t>(resnets_.size()); }
  at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& encoder_hidden_states,
                     std::vector<at::Tensor>& skips, c10::optional<std::vector<int64_t>> upsample_size) override;

 private:
  std::vector<ResnetBlock2D> resnets_;
  Upsample2D upsampler_{nullptr};
};

class CrossAttnUpBlock2DImpl : public UNetUpBlock {
 public:
  explicit CrossAttnUpBlock2DImpl(const UNetBlockArgs& args);
  int64_t num_resnets() const override { return static_cast<int64_t>(resnets_.size()); }
  at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& encoder_hidden_states,
                     std::vector<at::Tensor>& skips, c10::optional<std::vector<int64_t>> upsample_size) override;

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
  Upsample2D upsampler_{nullptr};
};

}  // namespace idsynth::generator
