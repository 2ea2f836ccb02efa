// Building blocks shared by the diffusers UNet2DConditionModel and AutoencoderKL ports: ResNet blocks,
// attention (memory-bounded, chunked over queries), down/up-samplers, the transformer blocks of
// Transformer2DModel, and the sinusoidal timestep embedding. Member names are diffusers' checkpoint
// names, so a diffusers state dict loads by name.
// Ref: diffusers 0.29.2 src/diffusers/models/{resnet.py, attention.py, attention_processor.py,
//      downsampling.py, upsampling.py, embeddings.py, transformers/transformer_2d.py};
//      torch 1.13 torch/utils/checkpoint.py (CheckpointFunction: the reentrant checkpoint)
#pragma once

#include <ATen/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace idsynth::generator {

// ---------------------------------------------------------------------------------------------
// Training. The inference forms update fresh tensors in place, write into preallocated outputs and
// use hand-written attention kernels (out= and parallel_for, which autograd cannot record). While a
// forward must be differentiable, every module takes the out-of-place, recordable form instead; the
// numbers are the same (the kernels differ only in rounding for the attention and linear paths).
// ---------------------------------------------------------------------------------------------
// True while autograd records (grad mode on), or inside a gradient checkpoint's no-grad forward
// (its recomputation in backward records, and both passes must use the same kernels).
bool differentiable_forward();

// Makes differentiable_forward() true on this thread while it lives.
class DifferentiableForwardGuard {
 public:
  DifferentiableForwardGuard();
  ~DifferentiableForwardGuard();
  DifferentiableForwardGuard(const DifferentiableForwardGuard&) = delete;
  DifferentiableForwardGuard& operator=(const DifferentiableForwardGuard&) = delete;
};

// torch.utils.checkpoint for libtorch: runs fn(inputs) without keeping its activations and, in
// backward, runs it again with grad mode on and back-propagates through that recomputation
// (reentrant form: the parameters fn reads get their gradients inside this backward). Gradients
// reach the inputs that require grad and every tensor fn reads that requires grad, also when no
// input does (diffusers' use_reentrant=False semantics). Without grad mode it is just fn(inputs).
// fn must be deterministic (no dropout) and return fresh tensors, none of them one of its inputs.
using CheckpointFn = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;
std::vector<at::Tensor> checkpoint(CheckpointFn fn, const std::vector<at::Tensor>& inputs);

// ---------------------------------------------------------------------------------------------
// Activations by diffusers name (get_activation): "silu"/"swish", "gelu", "mish", "relu".
// ---------------------------------------------------------------------------------------------
bool is_known_activation(const std::string& name);
std::string known_activations();  // "silu, swish, gelu, mish, relu"
at::Tensor apply_activation(const std::string& name, const at::Tensor& x);
// In place where libtorch has the in-place form (x must be a fresh tensor the caller owns).
at::Tensor apply_activation_(const std::string& name, at::Tensor x);

// layer(x). For inference, float32 on the CPU goes through core/invariant_kernels.h (oneDNN: an
// image's result independent of the batch it is in); while a forward is differentiable, the
// layer's own forward (both passes of a gradient checkpoint take the same kernels).
at::Tensor linear(const torch::nn::Linear& layer, const at::Tensor& x);
at::Tensor conv(const torch::nn::Conv2d& layer, const at::Tensor& x);
at::Tensor normalize(const torch::nn::GroupNorm& layer, const at::Tensor& x);

// Gives every 4-D (convolution) weight of `module` the memory format `format`, so that channels-last
// activations meet channels-last weights (otherwise every call converts each weight again).
void set_conv_weight_format(torch::nn::Module& module, at::MemoryFormat format);

