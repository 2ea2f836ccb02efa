#include "generator/autoencoder_kl.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <filesystem>
#include <map>
#include <utility>

#include "core/check.h"
#include "core/device.h"
#include "core/log.h"
#include "core/weights.h"
#include "generator/config_reader.h"
#include "generator/single_file.h"
#include "generator/unet_2d_blocks.h"
#include "generator/unet_2d_condition.h"

namespace idsynth::generator {

namespace nn = torch::nn;
namespace fs = std::filesystem;

namespace {

constexpr double kVaeEps = 1e-6;  // resnet and norm epsilon of the VAE (fixed in diffusers' vae.py)

template <typename Holder>
void register_list(nn::Module& owner, const char* name, const std::vector<Holder>& items) {
  nn::ModuleList list;
  for (const auto& item : items) list->push_back(item);
  owner.register_module(name, list);
}

ResnetBlock2DOptions vae_resnet(int64_t in_channels, int64_t out_channels, int64_t groups, const std::string& act_fn) {
  ResnetBlock2DOptions o;
  o.in_channels = in_channels;
  o.out_channels = out_channels;
  o.groups = groups;
  o.eps = kVaeEps;
  o.act_fn = act_fn;
  return o;
}

json::Value doubles_or_null(const std::vector<double>& values) {
  if (values.empty()) return json::Value(nullptr);
  json::Value::Array a;
  for (double v : values) a.emplace_back(v);
  return json::Value(std::move(a));
}

}  // namespace

const std::vector<std::string>& vae_down_block_types() {
  static const std::vector<std::string> names = {"DownEncoderBlock2D"};
  return names;
}
const std::vector<std::string>& vae_up_block_types() {
  static const std::vector<std::string> names = {"UpDecoderBlock2D"};
  return names;
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------
AutoencoderKLConfig AutoencoderKLConfig::from_json(const json::Value& root, const std::string& source) {
  AutoencoderKLConfig c;
  c.source = source;
  ConfigReader r(root, source);
  r.get("in_channels", c.in_channels);
  r.get("out_channels", c.out_channels);
  for (auto [key, list] : {std::pair<const char*, std::vector<std::string>*>{"down_block_types", &c.down_block_types},
                           {"up_block_types", &c.up_block_types}}) {
    if (const json::Value* v = root.find(key)) {
      list->clear();
      for (const auto& item : v->as_array(cat(source, ": ", key))) list->push_back(item.as_string(cat(source, ": ", key)));
    }
  }
  r.get("block_out_channels", c.block_out_channels);
  r.get("layers_per_block", c.layers_per_block);
  r.get("act_fn", c.act_fn);
  r.get("latent_channels", c.latent_channels);
  r.get("norm_num_groups", c.norm_num_groups);
  if (const json::Value* v = root.find("sample_size"); v && v->is_array()) {
    c.sample_size = v->as_array().empty() ? 0 : v->as_array()[0].as_int(cat(source, ": sample_size"));
  } else {
    r.get("sample_size", c.sample_size);
  }
  r.get("scaling_factor", c.scaling_factor);
  if (const json::Value* v = root.find("shift_factor"); v && !v->is_null()) c.shift_factor = v->as_double(cat(source, ": shift_factor"));
  r.get("latents_mean", c.latents_mean);
  r.get("latents_std", c.latents_std);
  r.get("force_upcast", c.force_upcast);
  r.get("use_quant_conv", c.use_quant_conv);
  r.get("use_post_quant_conv", c.use_post_quant_conv);
  r.get("mid_block_add_attention", c.mid_block_add_attention);
  r.skip({"down_block_types", "up_block_types", "sample_size", "shift_factor"});
  r.finish("AutoencoderKL");
  c.check();
  return c;
}

AutoencoderKLConfig AutoencoderKLConfig::from_file(const std::string& path) {
  IDSYNTH_CHECK(fs::is_regular_file(path), path, ": not found (expected a diffusers AutoencoderKL config.json)");
  return from_json(json::parse_file(path), path);
}

json::Value AutoencoderKLConfig::to_json() const {
  std::map<std::string, json::Value> m;
  m["_class_name"] = "AutoencoderKL";
  m["_diffusers_version"] = "0.29.2";
  m["in_channels"] = in_channels;
  m["out_channels"] = out_channels;
  json::Value::Array down, up, channels;
  for (const auto& s : down_block_types) down.emplace_back(s);
  for (const auto& s : up_block_types) up.emplace_back(s);
  for (int64_t ch : block_out_channels) channels.emplace_back(ch);
  m["down_block_types"] = json::Value(std::move(down));
  m["up_block_types"] = json::Value(std::move(up));
  m["block_out_channels"] = json::Value(std::move(channels));
  m["layers_per_block"] = layers_per_block;
  m["act_fn"] = act_fn;
  m["latent_channels"] = latent_channels;
  m["norm_num_groups"] = norm_num_groups;
  m["sample_size"] = sample_size;
  m["scaling_factor"] = scaling_factor;
  m["shift_factor"] = shift_factor ? json::Value(*shift_factor) : json::Value(nullptr);
  m["latents_mean"] = doubles_or_null(latents_mean);
  m["latents_std"] = doubles_or_null(latents_std);
  m["force_upcast"] = force_upcast;
  m["use_quant_conv"] = use_quant_conv;
  m["use_post_quant_conv"] = use_post_quant_conv;
  // 0.29.2 has no such key: write it only when it differs from the behaviour it implies.
  if (!mid_block_add_attention) m["mid_block_add_attention"] = false;
  json::Value::Object object(m.begin(), m.end());
  return json::Value(std::move(object));
}

void AutoencoderKLConfig::check() const {
  const std::string& s = source;
  const size_t n = block_out_channels.size();
  IDSYNTH_CHECK(n > 0, s, ": block_out_channels: expected at least one entry, found none");
  IDSYNTH_CHECK(down_block_types.size() == n, s, ": down_block_types: expected one per block_out_channels entry (", n,
                "), found ", down_block_types.size());
  IDSYNTH_CHECK(up_block_types.size() == n, s, ": up_block_types: expected one per block_out_channels entry (", n,
                "), found ", up_block_types.size());
  for (size_t i = 0; i < n; ++i) {
    check_unet_block_type(vae_down_block_types(), down_block_types[i], cat(s, ": down_block_types[", i, "]"));
    check_unet_block_type(vae_up_block_types(), up_block_types[i], cat(s, ": up_block_types[", i, "]"));
    IDSYNTH_CHECK(block_out_channels[i] > 0 && norm_num_groups > 0 && block_out_channels[i] % norm_num_groups == 0, s,
                  ": block_out_channels[", i, "]: expected a positive multiple of norm_num_groups (", norm_num_groups,
                  "), found ", block_out_channels[i]);
  }
  IDSYNTH_CHECK(layers_per_block >= 1, s, ": layers_per_block: expected >= 1, found ", layers_per_block);
  IDSYNTH_CHECK(in_channels > 0 && out_channels > 0 && latent_channels > 0, s,
                ": in_channels/out_channels/latent_channels: expected > 0, found ", in_channels, "/", out_channels, "/",
                latent_channels);
  IDSYNTH_CHECK(is_known_activation(act_fn), s, ": act_fn: expected one of ", known_activations(), ", found '", act_fn, "'");
  IDSYNTH_CHECK(scaling_factor > 0, s, ": scaling_factor: expected > 0, found ", scaling_factor);
}

// ---------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------
DownEncoderBlock2DImpl::DownEncoderBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t num_layers,
                                               int64_t groups, const std::string& act_fn, bool add_downsample) {
  for (int64_t i = 0; i < num_layers; ++i) {
    resnets_.push_back(ResnetBlock2D(vae_resnet(i == 0 ? in_channels : out_channels, out_channels, groups, act_fn)));
  }
  register_list(*this, "resnets", resnets_);
  if (add_downsample) {
    downsampler_ = Downsample2D(out_channels, out_channels, /*padding=*/0);  // encoder: asymmetric pad
    register_list(*this, "downsamplers", std::vector<Downsample2D>{downsampler_});
  }
}

at::Tensor DownEncoderBlock2DImpl::forward(at::Tensor x) {
  // Ref: unet_2d_blocks.py DownEncoderBlock2D.forward
  for (auto& resnet : resnets_) x = resnet(x);
  if (downsampler_) x = downsampler_(x);  // [B, C, H/2, W/2]
  return x;
}

UpDecoderBlock2DImpl::UpDecoderBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t num_layers,
                                           int64_t groups, const std::string& act_fn, bool add_upsample) {
  for (int64_t i = 0; i < num_layers; ++i) {
    resnets_.push_back(ResnetBlock2D(vae_resnet(i == 0 ? in_channels : out_channels, out_channels, groups, act_fn)));
  }
  register_list(*this, "resnets", resnets_);
  if (add_upsample) {
    upsampler_ = Upsample2D(out_channels, out_channels);
    register_list(*this, "upsamplers", std::vector<Upsample2D>{upsampler_});
  }
}

