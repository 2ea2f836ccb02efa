#include "generator/nn_blocks.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/modules/activation.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/check.h"
#include "core/device.h"
#include "core/invariant_kernels.h"

namespace idsynth::generator {

namespace nn = torch::nn;

// ---------------------------------------------------------------------------------------------
// Training: differentiable forwards and gradient checkpoints
// ---------------------------------------------------------------------------------------------
namespace {
thread_local int differentiable_depth = 0;
}  // namespace

bool differentiable_forward() { return differentiable_depth > 0 || at::GradMode::is_enabled(); }

DifferentiableForwardGuard::DifferentiableForwardGuard() { ++differentiable_depth; }
DifferentiableForwardGuard::~DifferentiableForwardGuard() { --differentiable_depth; }

namespace {

// The checkpointed function, kept in the autograd context until backward (as a capsule: the
// context stores only IValues).
struct CheckpointBody : torch::CustomClassHolder {
  explicit CheckpointBody(CheckpointFn f) : fn(std::move(f)) {}
  CheckpointFn fn;
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  // Runs with grad mode off (Function::apply): nothing of fn's graph is kept.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const c10::intrusive_ptr<CheckpointBody>& body,
                                                at::TensorList inputs) {
    // (A TensorList, not a vector: Function::apply sees only those as lists of inputs.)
    const std::vector<at::Tensor> tensors = inputs.vec();
    ctx->saved_data["body"] = c10::IValue::make_capsule(body);
    ctx->save_for_backward(tensors);
    DifferentiableForwardGuard same_kernels_as_the_recomputation;
    return body->fn(tensors);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto body = c10::static_intrusive_pointer_cast<CheckpointBody>(ctx->saved_data["body"].toCapsule());
    std::vector<at::Tensor> inputs;
    for (const auto& saved : ctx->get_saved_variables()) {
      inputs.push_back(saved.defined() ? saved.detach().requires_grad_(saved.requires_grad()) : saved);
    }
    std::vector<at::Tensor> outputs;
    {
      at::AutoGradMode record(true);
      outputs = body->fn(inputs);
    }
    IDSYNTH_CHECK(outputs.size() == grad_outputs.size(), "checkpoint: recomputation returned ", outputs.size(),
                  " tensors, expected ", grad_outputs.size());
    std::vector<at::Tensor> roots, grads;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].requires_grad() && grad_outputs[i].defined()) {
        roots.push_back(outputs[i]);
        grads.push_back(grad_outputs[i]);
      }
    }
    // Reentrant backward: parameters read by fn accumulate their gradients here.
    if (!roots.empty()) torch::autograd::backward(roots, grads);
    torch::autograd::variable_list input_grads{at::Tensor()};  // for `body`
    for (const auto& input : inputs) {
      input_grads.push_back(input.defined() && input.requires_grad() ? input.grad() : at::Tensor());
    }
    return input_grads;
  }
};

}  // namespace

std::vector<at::Tensor> checkpoint(CheckpointFn fn, const std::vector<at::Tensor>& inputs) {
  if (!at::GradMode::is_enabled()) return fn(inputs);
  std::vector<at::Tensor> args = inputs;
  // A leaf that requires grad makes autograd run the backward even when no input requires grad:
  // the weights fn reads may (torch's reentrant checkpoint would silently skip them).
  c10::Device device = at::kCPU;
  for (const auto& t : inputs) {
    if (t.defined()) {
      device = t.device();
      break;
    }
  }
  args.push_back(at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device).requires_grad(true)));
  const auto body = c10::make_intrusive<CheckpointBody>([fn = std::move(fn)](const std::vector<at::Tensor>& all) {
    return fn(std::vector<at::Tensor>(all.begin(), all.end() - 1));
  });
  return CheckpointFunction::apply(body, at::TensorList(args));
}

// ---------------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------------
bool is_known_activation(const std::string& name) {
  return name == "silu" || name == "swish" || name == "gelu" || name == "mish" || name == "relu";
}

std::string known_activations() { return "silu, swish, gelu, mish, relu"; }

at::Tensor apply_activation(const std::string& name, const at::Tensor& x) {
  if (name == "silu" || name == "swish") return at::silu(x);
  if (name == "gelu") return at::gelu(x);
  if (name == "mish") return at::mish(x);
  if (name == "relu") return at::relu(x);
  fail("activation: expected one of ", known_activations(), ", found '", name, "'");
}