// ---------------------------------------------------------------------------------------------
// Attention core: softmax(scale * q k^T) v, computed in tiles of heads x query rows so that the score
// matrix in memory never exceeds `tile_bytes`. A 64x64 latent has 4096 tokens: the full
// [B*heads, 4096, 4096] float32 scores of one SD-1.5 self-attention at batch 2 would be 1 GiB.
// Tiles are whole heads where they fit, else query-row blocks of one head. Measured on 2 busy cores,
// smaller (cache-sized, 1-4 MiB) tiles were 2-8x slower than 128 MiB ones: per-call threading
// overhead outweighs the cache reuse, so the default is a memory cap, not a cache size. Each tile is the reference computation (q k^T times scale, softmax over keys, bmm), so the
// result equals the untiled one row for row.
// q: [BH, Nq, d], k: [BH, Nk, d], v: [BH, Nk, dv] -> [BH, Nq, dv] in q's dtype.
// upcast_scores: q k^T in float32 (diffusers upcast_attention); upcast_softmax: softmax in float32.
// ---------------------------------------------------------------------------------------------
constexpr int64_t kAttentionTileBytes = int64_t{128} << 20;

at::Tensor chunked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                             bool upcast_scores = false, bool upcast_softmax = false,
                             int64_t tile_bytes = kAttentionTileBytes);

// The same computation with one thread per tile of one head x as many query rows as fit
// `tile_bytes` of scores (4 MiB: 256 rows x 4096 keys in float32); q is scaled before the product. Used on the
// CPU when the BLAS runs single-threaded inside parallel regions (core/device.h BlasThreading): on
// 2 cores it is 1.8x (float32) and 2.5x (bfloat16) faster than chunked_attention for SD-1.5's
// 4096-token self-attention (bench_nn_unet_step --what attn).
constexpr int64_t kAttentionCacheTileBytes = int64_t{4} << 20;
at::Tensor cache_tiled_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                 bool upcast_scores = false, bool upcast_softmax = false,
                                 int64_t tile_bytes = kAttentionCacheTileBytes);

// How chunked_attention splits the work: `heads` of the BH matrices and `rows` query rows per tile.
struct AttentionTiling {
  int64_t heads = 1;
  int64_t rows = 1;
};
AttentionTiling attention_tiling(int64_t bh, int64_t nq, int64_t nk, int64_t element_bytes, int64_t tile_bytes);

// ---------------------------------------------------------------------------------------------
// Attention (diffusers Attention + AttnProcessor): to_q, to_k, to_v, to_out.0, optional group_norm.
// 3-D input [B, N, C] (transformer blocks) or 4-D input [B, C, H, W] (the VAE mid-block, which adds
// the residual and divides by rescale_output_factor).
// ---------------------------------------------------------------------------------------------
struct AttentionOptions {
  int64_t query_dim = 0;
  int64_t cross_attention_dim = 0;  // 0: self-attention (keys from the queries' input)
  int64_t heads = 8;
  int64_t dim_head = 64;
  bool bias = false;      // to_q/to_k/to_v bias
  bool out_bias = true;   // to_out.0 bias
  bool upcast_attention = false;
  bool upcast_softmax = false;
  int64_t norm_num_groups = 0;  // > 0: group_norm before the projections (VAE)
  double eps = 1e-5;            // group_norm epsilon
  bool residual_connection = false;
  double rescale_output_factor = 1.0;
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const AttentionOptions& options);
  at::Tensor forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states = {});
  const AttentionOptions& options() const { return options_; }

 private:
  AttentionOptions options_;
  double scale_ = 1.0;
  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // [Linear] (index 1 is dropout in diffusers, no weights)
  torch::nn::Linear to_out_0{nullptr};
};
TORCH_MODULE(Attention);

// ---------------------------------------------------------------------------------------------
// ResnetBlock2D (time_embedding_norm "default"): norm1 -> act -> conv1 (+ time_emb_proj(act(temb)))
// -> norm2 -> act -> conv2, plus the (1x1 conv_shortcut) input, divided by output_scale_factor.
// temb_channels 0: no time embedding (VAE).
// ---------------------------------------------------------------------------------------------
struct ResnetBlock2DOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t temb_channels = 0;
  int64_t groups = 32;
  double eps = 1e-6;
  std::string act_fn = "silu";
  double output_scale_factor = 1.0;
};