at::Tensor UpDecoderBlock2DImpl::forward(at::Tensor x) {
  // Ref: unet_2d_blocks.py UpDecoderBlock2D.forward
  for (auto& resnet : resnets_) x = resnet(x);
  if (upsampler_) x = upsampler_(x);  // [B, C, 2H, 2W]
  return x;
}

UNetMidBlock2DImpl::UNetMidBlock2DImpl(int64_t channels, int64_t groups, const std::string& act_fn, bool add_attention) {
  resnets_.push_back(ResnetBlock2D(vae_resnet(channels, channels, groups, act_fn)));
  if (add_attention) {
    // One head of all channels (attention_head_dim = channels), group-normed, residual, float32 softmax.
    AttentionOptions a;
    a.query_dim = channels;
    a.heads = 1;
    a.dim_head = channels;
    a.bias = true;
    a.out_bias = true;
    a.upcast_softmax = true;
    a.norm_num_groups = groups;
    a.eps = kVaeEps;
    a.residual_connection = true;
    attentions_.push_back(Attention(a));
    register_list(*this, "attentions", attentions_);
  }
  resnets_.push_back(ResnetBlock2D(vae_resnet(channels, channels, groups, act_fn)));
  register_list(*this, "resnets", resnets_);
}

at::Tensor UNetMidBlock2DImpl::forward(at::Tensor x) {
  // Ref: unet_2d_blocks.py UNetMidBlock2D.forward (temb None)
  x = resnets_[0](x);
  if (!attentions_.empty()) x = attentions_[0](x);
  return resnets_[1](x);
}