at::Tensor apply_activation_(const std::string& name, at::Tensor x) {
  if (differentiable_forward()) return apply_activation(name, x);
  if (name == "silu" || name == "swish") return at::silu_(x);
  if (name == "relu") return at::relu_(x);
  if (name == "mish") return at::mish_(x);
  return apply_activation(name, x);
}

at::Tensor linear(const torch::nn::Linear& layer, const at::Tensor& x) {
  if (differentiable_forward()) return layer.ptr()->forward(x);
  return kernels::linear(layer, x);
}

at::Tensor conv(const torch::nn::Conv2d& layer, const at::Tensor& x) {
  if (differentiable_forward()) return layer.ptr()->forward(x);
  return kernels::conv2d(layer, x);
}

at::Tensor normalize(const torch::nn::GroupNorm& layer, const at::Tensor& x) {
  if (differentiable_forward()) return layer.ptr()->forward(x);
  return kernels::group_norm(layer, x);
}

void set_conv_weight_format(torch::nn::Module& module, at::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() == 4 && !p.is_contiguous(format)) p.set_data(p.contiguous(format));
  }
}

// ---------------------------------------------------------------------------------------------
// Chunked attention
// ---------------------------------------------------------------------------------------------
AttentionTiling attention_tiling(int64_t bh, int64_t nq, int64_t nk, int64_t element_bytes, int64_t tile_bytes) {
  AttentionTiling t;
  const int64_t row_bytes = std::max<int64_t>(1, nk * element_bytes);  // one query row of one head
  t.rows = std::clamp<int64_t>(tile_bytes / row_bytes, 1, std::max<int64_t>(nq, 1));
  if (t.rows == nq) t.heads = std::clamp<int64_t>(tile_bytes / (row_bytes * std::max<int64_t>(nq, 1)), 1, std::max<int64_t>(bh, 1));
  return t;
}

at::Tensor chunked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                             bool upcast_scores, bool upcast_softmax, int64_t tile_bytes) {
  // Ref: attention_processor.py Attention.get_attention_scores + AttnProcessor.__call__
  const auto out_dtype = q.scalar_type();
  const at::Tensor qq = upcast_scores ? q.to(at::kFloat) : q;
  const at::Tensor kt = (upcast_scores ? k.to(at::kFloat) : k).transpose(1, 2);  // [BH, d, Nk]
  const int64_t bh = q.size(0), nq = q.size(1), nk = k.size(1);
  const bool float_softmax = upcast_softmax || qq.scalar_type() == at::kFloat;
  const int64_t element_bytes = float_softmax ? 4 : static_cast<int64_t>(c10::elementSize(qq.scalar_type()));
  const AttentionTiling tiling = attention_tiling(bh, nq, nk, element_bytes, tile_bytes);

  auto attend = [&](const at::Tensor& q_tile, const at::Tensor& kt_tile, const at::Tensor& v_tile) {
    // diffusers calls baddbmm(empty, q, k^T, beta=0, alpha=scale). libtorch 1.13's small-matrix
    // baddbmm kernel still reads the uninitialised input (NaN garbage) when beta is 0, so scale after
    // the product instead: the BLAS kernels apply alpha to the same float32 accumulator, which gives
    // the same numbers.
    at::Tensor scores = at::bmm(q_tile, kt_tile).mul_(scale);
    if (upcast_softmax) scores = scores.to(at::kFloat);
    at::Tensor probs = scores.softmax(-1);
    scores.reset();
    return at::bmm(probs.to(out_dtype), v_tile);  // [heads, rows, dv]
  };
  if (tiling.heads >= bh && tiling.rows >= nq) return attend(qq, kt, v);

  at::Tensor out = at::empty({bh, nq, v.size(2)}, v.options().dtype(out_dtype));
  for (int64_t h0 = 0; h0 < bh; h0 += tiling.heads) {
    const int64_t hn = std::min(tiling.heads, bh - h0);
    const at::Tensor q_heads = qq.narrow(0, h0, hn), kt_heads = kt.narrow(0, h0, hn), v_heads = v.narrow(0, h0, hn);
    for (int64_t r0 = 0; r0 < nq; r0 += tiling.rows) {
      const int64_t rn = std::min(tiling.rows, nq - r0);
      out.narrow(0, h0, hn).narrow(1, r0, rn).copy_(attend(q_heads.narrow(1, r0, rn), kt_heads, v_heads));
    }
  }
  return out;
}

