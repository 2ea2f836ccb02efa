// core/invariant_kernels.h: a sample's result is the same, bit for bit, whether it is computed alone
// or inside a batch, and equals libtorch's own op to float rounding. libtorch's ops themselves
// differ between the two by 2e-7 to 7e-6 on these shapes (measured on this machine's OpenBLAS and
// oneDNN); the assertions here are exact.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>

#include "core/invariant_kernels.h"

namespace idsynth::kernels {
namespace {

using Shape = std::vector<int64_t>;

// Every sample of f(x) equals f(that sample alone); returns f(x).
at::Tensor expect_batch_invariant(const std::function<at::Tensor(const at::Tensor&)>& f, const at::Tensor& x) {
  const at::Tensor all = f(x);
  for (int64_t i = 0; i < x.size(0); ++i) {
    const at::Tensor one = f(x.narrow(0, i, 1));
    EXPECT_TRUE(torch::equal(one, all.narrow(0, i, 1)))
        << "sample " << i << " of " << x.sizes() << ": max |diff| " << (one - all.narrow(0, i, 1)).abs().max().item<double>();
  }
  return all;
}

void expect_close(const at::Tensor& a, const at::Tensor& b, double tolerance) {
  ASSERT_EQ(a.sizes(), b.sizes());
  const double scale = std::max(1.0, b.abs().max().item<double>());
  EXPECT_LE((a - b).abs().max().item<double>(), tolerance * scale);
}

class InvariantKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(2);
    torch::manual_seed(7);
  }
  torch::NoGradGuard no_grad_;
};

TEST_F(InvariantKernels, LinearRows) {
  for (const Shape& shape : {Shape{8, 16, 32}, Shape{8, 77, 320}, Shape{8, 64}, Shape{3, 5, 7, 48}}) {
    SCOPED_TRACE(at::IntArrayRef(shape));
    const int64_t in = shape.back(), out = in == 320 ? 640 : 24;
    const at::Tensor x = torch::randn(shape), w = torch::randn({out, in}) * 0.1, b = torch::randn({out});
    const at::Tensor y = expect_batch_invariant([&](const at::Tensor& t) { return linear(t, w, b); }, x);
    expect_close(y, at::linear(x, w, b), 1e-5);
    expect_close(linear(x, w, at::Tensor()), at::linear(x, w), 1e-5);
  }
}

TEST_F(InvariantKernels, Convolutions) {
  struct Case {
    int64_t in, out, size, kernel, stride, padding;
  };
  for (const Case& c : {Case{32, 32, 8, 3, 1, 1}, Case{4, 64, 16, 3, 1, 1}, Case{64, 32, 16, 1, 1, 0},
                        Case{32, 32, 16, 3, 2, 1}, Case{32, 3, 32, 3, 1, 1}}) {
    for (const auto format : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
      SCOPED_TRACE(testing::Message() << c.in << "->" << c.out << " k" << c.kernel << " s" << c.stride << " "
                                      << (format == at::MemoryFormat::ChannelsLast ? "channels-last" : "NCHW"));
      const at::Tensor x = torch::randn({6, c.in, c.size, c.size}).contiguous(format);
      const at::Tensor w = (torch::randn({c.out, c.in, c.kernel, c.kernel}) * 0.05).contiguous(format);
      const at::Tensor b = torch::randn({c.out});
      const at::Tensor y = expect_batch_invariant(
          [&](const at::Tensor& t) { return conv2d(t, w, b, {c.stride, c.stride}, {c.padding, c.padding}, {1, 1}, 1); }, x);
      expect_close(y, at::conv2d(x, w, b, c.stride, c.padding), 1e-5);
    }
  }
  // The module form reads the layer's stride and padding.
  torch::nn::Conv2d layer(torch::nn::Conv2dOptions(8, 16, 3).stride(2).padding(1));
  const at::Tensor x = torch::randn({2, 8, 9, 9});
  expect_close(conv2d(layer, x), layer->forward(x), 1e-5);
}

