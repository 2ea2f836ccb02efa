// The FID feature extractor of pytorch-fid: torchvision Inception3 with the FID blocks
// (FIDInceptionA/C/E_1/E_2), BatchNorm eps 1e-3, returning the 2048-d "pool3" features.
//
// Input RGB in [0, 1], any size: resized to 299x299 (bilinear, align_corners=False, no antialias),
// mapped to [-1, 1] with 2x - 1. Parameter names are torchvision's Inception3 names, i.e. the keys of
// pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (`Conv2d_1a_3x3.conv.weight`,
// `Mixed_7c.branch_pool.bn.running_var`, `fc.weight`, ...), so that file loads by name.
// Ref: pytorch-fid src/pytorch_fid/inception.py (InceptionV3, fid_inception_v3, FIDInception*),
//      torchvision/models/inception.py (BasicConv2d, InceptionB, InceptionD).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <string>

namespace idsynth::eval {

// BatchNorm2d in inference form: affine parameters and running statistics only, so checkpoints
// with or without `num_batches_tracked` load alike.
class FrozenBatchNorm2dImpl : public torch::nn::Module {
 public:
  FrozenBatchNorm2dImpl(int64_t channels, double eps);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight, bias, running_mean, running_var;

 private:
  double eps_;
};
TORCH_MODULE(FrozenBatchNorm2d);

// Conv2d (no bias) -> BatchNorm2d(eps 0.001) -> ReLU.
struct ConvSpec {
  int64_t kh, kw;
  int64_t stride = 1;
  int64_t ph = 0, pw = 0;
};
class BasicConv2dImpl : public torch::nn::Module {
 public:
  BasicConv2dImpl(int64_t in, int64_t out, ConvSpec spec);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv{nullptr};
  FrozenBatchNorm2d bn{nullptr};
};
TORCH_MODULE(BasicConv2d);

// The pool branch of the FID blocks.
enum class PoolKind { avg_exclude_pad, max };

class FIDInceptionAImpl : public torch::nn::Module {
 public:
  FIDInceptionAImpl(int64_t in, int64_t pool_features);
  at::Tensor forward(const at::Tensor& x);

 private:
  BasicConv2d branch1x1{nullptr}, branch5x5_1{nullptr}, branch5x5_2{nullptr}, branch3x3dbl_1{nullptr},
      branch3x3dbl_2{nullptr}, branch3x3dbl_3{nullptr}, branch_pool{nullptr};
};
TORCH_MODULE(FIDInceptionA);

class InceptionBImpl : public torch::nn::Module {
 public:
  explicit InceptionBImpl(int64_t in);
  at::Tensor forward(const at::Tensor& x);

 private:
  BasicConv2d branch3x3{nullptr}, branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr}, branch3x3dbl_3{nullptr};
};
TORCH_MODULE(InceptionB);

class FIDInceptionCImpl : public torch::nn::Module {
 public:
  FIDInceptionCImpl(int64_t in, int64_t channels_7x7);
  at::Tensor forward(const at::Tensor& x);

 private:
  BasicConv2d branch1x1{nullptr}, branch7x7_1{nullptr}, branch7x7_2{nullptr}, branch7x7_3{nullptr},
      branch7x7dbl_1{nullptr}, branch7x7dbl_2{nullptr}, branch7x7dbl_3{nullptr}, branch7x7dbl_4{nullptr},
      branch7x7dbl_5{nullptr}, branch_pool{nullptr};
};
TORCH_MODULE(FIDInceptionC);

class InceptionDImpl : public torch::nn::Module {
 public:
  explicit InceptionDImpl(int64_t in);
  at::Tensor forward(const at::Tensor& x);

 private:
  BasicConv2d branch3x3_1{nullptr}, branch3x3_2{nullptr}, branch7x7x3_1{nullptr}, branch7x7x3_2{nullptr},
      branch7x7x3_3{nullptr}, branch7x7x3_4{nullptr};
};
TORCH_MODULE(InceptionD);

// FIDInceptionE_1 (avg pool without padding) and FIDInceptionE_2 (max pool) differ only in the pool.
class FIDInceptionEImpl : public torch::nn::Module {
 public:
  FIDInceptionEImpl(int64_t in, PoolKind pool);
  at::Tensor forward(const at::Tensor& x);

 private:
  PoolKind pool_;
  BasicConv2d branch1x1{nullptr}, branch3x3_1{nullptr}, branch3x3_2a{nullptr}, branch3x3_2b{nullptr},
      branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr}, branch3x3dbl_3a{nullptr}, branch3x3dbl_3b{nullptr},
      branch_pool{nullptr};
};
TORCH_MODULE(FIDInceptionE);

class InceptionV3FIDImpl : public torch::nn::Module {
 public:
  InceptionV3FIDImpl();
  // images (N, 3, H, W) RGB in [0, 1] -> (N, 2048) pool3 features (float32 of the module's dtype).
  at::Tensor forward(const at::Tensor& images);

 private:
  BasicConv2d Conv2d_1a_3x3{nullptr}, Conv2d_2a_3x3{nullptr}, Conv2d_2b_3x3{nullptr}, Conv2d_3b_1x1{nullptr},
      Conv2d_4a_3x3{nullptr};
  FIDInceptionA Mixed_5b{nullptr}, Mixed_5c{nullptr}, Mixed_5d{nullptr};
  InceptionB Mixed_6a{nullptr};
  FIDInceptionC Mixed_6b{nullptr}, Mixed_6c{nullptr}, Mixed_6d{nullptr}, Mixed_6e{nullptr};
  InceptionD Mixed_7a{nullptr};
  FIDInceptionE Mixed_7b{nullptr}, Mixed_7c{nullptr};
  torch::nn::Linear fc{nullptr};  // the 1008-class head: in the checkpoint, unused for pool3
};
TORCH_MODULE(InceptionV3FID);

// Builds the network and loads `path` (pt_inception-2015-12-05-6726825d.pth or a safetensors copy)
// strictly by name; `num_batches_tracked` entries are ignored. Eval mode.
InceptionV3FID load_inception_fid(const std::string& path);

}  // namespace idsynth::eval
