// LPIPS (alex, v0.1) against goldens/lpips (lpips 0.1.4 with random trunk and linear weights).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "core/check.h"
#include "core/safetensors.h"
#include "eval/lpips.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::eval {
namespace {

TEST(LpipsParity, AlexMatchesGolden) {
  IDSYNTH_REQUIRE_GOLDEN(trunk, "lpips/alexnet_features.safetensors");
  IDSYNTH_REQUIRE_GOLDEN(lin, "lpips/lpips_alex_v0.1_lin.safetensors");
  IDSYNTH_REQUIRE_GOLDEN(inputs_path, "lpips/inputs.safetensors");
  IDSYNTH_REQUIRE_GOLDEN(expected_path, "lpips/expected.safetensors");
  Lpips model = load_lpips(LpipsNet::alex, trunk, lin);
  SafeTensorsFile inputs(inputs_path), expected(expected_path);
  const at::Tensor img0 = inputs.tensor("img0"), img1 = inputs.tensor("img1");
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> per_layer;
  const at::Tensor d = model->forward(img0, img1, false, &per_layer);
  std::cout << "distance max|diff| " << test::max_abs_diff(d, expected.tensor("distance")) << "\n";
  EXPECT_ALL_CLOSE(d, expected.tensor("distance"), 1e-6);
  ASSERT_EQ(per_layer.size(), 5u);
  for (size_t k = 0; k < 5; ++k) EXPECT_ALL_CLOSE(per_layer[k], expected.tensor("per_layer_" + std::to_string(k)), 1e-6);
  EXPECT_ALL_CLOSE(model->forward(img0, img0), expected.tensor("distance_self"), 1e-6);
  const at::Tensor dn = model->forward((img0 + 1) / 2, (img1 + 1) / 2, true);
  std::cout << "normalize=True max|diff| " << test::max_abs_diff(dn, expected.tensor("distance_normalize_flag")) << "\n";
  EXPECT_ALL_CLOSE(dn, expected.tensor("distance_normalize_flag"), 1e-6);
}

TEST(LpipsParity, DiversityIsMeanOverPairsThenIdentities) {
  IDSYNTH_REQUIRE_GOLDEN(trunk, "lpips/alexnet_features.safetensors");
  IDSYNTH_REQUIRE_GOLDEN(lin, "lpips/lpips_alex_v0.1_lin.safetensors");
  IDSYNTH_REQUIRE_GOLDEN(inputs_path, "lpips/inputs.safetensors");
  Lpips model = load_lpips(LpipsNet::alex, trunk, lin);
  SafeTensorsFile inputs(inputs_path);
  const at::Tensor img0 = inputs.tensor("img0"), img1 = inputs.tensor("img1");
  torch::NoGradGuard no_grad;
  // identity A: 3 images, identity B: 2 images; reference = explicit pair loop with forward().
  const at::Tensor a = at::cat({img0, img1.slice(0, 0, 1)}, 0);
  const at::Tensor b = img1;
  double pairs_a = 0.0;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = i + 1; j < 3; ++j) pairs_a += model->forward(a.slice(0, i, i + 1), a.slice(0, j, j + 1)).item<double>();
  const double want_a = pairs_a / 3, want_b = model->forward(b.slice(0, 0, 1), b.slice(0, 1, 2)).item<double>();
  const LpipsDiversity div = lpips_diversity(model, {a, b}, 2);
  ASSERT_EQ(div.per_identity.size(), 2u);
  EXPECT_NEAR(div.per_identity[0], want_a, 1e-6);
  EXPECT_NEAR(div.per_identity[1], want_b, 1e-6);
  EXPECT_NEAR(div.mean, (want_a + want_b) / 2, 1e-6);
  EXPECT_EQ(div.pairs, 4);
  EXPECT_THROW(lpips_diversity(model, {a.slice(0, 0, 1)}), Error);
}

TEST(Lpips, VggBuildsWithTorchvisionIndices) {
  Lpips model(LpipsNet::vgg);
  std::vector<std::string> names;
  for (const auto& p : model->named_parameters()) names.push_back(p.key());
  EXPECT_NE(std::find(names.begin(), names.end(), "net.slice1.0.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "net.slice5.28.bias"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "lin4.model.1.weight"), names.end());
  EXPECT_EQ(model->named_parameters().size(), 13u * 2 + 5);
  torch::NoGradGuard no_grad;
  const at::Tensor d = model->forward(at::rand({1, 3, 32, 32}) * 2 - 1, at::rand({1, 3, 32, 32}) * 2 - 1);
  EXPECT_EQ(d.sizes(), at::IntArrayRef({1, 1, 1, 1}));
  EXPECT_THROW(parse_lpips_net("squeeze"), Error);
}

}  // namespace
}  // namespace idsynth::eval
