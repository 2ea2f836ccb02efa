#include "generator/unet_2d_blocks.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <utility>

#include "core/check.h"

namespace idsynth::generator {

namespace nn = torch::nn;

namespace {

ResnetBlock2DOptions resnet_options(const UNetBlockArgs& a, int64_t in_channels, int64_t out_channels) {
  ResnetBlock2DOptions o;
  o.in_channels = in_channels;
  o.out_channels = out_channels;
  o.temb_channels = a.temb_channels;
  o.groups = a.resnet_groups;
  o.eps = a.resnet_eps;
  o.act_fn = a.act_fn;
  o.output_scale_factor = a.output_scale_factor;
  return o;
}

// SD-1.x semantics: the config's head count splits the block's channels into heads.
TransformerOptions transformer_options(const UNetBlockArgs& a, int64_t channels) {
  IDSYNTH_CHECK(a.num_attention_heads > 0 && channels % a.num_attention_heads == 0,
                "UNet block: ", channels, " channels do not split into ", a.num_attention_heads, " attention heads");
  TransformerOptions o;
  o.heads = a.num_attention_heads;
  o.dim_head = channels / a.num_attention_heads;
  o.cross_attention_dim = a.cross_attention_dim;
  o.num_layers = a.transformer_layers;
  o.norm_num_groups = a.resnet_groups;
  o.use_linear_projection = a.use_linear_projection;
  o.upcast_attention = a.upcast_attention;
  return o;
}

template <typename Holder>
nn::ModuleList register_list(nn::Module& owner, const char* name, const std::vector<Holder>& items) {
  nn::ModuleList list;
  for (const auto& item : items) list->push_back(item);
  return owner.register_module(name, list);
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Factory
// ---------------------------------------------------------------------------------------------
const std::vector<std::string>& unet_down_block_types() {
  static const std::vector<std::string> names = {"CrossAttnDownBlock2D", "DownBlock2D"};
  return names;
}
const std::vector<std::string>& unet_mid_block_types() {
  static const std::vector<std::string> names = {"UNetMidBlock2DCrossAttn"};
  return names;
}
const std::vector<std::string>& unet_up_block_types() {
  static const std::vector<std::string> names = {"CrossAttnUpBlock2D", "UpBlock2D"};
  return names;
}

void check_unet_block_type(const std::vector<std::string>& accepted, const std::string& name, const std::string& where) {
  for (const auto& a : accepted) {
    if (a == name) return;
  }
  fail(where, ": expected one of ", join(accepted), ", found '", name, "'");
}

std::shared_ptr<UNetDownBlock> make_unet_down_block(const std::string& type, const UNetBlockArgs& args,
                                                    const std::string& where) {
  check_unet_block_type(unet_down_block_types(), type, where);
  if (type == "CrossAttnDownBlock2D") return std::make_shared<CrossAttnDownBlock2DImpl>(args);
  return std::make_shared<DownBlock2DImpl>(args);
}

std::shared_ptr<UNetMidBlock> make_unet_mid_block(const std::string& type, const UNetBlockArgs& args,
                                                  const std::string& where) {
  check_unet_block_type(unet_mid_block_types(), type, where);
  return std::make_shared<UNetMidBlock2DCrossAttnImpl>(args);
}

std::shared_ptr<UNetUpBlock> make_unet_up_block(const std::string& type, const UNetBlockArgs& args,
                                                const std::string& where) {
  check_unet_block_type(unet_up_block_types(), type, where);
  if (type == "CrossAttnUpBlock2D") return std::make_shared<CrossAttnUpBlock2DImpl>(args);
  return std::make_shared<UpBlock2DImpl>(args);
}

// ---------------------------------------------------------------------------------------------
// DownBlock2D
// ---------------------------------------------------------------------------------------------
DownBlock2DImpl::DownBlock2DImpl(const UNetBlockArgs& a) {
  for (int64_t i = 0; i < a.num_layers; ++i) {
    resnets_.push_back(ResnetBlock2D(resnet_options(a, i == 0 ? a.in_channels : a.out_channels, a.out_channels)));
  }
  register_list(*this, "resnets", resnets_);
  if (a.add_sample) {
    downsampler_ = Downsample2D(a.out_channels, a.out_channels, a.downsample_padding);
    register_list(*this, "downsamplers", std::vector<Downsample2D>{downsampler_});
  }
}

at::Tensor DownBlock2DImpl::forward(at::Tensor x, const at::Tensor& temb, const at::Tensor&,
                                    std::vector<at::Tensor>& skips) {
  // Ref: unet_2d_blocks.py DownBlock2D.forward
  for (auto& resnet : resnets_) {
    x = resnet(x, temb);
    skips.push_back(x);
  }
  if (downsampler_) {
    x = downsampler_(x);  // [B, C, H/2, W/2]
    skips.push_back(x);
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// CrossAttnDownBlock2D
// ---------------------------------------------------------------------------------------------
CrossAttnDownBlock2DImpl::CrossAttnDownBlock2DImpl(const UNetBlockArgs& a) {
  for (int64_t i = 0; i < a.num_layers; ++i) {
    resnets_.push_back(ResnetBlock2D(resnet_options(a, i == 0 ? a.in_channels : a.out_channels, a.out_channels)));
    attentions_.push_back(Transformer2DModel(a.out_channels, transformer_options(a, a.out_channels)));
  }
  register_list(*this, "resnets", resnets_);
  register_list(*this, "attentions", attentions_);
  if (a.add_sample) {
    downsampler_ = Downsample2D(a.out_channels, a.out_channels, a.downsample_padding);
    register_list(*this, "downsamplers", std::vector<Downsample2D>{downsampler_});
  }
}

at::Tensor CrossAttnDownBlock2DImpl::forward(at::Tensor x, const at::Tensor& temb,
                                             const at::Tensor& encoder_hidden_states, std::vector<at::Tensor>& skips) {
  // Ref: unet_2d_blocks.py CrossAttnDownBlock2D.forward
  for (size_t i = 0; i < resnets_.size(); ++i) {
    x = resnets_[i](x, temb);
    x = attentions_[i](x, encoder_hidden_states);
    skips.push_back(x);
  }
  if (downsampler_) {
    x = downsampler_(x);  // [B, C, H/2, W/2]
    skips.push_back(x);
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// UNetMidBlock2DCrossAttn
// ---------------------------------------------------------------------------------------------
UNetMidBlock2DCrossAttnImpl::UNetMidBlock2DCrossAttnImpl(const UNetBlockArgs& a) {
  const int64_t c = a.in_channels;
  resnets_.push_back(ResnetBlock2D(resnet_options(a, c, c)));
  for (int64_t i = 0; i < a.num_layers; ++i) {
    attentions_.push_back(Transformer2DModel(c, transformer_options(a, c)));
    resnets_.push_back(ResnetBlock2D(resnet_options(a, c, c)));
  }
  register_list(*this, "attentions", attentions_);
  register_list(*this, "resnets", resnets_);
}

at::Tensor UNetMidBlock2DCrossAttnImpl::forward(at::Tensor x, const at::Tensor& temb,
                                                const at::Tensor& encoder_hidden_states) {
  // Ref: unet_2d_blocks.py UNetMidBlock2DCrossAttn.forward
  x = resnets_[0](x, temb);
  for (size_t i = 0; i < attentions_.size(); ++i) {
    x = attentions_[i](x, encoder_hidden_states);
    x = resnets_[i + 1](x, temb);
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// UpBlock2D
// ---------------------------------------------------------------------------------------------
namespace {
// Input channels of up-block resnet i: the running state plus the skip it concatenates.
int64_t up_resnet_in_channels(const UNetBlockArgs& a, int64_t i) {
  const int64_t skip_channels = (i == a.num_layers - 1) ? a.in_channels : a.out_channels;
  const int64_t state_channels = (i == 0) ? a.prev_output_channel : a.out_channels;
  return state_channels + skip_channels;
}

at::Tensor pop_and_concat(const at::Tensor& x, std::vector<at::Tensor>& skips) {
  IDSYNTH_CHECK(!skips.empty(), "UNet up block: no skip connection left (down and up blocks do not match)");
  at::Tensor skip = std::move(skips.back());
  skips.pop_back();
  return at::cat({x, skip}, 1);  // [B, C + C_skip, H, W]
}
}  // namespace

UpBlock2DImpl::UpBlock2DImpl(const UNetBlockArgs& a) {
  for (int64_t i = 0; i < a.num_layers; ++i) {
    resnets_.push_back(ResnetBlock2D(resnet_options(a, up_resnet_in_channels(a, i), a.out_channels)));
  }
  register_list(*this, "resnets", resnets_);
  if (a.add_sample) {
    upsampler_ = Upsample2D(a.out_channels, a.out_channels);
    register_list(*this, "upsamplers", std::vector<Upsample2D>{upsampler_});
  }
}

at::Tensor UpBlock2DImpl::forward(at::Tensor x, const at::Tensor& temb, const at::Tensor&,
                                  std::vector<at::Tensor>& skips, c10::optional<std::vector<int64_t>> upsample_size) {
  // Ref: unet_2d_blocks.py UpBlock2D.forward (no FreeU)
  for (auto& resnet : resnets_) x = resnet(pop_and_concat(x, skips), temb);
  if (upsampler_) x = upsampler_(x, std::move(upsample_size));  // [B, C, 2H, 2W]
  return x;
}

// ---------------------------------------------------------------------------------------------
// CrossAttnUpBlock2D
// ---------------------------------------------------------------------------------------------
CrossAttnUpBlock2DImpl::CrossAttnUpBlock2DImpl(const UNetBlockArgs& a) {
  for (int64_t i = 0; i < a.num_layers; ++i) {
    resnets_.push_back(ResnetBlock2D(resnet_options(a, up_resnet_in_channels(a, i), a.out_channels)));
    attentions_.push_back(Transformer2DModel(a.out_channels, transformer_options(a, a.out_channels)));
  }
  register_list(*this, "resnets", resnets_);
  register_list(*this, "attentions", attentions_);
  if (a.add_sample) {
    upsampler_ = Upsample2D(a.out_channels, a.out_channels);
    register_list(*this, "upsamplers", std::vector<Upsample2D>{upsampler_});
  }
}

at::Tensor CrossAttnUpBlock2DImpl::forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& encoder_hidden_states,
                                           std::vector<at::Tensor>& skips,
                                           c10::optional<std::vector<int64_t>> upsample_size) {
  // Ref: unet_2d_blocks.py CrossAttnUpBlock2D.forward (no FreeU)
  for (size_t i = 0; i < resnets_.size(); ++i) {
    x = resnets_[i](pop_and_concat(x, skips), temb);
    x = attentions_[i](x, encoder_hidden_states);
  }
  if (upsampler_) x = upsampler_(x, std::move(upsample_size));  // [B, C, 2H, 2W]
  return x;
}

}  // namespace idsynth::generator
