// IResNet against insightface arcface_torch (goldens/iresnet: r[1,1,1,1] with standard widths;
// goldens/onnx/iresnet_tiny_weights: narrow widths 16/32/64/128, 64 features).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/check.h"
#include "core/safetensors.h"
#include "recognition/iresnet.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::recognition {
namespace {

TEST(IResNetParity, MatchesArcfaceTorchGolden) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "iresnet");
  at::set_num_threads(2);
  torch::NoGradGuard no_grad;
  IResNet model = load_iresnet(dir + "/model.safetensors", torch::kCPU);
  EXPECT_EQ(model->config().layers, (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(model->config().widths, (std::vector<int64_t>{64, 128, 256, 512}));
  EXPECT_EQ(model->config().num_features, 512);
  SafeTensorsFile inputs(dir + "/inputs.safetensors");
  SafeTensorsFile expected(dir + "/expected.safetensors");
  const auto x = inputs.tensor("input");
  EXPECT_ALL_CLOSE(model->forward(x), expected.tensor("embedding"), 1e-4);
  EXPECT_ALL_CLOSE(model->forward(torch::flip(x, {3})), expected.tensor("embedding_flipped_input"), 1e-4);
}

TEST(IResNetParity, NarrowWidthsFromWeights) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "onnx");
  at::set_num_threads(2);
  torch::NoGradGuard no_grad;
  IResNet model = load_iresnet(dir + "/iresnet_tiny_weights.safetensors", torch::kCPU);
  EXPECT_EQ(model->config().widths, (std::vector<int64_t>{16, 32, 64, 128}));
  EXPECT_EQ(model->config().num_features, 64);
  SafeTensorsFile io(dir + "/iresnet_tiny_io.safetensors");
  const auto y = model->forward(io.tensor("input"));
  EXPECT_ALL_CLOSE(y, io.tensor("expected_torch_f64").to(torch::kFloat), 1e-4);
  EXPECT_ALL_CLOSE(y, io.tensor("expected_torch"), 1e-4);
}

TEST(IResNetParity, BFloat16TrunkStaysClose) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "onnx");
  at::set_num_threads(2);
  torch::NoGradGuard no_grad;
  IResNet model = load_iresnet(dir + "/iresnet_tiny_weights.safetensors", torch::kCPU);
  SafeTensorsFile io(dir + "/iresnet_tiny_io.safetensors");
  model->set_trunk_dtype(torch::kBFloat16);
  const auto y = model->forward(io.tensor("input"));
  EXPECT_EQ(y.scalar_type(), torch::kFloat);
  EXPECT_EQ(model->fc->weight.scalar_type(), torch::kFloat);
  EXPECT_EQ(model->conv1->weight.scalar_type(), torch::kBFloat16);
  // bf16 keeps 8 bits of mantissa: compare directions, not values.
  const auto ref = io.tensor("expected_torch");
  const auto cos = torch::cosine_similarity(y, ref, 1);
  EXPECT_GT(cos.min().item<double>(), 0.98);
}

TEST(IResNetConfig, DepthTableAndParameterNames) {
  auto c = IResNetConfig::from_name("r100");
  EXPECT_EQ(c.layers, (std::vector<int64_t>{3, 13, 30, 3}));
  EXPECT_EQ(IResNetConfig::from_name("r200").layers, (std::vector<int64_t>{6, 26, 60, 6}));
  EXPECT_THROW(IResNetConfig::from_name("r101"), Error);
  // r50 has 475 state entries in arcface_torch (num_batches_tracked included).
  IResNet r50(IResNetConfig::from_name("r50"));
  auto params = r50->named_parameters(true);
  auto buffers = r50->named_buffers(true);
  EXPECT_EQ(params.size() + buffers.size(), 475u);
  EXPECT_NE(params.find("layer1.0.downsample.0.weight"), nullptr);
  EXPECT_NE(buffers.find("layer4.2.bn3.running_var"), nullptr);
  EXPECT_NE(params.find("features.weight"), nullptr);
  EXPECT_EQ(params["fc.weight"].sizes(), (std::vector<int64_t>{512, 25088}));
}

TEST(IResNetLoad, MissingTensorNamesTheFile) {
  TensorDict d;
  d.set_source("bad.safetensors");
  d.insert("conv1.weight", torch::zeros({16, 3, 3, 3}));
  try {
    make_iresnet(d, torch::kCPU);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layer1.0.conv1.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace idsynth::recognition
