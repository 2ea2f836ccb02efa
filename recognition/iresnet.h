// IResNet face-recognition backbones (r18, r34, r50, r100, r200) with insightface arcface_torch
// parameter names, so `backbone.pth` state dicts and idsynth safetensors load by name.
// Ref: deepinsight/insightface recognition/arcface_torch/backbones/iresnet.py (IBasicBlock, IResNet)
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include <string>
#include <vector>

#include "core/tensor_dict.h"

namespace idsynth::recognition {

// Mirrors arcface_torch's `get_model(name, dropout, fp16, num_features)` plus the stage widths,
// which insightface hard-codes (64, 128, 256, 512) and the small test models narrow.
struct IResNetConfig {
  std::vector<int64_t> layers = {3, 4, 14, 3};        // blocks per stage (r50)
  std::vector<int64_t> widths = {64, 128, 256, 512};  // stage widths; the stem has widths[0]
  int64_t num_features = 512;                         // embedding size (fc output)
  double dropout = 0.0;                               // before fc; a no-op at inference
  bool fp16 = false;                                  // trunk in half precision, fc + features in float32

  // "r18", "r34", "r50", "r100", "r200"; anything else lists the accepted names.
  static IResNetConfig from_name(const std::string& name);
  // Depths, widths and num_features read from tensor shapes (`conv1.weight`, `layerK.i.conv1.weight`,
  // `fc.weight`); `prefix` is prepended to every name ("module." for DataParallel dumps).
  static IResNetConfig from_weights(const TensorDict& weights, const std::string& prefix = "");
  // fc input: last width · 7 · 7 (the trunk maps 112×112 to 7×7).
  int64_t fc_in() const { return widths.back() * 7 * 7; }
  void check() const;
  std::string to_string() const;
};

// Pre-activation basic block: bn1 → conv3×3 → bn2 → prelu → conv3×3(stride) → bn3, + shortcut.
// No activation after the add.
class IBasicBlockImpl : public torch::nn::Module {
 public:
  IBasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, bool with_downsample);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn2{nullptr};
  torch::nn::PReLU prelu{nullptr};
  torch::nn::Conv2d conv2{nullptr};
  torch::nn::BatchNorm2d bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};  // conv1×1(stride) ("0") + BatchNorm2d ("1"), or absent
};
TORCH_MODULE(IBasicBlock);

class IResNetImpl : public torch::nn::Module {
 public:
  explicit IResNetImpl(IResNetConfig config);
  // x: [N, 3, 112, 112] float, RGB, (v − 127.5)/127.5. Returns [N, num_features] float32, not
  // normalised.
  torch::Tensor forward(const torch::Tensor& x);
  // Casts the trunk (everything before fc) to `dtype`; fc and features stay float32. Called by the
  // constructor with kHalf when config.fp16; kBFloat16 suits CPUs.
  void set_trunk_dtype(c10::ScalarType dtype);
  c10::ScalarType trunk_dtype() const { return trunk_dtype_; }
  const IResNetConfig& config() const { return config_; }
  // A new IResNet of the same config and trunk dtype on `device`, with every parameter (and its
  // requires_grad) and buffer (BatchNorm running statistics and step counters) copied, in the same
  // training mode: a data-parallel replica (`IResNet(net->replicate(device))`). Building it does not
  // move the default CPU generator.
  std::shared_ptr<IResNetImpl> replicate(c10::Device device) const;
  // torch::nn::Module::clone (which otherwise needs torch::nn::Cloneable): replicate() on `device`,
  // or on the device of this module's parameters.
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<c10::Device>& device = c10::nullopt) const override;

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::PReLU prelu{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  torch::nn::BatchNorm2d bn2{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d features{nullptr};

 private:
  IResNetConfig config_;
  c10::ScalarType trunk_dtype_ = c10::kFloat;
};
TORCH_MODULE(IResNet);

// Builds an IResNet from a weight file (idsynth/insightface safetensors, or a torch checkpoint such
// as arcface_torch's `backbone.pth`), with the architecture read from the tensor shapes, loads it
// strictly, and returns it in eval mode on `device`. A "module." prefix is accepted.
IResNet load_iresnet(const std::string& path, c10::Device device, bool fp16 = false);
// The same from tensors already read.
IResNet make_iresnet(const TensorDict& weights, c10::Device device, bool fp16 = false);

// A narrow random IResNet (layers 1-1-1-1, widths 8-8-16-16) written as safetensors with
// arcface_torch names, for offline runs: its BatchNorm statistics come from one batch of noise images
// (momentum 1), so activations keep their scale and embeddings vary with the input.
void write_random_iresnet(const std::string& path, int64_t num_features, int64_t seed);

}  // namespace idsynth::recognition
