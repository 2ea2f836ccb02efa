// Ref: pytorch-fid src/pytorch_fid/inception.py; torchvision/models/inception.py (see inception_fid.h).
#include "eval/inception_fid.h"

#include <ATen/ATen.h>

#include "core/check.h"
#include "core/log.h"
#include "core/weights.h"

namespace idsynth::eval {

namespace {

constexpr double kBatchNormEps = 1e-3;  // torchvision BasicConv2d
constexpr int64_t kFidInputSize = 299;

// avg_pool2d(3, stride 1, padding 1, count_include_pad=False): what the FID blocks use.
at::Tensor avg_pool_exclude_pad(const at::Tensor& x) {
  return at::avg_pool2d(x, {3, 3}, {1, 1}, {1, 1}, /*ceil_mode=*/false, /*count_include_pad=*/false);
}

// ModuleHolder's forwarding constructor cannot take a braced ConvSpec.
BasicConv2d conv_unit(int64_t in, int64_t out, ConvSpec spec) { return BasicConv2d(in, out, spec); }

}  // namespace

FrozenBatchNorm2dImpl::FrozenBatchNorm2dImpl(int64_t channels, double eps) : eps_(eps) {
  weight = register_parameter("weight", at::ones({channels}));
  bias = register_parameter("bias", at::zeros({channels}));
  running_mean = register_buffer("running_mean", at::zeros({channels}));
  running_var = register_buffer("running_var", at::ones({channels}));
}

at::Tensor FrozenBatchNorm2dImpl::forward(const at::Tensor& x) {
  return at::batch_norm(x, weight, bias, running_mean, running_var, /*training=*/false, 0.0, eps_,
                        /*cudnn_enabled=*/true);
}

BasicConv2dImpl::BasicConv2dImpl(int64_t in, int64_t out, ConvSpec s) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, {s.kh, s.kw})
                                                       .stride(s.stride)
                                                       .padding({s.ph, s.pw})
                                                       .bias(false)));
  bn = register_module("bn", FrozenBatchNorm2d(out, kBatchNormEps));
}

at::Tensor BasicConv2dImpl::forward(const at::Tensor& x) { return at::relu(bn(conv(x))); }

// ---------------------------------------------------------------------------------------------
// Mixed_5b/c/d
FIDInceptionAImpl::FIDInceptionAImpl(int64_t in, int64_t pool_features) {
  branch1x1 = register_module("branch1x1", conv_unit(in, 64, {1, 1}));
  branch5x5_1 = register_module("branch5x5_1", conv_unit(in, 48, {1, 1}));
  branch5x5_2 = register_module("branch5x5_2", conv_unit(48, 64, {5, 5, 1, 2, 2}));
  branch3x3dbl_1 = register_module("branch3x3dbl_1", conv_unit(in, 64, {1, 1}));
  branch3x3dbl_2 = register_module("branch3x3dbl_2", conv_unit(64, 96, {3, 3, 1, 1, 1}));
  branch3x3dbl_3 = register_module("branch3x3dbl_3", conv_unit(96, 96, {3, 3, 1, 1, 1}));
  branch_pool = register_module("branch_pool", conv_unit(in, pool_features, {1, 1}));
}

at::Tensor FIDInceptionAImpl::forward(const at::Tensor& x) {
  at::Tensor b1 = branch1x1(x);
  at::Tensor b5 = branch5x5_2(branch5x5_1(x));
  at::Tensor b3 = branch3x3dbl_3(branch3x3dbl_2(branch3x3dbl_1(x)));
  at::Tensor bp = branch_pool(avg_pool_exclude_pad(x));
  return at::cat({b1, b5, b3, bp}, 1);  // [N, 64 + 64 + 96 + pool_features, H, W]
}

// ---------------------------------------------------------------------------------------------
// Mixed_6a (stock torchvision)
InceptionBImpl::InceptionBImpl(int64_t in) {
  branch3x3 = register_module("branch3x3", conv_unit(in, 384, {3, 3, 2}));
  branch3x3dbl_1 = register_module("branch3x3dbl_1", conv_unit(in, 64, {1, 1}));
  branch3x3dbl_2 = register_module("branch3x3dbl_2", conv_unit(64, 96, {3, 3, 1, 1, 1}));
  branch3x3dbl_3 = register_module("branch3x3dbl_3", conv_unit(96, 96, {3, 3, 2}));
}

at::Tensor InceptionBImpl::forward(const at::Tensor& x) {
  at::Tensor b3 = branch3x3(x);
  at::Tensor bd = branch3x3dbl_3(branch3x3dbl_2(branch3x3dbl_1(x)));
  at::Tensor bp = at::max_pool2d(x, {3, 3}, {2, 2});
  return at::cat({b3, bd, bp}, 1);  // [N, 384 + 96 + in, (H-3)/2+1, ...]
}

