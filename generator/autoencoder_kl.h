// diffusers AutoencoderKL (the Stable Diffusion VAE) as a libtorch module whose parameter names are the
// keys of vae/diffusion_pytorch_model.safetensors.
// Ref: diffusers 0.29.2 src/diffusers/models/autoencoders/{autoencoder_kl.py, vae.py},
//      src/diffusers/models/unets/unet_2d_blocks.py (DownEncoderBlock2D, UpDecoderBlock2D, UNetMidBlock2D)
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "generator/model_files.h"
#include "generator/nn_blocks.h"

namespace idsynth::generator {

// Every key of diffusers' AutoencoderKL config with diffusers' defaults (SD-1.5 overrides them with
// block_out_channels [128, 256, 512, 512], 4 blocks of each type, layers_per_block 2, sample_size 512).
struct AutoencoderKLConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<std::string> down_block_types = {"DownEncoderBlock2D"};
  std::vector<std::string> up_block_types = {"UpDecoderBlock2D"};
  std::vector<int64_t> block_out_channels = {64};
  int64_t layers_per_block = 1;
  std::string act_fn = "silu";
  int64_t latent_channels = 4;
  int64_t norm_num_groups = 32;
  int64_t sample_size = 32;
  double scaling_factor = 0.18215;
  std::optional<double> shift_factor;       // null for SD-1.x; kept for the caller
  std::vector<double> latents_mean;         // null (empty) for SD-1.x
  std::vector<double> latents_std;          // null (empty) for SD-1.x
  bool force_upcast = true;                 // pipelines run the VAE in float32 when true
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;      // newer diffusers key; absent in 0.29.2 files

  std::string source = "<AutoencoderKLConfig>";

  static AutoencoderKLConfig from_json(const json::Value& root, const std::string& source);
  static AutoencoderKLConfig from_file(const std::string& path);
  json::Value to_json() const;  // diffusers 0.29.2 config.json (sorted keys)
  void check() const;

  // Image size / latent size.
  int64_t spatial_factor() const { return int64_t{1} << (block_out_channels.size() - 1); }
};

// DownEncoderBlock2D / UpDecoderBlock2D / UNetMidBlock2D (resnets without time embedding; the mid
// block's single-head spatial attention).
class DownEncoderBlock2DImpl : public torch::nn::Module {
 public:
  DownEncoderBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t num_layers, int64_t groups,
                         const std::string& act_fn, bool add_downsample);
  at::Tensor forward(at::Tensor x);

 private:
  std::vector<ResnetBlock2D> resnets_;
  Downsample2D downsampler_{nullptr};
};
TORCH_MODULE(DownEncoderBlock2D);

class UpDecoderBlock2DImpl : public torch::nn::Module {
 public:
  UpDecoderBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t num_layers, int64_t groups,
                       const std::string& act_fn, bool add_upsample);
  at::Tensor forward(at::Tensor x);

 private:
  std::vector<ResnetBlock2D> resnets_;
  Upsample2D upsampler_{nullptr};
};
TORCH_MODULE(UpDecoderBlock2D);

class UNetMidBlock2DImpl : public torch::nn::Module {
 public:
  UNetMidBlock2DImpl(int64_t channels, int64_t groups, const std::string& act_fn, bool add_attention);
  at::Tensor forward(at::Tensor x);

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Attention> attentions_;
};
TORCH_MODULE(UNetMidBlock2D);

// Accepted block names for the VAE factory.
const std::vector<std::string>& vae_down_block_types();  // DownEncoderBlock2D
const std::vector<std::string>& vae_up_block_types();    // UpDecoderBlock2D

class VaeEncoderImpl : public torch::nn::Module {
 public:
  explicit VaeEncoderImpl(const AutoencoderKLConfig& c);
  at::Tensor forward(const at::Tensor& x);  // [B, in, H, W] -> [B, 2*latent, H/f, W/f]

 private:
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  std::vector<DownEncoderBlock2D> down_;
  UNetMidBlock2D mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
  std::string act_fn_;
};
TORCH_MODULE(VaeEncoder);

class VaeDecoderImpl : public torch::nn::Module {
 public:
  explicit VaeDecoderImpl(const AutoencoderKLConfig& c);
  at::Tensor forward(const at::Tensor& z);  // [B, latent, h, w] -> [B, out, h*f, w*f]

 private:
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  UNetMidBlock2D mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  std::vector<UpDecoderBlock2D> up_;
  torch::nn::GroupNorm conv_norm_out{nullptr};
  std::string act_fn_;
};
TORCH_MODULE(VaeDecoder);

// DiagonalGaussianDistribution parameters of the latent.
struct LatentDistribution {
  at::Tensor mean;
  at::Tensor logvar;  // clamped to [-30, 20]
  at::Tensor std() const;
};

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  explicit AutoencoderKLImpl(AutoencoderKLConfig config);

  // image [B, in, H, W] in [-1, 1] -> latent distribution [B, latent, H/f, W/f] (unscaled).
  LatentDistribution encode(const at::Tensor& image);
  // latents [B, latent, h, w] (already divided by scaling_factor) -> image [B, out, h*f, w*f].
  at::Tensor decode(const at::Tensor& z);

  const AutoencoderKLConfig& config() const { return config_; }
  // Also gives the convolution weights the matching memory format.
  void set_channels_last(bool on);
  // Training the VAE: encode and decode record the autograd graph while grad mode is on. Off by
  // default: they run without it whatever the caller's grad mode (inference never pays for a graph).
  void set_record_gradients(bool on) { record_gradients_ = on; }

 private:
  at::Tensor prepare(const at::Tensor& x) const;

  AutoencoderKLConfig config_;
  bool channels_last_ = true;
  bool record_gradients_ = false;
  VaeEncoder encoder{nullptr};
  VaeDecoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};
TORCH_MODULE(AutoencoderKL);

// Builds the VAE from `folder`/config.json and loads `folder`/diffusion_pytorch_model.safetensors
// (or .bin) strictly. Logs parameter count and load time.
AutoencoderKL load_vae(const ComponentFiles& files, c10::Device device = c10::kCPU, c10::ScalarType dtype = c10::kFloat,
                       LoadReport* report = nullptr);
// The same for a component folder (locate_component).
AutoencoderKL load_vae(const std::string& folder, c10::Device device = c10::kCPU, c10::ScalarType dtype = c10::kFloat);

}  // namespace idsynth::generator