at::Tensor cache_tiled_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                                 bool upcast_scores, bool upcast_softmax, int64_t tile_bytes) {
  // Ref: attention_processor.py Attention.get_attention_scores + AttnProcessor.__call__
  const auto out_dtype = q.scalar_type();
  const auto score_dtype = upcast_scores ? at::kFloat : out_dtype;
  const auto prob_dtype = upcast_softmax ? at::kFloat : score_dtype;
  // The scale goes on q ([BH, Nq, d]), not on the scores ([BH, Nq, Nk], ~100x larger for SD's 4096
  // tokens); the difference is one float rounding of q.
  const at::Tensor qs = (upcast_scores ? q.to(at::kFloat) : q).mul(scale).contiguous();
  // (oneDNN products, as in linear(), were slower here: 0.66-2.2 s vs 0.64-0.86 s.)
  const at::Tensor kt = (upcast_scores ? k.to(at::kFloat) : k).transpose(1, 2).contiguous();  // [BH, d, Nk]
  const at::Tensor vv = v.contiguous();
  const int64_t bh = q.size(0), nq = q.size(1), nk = k.size(1), dv = v.size(2);
  const int64_t score_bytes = static_cast<int64_t>(c10::elementSize(prob_dtype == at::kFloat ? at::kFloat : score_dtype));
  const int64_t rows = std::clamp<int64_t>(tile_bytes / std::max<int64_t>(1, nk * score_bytes), 1, std::max<int64_t>(nq, 1));
  const int64_t row_blocks = (nq + rows - 1) / rows;
  at::Tensor out = at::empty({bh, nq, dv}, v.options().dtype(out_dtype));
  // One tile = one head x `rows` query rows, done start to finish by one thread: its scores stay in
  // that core's cache between the two products and the softmax, and no per-op thread fork is paid.
  at::parallel_for(0, bh * row_blocks, 1, [&](int64_t begin, int64_t end) {
    at::Tensor scores = at::empty({rows, nk}, qs.options().dtype(score_dtype));
    at::Tensor probs = prob_dtype == score_dtype ? scores : at::empty({rows, nk}, qs.options().dtype(prob_dtype));
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t h = tile / row_blocks, r0 = (tile % row_blocks) * rows, rn = std::min(rows, nq - r0);
      at::Tensor s = scores.narrow(0, 0, rn), p = probs.narrow(0, 0, rn);
      at::Tensor o = out[h].narrow(0, r0, rn);
      at::mm_out(s, qs[h].narrow(0, r0, rn), kt[h]);
      if (prob_dtype == score_dtype) {
        at::_softmax_out(p, s, 1, false);
      } else {  // upcast softmax: libtorch's CPU softmax has no half-to-float form
        p.copy_(s);
        at::_softmax_out(p, p, 1, false);
      }
      if (prob_dtype == out_dtype) {
        at::mm_out(o, p, vv[h]);
      } else {
        o.copy_(at::mm(p.to(out_dtype), vv[h]));
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------
AttentionImpl::AttentionImpl(const AttentionOptions& options) : options_(options) {
  IDSYNTH_CHECK(options.heads > 0 && options.dim_head > 0, "Attention: heads and dim_head must be positive, found ",
                options.heads, " and ", options.dim_head);
  const int64_t inner = options.heads * options.dim_head;
  const int64_t context_dim = options.cross_attention_dim > 0 ? options.cross_attention_dim : options.query_dim;
  scale_ = 1.0 / std::sqrt(static_cast<double>(options.dim_head));
  if (options.norm_num_groups > 0) {
    group_norm = register_module(
        "group_norm", nn::GroupNorm(nn::GroupNormOptions(options.norm_num_groups, options.query_dim).eps(options.eps)));
  }
  to_q = register_module("to_q", nn::Linear(nn::LinearOptions(options.query_dim, inner).bias(options.bias)));
  to_k = register_module("to_k", nn::Linear(nn::LinearOptions(context_dim, inner).bias(options.bias)));
  to_v = register_module("to_v", nn::Linear(nn::LinearOptions(context_dim, inner).bias(options.bias)));
  to_out_0 = nn::Linear(nn::LinearOptions(inner, options.query_dim).bias(options.out_bias));
  to_out = register_module("to_out", nn::ModuleList(to_out_0));
}

at::Tensor AttentionImpl::forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states) {
  // Ref: attention_processor.py AttnProcessor.__call__
  const bool spatial = hidden_states.dim() == 4;
  at::Tensor x = hidden_states;
  int64_t b = 0, c = 0, h = 0, w = 0;
  if (spatial) {
    b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    if (group_norm) x = normalize(group_norm, x);  // same statistics as diffusers' norm of the [B, C, HW] view
    x = x.flatten(2).transpose(1, 2);   // [B, HW, C]
  } else if (group_norm) {
    x = normalize(group_norm, x.transpose(1, 2)).transpose(1, 2);
  }
  const at::Tensor context = encoder_hidden_states.defined() ? encoder_hidden_states : x;
  const int64_t batch = x.size(0), nq = x.size(1), nk = context.size(1);
  const int64_t heads = options_.heads, d = options_.dim_head;

  // 1. projections, heads folded into the batch: [B, N, heads*d] -> [B*heads, N, d]
  auto split_heads = [&](const at::Tensor& t, int64_t n) {
    return t.view({batch, n, heads, d}).permute({0, 2, 1, 3}).reshape({batch * heads, n, d});
  };
  at::Tensor q = split_heads(linear(to_q, x), nq);
  at::Tensor k = split_heads(linear(to_k, context), nk);
  at::Tensor v = split_heads(linear(to_v, context), nk);

  // 2. attention, [B*heads, Nq, d] -> [B, Nq, heads*d]
  at::Tensor o;
#if TORCH_VERSION_MAJOR >= 2
  // On a GPU, PyTorch 2's fused kernels (flash / memory-efficient), as diffusers' AttnProcessor2_0
  // does there; its default scale is 1/sqrt(d), ours too.
  if (q.is_cuda()) {
    o = at::scaled_dot_product_attention(q.view({batch, heads, nq, d}), k.view({batch, heads, nk, d}),
                                         v.view({batch, heads, nk, d}))
            .reshape({batch * heads, nq, d});  // the kernels may return a transposed layout
  }
#endif
  if (!o.defined() && q.device().is_cpu() && at::get_num_threads() > 1 && !at::in_parallel_region() &&
      blas_threading() != BlasThreading::kOwnPool && !differentiable_forward()) {
    o = cache_tiled_attention(q, k, v, scale_, options_.upcast_attention, options_.upcast_softmax);
  }
  if (!o.defined()) o = chunked_attention(q, k, v, scale_, options_.upcast_attention, options_.upcast_softmax);
  q.reset(), k.reset(), v.reset();
  o = o.view({batch, heads, nq, d}).permute({0, 2, 1, 3}).reshape({batch, nq, heads * d});

  // 3. output projection (+ residual for the VAE form)
  o = linear(to_out_0, o);
  if (spatial) o = o.transpose(1, 2).reshape({b, c, h, w});
  const bool graph = differentiable_forward();
  if (options_.residual_connection) o = graph ? o + hidden_states : o.add_(hidden_states);
  if (options_.rescale_output_factor != 1.0) {
    o = graph ? o / options_.rescale_output_factor : o.div_(options_.rescale_output_factor);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// ResnetBlock2D
// ---------------------------------------------------------------------------------------------
ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetBlock2DOptions& o) : options_(o) {
  norm1 = register_module("norm1", nn::GroupNorm(nn::GroupNormOptions(o.groups, o.in_channels).eps(o.eps)));
  conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(o.in_channels, o.out_channels, 3).padding(1)));
  if (o.temb_channels > 0) {
    time_emb_proj = register_module("time_emb_proj", nn::Linear(o.temb_channels, o.out_channels));
  }
  norm2 = register_module("norm2", nn::GroupNorm(nn::GroupNormOptions(o.groups, o.out_channels).eps(o.eps)));
  conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(o.out_channels, o.out_channels, 3).padding(1)));
  if (o.in_channels != o.out_channels) {
    conv_shortcut = register_module("conv_shortcut", nn::Conv2d(nn::Conv2dOptions(o.in_channels, o.out_channels, 1)));
  }
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& input, const at::Tensor& temb) {
  // Ref: resnet.py ResnetBlock2D.forward (time_embedding_norm "default", no up/down, no skip_time_act)
  const bool graph = differentiable_forward();
  at::Tensor h = conv(conv1, apply_activation_(options_.act_fn, normalize(norm1, input)));
  if (time_emb_proj && temb.defined()) {
    const at::Tensor t = linear(time_emb_proj, apply_activation(options_.act_fn, temb)).unsqueeze(-1).unsqueeze(-1);  // [B, C, 1, 1]
    h = graph ? h + t : h.add_(t);
  }
  h = conv(conv2, apply_activation_(options_.act_fn, normalize(norm2, h)));
  const at::Tensor shortcut = conv_shortcut ? conv(conv_shortcut, input) : input;
  h = graph ? h + shortcut : h.add_(shortcut);
  if (options_.output_scale_factor != 1.0) {
    h = graph ? h / options_.output_scale_factor : h.div_(options_.output_scale_factor);
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Downsample2D / Upsample2D
// ---------------------------------------------------------------------------------------------
Downsample2DImpl::Downsample2DImpl(int64_t channels, int64_t out_channels, int64_t padding) : padding_(padding) {
  conv = register_module("conv",
                         nn::Conv2d(nn::Conv2dOptions(channels, out_channels, 3).stride(2).padding(padding)));
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& x) {
  // Ref: downsampling.py Downsample2D.forward
  if (padding_ == 0) return generator::conv(conv, at::constant_pad_nd(x, {0, 1, 0, 1}, 0));
  return generator::conv(conv, x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels, int64_t out_channels) {
  conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(channels, out_channels, 3).padding(1)));
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& x, c10::optional<std::vector<int64_t>> output_size) {
  // Ref: upsampling.py Upsample2D.forward (interpolate, nearest; nearest copies values, so the
  // reference's bfloat16 -> float32 round trip changes nothing)
  at::Tensor up;
  if (output_size) {
    up = at::upsample_nearest2d(x, *output_size, c10::nullopt, c10::nullopt);
  } else {
    up = at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}, 2.0, 2.0);
  }
  return generator::conv(conv, up);
}

