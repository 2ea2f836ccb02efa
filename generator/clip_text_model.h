// The CLIP text transformer (transformers v4.36 `CLIPTextModel`, eager attention), built from the
// transformers `config.json`; parameter names are the checkpoint keys (`text_model.encoder.layers.0
// .self_attn.q_proj.weight`, ...), so SD-1.5 and Arc2Face encoder files load by name.
// Ref: transformers/models/clip/modeling_clip.py (CLIPTextEmbeddings, CLIPAttention, CLIPMLP,
//      CLIPEncoderLayer, CLIPEncoder, CLIPTextTransformer, CLIPTextModel), configuration_clip.py.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <string>

#include "core/json.h"
#include "generator/lora.h"
#include "generator/model_files.h"

namespace idsynth::generator {

// Mirrors transformers' CLIPTextConfig (names and defaults of v4.36). Only the keys that shape the
// network or its output are kept; dropout settings are inference no-ops.
struct CLIPTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 512;
  int64_t intermediate_size = 2048;
  int64_t projection_dim = 512;  // used by CLIPTextModelWithProjection only; kept for the record
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 8;
  int64_t max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  // quick_gelu | gelu
  double layer_norm_eps = 1e-5;
  int64_t pad_token_id = 1;
  int64_t bos_token_id = 49406;
  // 2 in SD-1.5-era configs: then the pooled token is the argmax of the ids (the legacy rule).
  int64_t eos_token_id = 49407;

  static CLIPTextConfig from_json(const json::Value& root, const std::string& source);
  static CLIPTextConfig from_file(const std::string& path);
  // Throws idsynth::Error naming `source` and the field for any value the model cannot be built with.
  void check(const std::string& source = "CLIPTextConfig") const;
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

struct CLIPTextOutput {
  torch::Tensor last_hidden_state;  // [N, S, H]
  torch::Tensor pooler_output;      // [N, H]
};

class CLIPTextEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit CLIPTextEmbeddingsImpl(const CLIPTextConfig& config);
  // Token embeddings plus position embeddings; `inputs_embeds` [N, S, H] replaces the lookup.
  torch::Tensor forward(const torch::Tensor& inputs_embeds);

  torch::nn::Embedding token_embedding{nullptr};
  torch::nn::Embedding position_embedding{nullptr};
};
TORCH_MODULE(CLIPTextEmbeddings);

class CLIPAttentionImpl : public torch::nn::Module {
 public:
  explicit CLIPAttentionImpl(const CLIPTextConfig& config);
  // x [N, S, H]; causal_mask [S, S] additive (0 or the dtype's lowest value).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& causal_mask);

 private:
  int64_t num_heads_;
  int64_t head_dim_;
  double scale_;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(CLIPAttention);

class CLIPMLPImpl : public torch::nn::Module {
 public:
  explicit CLIPMLPImpl(const CLIPTextConfig& config);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  bool quick_gelu_;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(CLIPMLP);

class CLIPEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit CLIPEncoderLayerImpl(const CLIPTextConfig& config);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& causal_mask);

 private:
  CLIPAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr};
  CLIPMLP mlp{nullptr};
  torch::nn::LayerNorm layer_norm2{nullptr};
};
TORCH_MODULE(CLIPEncoderLayer);

class CLIPEncoderImpl : public torch::nn::Module {
 public:
  explicit CLIPEncoderImpl(const CLIPTextConfig& config);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& causal_mask);

 private:
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(CLIPEncoder);

class CLIPTextTransformerImpl : public torch::nn::Module {
 public:
  explicit CLIPTextTransformerImpl(const CLIPTextConfig& config);
  // input_ids [N or 1, S] int64 decide the pooled position; inputs_embeds [N, S, H] are the token
  // embeddings (before position embeddings).
  CLIPTextOutput forward(const torch::Tensor& input_ids, const torch::Tensor& inputs_embeds);

  CLIPTextEmbeddings embeddings{nullptr};
  CLIPEncoder encoder{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};

 private:
  CLIPTextConfig config_;
};
TORCH_MODULE(CLIPTextTransformer);

class CLIPTextModelImpl : public torch::nn::Module {
 public:
  explicit CLIPTextModelImpl(const CLIPTextConfig& config);
  // input_ids [N, S] int64, S <= max_position_embeddings.
  CLIPTextOutput forward(const torch::Tensor& input_ids);
  // The Arc2Face wrapper's path: precomputed (possibly edited) token embeddings [N, S, H].
  CLIPTextOutput forward_embeds(const torch::Tensor& input_ids, const torch::Tensor& token_embeds);
  // token_embedding(input_ids): [N, S, H].
  torch::Tensor token_embeds(const torch::Tensor& input_ids);

  const CLIPTextConfig& config() const { return config_; }

 private:
  CLIPTextConfig config_;
  CLIPTextTransformer text_model{nullptr};
};
TORCH_MODULE(CLIPTextModel);

// Reads `folder/config.json` and `folder/model.safetensors` or `folder/pytorch_model.bin`
// (whichever exists), loads strictly by name and moves the model to device/dtype in eval mode.
// `loras`: their text-encoder layers are fused in float32 before the move.
CLIPTextModel load_clip_text_model(const ComponentFiles& files, c10::Device device, c10::ScalarType dtype,
                                   LoadReport* report = nullptr, const std::vector<LoraToApply>& loras = {});
// The same for a component folder (locate_component).
CLIPTextModel load_clip_text_model(const std::string& folder, c10::Device device, c10::ScalarType dtype);

}  // namespace idsynth::generator
