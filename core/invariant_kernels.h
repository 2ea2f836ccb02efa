// Convolutions and linear layers whose result for one sample does not depend on the batch around
// it, for float32 inference on the CPU: the dataset contract (docs/formats.md, "Generation plan")
// that a face's bytes depend on its seed alone, not on generation.batch_size.
//
// libtorch's own choices break that: at::conv2d runs its native im2col kernel for a batch of one
// with a small input and oneDNN otherwise (different rounding), and a linear layer is one BLAS
// product over all batch rows, whose rounding changes with the row count (OpenBLAS; 2e-7 to 6e-6 on
// this CPU, measured). oneDNN's convolution computes every output element the same way whatever
// the batch, and a product run as a 1x1 convolution over a [1, in, 1, rows] channels-last view of
// the rows does too (tests/core/invariant_kernels_test.cpp). Both are also the fast paths here:
// oneDNN reaches ~2x OpenBLAS's rate on SD-1.5's projections. libtorch's channels-last group norm
// splits its sums differently for small batches (2e-6 at 128 x 32 x 32), so it runs per sample.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

namespace idsynth::kernels {

// True when the kernels below take the oneDNN path for x and weight: both float32 on the CPU,
// libtorch built with oneDNN, no autograd recording (x or weight requiring grad in grad mode), no
// CPU autocast, and not inside an at::parallel_for region. Otherwise they call libtorch's op.
bool onednn_inference(const at::Tensor& x, const at::Tensor& weight);

// y = x · weightᵀ + bias over the last dimension of x (any leading shape), as at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// 2-D convolution with zero padding, as at::conv2d.
at::Tensor conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

// Group normalisation, as the layer's forward, one sample at a time for float32 inference on the
// CPU (for any other input, one call).
at::Tensor group_norm(const torch::nn::GroupNorm& layer, const at::Tensor& x);

// The same for a layer's parameters and options. A convolution with asymmetric padding (padding
// "same" with an even kernel) or a padding mode other than zeros goes to the layer's own forward.
at::Tensor linear(const torch::nn::Linear& layer, const at::Tensor& x);
at::Tensor conv2d(const torch::nn::Conv2d& layer, const at::Tensor& x);

}  // namespace idsynth::kernels