// ---------------------------------------------------------------------------------------------
// Encoder / Decoder
// ---------------------------------------------------------------------------------------------
VaeEncoderImpl::VaeEncoderImpl(const AutoencoderKLConfig& c) : act_fn_(c.act_fn) {
  // Ref: vae.py Encoder.__init__ (double_z: conv_out gives mean and logvar)
  const auto& boc = c.block_out_channels;
  const size_t n = boc.size();
  conv_in = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(c.in_channels, boc[0], 3).padding(1)));
  int64_t output_channel = boc[0];
  for (size_t i = 0; i < n; ++i) {
    const int64_t input_channel = output_channel;
    output_channel = boc[i];
    down_.push_back(
        DownEncoderBlock2D(input_channel, output_channel, c.layers_per_block, c.norm_num_groups, c.act_fn, i + 1 < n));
  }
  register_list(*this, "down_blocks", down_);
  mid_block = register_module("mid_block", UNetMidBlock2D(boc[n - 1], c.norm_num_groups, c.act_fn, c.mid_block_add_attention));
  conv_norm_out = register_module("conv_norm_out", nn::GroupNorm(nn::GroupNormOptions(c.norm_num_groups, boc[n - 1]).eps(kVaeEps)));
  conv_out = register_module("conv_out", nn::Conv2d(nn::Conv2dOptions(boc[n - 1], 2 * c.latent_channels, 3).padding(1)));
}

