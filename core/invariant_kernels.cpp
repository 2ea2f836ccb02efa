#include "core/invariant_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/enum.h>
#include <torch/version.h>

namespace idsynth::kernels {

namespace {

// x with the strides its layout implies. A dimension of size 1 may have any stride, and a view of
// a batch of one often has an odd one there (the attention's transpose-reshape gives a
// channels-last [1, C, H, W] a batch stride of C). libtorch then guesses the layout from the strides
// (suggest_memory_format), calls it NCHW, and runs a different kernel than for the same image in a
// larger batch (1e-6 apart, measured).
at::Tensor canonical_strides(const at::Tensor& x) {
  if (x.dim() != 4) return x;
  const int64_t c = x.size(1), h = x.size(2), w = x.size(3);
  if (x.is_contiguous()) return x.as_strided(x.sizes(), {c * h * w, h * w, w, 1});
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x.as_strided(x.sizes(), {c * h * w, 1, w * c, c});
  return x;
}

// PyTorch 2.4 renamed the autocast switches (device type as an argument) and deprecated the old
// names, which warnings-as-errors would refuse.
bool cpu_autocast_enabled() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::is_autocast_enabled(at::kCPU);
#else
  return at::autocast::is_cpu_enabled();
#endif
}

}  // namespace

bool onednn_inference(const at::Tensor& x, const at::Tensor& weight) {
  const bool recording = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
  return !recording && x.device().is_cpu() && weight.device().is_cpu() && x.scalar_type() == at::kFloat &&
         weight.scalar_type() == at::kFloat && at::hasMKLDNN() && !cpu_autocast_enabled() &&
         !at::in_parallel_region() && !x.is_mkldnn() && x.numel() > 0;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!onednn_inference(x, weight) || x.dim() < 1 || weight.dim() != 2 || x.size(-1) != weight.size(1) ||
      weight.size(0) < 1 || weight.size(1) < 1 ||
      (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0) || bias.scalar_type() != at::kFloat)))
    return at::linear(x, weight, bias);
  const int64_t in = weight.size(1), out = weight.size(0);
  const int64_t rows = x.numel() / in;
  const at::Tensor x2 = x.reshape({rows, in}).contiguous();
  // The rows as the width of a channels-last [1, in, 1, rows] image: memory stays [rows, in], and
  // the output [1, out, 1, rows] channels-last is [rows, out] in memory.
  const at::Tensor x4 = x2.as_strided({1, in, 1, rows}, {rows * in, 1, rows * in, in});
  const at::Tensor w4 = weight.reshape({out, in, 1, 1}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor y = at::mkldnn_convolution(x4, w4, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt,
                                              {0, 0}, {1, 1}, {1, 1}, 1);
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  return y.permute({0, 2, 3, 1}).reshape(sizes);
}

namespace {

// Arguments libtorch's own convolution accepts (it checks them before dispatch; oneDNN's entry point
// is called here directly, so a hostile ONNX graph must not reach it with others).
bool valid_convolution(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (x.dim() != 4 || weight.dim() != 4 || stride.size() != 2 || padding.size() != 2 || dilation.size() != 2 ||
      groups < 1 || weight.size(0) % groups != 0 || weight.size(1) * groups != x.size(1) || weight.size(0) < 1)
    return false;
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0) || bias.scalar_type() != at::kFloat))
    return false;
  for (int i = 0; i < 2; ++i) {
    if (stride[i] < 1 || padding[i] < 0 || dilation[i] < 1) return false;
    const int64_t extent = x.size(2 + i) + 2 * padding[i] - dilation[i] * (weight.size(2 + i) - 1);
    if (extent < 1) return false;  // the kernel is larger than the padded input
  }
  return true;
}

}  // namespace

at::Tensor conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (!onednn_inference(x, weight) || !valid_convolution(x, weight, bias, stride, padding, dilation, groups))
    return at::conv2d(x, weight, bias, stride, padding, dilation, groups);
  return at::mkldnn_convolution(canonical_strides(x), weight, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt, padding,
                                stride, dilation, groups);
}

at::Tensor group_norm(const torch::nn::GroupNorm& layer, const at::Tensor& x) {
  torch::nn::GroupNormImpl& norm = *layer.ptr();
  const bool recording =
      at::GradMode::is_enabled() && (x.requires_grad() || (norm.weight.defined() && norm.weight.requires_grad()));
  if (recording || !x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() < 2 || x.size(0) < 1 ||
      at::in_parallel_region())
    return norm.forward(x);
  if (x.size(0) == 1) return norm.forward(canonical_strides(x));
  const at::Tensor input = canonical_strides(x);
  at::Tensor out = at::empty_like(input);
  for (int64_t i = 0; i < x.size(0); ++i) out.narrow(0, i, 1).copy_(norm.forward(input.narrow(0, i, 1)));
  return out;
}

at::Tensor linear(const torch::nn::Linear& layer, const at::Tensor& x) {
  return linear(x, layer->weight, layer->bias);
}

namespace {

// The padding a Conv2d resolved from its options ([left, right, top, bottom]). Reading the options
// themselves means visiting a variant whose type differs between libtorch versions (c10::variant,
// then std::variant); the resolved vector is a protected member of every version, named here
// through a derived class (a pointer to a protected member may be formed by a derived class).
struct ResolvedPadding : torch::nn::Conv2dImpl {
  static const std::vector<int64_t>& of(const torch::nn::Conv2dImpl& layer) {
    return layer.*(&ResolvedPadding::_reversed_padding_repeated_twice);
  }
};

}  // namespace

at::Tensor conv2d(const torch::nn::Conv2d& layer, const at::Tensor& x) {
  const auto& o = layer->options;
  const std::vector<int64_t>& p = ResolvedPadding::of(*layer);
  if (p.size() != 4 || p[0] != p[1] || p[2] != p[3] || torch::enumtype::get_enum_name(o.padding_mode()) != "kZeros")
    return layer.ptr()->forward(x);
  return conv2d(x, layer->weight, layer->bias, *o.stride(), {p[2], p[0]}, *o.dilation(), o.groups());
}

}  // namespace idsynth::kernels