class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  explicit ResnetBlock2DImpl(const ResnetBlock2DOptions& options);
  at::Tensor forward(const at::Tensor& input, const at::Tensor& temb = {});

 private:
  ResnetBlock2DOptions options_;
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};
};
TORCH_MODULE(ResnetBlock2D);

// ---------------------------------------------------------------------------------------------
// Downsample2D (use_conv): 3x3 conv with stride 2; padding 0 means diffusers' asymmetric (0,1,0,1)
// zero pad first (the VAE encoder).
// ---------------------------------------------------------------------------------------------
class Downsample2DImpl : public torch::nn::Module {
 public:
  Downsample2DImpl(int64_t channels, int64_t out_channels, int64_t padding);
  at::Tensor forward(const at::Tensor& x);

 private:
  int64_t padding_;
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

// ---------------------------------------------------------------------------------------------
// Upsample2D (use_conv, interpolate): nearest x2 (or to `output_size` when the skip connection has
// an odd size), then a 3x3 conv.
// ---------------------------------------------------------------------------------------------
class Upsample2DImpl : public torch::nn::Module {
 public:
  Upsample2DImpl(int64_t channels, int64_t out_channels);
  at::Tensor forward(const at::Tensor& x, c10::optional<std::vector<int64_t>> output_size = c10::nullopt);

 private:
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

// ---------------------------------------------------------------------------------------------
// Timesteps (get_timestep_embedding, max_period 10000, scale 1) and TimestepEmbedding
// (linear_1 -> act -> linear_2).
// ---------------------------------------------------------------------------------------------
// timesteps: [B] (any numeric dtype) -> [B, dim] float32.
at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift);

class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim, std::string act_fn);
  at::Tensor forward(const at::Tensor& sample);

 private:
  std::string act_fn_;
  torch::nn::Linear linear_1{nullptr}, linear_2{nullptr};
};
TORCH_MODULE(TimestepEmbedding);

// ---------------------------------------------------------------------------------------------
// GEGLU / FeedForward ("geglu", mult 4): net.0.proj -> chunk(2) -> a * gelu(gate) -> net.2.
// ---------------------------------------------------------------------------------------------
class GEGLUImpl : public torch::nn::Module {
 public:
  GEGLUImpl(int64_t dim_in, int64_t dim_out);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Linear proj{nullptr};
};
TORCH_MODULE(GEGLU);

class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(int64_t dim, int64_t mult = 4);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::ModuleList net{nullptr};  // [GEGLU, (dropout), Linear]
  GEGLU geglu{nullptr};
  torch::nn::Linear out{nullptr};
};
TORCH_MODULE(FeedForward);

// ---------------------------------------------------------------------------------------------
// BasicTransformerBlock (norm_type "layer_norm", eps 1e-5): self-attention, cross-attention, GEGLU
// feed-forward, each pre-normed and residual.
// ---------------------------------------------------------------------------------------------
struct TransformerOptions {
  int64_t heads = 8;
  int64_t dim_head = 64;
  int64_t cross_attention_dim = 768;
  int64_t num_layers = 1;
  int64_t norm_num_groups = 32;
  bool use_linear_projection = false;
  bool upcast_attention = false;
};

class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  BasicTransformerBlockImpl(int64_t dim, const TransformerOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& encoder_hidden_states);

 private:
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  Attention attn1{nullptr}, attn2{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

// ---------------------------------------------------------------------------------------------
// Transformer2DModel (continuous input): GroupNorm(eps 1e-6) -> proj_in (1x1 conv or linear) ->
// transformer_blocks -> proj_out, plus the input.
// ---------------------------------------------------------------------------------------------
class Transformer2DModelImpl : public torch::nn::Module {
 public:
  Transformer2DModelImpl(int64_t in_channels, const TransformerOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& encoder_hidden_states);

 private:
  TransformerOptions options_;
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  torch::nn::Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr};
  std::vector<BasicTransformerBlock> blocks_;
};
TORCH_MODULE(Transformer2DModel);

}  // namespace idsynth::generator