at::Tensor VaeEncoderImpl::forward(const at::Tensor& x) {
  // Ref: vae.py Encoder.forward
  at::Tensor h = conv(conv_in, x);  // [B, boc0, H, W]
  for (auto& block : down_) h = block(h);
  h = mid_block(h);  // [B, boc_last, H/f, W/f]
  return conv(conv_out, apply_activation_(act_fn_, normalize(conv_norm_out, h)));  // [B, 2*latent, H/f, W/f]
}

VaeDecoderImpl::VaeDecoderImpl(const AutoencoderKLConfig& c) : act_fn_(c.act_fn) {
  // Ref: vae.py Decoder.__init__ (norm_type "group")
  const auto& boc = c.block_out_channels;
  const size_t n = boc.size();
  conv_in = register_module("conv_in", nn::Conv2d(nn::Conv2dOptions(c.latent_channels, boc[n - 1], 3).padding(1)));
  up_blocks = register_module("up_blocks", nn::ModuleList());
  mid_block = register_module("mid_block", UNetMidBlock2D(boc[n - 1], c.norm_num_groups, c.act_fn, c.mid_block_add_attention));
  int64_t output_channel = boc[n - 1];
  for (size_t i = 0; i < n; ++i) {
    const int64_t prev_output_channel = output_channel;
    output_channel = boc[n - 1 - i];
    up_.push_back(UpDecoderBlock2D(prev_output_channel, output_channel, c.layers_per_block + 1, c.norm_num_groups,
                                   c.act_fn, i + 1 < n));
    up_blocks->push_back(up_.back());
  }
  conv_norm_out = register_module("conv_norm_out", nn::GroupNorm(nn::GroupNormOptions(c.norm_num_groups, boc[0]).eps(kVaeEps)));
  conv_out = register_module("conv_out", nn::Conv2d(nn::Conv2dOptions(boc[0], c.out_channels, 3).padding(1)));
}

at::Tensor VaeDecoderImpl::forward(const at::Tensor& z) {
  // Ref: vae.py Decoder.forward
  at::Tensor h = conv(conv_in, z);  // [B, boc_last, h, w]
  h = mid_block(h);
  for (auto& block : up_) h = block(h);  // [B, boc0, h*f, w*f]
  return conv(conv_out, apply_activation_(act_fn_, normalize(conv_norm_out, h)));  // [B, out, h*f, w*f]
}

// ---------------------------------------------------------------------------------------------
// AutoencoderKL
// ---------------------------------------------------------------------------------------------
at::Tensor LatentDistribution::std() const { return at::exp(0.5 * logvar); }

AutoencoderKLImpl::AutoencoderKLImpl(AutoencoderKLConfig config) : config_(std::move(config)) {
  config_.check();
  const int64_t latent = config_.latent_channels;
  encoder = register_module("encoder", VaeEncoder(config_));
  decoder = register_module("decoder", VaeDecoder(config_));
  if (config_.use_quant_conv) {
    quant_conv = register_module("quant_conv", nn::Conv2d(nn::Conv2dOptions(2 * latent, 2 * latent, 1)));
  }
  if (config_.use_post_quant_conv) {
    post_quant_conv = register_module("post_quant_conv", nn::Conv2d(nn::Conv2dOptions(latent, latent, 1)));
  }
  set_channels_last(channels_last_);
}

