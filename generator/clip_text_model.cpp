#include "generator/clip_text_model.h"

#include <torch/nn/functional/activation.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/types.h>

#include <limits>

#include "core/check.h"
#include "core/device.h"
#include "core/file_util.h"
#include "core/log.h"
#include "core/weights.h"
#include "generator/config_reader.h"
#include "generator/nn_blocks.h"

namespace idsynth::generator {

// ---------------------------------------------------------------------------------------------
// Config

CLIPTextConfig CLIPTextConfig::from_json(const json::Value& root, const std::string& source) {
  CLIPTextConfig c;
  ConfigReader r(root, source);
  r.get("vocab_size", c.vocab_size);
  r.get("hidden_size", c.hidden_size);
  r.get("intermediate_size", c.intermediate_size);
  r.get("projection_dim", c.projection_dim);
  r.get("num_hidden_layers", c.num_hidden_layers);
  r.get("num_attention_heads", c.num_attention_heads);
  r.get("max_position_embeddings", c.max_position_embeddings);
  r.get("hidden_act", c.hidden_act);
  r.get("layer_norm_eps", c.layer_norm_eps);
  r.get("pad_token_id", c.pad_token_id);
  r.get("bos_token_id", c.bos_token_id);
  r.get("eos_token_id", c.eos_token_id);
  // Training-only or bookkeeping keys of CLIPTextConfig / PretrainedConfig.
  r.skip({"attention_dropout", "dropout", "initializer_factor", "initializer_range", "architectures",
          "model_type", "torch_dtype", "transformers_version"});
  r.finish("CLIPTextConfig");
  c.check(source);
  return c;
}

CLIPTextConfig CLIPTextConfig::from_file(const std::string& path) {
  return from_json(json::parse_file(path), path);
}

void CLIPTextConfig::check(const std::string& source) const {
  IDSYNTH_CHECK(hidden_size > 0, source, ": hidden_size: expected > 0, found ", hidden_size);
  IDSYNTH_CHECK(intermediate_size > 0, source, ": intermediate_size: expected > 0, found ", intermediate_size);
  IDSYNTH_CHECK(num_hidden_layers > 0, source, ": num_hidden_layers: expected > 0, found ", num_hidden_layers);
  IDSYNTH_CHECK(num_attention_heads > 0 && hidden_size % num_attention_heads == 0, source,
                ": num_attention_heads: expected a divisor of hidden_size ", hidden_size, ", found ",
                num_attention_heads);
  IDSYNTH_CHECK(max_position_embeddings > 0, source, ": max_position_embeddings: expected > 0, found ",
                max_position_embeddings);
  IDSYNTH_CHECK(vocab_size > 0, source, ": vocab_size: expected > 0, found ", vocab_size);
  IDSYNTH_CHECK(layer_norm_eps > 0, source, ": layer_norm_eps: expected > 0, found ", layer_norm_eps);
  IDSYNTH_CHECK(hidden_act == "quick_gelu" || hidden_act == "gelu", source,
                ": hidden_act: expected one of quick_gelu, gelu, found '", hidden_act, "'");
}

// ---------------------------------------------------------------------------------------------
// Blocks

CLIPTextEmbeddingsImpl::CLIPTextEmbeddingsImpl(const CLIPTextConfig& c) {
  token_embedding = register_module("token_embedding", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  position_embedding =
      register_module("position_embedding", torch::nn::Embedding(c.max_position_embeddings, c.hidden_size));
}

torch::Tensor CLIPTextEmbeddingsImpl::forward(const torch::Tensor& inputs_embeds) {
  const int64_t seq = inputs_embeds.size(1);
  auto position_ids = torch::arange(seq, torch::TensorOptions().dtype(torch::kLong).device(inputs_embeds.device()));
  return inputs_embeds + position_embedding->forward(position_ids).unsqueeze(0);  // [N, S, H]
}

CLIPAttentionImpl::CLIPAttentionImpl(const CLIPTextConfig& c)
    : num_heads_(c.num_attention_heads),
      head_dim_(c.head_dim()),
      scale_(1.0 / std::sqrt(static_cast<double>(c.head_dim()))) {
  k_proj = register_module("k_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  v_proj = register_module("v_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  q_proj = register_module("q_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
  out_proj = register_module("out_proj", torch::nn::Linear(c.hidden_size, c.hidden_size));
}

torch::Tensor CLIPAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& causal_mask) {
  const int64_t n = x.size(0), seq = x.size(1), hidden = x.size(2);
  auto split_heads = [&](const torch::Tensor& t) {  // [N, S, H] -> [N*heads, S, d]
    return t.view({n, seq, num_heads_, head_dim_}).transpose(1, 2).reshape({n * num_heads_, seq, head_dim_});
  };
  // 1. projections; q is scaled before the product, as transformers does
  auto q = split_heads(linear(q_proj, x) * scale_);
  auto k = split_heads(linear(k_proj, x));
  auto v = split_heads(linear(v_proj, x));
  // 2. scores with the causal mask added per (sample, head)
  auto scores = torch::bmm(q, k.transpose(1, 2));                                           // [N*h, S, S]
  scores = (scores.view({n, num_heads_, seq, seq}) + causal_mask).view({n * num_heads_, seq, seq});
  auto probs = torch::softmax(scores, -1);
  // 3. weighted values, heads merged back
  auto out = torch::bmm(probs, v);                                                          // [N*h, S, d]
  out = out.view({n, num_heads_, seq, head_dim_}).transpose(1, 2).reshape({n, seq, hidden});
  return linear(out_proj, out);
}

CLIPMLPImpl::CLIPMLPImpl(const CLIPTextConfig& c) : quick_gelu_(c.hidden_act == "quick_gelu") {
  fc1 = register_module("fc1", torch::nn::Linear(c.hidden_size, c.intermediate_size));
  fc2 = register_module("fc2", torch::nn::Linear(c.intermediate_size, c.hidden_size));
}

torch::Tensor CLIPMLPImpl::forward(const torch::Tensor& x) {
  auto h = linear(fc1, x);  // [N, S, I]
  // quick_gelu(x) = x * sigmoid(1.702 x), the approximation CLIP was trained with.
  h = quick_gelu_ ? h * torch::sigmoid(1.702 * h) : torch::gelu(h);
  return linear(fc2, h);
}

CLIPEncoderLayerImpl::CLIPEncoderLayerImpl(const CLIPTextConfig& c) {
  self_attn = register_module("self_attn", CLIPAttention(c));
  layer_norm1 = register_module(
      "layer_norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
  mlp = register_module("mlp", CLIPMLP(c));
  layer_norm2 = register_module(
      "layer_norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
}

torch::Tensor CLIPEncoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& causal_mask) {
  auto h = x + self_attn->forward(layer_norm1->forward(x), causal_mask);  // pre-LN residual blocks
  return h + mlp->forward(layer_norm2->forward(h));
}

CLIPEncoderImpl::CLIPEncoderImpl(const CLIPTextConfig& c) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(CLIPEncoderLayer(c));
}

torch::Tensor CLIPEncoderImpl::forward(torch::Tensor x, const torch::Tensor& causal_mask) {
  for (const auto& layer : *layers) x = layer->as<CLIPEncoderLayer>()->forward(x, causal_mask);
  return x;
}

// ---------------------------------------------------------------------------------------------
// Model

namespace {
// torch.finfo(dtype).min, the value transformers puts above the diagonal of the causal mask.
double lowest_value(c10::ScalarType dtype) {
  switch (dtype) {
    case torch::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    case torch::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    case torch::kDouble: return std::numeric_limits<double>::lowest();
    default: return static_cast<double>(std::numeric_limits<float>::lowest());
  }
}
}  // namespace

CLIPTextTransformerImpl::CLIPTextTransformerImpl(const CLIPTextConfig& c) : config_(c) {
  embeddings = register_module("embeddings", CLIPTextEmbeddings(c));
  encoder = register_module("encoder", CLIPEncoder(c));
  final_layer_norm = register_module(
      "final_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
}

CLIPTextOutput CLIPTextTransformerImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& inputs_embeds) {
  const int64_t n = inputs_embeds.size(0), seq = inputs_embeds.size(1);
  IDSYNTH_CHECK(seq <= config_.max_position_embeddings, "CLIP text model: sequence length ", seq,
                " exceeds max_position_embeddings ", config_.max_position_embeddings);
  IDSYNTH_CHECK(input_ids.dim() == 2 && input_ids.size(1) == seq && (input_ids.size(0) == n || input_ids.size(0) == 1),
                "CLIP text model: input_ids: expected [", n, " or 1, ", seq, "], found ",
                input_ids.sizes());
  // 1. embeddings
  auto x = embeddings->forward(inputs_embeds);  // [N, S, H]
  // 2. causal mask: the dtype's lowest value above the diagonal (transformers' to_causal_4d)
  auto opts = torch::TensorOptions().dtype(x.scalar_type()).device(x.device());
  auto above_diagonal = torch::ones({seq, seq}, opts.dtype(torch::kBool)).triu(1);
  auto mask = torch::zeros({seq, seq}, opts).masked_fill_(above_diagonal, lowest_value(x.scalar_type()));
  // 3. transformer layers and the final LayerNorm
  auto last = final_layer_norm->forward(encoder->forward(x, mask));  // [N, S, H]
  // 4. pooled token: legacy configs (eos_token_id == 2) pool at the largest id, else at the first eos
  auto ids = input_ids.to(last.device()).expand({n, seq});
  auto pos = config_.eos_token_id == 2 ? ids.to(torch::kInt).argmax(-1)
                                       : (ids == config_.eos_token_id).to(torch::kInt).argmax(-1);
  auto rows = torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(last.device()));
  return {last, last.index({rows, pos})};
}

CLIPTextModelImpl::CLIPTextModelImpl(const CLIPTextConfig& config) : config_(config) {
  config_.check();
  text_model = register_module("text_model", CLIPTextTransformer(config_));
}

torch::Tensor CLIPTextModelImpl::token_embeds(const torch::Tensor& input_ids) {
  IDSYNTH_CHECK(input_ids.dim() == 2, "CLIP text model: input_ids: expected [N, S], found ", input_ids.sizes());
  return text_model->embeddings->token_embedding->forward(input_ids);
}

CLIPTextOutput CLIPTextModelImpl::forward(const torch::Tensor& input_ids) {
  return text_model->forward(input_ids, token_embeds(input_ids));
}

CLIPTextOutput CLIPTextModelImpl::forward_embeds(const torch::Tensor& input_ids, const torch::Tensor& token_embeds) {
  IDSYNTH_CHECK(token_embeds.dim() == 3 && token_embeds.size(2) == config_.hidden_size,
                "CLIP text model: token embeddings: expected [N, S, ", config_.hidden_size, "], found ",
                token_embeds.sizes());
  return text_model->forward(input_ids, token_embeds);
}

CLIPTextModel load_clip_text_model(const ComponentFiles& files, c10::Device device, c10::ScalarType dtype,
                                   LoadReport* report, const std::vector<LoraToApply>& loras) {
  log::Stopwatch watch;
  IDSYNTH_CHECK(!files.single_file, files.weights,
                ": a single-file checkpoint's text encoder is the plain CLIP; Arc2Face needs its own encoder/ folder");
  CLIPTextModel model(CLIPTextConfig::from_file(files.config));
  const TensorDict file_weights = read_weights(files.weights);
  const TensorDict weights = fuse_loras(file_weights, Component::kTextEncoder, loras);
  LoadOptions options;
  // transformers < 4.31 saved the position ids as a persistent buffer (Arc2Face's encoder has it).
  options.ignore_unexpected = {"text_model.embeddings.position_ids"};
  load_state_dict(*model, weights, options);
  model->to(device, dtype);
  model->eval();
  if (report != nullptr) {
    report->weights = files.weights;
    report->layout = "diffusers";
    report->file_dtype = floating_dtype(file_weights);
    report->tensors = static_cast<int64_t>(file_weights.size());
    report->parameters = count_parameters(*model);
  }
  LOG_INF("loading CLIP text encoder ", files.weights, " (", dtype_string(floating_dtype(file_weights)), ") completed, taking ",
          watch.seconds(), " s");
  return model;
}

CLIPTextModel load_clip_text_model(const std::string& folder, c10::Device device, c10::ScalarType dtype) {
  return load_clip_text_model(locate_component(folder, Component::kTextEncoder), device, dtype);
}

}  // namespace idsynth::generator
