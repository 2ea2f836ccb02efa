#include "generator/unet_2d_condition.h"

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

namespace idsynth::generator {

namespace nn = torch::nn;
namespace fs = std::filesystem;

namespace {

constexpr const char* kDiffusersVersion = "0.29.2";

// ---------------------------------------------------------------------------------------------
// JSON helpers for the shapes ConfigReader does not cover: "int or list", optional ints, lists.
// ---------------------------------------------------------------------------------------------
std::string field(const std::string& source, const std::string& key) { return cat(source, ": ", key); }

void read_int_or_list(const json::Value& root, const std::string& source, const std::string& key,
                      std::vector<int64_t>& out) {
  const json::Value* v = root.find(key);
  if (v == nullptr || v->is_null()) return;
  out.clear();
  if (v->is_array()) {
    for (const auto& item : v->as_array()) out.push_back(item.as_int(field(source, key)));
    IDSYNTH_CHECK(!out.empty(), source, ": ", key, ": expected an integer or a non-empty list, found []");
  } else {
    out.push_back(v->as_int(field(source, key)));
  }
}

void read_bool_or_list(const json::Value& root, const std::string& source, const std::string& key,
                       std::vector<bool>& out) {
  const json::Value* v = root.find(key);
  if (v == nullptr || v->is_null()) return;
  out.clear();
  if (v->is_array()) {
    for (const auto& item : v->as_array()) out.push_back(item.as_bool(field(source, key)));
  } else {
    out.push_back(v->as_bool(field(source, key)));
  }
}

void read_optional_int(const json::Value& root, const std::string& source, const std::string& key,
                       std::optional<int64_t>& out) {
  const json::Value* v = root.find(key);
  if (v == nullptr || v->is_null()) return;
  out = v->as_int(field(source, key));
}

void read_optional_bool(const json::Value& root, const std::string& source, const std::string& key,
                        std::optional<bool>& out) {
  const json::Value* v = root.find(key);
  if (v == nullptr || v->is_null()) return;
  out = v->as_bool(field(source, key));
}

void read_strings(const json::Value& root, const std::string& source, const std::string& key,
                  std::vector<std::string>& out) {
  const json::Value* v = root.find(key);
  if (v == nullptr) return;
  out.clear();
  for (const auto& item : v->as_array(field(source, key))) out.push_back(item.as_string(field(source, key)));
}

json::Value int_or_list(const std::vector<int64_t>& values) {
  if (values.size() == 1) return json::Value(values[0]);
  json::Value::Array a;
  for (int64_t v : values) a.emplace_back(v);
  return json::Value(std::move(a));
}

template <typename T>
json::Value optional_value(const std::optional<T>& v) {
  return v ? json::Value(*v) : json::Value(nullptr);
}

json::Value strings(const std::vector<std::string>& values) {
  json::Value::Array a;
  for (const auto& v : values) a.emplace_back(v);
  return json::Value(std::move(a));
}

std::string list_string(const std::vector<int64_t>& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) s += cat(i ? ", " : "", values[i]);
  return s + "]";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------
UNet2DConditionConfig UNet2DConditionConfig::from_json(const json::Value& root, const std::string& source) {
  UNet2DConditionConfig c;
  c.source = source;
  ConfigReader r(root, source);
  read_optional_int(root, source, "sample_size", c.sample_size);
  r.get("in_channels", c.in_channels);
  r.get("out_channels", c.out_channels);
  r.get("center_input_sample", c.center_input_sample);
  r.get("flip_sin_to_cos", c.flip_sin_to_cos);
  r.get("freq_shift", c.freq_shift);
  read_strings(root, source, "down_block_types", c.down_block_types);
  r.get("mid_block_type", c.mid_block_type);
  read_strings(root, source, "up_block_types", c.up_block_types);
  read_bool_or_list(root, source, "only_cross_attention", c.only_cross_attention);
  r.get("block_out_channels", c.block_out_channels);
  read_int_or_list(root, source, "layers_per_block", c.layers_per_block);
  r.get("downsample_padding", c.downsample_padding);
  r.get("mid_block_scale_factor", c.mid_block_scale_factor);
  r.get("dropout", c.dropout);
  r.get("act_fn", c.act_fn);
  if (const json::Value* v = root.find("norm_num_groups"); v && v->is_null()) {
    fail(source, ": norm_num_groups: expected an integer (null, i.e. no conv_norm_out, is not supported), found null");
  }
  r.get("norm_num_groups", c.norm_num_groups);
  r.get("norm_eps", c.norm_eps);
  read_int_or_list(root, source, "cross_attention_dim", c.cross_attention_dim);
  read_int_or_list(root, source, "transformer_layers_per_block", c.transformer_layers_per_block);
  if (const json::Value* v = root.find("reverse_transformer_layers_per_block")) c.reverse_transformer_layers_per_block = *v;
  read_optional_int(root, source, "encoder_hid_dim", c.encoder_hid_dim);
  r.get("encoder_hid_dim_type", c.encoder_hid_dim_type);
  read_int_or_list(root, source, "attention_head_dim", c.attention_head_dim);
  read_int_or_list(root, source, "num_attention_heads", c.num_attention_heads);
  r.get("dual_cross_attention", c.dual_cross_attention);
  r.get("use_linear_projection", c.use_linear_projection);
  r.get("class_embed_type", c.class_embed_type);
  r.get("addition_embed_type", c.addition_embed_type);
  read_optional_int(root, source, "addition_time_embed_dim", c.addition_time_embed_dim);
  read_optional_int(root, source, "num_class_embeds", c.num_class_embeds);
  r.get("upcast_attention", c.upcast_attention);
  r.get("resnet_time_scale_shift", c.resnet_time_scale_shift);
  r.get("resnet_skip_time_act", c.resnet_skip_time_act);
  r.get("resnet_out_scale_factor", c.resnet_out_scale_factor);
  r.get("time_embedding_type", c.time_embedding_type);
  read_optional_int(root, source, "time_embedding_dim", c.time_embedding_dim);
  r.get("time_embedding_act_fn", c.time_embedding_act_fn);
  r.get("timestep_post_act", c.timestep_post_act);
  read_optional_int(root, source, "time_cond_proj_dim", c.time_cond_proj_dim);
  r.get("conv_in_kernel", c.conv_in_kernel);
  r.get("conv_out_kernel", c.conv_out_kernel);
  read_optional_int(root, source, "projection_class_embeddings_input_dim", c.projection_class_embeddings_input_dim);
  r.get("attention_type", c.attention_type);
  r.get("class_embeddings_concat", c.class_embeddings_concat);
  read_optional_bool(root, source, "mid_block_only_cross_attention", c.mid_block_only_cross_attention);
  r.get("cross_attention_norm", c.cross_attention_norm);
  r.get("addition_embed_type_num_heads", c.addition_embed_type_num_heads);
  r.skip({"sample_size", "down_block_types", "up_block_types", "only_cross_attention", "layers_per_block",
          "cross_attention_dim", "transformer_layers_per_block", "reverse_transformer_layers_per_block",
          "encoder_hid_dim", "attention_head_dim", "num_attention_heads", "addition_time_embed_dim",
          "num_class_embeds", "time_embedding_dim", "time_cond_proj_dim", "projection_class_embeddings_input_dim",
          "mid_block_only_cross_attention"});
  r.finish("UNet2DConditionModel");
  c.check();
  return c;
}

UNet2DConditionConfig UNet2DConditionConfig::from_file(const std::string& path) {
  IDSYNTH_CHECK(fs::is_regular_file(path), path, ": not found (expected a diffusers UNet2DConditionModel config.json)");
  return from_json(json::parse_file(path), path);
}

json::Value UNet2DConditionConfig::to_json() const {
  std::map<std::string, json::Value> m;  // sorted, as diffusers writes (json.dumps(sort_keys=True))
  m["_class_name"] = "UNet2DConditionModel";
  m["_diffusers_version"] = kDiffusersVersion;
  m["sample_size"] = optional_value(sample_size);
  m["in_channels"] = in_channels;
  m["out_channels"] = out_channels;
  m["center_input_sample"] = center_input_sample;
  m["flip_sin_to_cos"] = flip_sin_to_cos;
  m["freq_shift"] = freq_shift == static_cast<double>(static_cast<int64_t>(freq_shift))
                        ? json::Value(static_cast<int64_t>(freq_shift))
                        : json::Value(freq_shift);
  m["down_block_types"] = strings(down_block_types);
  m["mid_block_type"] = mid_block_type;
  m["up_block_types"] = strings(up_block_types);
  if (only_cross_attention.size() == 1) {
    m["only_cross_attention"] = static_cast<bool>(only_cross_attention[0]);
  } else {
    json::Value::Array a;
    for (bool b : only_cross_attention) a.emplace_back(b);
    m["only_cross_attention"] = json::Value(std::move(a));
  }
  json::Value::Array channels;
  for (int64_t ch : block_out_channels) channels.emplace_back(ch);
  m["block_out_channels"] = json::Value(std::move(channels));
  m["layers_per_block"] = int_or_list(layers_per_block);
  m["downsample_padding"] = downsample_padding;
  m["mid_block_scale_factor"] = mid_block_scale_factor;
  m["dropout"] = dropout;
  m["act_fn"] = act_fn;
  m["norm_num_groups"] = norm_num_groups;
  m["norm_eps"] = norm_eps;
  m["cross_attention_dim"] = int_or_list(cross_attention_dim);
  m["transformer_layers_per_block"] = int_or_list(transformer_layers_per_block);
  m["reverse_transformer_layers_per_block"] = reverse_transformer_layers_per_block;
  m["encoder_hid_dim"] = optional_value(encoder_hid_dim);
  m["encoder_hid_dim_type"] = optional_value(encoder_hid_dim_type);
  m["attention_head_dim"] = int_or_list(attention_head_dim);
  m["num_attention_heads"] = num_attention_heads.empty() ? json::Value(nullptr) : int_or_list(num_attention_heads);
  m["dual_cross_attention"] = dual_cross_attention;
  m["use_linear_projection"] = use_linear_projection;
  m["class_embed_type"] = optional_value(class_embed_type);
  m["addition_embed_type"] = optional_value(addition_embed_type);
  m["addition_time_embed_dim"] = optional_value(addition_time_embed_dim);
  m["num_class_embeds"] = optional_value(num_class_embeds);
  m["upcast_attention"] = upcast_attention;
  m["resnet_time_scale_shift"] = resnet_time_scale_shift;
  m["resnet_skip_time_act"] = resnet_skip_time_act;
  m["resnet_out_scale_factor"] = resnet_out_scale_factor;
  m["time_embedding_type"] = time_embedding_type;
  m["time_embedding_dim"] = optional_value(time_embedding_dim);
  m["time_embedding_act_fn"] = optional_value(time_embedding_act_fn);
  m["timestep_post_act"] = optional_value(timestep_post_act);
  m["time_cond_proj_dim"] = optional_value(time_cond_proj_dim);
  m["conv_in_kernel"] = conv_in_kernel;
  m["conv_out_kernel"] = conv_out_kernel;
  m["projection_class_embeddings_input_dim"] = optional_value(projection_class_embeddings_input_dim);
  m["attention_type"] = attention_type;
  m["class_embeddings_concat"] = class_embeddings_concat;
  m["mid_block_only_cross_attention"] = optional_value(mid_block_only_cross_attention);
  m["cross_attention_norm"] = optional_value(cross_attention_norm);
  m["addition_embed_type_num_heads"] = addition_embed_type_num_heads;
  json::Value::Object object(m.begin(), m.end());
  return json::Value(std::move(object));
}

void UNet2DConditionConfig::check() const {
  const std::string& s = source;
  const size_t n = down_block_types.size();
  // Ref: unet_2d_condition.py UNet2DConditionModel._check_config, plus what this port supports.
  IDSYNTH_CHECK(n > 0, s, ": down_block_types: expected at least one block, found none");
  IDSYNTH_CHECK(up_block_types.size() == n, s, ": up_block_types: expected as many entries as down_block_types (", n,
                "), found ", up_block_types.size());
  IDSYNTH_CHECK(block_out_channels.size() == n, s, ": block_out_channels: expected one entry per down block (", n,
                "), found ", block_out_channels.size(), " ", list_string(block_out_channels));
  auto check_per_block = [&](const char* key, size_t size) {
    IDSYNTH_CHECK(size == 1 || size == n, s, ": ", key, ": expected one value or one per down block (", n, "), found ",
                  size, " values");
  };
  check_per_block("layers_per_block", layers_per_block.size());
  check_per_block("cross_attention_dim", cross_attention_dim.size());
  check_per_block("transformer_layers_per_block", transformer_layers_per_block.size());
  check_per_block("attention_head_dim", attention_head_dim.size());
  check_per_block("only_cross_attention", only_cross_attention.size());

  for (size_t i = 0; i < n; ++i) {
    check_unet_block_type(unet_down_block_types(), down_block_types[i], cat(s, ": down_block_types[", i, "]"));
    check_unet_block_type(unet_up_block_types(), up_block_types[i], cat(s, ": up_block_types[", i, "]"));
    const int64_t ch = block_out_channels[i];
    IDSYNTH_CHECK(ch > 0 && norm_num_groups > 0 && ch % norm_num_groups == 0, s, ": block_out_channels[", i,
                  "]: expected a positive multiple of norm_num_groups (", norm_num_groups, "), found ", ch);
    IDSYNTH_CHECK(per_block(layers_per_block, i) >= 1, s, ": layers_per_block: expected >= 1, found ",
                  per_block(layers_per_block, i));
    IDSYNTH_CHECK(per_block(transformer_layers_per_block, i) >= 1, s,
                  ": transformer_layers_per_block: expected >= 1, found ", per_block(transformer_layers_per_block, i));
    IDSYNTH_CHECK(per_block(cross_attention_dim, i) > 0, s, ": cross_attention_dim: expected > 0, found ",
                  per_block(cross_attention_dim, i));
    IDSYNTH_CHECK(heads(i) > 0 && ch % heads(i) == 0, s, ": attention_head_dim[", i,
                  "]: expected a head count (SD-1.x meaning) dividing block_out_channels[", i, "] = ", ch, ", found ",
                  heads(i));
    IDSYNTH_CHECK(!only_cross_attention[only_cross_attention.size() == 1 ? 0 : i], s,
                  ": only_cross_attention: expected false (not supported), found true");
  }
  check_unet_block_type(unet_mid_block_types(), mid_block_type, s + ": mid_block_type");
  IDSYNTH_CHECK(in_channels > 0 && out_channels > 0, s, ": in_channels/out_channels: expected > 0, found ", in_channels,
                "/", out_channels);
  IDSYNTH_CHECK(is_known_activation(act_fn), s, ": act_fn: expected one of ", known_activations(), ", found '", act_fn, "'");
  IDSYNTH_CHECK(norm_eps > 0, s, ": norm_eps: expected > 0, found ", norm_eps);
  IDSYNTH_CHECK(downsample_padding >= 0, s, ": downsample_padding: expected >= 0, found ", downsample_padding);
  IDSYNTH_CHECK(conv_in_kernel > 0 && conv_in_kernel % 2 == 1, s, ": conv_in_kernel: expected an odd size, found ",
                conv_in_kernel);
  IDSYNTH_CHECK(conv_out_kernel > 0 && conv_out_kernel % 2 == 1, s, ": conv_out_kernel: expected an odd size, found ",
                conv_out_kernel);
  IDSYNTH_CHECK(time_embed_dim() > 0, s, ": time_embedding_dim: expected > 0, found ", time_embed_dim());

  // Settings of other UNet variants (SDXL, class/addition embeddings, LCM, ...): refused by name.
  auto unsupported = [&](bool is_off, const char* key, const std::string& expected, const std::string& found) {
    IDSYNTH_CHECK(is_off, s, ": ", key, ": expected ", expected, " (the only value this UNet supports), found ", found);
  };
  auto opt_str = [](const std::optional<std::string>& v) { return v ? "'" + *v + "'" : std::string("null"); };
  auto opt_int = [](const std::optional<int64_t>& v) { return v ? cat(*v) : std::string("null"); };
  unsupported(num_attention_heads.empty(), "num_attention_heads",
              "null (heads come from attention_head_dim, as in diffusers 0.29)", list_string(num_attention_heads));
  unsupported(!class_embed_type, "class_embed_type", "null", opt_str(class_embed_type));
  unsupported(!addition_embed_type, "addition_embed_type", "null", opt_str(addition_embed_type));
  unsupported(!addition_time_embed_dim, "addition_time_embed_dim", "null", opt_int(addition_time_embed_dim));
  unsupported(!num_class_embeds, "num_class_embeds", "null", opt_int(num_class_embeds));
  unsupported(!projection_class_embeddings_input_dim, "projection_class_embeddings_input_dim", "null",
              opt_int(projection_class_embeddings_input_dim));
  unsupported(!encoder_hid_dim, "encoder_hid_dim", "null", opt_int(encoder_hid_dim));
  unsupported(!encoder_hid_dim_type, "encoder_hid_dim_type", "null", opt_str(encoder_hid_dim_type));
  unsupported(!time_cond_proj_dim, "time_cond_proj_dim", "null", opt_int(time_cond_proj_dim));
  unsupported(!time_embedding_act_fn, "time_embedding_act_fn", "null", opt_str(time_embedding_act_fn));
  unsupported(!timestep_post_act, "timestep_post_act", "null", opt_str(timestep_post_act));
  unsupported(!cross_attention_norm, "cross_attention_norm", "null", opt_str(cross_attention_norm));
  unsupported(reverse_transformer_layers_per_block.is_null(), "reverse_transformer_layers_per_block", "null",
              reverse_transformer_layers_per_block.dump());
  unsupported(!dual_cross_attention, "dual_cross_attention", "false", "true");
  unsupported(!class_embeddings_concat, "class_embeddings_concat", "false", "true");
  unsupported(!resnet_skip_time_act, "resnet_skip_time_act", "false", "true");
  unsupported(!mid_block_only_cross_attention.value_or(false), "mid_block_only_cross_attention", "null or false", "true");
  unsupported(resnet_time_scale_shift == "default", "resnet_time_scale_shift", "'default'",
              "'" + resnet_time_scale_shift + "'");
  unsupported(time_embedding_type == "positional", "time_embedding_type", "'positional'",
              "'" + time_embedding_type + "'");
  unsupported(attention_type == "default", "attention_type", "'default'", "'" + attention_type + "'");
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------
UNet2DConditionImpl::UNet2DConditionImpl(UNet2DConditionConfig config) : config_(std::move(config)) {
  config_.check();
  const auto& c = config_;
  const size_t n = c.num_blocks();
  const int64_t temb = c.time_embed_dim();
  const auto& boc = c.block_out_channels;

  // Ref: unet_2d_condition.py UNet2DConditionModel.__init__ (registration order as diffusers)
  conv_in = register_module(
      "conv_in", nn::Conv2d(nn::Conv2dOptions(c.in_channels, boc[0], c.conv_in_kernel).padding((c.conv_in_kernel - 1) / 2)));
  // time_proj (Timesteps) has no weights: timestep_embedding() in forward.
  time_embedding = register_module("time_embedding", TimestepEmbedding(boc[0], temb, c.act_fn));
  down_blocks = register_module("down_blocks", nn::ModuleList());
  up_blocks = register_module("up_blocks", nn::ModuleList());

  auto common_args = [&](size_t block) {
    UNetBlockArgs a;
    a.temb_channels = temb;
    a.resnet_eps = c.norm_eps;
    a.act_fn = c.act_fn;
    a.resnet_groups = c.norm_num_groups;
    a.output_scale_factor = c.resnet_out_scale_factor;
    a.downsample_padding = c.downsample_padding;
    a.num_attention_heads = c.heads(block);
    a.cross_attention_dim = UNet2DConditionConfig::per_block(c.cross_attention_dim, block);
    a.transformer_layers = UNet2DConditionConfig::per_block(c.transformer_layers_per_block, block);
    a.use_linear_projection = c.use_linear_projection;
    a.upcast_attention = c.upcast_attention;
    return a;
  };

  // down: block i goes from boc[i-1] to boc[i] channels and halves the size unless it is the last
  int64_t output_channel = boc[0];
  for (size_t i = 0; i < n; ++i) {
    UNetBlockArgs a = common_args(i);
    a.num_layers = UNet2DConditionConfig::per_block(c.layers_per_block, i);
    a.in_channels = output_channel;
    output_channel = boc[i];
    a.out_channels = output_channel;
    a.add_sample = i + 1 < n;
    down_.push_back(make_unet_down_block(c.down_block_types[i], a, cat(c.source, ": down_block_types[", i, "]")));
    down_blocks->push_back(down_.back());
  }

  // mid
  {
    UNetBlockArgs a = common_args(n - 1);
    a.num_layers = 1;
    a.in_channels = a.out_channels = boc[n - 1];
    a.output_scale_factor = c.mid_block_scale_factor;
    mid_block = make_unet_mid_block(c.mid_block_type, a, c.source + ": mid_block_type");
    register_module("mid_block", mid_block);
  }

  // up: per-block settings read in reverse (up block i mirrors down block n-1-i)
  output_channel = boc[n - 1];
  for (size_t i = 0; i < n; ++i) {
    const size_t mirror = n - 1 - i;
    UNetBlockArgs a = common_args(mirror);
    a.num_layers = UNet2DConditionConfig::per_block(c.layers_per_block, mirror) + 1;
    a.prev_output_channel = output_channel;
    output_channel = boc[mirror];
    a.out_channels = output_channel;
    a.in_channels = boc[mirror == 0 ? 0 : mirror - 1];
    a.add_sample = i + 1 < n;
    if (a.add_sample) ++num_upsamplers_;
    up_.push_back(make_unet_up_block(c.up_block_types[i], a, cat(c.source, ": up_block_types[", i, "]")));
    up_blocks->push_back(up_.back());
  }

  conv_norm_out = register_module("conv_norm_out", nn::GroupNorm(nn::GroupNormOptions(c.norm_num_groups, boc[0]).eps(c.norm_eps)));
  conv_out = register_module(
      "conv_out",
      nn::Conv2d(nn::Conv2dOptions(boc[0], c.out_channels, c.conv_out_kernel).padding((c.conv_out_kernel - 1) / 2)));
  set_channels_last(channels_last_);
}

void UNet2DConditionImpl::set_channels_last(bool on) {
  channels_last_ = on;
  set_conv_weight_format(*this, on ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

at::Tensor UNet2DConditionImpl::forward(const at::Tensor& sample, const at::Tensor& timestep,
                                        const at::Tensor& encoder_hidden_states) {
  // Ref: unet_2d_condition.py UNet2DConditionModel.forward (no class/addition embeddings, adapters
  // or ControlNet residuals)
  // No-grad mode, not InferenceMode: callers may update the returned tensors in place outside
  // inference mode (schedulers), which inference tensors forbid.
  const bool record = at::GradMode::is_enabled() &&
                      (is_training() || sample.requires_grad() || encoder_hidden_states.requires_grad());
  at::AutoGradMode grad_mode(record);  // off unless recording
  const bool checkpointed = record && is_training() && gradient_checkpointing_;
  const auto& c = config_;
  const auto options = conv_in->weight.options();
  IDSYNTH_CHECK(sample.dim() == 4 && sample.size(1) == c.in_channels, "UNet: sample: expected [B, ", c.in_channels,
                ", H, W], found ", sample.sizes());
  const int64_t batch = sample.size(0);
  IDSYNTH_CHECK(encoder_hidden_states.dim() == 3 && encoder_hidden_states.size(0) == batch, "UNet: encoder_hidden_states: expected [",
                batch, ", L, C], found ", encoder_hidden_states.sizes());
  const at::Tensor ehs = encoder_hidden_states.to(options.device(), options.dtype().toScalarType());
  at::Tensor x = sample.to(options.device(), options.dtype().toScalarType());
  if (channels_last_) x = x.contiguous(at::MemoryFormat::ChannelsLast);

  // 0. sizes that are not multiples of 2^upsamplers need explicit upsample sizes
  const int64_t factor = int64_t{1} << num_upsamplers_;
  const bool forward_upsample_size = x.size(2) % factor != 0 || x.size(3) % factor != 0;
  if (c.center_input_sample) x = x * 2.0 - 1.0;

  // 1. time: [B] -> [B, boc0] sinusoids (float32) -> [B, time_embed_dim]
  at::Tensor t = timestep.to(options.device());
  if (t.dim() == 0) t = t.reshape({1});
  IDSYNTH_CHECK(t.dim() == 1 && (t.size(0) == 1 || t.size(0) == batch), "UNet: timestep: expected a scalar, [1] or [",
                batch, "], found ", timestep.sizes());
  t = t.expand({batch});
  const at::Tensor t_emb = timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift)
                               .to(options.dtype().toScalarType());
  const at::Tensor emb = time_embedding(t_emb);

  // 2. pre-process: [B, in, H, W] -> [B, boc0, H, W]
  x = conv(conv_in, x);

  // 3. down: each block adds its resnet/downsampler outputs to the skip list
  std::vector<at::Tensor> skips{x};
  for (auto& block : down_) {
    if (!checkpointed) {
      x = block->forward(x, emb, ehs, skips);  // [B, boc_last, H/2^(n-1), W/2^(n-1)]
      continue;
    }
    // A down block's output is also its last skip state, so the checkpoint returns only the skips.
    auto added = checkpoint(
        [block](const std::vector<at::Tensor>& in) {
          std::vector<at::Tensor> block_skips;
          block->forward(in[0], in[1], in[2], block_skips);
          return block_skips;
        },
        {x, emb, ehs});
    x = added.back();
    skips.insert(skips.end(), added.begin(), added.end());
  }

  // 4. mid
  if (checkpointed) {
    const auto block = mid_block;
    x = checkpoint(
        [block](const std::vector<at::Tensor>& in) {
          return std::vector<at::Tensor>{block->forward(in[0], in[1], in[2])};
        },
        {x, emb, ehs})[0];
  } else {
    x = mid_block->forward(x, emb, ehs);
  }

  // 5. up: each block takes its skips from the back; the upsampler matches the next skip's size
  for (size_t i = 0; i < up_.size(); ++i) {
    c10::optional<std::vector<int64_t>> upsample_size;
    const auto used = static_cast<size_t>(up_[i]->num_resnets());
    if (i + 1 < up_.size() && forward_upsample_size) {
      IDSYNTH_CHECK(skips.size() > used, "UNet: internal: skip connections exhausted");
      const at::Tensor& next = skips[skips.size() - used - 1];
      upsample_size = std::vector<int64_t>{next.size(2), next.size(3)};
    }
    if (!checkpointed) {
      x = up_[i]->forward(x, emb, ehs, skips, upsample_size);
      continue;
    }
    IDSYNTH_CHECK(skips.size() >= used, "UNet: internal: skip connections exhausted");
    std::vector<at::Tensor> inputs{x, emb, ehs};
    inputs.insert(inputs.end(), skips.end() - static_cast<std::ptrdiff_t>(used), skips.end());
    skips.resize(skips.size() - used);
    const auto block = up_[i];
    x = checkpoint(
        [block, upsample_size](const std::vector<at::Tensor>& in) {
          std::vector<at::Tensor> block_skips(in.begin() + 3, in.end());
          return std::vector<at::Tensor>{block->forward(in[0], in[1], in[2], block_skips, upsample_size)};
        },
        inputs)[0];
  }

  // 6. post-process: [B, boc0, H, W] -> [B, out, H, W]
  x = conv(conv_out, apply_activation_(c.act_fn, normalize(conv_norm_out, x)));
  return x.contiguous();
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------
UNet2DCondition load_unet(const ComponentFiles& files, c10::Device device, c10::ScalarType dtype, LoadReport* report,
                          const std::vector<LoraToApply>& loras) {
  log::Stopwatch watch;
  LoadReport r;
  // A single file has no config: Stable Diffusion 1.5's, unless one is given beside it.
  UNet2DConditionConfig config = files.config.empty()
                        ? UNet2DConditionConfig::from_json(sd15_unet_config(), "Stable Diffusion 1.5 UNet config")
                        : UNet2DConditionConfig::from_file(files.config);
  TensorDict weights = read_component_weights(
      files, Component::kUNet, [&](const TensorDict& checkpoint) { return ldm_unet_to_diffusers(checkpoint, config, files.weights); }, r);
  if (!loras.empty()) weights = fuse_loras(weights, Component::kUNet, loras, ldm_unet_names(config));
  UNet2DCondition unet(std::move(config));
  unet->to(device, dtype);
  load_state_dict(*unet, weights);
  unet->eval();
  r.parameters = count_parameters(*unet);
  LOG_INF("loaded UNet from ", files.weights, " (", r.layout, ", ", dtype_string(r.file_dtype), "): ", r.parameters,
          " parameters, ", dtype_string(dtype), " on ", device.str(), ", taking ", watch.seconds(), " s");
  if (report != nullptr) *report = r;
  return unet;
}

UNet2DCondition load_unet(const std::string& folder, c10::Device device, c10::ScalarType dtype) {
  return load_unet(locate_component(folder, Component::kUNet), device, dtype);
}

}  // namespace idsynth::generator