TEST_F(InvariantKernels, GroupNormOneSampleAtATime) {
  // libtorch's channels-last group norm sums a large batch in another order than a batch of one.
  torch::nn::GroupNorm layer(torch::nn::GroupNormOptions(32, 128).eps(1e-6));
  torch::nn::init::normal_(layer->weight);
  torch::nn::init::normal_(layer->bias);
  for (const auto format : {at::MemoryFormat::ChannelsLast, at::MemoryFormat::Contiguous}) {
    const at::Tensor x = torch::randn({4, 128, 32, 32}).contiguous(format);
    const at::Tensor y = expect_batch_invariant([&](const at::Tensor& t) { return group_norm(layer, t); }, x);
    expect_close(y, layer->forward(x), 1e-5);
    EXPECT_TRUE(y.is_contiguous(format));
  }
}

TEST_F(InvariantKernels, ABatchOfOneWithAnOddBatchStrideRunsTheSameKernel) {
  // A channels-last image whose batch stride is C (what a transpose-reshape of [1, HW, C] gives):
  // libtorch reads the strides as NCHW; the kernels use the layout's own strides.
  torch::nn::GroupNorm norm(torch::nn::GroupNormOptions(32, 64).eps(1e-6));
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(64, 64, 3).padding(1));
  const at::Tensor image = torch::randn({1, 64, 16, 16}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor odd = image.as_strided(image.sizes(), {64, 1, 16 * 64, 64});
  ASSERT_TRUE(torch::equal(odd, image));
  EXPECT_TRUE(torch::equal(group_norm(norm, odd), group_norm(norm, image)));
  EXPECT_TRUE(torch::equal(conv2d(conv, odd), conv2d(conv, image)));
  const at::Tensor batch = torch::cat({image, torch::randn({3, 64, 16, 16})}).contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(torch::equal(conv2d(conv, odd), conv2d(conv, batch).narrow(0, 0, 1)));
  EXPECT_TRUE(torch::equal(group_norm(norm, odd), group_norm(norm, batch).narrow(0, 0, 1)));
}

TEST_F(InvariantKernels, ArgumentsLibtorchRefusesAreRefused) {
  // oneDNN is called directly; arguments libtorch's convolution checks (a hostile ONNX graph can
  // carry any) go to libtorch, which throws, instead of reaching oneDNN.
  const at::Tensor x = torch::randn({1, 4, 5, 5}), w = torch::randn({8, 4, 7, 7});
  EXPECT_THROW(conv2d(x, w, at::Tensor(), {1, 1}, {0, 0}, {1, 1}, 1), c10::Error);   // kernel beyond the input
  EXPECT_THROW(conv2d(x, torch::randn({8, 4, 3, 3}), at::Tensor(), {1, 1}, {-1, -1}, {1, 1}, 1), c10::Error);
  EXPECT_THROW(conv2d(x, torch::randn({8, 3, 3, 3}), at::Tensor(), {1, 1}, {1, 1}, {1, 1}, 1), c10::Error);
  EXPECT_THROW(conv2d(x, torch::randn({8, 4, 3, 3}), torch::randn({5}), {1, 1}, {1, 1}, {1, 1}, 1), c10::Error);
  EXPECT_THROW(linear(torch::randn({2, 4}), torch::randn({3, 4}), torch::randn({2})), c10::Error);
}

TEST_F(InvariantKernels, RecordedForwardsKeepLibtorchsOps) {
  // Training records a graph: the kernels step aside for libtorch's differentiable ops.
  torch::AutoGradMode grad(true);
  torch::nn::Linear layer(8, 4);
  const at::Tensor x = torch::randn({3, 8});
  EXPECT_FALSE(onednn_inference(x, layer->weight));
  const at::Tensor y = linear(layer, x);
  ASSERT_TRUE(y.requires_grad());
  y.sum().backward();
  EXPECT_TRUE(layer->weight.grad().defined());
  EXPECT_FALSE(onednn_inference(x.to(at::kDouble), layer->weight.to(at::kDouble)));
}

}  // namespace
}  // namespace idsynth::kernels