// ---------------------------------------------------------------------------------------------
// Mixed_6b..6e
FIDInceptionCImpl::FIDInceptionCImpl(int64_t in, int64_t c7) {
  branch1x1 = register_module("branch1x1", conv_unit(in, 192, {1, 1}));
  branch7x7_1 = register_module("branch7x7_1", conv_unit(in, c7, {1, 1}));
  branch7x7_2 = register_module("branch7x7_2", conv_unit(c7, c7, {1, 7, 1, 0, 3}));
  branch7x7_3 = register_module("branch7x7_3", conv_unit(c7, 192, {7, 1, 1, 3, 0}));
  branch7x7dbl_1 = register_module("branch7x7dbl_1", conv_unit(in, c7, {1, 1}));
  branch7x7dbl_2 = register_module("branch7x7dbl_2", conv_unit(c7, c7, {7, 1, 1, 3, 0}));
  branch7x7dbl_3 = register_module("branch7x7dbl_3", conv_unit(c7, c7, {1, 7, 1, 0, 3}));
  branch7x7dbl_4 = register_module("branch7x7dbl_4", conv_unit(c7, c7, {7, 1, 1, 3, 0}));
  branch7x7dbl_5 = register_module("branch7x7dbl_5", conv_unit(c7, 192, {1, 7, 1, 0, 3}));
  branch_pool = register_module("branch_pool", conv_unit(in, 192, {1, 1}));
}

at::Tensor FIDInceptionCImpl::forward(const at::Tensor& x) {
  at::Tensor b1 = branch1x1(x);
  at::Tensor b7 = branch7x7_3(branch7x7_2(branch7x7_1(x)));
  at::Tensor bd = branch7x7dbl_5(branch7x7dbl_4(branch7x7dbl_3(branch7x7dbl_2(branch7x7dbl_1(x)))));
  at::Tensor bp = branch_pool(avg_pool_exclude_pad(x));
  return at::cat({b1, b7, bd, bp}, 1);  // [N, 768, 17, 17]
}

// ---------------------------------------------------------------------------------------------
// Mixed_7a (stock torchvision)
InceptionDImpl::InceptionDImpl(int64_t in) {
  branch3x3_1 = register_module("branch3x3_1", conv_unit(in, 192, {1, 1}));
  branch3x3_2 = register_module("branch3x3_2", conv_unit(192, 320, {3, 3, 2}));
  branch7x7x3_1 = register_module("branch7x7x3_1", conv_unit(in, 192, {1, 1}));
  branch7x7x3_2 = register_module("branch7x7x3_2", conv_unit(192, 192, {1, 7, 1, 0, 3}));
  branch7x7x3_3 = register_module("branch7x7x3_3", conv_unit(192, 192, {7, 1, 1, 3, 0}));
  branch7x7x3_4 = register_module("branch7x7x3_4", conv_unit(192, 192, {3, 3, 2}));
}

at::Tensor InceptionDImpl::forward(const at::Tensor& x) {
  at::Tensor b3 = branch3x3_2(branch3x3_1(x));
  at::Tensor b7 = branch7x7x3_4(branch7x7x3_3(branch7x7x3_2(branch7x7x3_1(x))));
  at::Tensor bp = at::max_pool2d(x, {3, 3}, {2, 2});
  return at::cat({b3, b7, bp}, 1);  // [N, 320 + 192 + 768, 8, 8]
}

// ---------------------------------------------------------------------------------------------
// Mixed_7b (E_1) and Mixed_7c (E_2)
FIDInceptionEImpl::FIDInceptionEImpl(int64_t in, PoolKind pool) : pool_(pool) {
  branch1x1 = register_module("branch1x1", conv_unit(in, 320, {1, 1}));
  branch3x3_1 = register_module("branch3x3_1", conv_unit(in, 384, {1, 1}));
  branch3x3_2a = register_module("branch3x3_2a", conv_unit(384, 384, {1, 3, 1, 0, 1}));
  branch3x3_2b = register_module("branch3x3_2b", conv_unit(384, 384, {3, 1, 1, 1, 0}));
  branch3x3dbl_1 = register_module("branch3x3dbl_1", conv_unit(in, 448, {1, 1}));
  branch3x3dbl_2 = register_module("branch3x3dbl_2", conv_unit(448, 384, {3, 3, 1, 1, 1}));
  branch3x3dbl_3a = register_module("branch3x3dbl_3a", conv_unit(384, 384, {1, 3, 1, 0, 1}));
  branch3x3dbl_3b = register_module("branch3x3dbl_3b", conv_unit(384, 384, {3, 1, 1, 1, 0}));
  branch_pool = register_module("branch_pool", conv_unit(in, 192, {1, 1}));
}