// ---------------------------------------------------------------------------------------------
// Timesteps
// ---------------------------------------------------------------------------------------------
at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  // Ref: embeddings.py get_timestep_embedding (max_period 10000, scale 1), same float32 operation order
  IDSYNTH_CHECK(timesteps.dim() == 1, "timestep_embedding: expected timesteps of shape [B], found ",
                timesteps.dim(), " dimensions");
  const int64_t half = dim / 2;
  at::Tensor exponent = at::arange(0, half, timesteps.options().dtype(at::kFloat)) * (-std::log(10000.0));
  exponent = exponent / (static_cast<double>(half) - freq_shift);
  at::Tensor emb = timesteps.to(at::kFloat).unsqueeze(1) * at::exp(exponent).unsqueeze(0);  // [B, half]
  emb = flip_sin_to_cos ? at::cat({at::cos(emb), at::sin(emb)}, -1) : at::cat({at::sin(emb), at::cos(emb)}, -1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1}, 0);
  return emb;  // [B, dim]
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim, std::string act_fn)
    : act_fn_(std::move(act_fn)) {
  linear_1 = register_module("linear_1", nn::Linear(in_channels, time_embed_dim));
  linear_2 = register_module("linear_2", nn::Linear(time_embed_dim, time_embed_dim));
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& sample) {
  // Ref: embeddings.py TimestepEmbedding.forward (no cond_proj, no post_act)
  return linear(linear_2, apply_activation(act_fn_, linear(linear_1, sample)));
}