void AutoencoderKLImpl::set_channels_last(bool on) {
  channels_last_ = on;
  set_conv_weight_format(*this, on ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

at::Tensor AutoencoderKLImpl::prepare(const at::Tensor& x) const {
  const auto options = encoder->parameters().front().options();
  at::Tensor y = x.to(options.device(), options.dtype().toScalarType());
  return channels_last_ ? y.contiguous(at::MemoryFormat::ChannelsLast) : y;
}

LatentDistribution AutoencoderKLImpl::encode(const at::Tensor& image) {
  // Ref: autoencoder_kl.py AutoencoderKL.encode + vae.py DiagonalGaussianDistribution
  // NoGradGuard, not InferenceMode: callers may update the returned tensors in place outside
  // inference mode (schedulers), which inference tensors forbid.
  const bool grad = record_gradients_ && at::GradMode::is_enabled();
  torch::AutoGradMode mode(grad);
  IDSYNTH_CHECK(image.dim() == 4 && image.size(1) == config_.in_channels, "VAE encode: expected [B, ",
                config_.in_channels, ", H, W], found ", image.sizes());
  const int64_t f = config_.spatial_factor();
  IDSYNTH_CHECK(image.size(2) % f == 0 && image.size(3) % f == 0, "VAE encode: expected H and W multiples of ", f,
                ", found ", image.sizes());
  at::Tensor moments = encoder(prepare(image));
  if (quant_conv) moments = conv(quant_conv, moments);
  auto parts = moments.chunk(2, 1);  // mean, logvar: [B, latent, H/f, W/f] each
  return {parts[0].contiguous(), at::clamp(parts[1], -30.0, 20.0).contiguous()};
}

at::Tensor AutoencoderKLImpl::decode(const at::Tensor& z) {
  // Ref: autoencoder_kl.py AutoencoderKL._decode (no tiling, no slicing)
  // NoGradGuard, not InferenceMode: callers may update the returned tensors in place outside
  // inference mode (schedulers), which inference tensors forbid.
  const bool grad = record_gradients_ && at::GradMode::is_enabled();
  torch::AutoGradMode mode(grad);
  IDSYNTH_CHECK(z.dim() == 4 && z.size(1) == config_.latent_channels, "VAE decode: expected [B, ",
                config_.latent_channels, ", h, w], found ", z.sizes());
  at::Tensor x = prepare(z);
  if (post_quant_conv) x = conv(post_quant_conv, x);
  return decoder(x).contiguous();
}

AutoencoderKL load_vae(const ComponentFiles& files, c10::Device device, c10::ScalarType dtype, LoadReport* report) {
  log::Stopwatch watch;
  LoadReport r;
  // A single file has no config: Stable Diffusion 1.5's, unless one is given beside it.
  AutoencoderKLConfig config = files.config.empty()
                        ? AutoencoderKLConfig::from_json(sd15_vae_config(), "Stable Diffusion 1.5 VAE config")
                        : AutoencoderKLConfig::from_file(files.config);
  const TensorDict weights = read_component_weights(
      files, Component::kVAE, [&](const TensorDict& checkpoint) { return ldm_vae_to_diffusers(checkpoint, config, files.weights); }, r);
  AutoencoderKL vae(std::move(config));
  vae->to(device, dtype);
  load_state_dict(*vae, weights);
  vae->eval();
  r.parameters = count_parameters(*vae);
  LOG_INF("loaded VAE from ", files.weights, " (", r.layout, ", ", dtype_string(r.file_dtype), "): ", r.parameters,
          " parameters, ", dtype_string(dtype), " on ", device.str(), ", taking ", watch.seconds(), " s");
  if (report != nullptr) *report = r;
  return vae;
}

AutoencoderKL load_vae(const std::string& folder, c10::Device device, c10::ScalarType dtype) {
  return load_vae(locate_component(folder, Component::kVAE), device, dtype);
}

}  // namespace idsynth::generator