at::Tensor FIDInceptionEImpl::forward(const at::Tensor& x) {
  at::Tensor b1 = branch1x1(x);
  at::Tensor s = branch3x3_1(x);
  at::Tensor b3 = at::cat({branch3x3_2a(s), branch3x3_2b(s)}, 1);
  at::Tensor d = branch3x3dbl_2(branch3x3dbl_1(x));
  at::Tensor bd = at::cat({branch3x3dbl_3a(d), branch3x3dbl_3b(d)}, 1);
  // The TF graph max-pools in the last block (pytorch-fid: "likely an error", but FID depends on it).
  at::Tensor pooled = pool_ == PoolKind::max ? at::max_pool2d(x, {3, 3}, {1, 1}, {1, 1}) : avg_pool_exclude_pad(x);
  at::Tensor bp = branch_pool(pooled);
  return at::cat({b1, b3, bd, bp}, 1);  // [N, 320 + 768 + 768 + 192 = 2048, 8, 8]
}

// ---------------------------------------------------------------------------------------------
InceptionV3FIDImpl::InceptionV3FIDImpl() {
  Conv2d_1a_3x3 = register_module("Conv2d_1a_3x3", conv_unit(3, 32, {3, 3, 2}));
  Conv2d_2a_3x3 = register_module("Conv2d_2a_3x3", conv_unit(32, 32, {3, 3}));
  Conv2d_2b_3x3 = register_module("Conv2d_2b_3x3", conv_unit(32, 64, {3, 3, 1, 1, 1}));
  Conv2d_3b_1x1 = register_module("Conv2d_3b_1x1", conv_unit(64, 80, {1, 1}));
  Conv2d_4a_3x3 = register_module("Conv2d_4a_3x3", conv_unit(80, 192, {3, 3}));
  Mixed_5b = register_module("Mixed_5b", FIDInceptionA(192, 32));
  Mixed_5c = register_module("Mixed_5c", FIDInceptionA(256, 64));
  Mixed_5d = register_module("Mixed_5d", FIDInceptionA(288, 64));
  Mixed_6a = register_module("Mixed_6a", InceptionB(288));
  Mixed_6b = register_module("Mixed_6b", FIDInceptionC(768, 128));
  Mixed_6c = register_module("Mixed_6c", FIDInceptionC(768, 160));
  Mixed_6d = register_module("Mixed_6d", FIDInceptionC(768, 160));
  Mixed_6e = register_module("Mixed_6e", FIDInceptionC(768, 192));
  Mixed_7a = register_module("Mixed_7a", InceptionD(768));
  Mixed_7b = register_module("Mixed_7b", FIDInceptionE(1280, PoolKind::avg_exclude_pad));
  Mixed_7c = register_module("Mixed_7c", FIDInceptionE(2048, PoolKind::max));
  fc = register_module("fc", torch::nn::Linear(2048, 1008));
}

at::Tensor InceptionV3FIDImpl::forward(const at::Tensor& images) {
  IDSYNTH_CHECK(images.dim() == 4 && images.size(1) == 3, "inception_fid: images: expected (N, 3, H, W), found ",
                images.sizes());
  // 1. resize (bilinear, no antialias) and map [0, 1] -> [-1, 1]
  at::Tensor x = at::upsample_bilinear2d(images, {kFidInputSize, kFidInputSize}, /*align_corners=*/false);
  x = 2 * x - 1;                                                    // [N, 3, 299, 299]
  // 2. block 0
  x = Conv2d_2b_3x3(Conv2d_2a_3x3(Conv2d_1a_3x3(x)));              // [N, 64, 147, 147]
  x = at::max_pool2d(x, {3, 3}, {2, 2});                            // [N, 64, 73, 73]
  // 3. block 1
  x = Conv2d_4a_3x3(Conv2d_3b_1x1(x));                              // [N, 192, 71, 71]
  x = at::max_pool2d(x, {3, 3}, {2, 2});                            // [N, 192, 35, 35]
  // 4. block 2
  x = Mixed_5d(Mixed_5c(Mixed_5b(x)));                              // [N, 288, 35, 35]
  x = Mixed_6a(x);                                                  // [N, 768, 17, 17]
  x = Mixed_6e(Mixed_6d(Mixed_6c(Mixed_6b(x))));                    // [N, 768, 17, 17]
  // 5. block 3: pool3
  x = Mixed_7c(Mixed_7b(Mixed_7a(x)));                              // [N, 2048, 8, 8]
  return at::adaptive_avg_pool2d(x, {1, 1}).flatten(1);             // [N, 2048]
}

InceptionV3FID load_inception_fid(const std::string& path) {
  log::Stopwatch sw;
  InceptionV3FID model;
  LoadOptions options;
  options.ignore_unexpected = {".num_batches_tracked"};
  load_state_dict(*model, read_weights(path), options);
  model->eval();
  LOG_INF("loading ", path, " completed, taking ", sw.seconds(), " s");
  return model;
}

}  // namespace idsynth::eval