// ---------------------------------------------------------------------------------------------
// GEGLU / FeedForward
// ---------------------------------------------------------------------------------------------
GEGLUImpl::GEGLUImpl(int64_t dim_in, int64_t dim_out) {
  proj = register_module("proj", nn::Linear(dim_in, dim_out * 2));
}

at::Tensor GEGLUImpl::forward(const at::Tensor& x) {
  // Ref: activations.py GEGLU.forward (F.gelu, exact erf form)
  const auto parts = linear(proj, x).chunk(2, -1);
  return parts[0] * at::gelu(parts[1]);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t mult) {
  const int64_t inner = dim * mult;
  geglu = GEGLU(dim, inner);
  out = nn::Linear(inner, dim);
  // Index 1 is diffusers' Dropout (no weights); Identity keeps index 2 at "net.2".
  net = register_module("net", nn::ModuleList(geglu, nn::Identity(), out));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) { return linear(out, geglu(x)); }

// ---------------------------------------------------------------------------------------------
// BasicTransformerBlock
// ---------------------------------------------------------------------------------------------
BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, const TransformerOptions& o) {
  auto layer_norm = [&] { return nn::LayerNorm(nn::LayerNormOptions({dim}).eps(1e-5)); };
  AttentionOptions self_attention;
  self_attention.query_dim = dim;
  self_attention.heads = o.heads;
  self_attention.dim_head = o.dim_head;
  self_attention.upcast_attention = o.upcast_attention;
  AttentionOptions cross_attention = self_attention;
  cross_attention.cross_attention_dim = o.cross_attention_dim;

  norm1 = register_module("norm1", layer_norm());
  attn1 = register_module("attn1", Attention(self_attention));
  norm2 = register_module("norm2", layer_norm());
  attn2 = register_module("attn2", Attention(cross_attention));
  norm3 = register_module("norm3", layer_norm());
  ff = register_module("ff", FeedForward(dim));
}

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& encoder_hidden_states) {
  // Ref: attention.py BasicTransformerBlock.forward (norm_type "layer_norm")
  if (differentiable_forward()) {
    const at::Tensor h = attn1(norm1(x)) + x;
    const at::Tensor a = attn2(norm2(h), encoder_hidden_states) + h;
    return ff(norm3(a)) + a;
  }
  at::Tensor h = attn1(norm1(x));
  h.add_(x);
  at::Tensor a = attn2(norm2(h), encoder_hidden_states);
  a.add_(h);
  h = ff(norm3(a));
  h.add_(a);
  return h;
}

