#include "generator/single_file.h"

#include <ATen/ATen.h>

#include <unordered_set>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/weights.h"

namespace idsynth::generator {

namespace {

constexpr const char* kUnetPrefix = "model.diffusion_model.";
constexpr const char* kVaePrefix = "first_stage_model.";
constexpr const char* kEmaPrefix = "model_ema.";
// Lightning wraps the weights as {"state_dict": {...}, "global_step": N}; core's reader flattens
// nested dicts with '.', so the wrapper shows up as this prefix.
constexpr const char* kStateDictPrefix = "state_dict.";

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// ---------------------------------------------------------------------------------------------
// Rename tables. Each entry is one tensor: its LDM name, its diffusers name and the shape the config
// implies, so a checkpoint that does not fit the config fails at the first tensor that differs,
// with both shapes, instead of somewhere inside load_state_dict's list.
// ---------------------------------------------------------------------------------------------
struct Move {
  std::string ldm;
  std::string diffusers;
  std::vector<int64_t> shape;
  bool from_conv1x1 = false;  // a linear weight the LDM file may store as a 1x1 conv [out, in, 1, 1]
};

class MoveTable {
 public:
  std::vector<Move> moves;

  void tensor(const std::string& ldm, const std::string& diffusers, std::vector<int64_t> shape, bool from_conv1x1 = false) {
    moves.push_back({ldm, diffusers, std::move(shape), from_conv1x1});
  }
  // GroupNorm / LayerNorm: weight and bias of `channels`.
  void norm(const std::string& ldm, const std::string& diffusers, int64_t channels) {
    tensor(ldm + ".weight", diffusers + ".weight", {channels});
    tensor(ldm + ".bias", diffusers + ".bias", {channels});
  }
  void conv(const std::string& ldm, const std::string& diffusers, int64_t out, int64_t in, int64_t kernel) {
    tensor(ldm + ".weight", diffusers + ".weight", {out, in, kernel, kernel});
    tensor(ldm + ".bias", diffusers + ".bias", {out});
  }
  void linear(const std::string& ldm, const std::string& diffusers, int64_t out, int64_t in, bool bias = true,
              bool from_conv1x1 = false) {
    tensor(ldm + ".weight", diffusers + ".weight", {out, in}, from_conv1x1);
    if (bias) tensor(ldm + ".bias", diffusers + ".bias", {out});
  }
};

// LDM ResBlock -> ResnetBlock2D. in_layers = [GroupNorm, SiLU, Conv], emb_layers = [SiLU, Linear],
// out_layers = [GroupNorm, SiLU, Dropout, Conv]: the indices are the Sequential positions.
void unet_resnet(MoveTable& t, const std::string& ldm, const std::string& diff, int64_t in, int64_t out, int64_t temb) {
  t.norm(ldm + ".in_layers.0", diff + ".norm1", in);
  t.conv(ldm + ".in_layers.2", diff + ".conv1", out, in, 3);
  t.linear(ldm + ".emb_layers.1", diff + ".time_emb_proj", out, temb);
  t.norm(ldm + ".out_layers.0", diff + ".norm2", out);
  t.conv(ldm + ".out_layers.3", diff + ".conv2", out, out, 3);
  // Both sides only have the 1x1 shortcut when the channel count changes.
  if (in != out) t.conv(ldm + ".skip_connection", diff + ".conv_shortcut", out, in, 1);
}

// LDM SpatialTransformer -> Transformer2DModel: the inner names are the same on both sides.
void unet_transformer(MoveTable& t, const std::string& ldm, const std::string& diff, int64_t channels, int64_t heads,
                      int64_t context, int64_t depth, bool linear_projection) {
  const int64_t inner = heads * (channels / heads);
  t.norm(ldm + ".norm", diff + ".norm", channels);
  auto projection = [&](const std::string& name, int64_t out, int64_t in) {
    if (linear_projection) {
      t.linear(ldm + "." + name, diff + "." + name, out, in);
    } else {
      t.conv(ldm + "." + name, diff + "." + name, out, in, 1);
    }
  };
  projection("proj_in", inner, channels);
  for (int64_t d = 0; d < depth; ++d) {
    const std::string block = cat(".transformer_blocks.", d);
    const std::string l = ldm + block, f = diff + block;
    t.norm(l + ".norm1", f + ".norm1", inner);
    for (const char* attn : {".attn1", ".attn2"}) {
      // attn1 attends to the image tokens, attn2 to the text context.
      const int64_t kv_in = std::string(attn) == ".attn1" ? inner : context;
      t.linear(l + attn + ".to_q", f + attn + ".to_q", inner, inner, /*bias=*/false);
      t.linear(l + attn + ".to_k", f + attn + ".to_k", inner, kv_in, false);
      t.linear(l + attn + ".to_v", f + attn + ".to_v", inner, kv_in, false);
      t.linear(l + attn + ".to_out.0", f + attn + ".to_out.0", inner, inner);
    }
    t.norm(l + ".norm2", f + ".norm2", inner);
    t.norm(l + ".norm3", f + ".norm3", inner);
    // GEGLU projects to twice the 4x hidden width (value and gate).
    t.linear(l + ".ff.net.0.proj", f + ".ff.net.0.proj", 8 * inner, inner);
    t.linear(l + ".ff.net.2", f + ".ff.net.2", inner, 4 * inner);
  }
  projection("proj_out", channels, inner);
}

MoveTable unet_table(const UNet2DConditionConfig& c) {
  MoveTable t;
  const size_t n = c.num_blocks();
  const auto& boc = c.block_out_channels;
  const int64_t temb = c.time_embed_dim();
  auto per_block = [](const std::vector<int64_t>& v, size_t b) { return UNet2DConditionConfig::per_block(v, b); };
  auto transformer = [&](const std::string& ldm, const std::string& diff, int64_t channels, size_t block) {
    unet_transformer(t, ldm, diff, channels, c.heads(block), per_block(c.cross_attention_dim, block),
                     per_block(c.transformer_layers_per_block, block), c.use_linear_projection);
  };

  t.linear("time_embed.0", "time_embedding.linear_1", temb, boc[0]);
  t.linear("time_embed.2", "time_embedding.linear_2", temb, temb);
  t.conv("input_blocks.0.0", "conv_in", boc[0], c.in_channels, c.conv_in_kernel);

  // LDM numbers its input blocks consecutively: each resnet (with its attention) is one, and so is
  // each downsampler, which is why a per-block walk rather than a fixed stride gives the index.
  int64_t input = 1;
  int64_t channels = boc[0];
  for (size_t b = 0; b < n; ++b) {
    const bool attention = c.down_block_types[b] == "CrossAttnDownBlock2D";
    for (int64_t k = 0; k < per_block(c.layers_per_block, b); ++k, ++input) {
      const std::string ldm = cat("input_blocks.", input), diff = cat("down_blocks.", b);
      unet_resnet(t, ldm + ".0", cat(diff, ".resnets.", k), channels, boc[b], temb);
      channels = boc[b];
      if (attention) transformer(ldm + ".1", cat(diff, ".attentions.", k), boc[b], b);
    }
    if (b + 1 < n) {
      t.conv(cat("input_blocks.", input, ".0.op"), cat("down_blocks.", b, ".downsamplers.0.conv"), boc[b], boc[b], 3);
      ++input;
    }
  }

  const int64_t deepest = boc[n - 1];
  unet_resnet(t, "middle_block.0", "mid_block.resnets.0", deepest, deepest, temb);
  transformer("middle_block.1", "mid_block.attentions.0", deepest, n - 1);
  unet_resnet(t, "middle_block.2", "mid_block.resnets.1", deepest, deepest, temb);

  // Up block i mirrors down block n-1-i and has one resnet more; resnet j takes the skip of the
  // matching down state, whose width is the previous level's for the last resnet.
  int64_t output = 0;
  int64_t prev_output = deepest;
  for (size_t i = 0; i < n; ++i) {
    const size_t mirror = n - 1 - i;
    const bool attention = c.up_block_types[i] == "CrossAttnUpBlock2D";
    const int64_t out = boc[mirror];
    const int64_t skip_in = boc[mirror == 0 ? 0 : mirror - 1];
    const int64_t layers = per_block(c.layers_per_block, mirror) + 1;
    for (int64_t j = 0; j < layers; ++j, ++output) {
      const std::string ldm = cat("output_blocks.", output), diff = cat("up_blocks.", i);
      const int64_t skip = j + 1 == layers ? skip_in : out;
      const int64_t in = (j == 0 ? prev_output : out) + skip;
      unet_resnet(t, ldm + ".0", cat(diff, ".resnets.", j), in, out, temb);
      if (attention) transformer(ldm + ".1", cat(diff, ".attentions.", j), out, mirror);
      // The upsampler sits in the same LDM block as the last resnet, after its attention if any.
      if (j + 1 == layers && i + 1 < n) {
        t.conv(cat(ldm, ".", attention ? 2 : 1, ".conv"), diff + ".upsamplers.0.conv", out, out, 3);
      }
    }
    prev_output = out;
  }

  t.norm("out.0", "conv_norm_out", boc[0]);
  t.conv("out.2", "conv_out", c.out_channels, boc[0], c.conv_out_kernel);
  return t;
}

// LDM VAE ResnetBlock: same inner names as diffusers except the shortcut.
void vae_resnet(MoveTable& t, const std::string& ldm, const std::string& diff, int64_t in, int64_t out) {
  t.norm(ldm + ".norm1", diff + ".norm1", in);
  t.conv(ldm + ".conv1", diff + ".conv1", out, in, 3);
  t.norm(ldm + ".norm2", diff + ".norm2", out);
  t.conv(ldm + ".conv2", diff + ".conv2", out, out, 3);
  if (in != out) t.conv(ldm + ".nin_shortcut", diff + ".conv_shortcut", out, in, 1);
}

void vae_mid_block(MoveTable& t, const std::string& side, int64_t channels, bool attention) {
  vae_resnet(t, side + ".mid.block_1", side + ".mid_block.resnets.0", channels, channels);
  if (attention) {
    // LDM's AttnBlock uses 1x1 convolutions where diffusers' Attention has linear layers.
    const std::string ldm = side + ".mid.attn_1", diff = side + ".mid_block.attentions.0";
    t.norm(ldm + ".norm", diff + ".group_norm", channels);
    t.linear(ldm + ".q", diff + ".to_q", channels, channels, true, true);
    t.linear(ldm + ".k", diff + ".to_k", channels, channels, true, true);
    t.linear(ldm + ".v", diff + ".to_v", channels, channels, true, true);
    t.linear(ldm + ".proj_out", diff + ".to_out.0", channels, channels, true, true);
  }
  vae_resnet(t, side + ".mid.block_2", side + ".mid_block.resnets.1", channels, channels);
}

MoveTable vae_table(const AutoencoderKLConfig& c) {
  MoveTable t;
  const auto& boc = c.block_out_channels;
  const size_t n = boc.size();
  const int64_t deepest = boc[n - 1];
  const int64_t latent = c.latent_channels;

  t.conv("encoder.conv_in", "encoder.conv_in", boc[0], c.in_channels, 3);
  int64_t channels = boc[0];
  for (size_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < c.layers_per_block; ++j) {
      vae_resnet(t, cat("encoder.down.", i, ".block.", j), cat("encoder.down_blocks.", i, ".resnets.", j), channels, boc[i]);
      channels = boc[i];
    }
    if (i + 1 < n) {
      t.conv(cat("encoder.down.", i, ".downsample.conv"), cat("encoder.down_blocks.", i, ".downsamplers.0.conv"), boc[i],
             boc[i], 3);
    }
  }
  vae_mid_block(t, "encoder", deepest, c.mid_block_add_attention);
  t.norm("encoder.norm_out", "encoder.conv_norm_out", deepest);
  t.conv("encoder.conv_out", "encoder.conv_out", 2 * latent, deepest, 3);
  if (c.use_quant_conv) t.conv("quant_conv", "quant_conv", 2 * latent, 2 * latent, 1);
  if (c.use_post_quant_conv) t.conv("post_quant_conv", "post_quant_conv", latent, latent, 1);

  t.conv("decoder.conv_in", "decoder.conv_in", deepest, latent, 3);
  vae_mid_block(t, "decoder", deepest, c.mid_block_add_attention);
  // LDM numbers the decoder levels by resolution (up.0 is the full-size one, run last); diffusers
  // numbers them in execution order.
  channels = deepest;
  for (size_t i = 0; i < n; ++i) {
    const size_t level = n - 1 - i;
    const int64_t out = boc[level];
    for (int64_t j = 0; j <= c.layers_per_block; ++j) {
      vae_resnet(t, cat("decoder.up.", level, ".block.", j), cat("decoder.up_blocks.", i, ".resnets.", j), channels, out);
      channels = out;
    }
    if (i + 1 < n) {
      t.conv(cat("decoder.up.", level, ".upsample.conv"), cat("decoder.up_blocks.", i, ".upsamplers.0.conv"), out, out, 3);
    }
  }
  t.norm("decoder.norm_out", "decoder.conv_norm_out", boc[0]);
  t.conv("decoder.conv_out", "decoder.conv_out", c.out_channels, boc[0], 3);
  return t;
}

// Copies every tensor of `table` from `checkpoint` (names under `prefix`) to its diffusers name.
// `in_scope` says which checkpoint names belong to this model: one of those that no entry used
// means the file has parts the config does not, an architecture mismatch worth stopping for.
TensorDict apply_table(const TensorDict& checkpoint, const std::string& prefix, const MoveTable& table,
                       const std::string& source, const std::string& model, const std::string& config_summary,
                       bool (*in_scope)(const std::string& rest)) {
  TensorDict out;
  out.set_source(source);
  std::unordered_set<std::string> used;
  used.reserve(table.moves.size());
  for (const Move& m : table.moves) {
    const std::string name = prefix + m.ldm;
    const at::Tensor* found = checkpoint.find(name);
    if (found == nullptr) {
      fail(source, ": ", model, " tensor '", name, "' (diffusers '", m.diffusers, "'): expected ", shape_string(m.shape),
           " for ", config_summary, ", found no such tensor");
    }
    at::Tensor value = *found;
    if (m.from_conv1x1 && value.dim() == 4 && value.size(2) == 1 && value.size(3) == 1) value = value.flatten(1);
    if (value.sizes() != at::IntArrayRef(m.shape)) {
      fail(source, ": ", model, " tensor '", name, "': expected ", shape_string(m.shape), " for ", config_summary,
           ", found ", shape_string(value.sizes()));
    }
    out.insert(m.diffusers, value);
    used.insert(name);
  }
  for (const auto& [name, tensor] : checkpoint) {
    if (!starts_with(name, prefix) || !in_scope(name.substr(prefix.size())) || used.count(name) != 0) continue;
    fail(source, ": ", model, " tensor '", name, "' ", shape_string(tensor.sizes()), ": expected no such tensor for ",
         config_summary, ", found one (the checkpoint is of another architecture)");
  }
  return out;
}

bool whole_unet(const std::string&) { return true; }

bool vae_part(const std::string& rest) {
  return starts_with(rest, "encoder.") || starts_with(rest, "decoder.") || starts_with(rest, "quant_conv.") ||
         starts_with(rest, "post_quant_conv.");
}

std::string list_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += cat(i ? ", " : "", v[i]);
  return s + "]";
}