// ---------------------------------------------------------------------------------------------
// Transformer2DModel
// ---------------------------------------------------------------------------------------------
Transformer2DModelImpl::Transformer2DModelImpl(int64_t in_channels, const TransformerOptions& o) : options_(o) {
  const int64_t inner = o.heads * o.dim_head;
  norm = register_module("norm", nn::GroupNorm(nn::GroupNormOptions(o.norm_num_groups, in_channels).eps(1e-6)));
  if (o.use_linear_projection) {
    proj_in_linear = register_module("proj_in", nn::Linear(in_channels, inner));
  } else {
    proj_in_conv = register_module("proj_in", nn::Conv2d(nn::Conv2dOptions(in_channels, inner, 1)));
  }
  transformer_blocks = register_module("transformer_blocks", nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    blocks_.push_back(BasicTransformerBlock(inner, o));
    transformer_blocks->push_back(blocks_.back());
  }
  if (o.use_linear_projection) {
    proj_out_linear = register_module("proj_out", nn::Linear(inner, in_channels));
  } else {
    proj_out_conv = register_module("proj_out", nn::Conv2d(nn::Conv2dOptions(inner, in_channels, 1)));
  }
}

at::Tensor Transformer2DModelImpl::forward(const at::Tensor& x, const at::Tensor& encoder_hidden_states) {
  // Ref: transformers/transformer_2d.py Transformer2DModel._operate_on_continuous_inputs / _get_output_for_continuous_inputs
  const int64_t b = x.size(0), h = x.size(2), w = x.size(3);

  // 1. input: [B, C, H, W] -> tokens [B, HW, inner] (free for channels-last activations)
  at::Tensor t = normalize(norm, x);
  if (proj_in_conv) {
    t = conv(proj_in_conv, t);
    t = t.permute({0, 2, 3, 1}).reshape({b, h * w, t.size(1)});
  } else {
    t = linear(proj_in_linear, t.permute({0, 2, 3, 1}).reshape({b, h * w, t.size(1)}));
  }

  // 2. blocks
  for (auto& block : blocks_) t = block(t, encoder_hidden_states);

  // 3. output: tokens -> [B, C, H, W] in the input's memory format, plus the input
  const int64_t inner = t.size(2);
  at::Tensor y;
  if (proj_out_conv) {
    y = conv(proj_out_conv, t.reshape({b, h, w, inner}).permute({0, 3, 1, 2}).contiguous(x.suggest_memory_format()));
  } else {
    t = linear(proj_out_linear, t);
    y = t.reshape({b, h, w, t.size(2)}).permute({0, 3, 1, 2});
  }
  if (differentiable_forward()) return (y + x).contiguous(x.suggest_memory_format());
  at::Tensor out = at::empty_like(x, x.options(), x.suggest_memory_format());
  at::add_out(out, y, x);
  return out;
}

}  // namespace idsynth::generator