std::string unet_summary(const UNet2DConditionConfig& c) {
  return cat("the UNet config (", c.source, ": block_out_channels ", list_text(c.block_out_channels),
             ", layers_per_block ", list_text(c.layers_per_block), ", cross_attention_dim ",
             list_text(c.cross_attention_dim), ")");
}

std::string vae_summary(const AutoencoderKLConfig& c) {
  return cat("the VAE config (", c.source, ": block_out_channels ", list_text(c.block_out_channels),
             ", layers_per_block ", c.layers_per_block, ", latent_channels ", c.latent_channels, ")");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------------------------
const char* single_file_kind_name(SingleFileKind kind) {
  switch (kind) {
    case SingleFileKind::sd1: return "SD-1.x";
    case SingleFileKind::sd2: return "SD-2.x";
    case SingleFileKind::sdxl: return "SDXL";
    case SingleFileKind::other: break;
  }
  return "other";
}

SingleFileKind detect_single_file_kind(const TensorDict& checkpoint, std::string* why) {
  auto decided = [&](SingleFileKind kind, std::string reason) {
    if (why) *why = std::move(reason);
    return kind;
  };
  auto shape_of = [](const at::Tensor& t) { return shape_string(t.sizes()); };
  // Same order as diffusers' infer_diffusers_model_type: the first match wins.
  const std::string conv_in = cat(kUnetPrefix, "input_blocks.0.0.weight");
  if (const at::Tensor* t = checkpoint.find(conv_in); t != nullptr && t->dim() == 4 && t->size(1) == 9) {
    return decided(SingleFileKind::other, cat("inpainting: '", conv_in, "' is ", shape_of(*t), ", 9 input channels"));
  }
  const std::string to_k = cat(kUnetPrefix, "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight");
  if (const at::Tensor* t = checkpoint.find(to_k); t != nullptr && t->dim() >= 1 && t->size(-1) == 1024) {
    return decided(SingleFileKind::sd2, cat("'", to_k, "' is ", shape_of(*t), ": a 1024-wide text context (SD-1 has 768)"));
  }
  if (checkpoint.contains("edm_mean")) return decided(SingleFileKind::other, "Playground v2.5: it has 'edm_mean'");
  for (const auto& [name, tensor] : checkpoint) {
    if (starts_with(name, "conditioner.embedders.")) {
      return decided(SingleFileKind::sdxl, cat("it has '", name, "' (SDXL's text encoders)"));
    }
  }
  const std::string upscale_skip = cat(kUnetPrefix, "input_blocks.10.0.skip_connection.bias");
  if (checkpoint.contains(upscale_skip)) {
    return decided(SingleFileKind::other, cat("x4 upscaler: it has '", upscale_skip, "'"));
  }
  if (checkpoint.contains("control_model.time_embed.0.weight")) {
    return decided(SingleFileKind::other, "ControlNet: it has 'control_model.time_embed.0.weight'");
  }
  // Newer families (SD3, Flux, ...) keep the LDM prefix but have no LDM input blocks.
  bool has_unet = false;
  for (const auto& [name, tensor] : checkpoint) {
    if (starts_with(name, kUnetPrefix)) {
      has_unet = true;
      break;
    }
  }
  if (has_unet && !checkpoint.contains(conv_in)) {
    return decided(SingleFileKind::other, cat("it has '", kUnetPrefix, "*' tensors but no '", conv_in, "' (not an LDM UNet)"));
  }
  return decided(SingleFileKind::sd1, "no SD-2, SDXL or other marker (diffusers' default, v1)");
}

bool looks_like_ldm_checkpoint(const TensorDict& checkpoint) {
  for (const auto& [name, tensor] : checkpoint) {
    if (starts_with(name, kUnetPrefix) || starts_with(name, kVaePrefix)) return true;
  }
  return false;
}

int64_t count_ema_tensors(const TensorDict& checkpoint) {
  int64_t n = 0;
  for (const auto& [name, tensor] : checkpoint) n += starts_with(name, kEmaPrefix) ? 1 : 0;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------
TensorDict read_single_file(const std::string& path) {
  const WeightFormat format = detect_weight_format(path);
  TensorDict all = read_weights(path);
  // safetensors files are flat by construction; only pickled checkpoints carry the wrapper.
  const bool pickled = format == WeightFormat::torch_zip || format == WeightFormat::torch_legacy;
  while (pickled) {
    TensorDict inner;
    for (const auto& [name, tensor] : all) {
      if (starts_with(name, kStateDictPrefix)) inner.insert(name.substr(std::string(kStateDictPrefix).size()), tensor);
    }
    if (inner.empty()) break;
    all = std::move(inner);
  }
  all.set_source(path);
  IDSYNTH_CHECK(!all.empty(), path, ": expected the tensors of a Stable Diffusion checkpoint, found none");
  return all;
}

// ---------------------------------------------------------------------------------------------
// Conversion
// ---------------------------------------------------------------------------------------------
TensorDict ldm_unet_to_diffusers(const TensorDict& checkpoint, const UNet2DConditionConfig& config,
                                 const std::string& source) {
  config.check();
  std::string why;
  const SingleFileKind kind = detect_single_file_kind(checkpoint, &why);
  const int64_t context = UNet2DConditionConfig::per_block(config.cross_attention_dim, 0);
  // An SD-2 file can only fit a config that itself asks for SD-2's 1024-wide context.
  const bool fits = kind == SingleFileKind::sd1 || (kind == SingleFileKind::sd2 && context == 1024);
  if (!fits) {
    fail(source, ": expected an SD-1.x checkpoint for ", unet_summary(config), ", found ", single_file_kind_name(kind),
         " (", why, ")");
  }
  bool any = false;
  for (const auto& [name, tensor] : checkpoint) any = any || starts_with(name, kUnetPrefix);
  IDSYNTH_CHECK(any, source, ": expected UNet tensors named '", kUnetPrefix, "*', found none (", checkpoint.size(),
                " tensors, none of them the UNet's)");
  return apply_table(checkpoint, kUnetPrefix, unet_table(config), source, "UNet", unet_summary(config), whole_unet);
}

std::vector<std::pair<std::string, std::string>> ldm_unet_names(const UNet2DConditionConfig& config) {
  config.check();
  std::vector<std::pair<std::string, std::string>> names;
  for (const Move& m : unet_table(config).moves) names.emplace_back(m.ldm, m.diffusers);
  return names;
}

TensorDict ldm_vae_to_diffusers(const TensorDict& checkpoint, const AutoencoderKLConfig& config, const std::string& source) {
  config.check();
  std::string why;
  const SingleFileKind kind = detect_single_file_kind(checkpoint, &why);
  // SD-2's VAE is SD-1's; SDXL's has the same shapes but another latent scale, so converting it
  // silently would give wrong images rather than an error.
  if (kind == SingleFileKind::sdxl || kind == SingleFileKind::other) {
    fail(source, ": expected an SD-1.x or SD-2.x checkpoint for ", vae_summary(config), ", found ",
         single_file_kind_name(kind), " (", why, ")");
  }
  bool wrapped = false;
  for (const auto& [name, tensor] : checkpoint) wrapped = wrapped || starts_with(name, kVaePrefix);
  const std::string prefix = wrapped ? kVaePrefix : "";
  return apply_table(checkpoint, prefix, vae_table(config), source, "VAE", vae_summary(config), vae_part);
}

// ---------------------------------------------------------------------------------------------
// SD-1.5's own configs. Key order and values as the repository's files; the scheduler keeps its
// PNDM class (the pipeline switches schedulers with from_config, as Arc2Face does).
// ---------------------------------------------------------------------------------------------
json::Value sd15_unet_config() {
  return json::parse(R"({
  "_class_name": "UNet2DConditionModel",
  "_diffusers_version": "0.6.0",
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
})");
}

json::Value sd15_vae_config() {
  return json::parse(R"({
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.6.0",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
})");
}

json::Value sd15_scheduler_config() {
  return json::parse(R"({
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
})");
}

}  // namespace idsynth::generator
