// Margin losses against values computed by hand (Python's math module on the formulas of
// arcface_torch losses.py and AdaFace head.py), the ArcFace straight-through gradient, PartialFC
// sampling and the class-centre memory estimate.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/check.h"
#include "recognition/margin_losses.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::recognition {
namespace {

torch::Tensor cos_logits() { return torch::tensor({0.5f, 0.2f, -0.3f, 0.1f, 0.8f, 0.6f}).view({2, 3}); }

TEST(MarginLoss, ArcFaceTargetsGetAngularMargin) {
  CombinedMarginLoss loss(64, 1.0, 0.5, 0.0);
  const torch::Tensor out = loss->forward(cos_logits(), torch::tensor({0, 1}, torch::kLong));
  // 64·cos(acos(0.5) + 0.5) = 1.5101814586, 64·cos(acos(0.8) + 0.5) = 26.5222864864; others 64·cos.
  const torch::Tensor expected =
      torch::tensor({1.5101814586f, 12.8f, -19.2f, 6.4f, 26.5222864864f, 38.4f}).view({2, 3});
  EXPECT_ALL_CLOSE(out, expected, 2e-5);
}

TEST(MarginLoss, CosFaceSubtractsFromTargetCosine) {
  CombinedMarginLoss loss(64, 1.0, 0.0, 0.4);
  const torch::Tensor out = loss->forward(cos_logits(), torch::tensor({0, 1}, torch::kLong));
  const torch::Tensor expected = torch::tensor({6.4f, 12.8f, -19.2f, 6.4f, 25.6f, 38.4f}).view({2, 3});
  EXPECT_ALL_CLOSE(out, expected, 2e-5);
}

TEST(MarginLoss, ArcFaceGradientIsStraightThroughAsArcfaceTorch) {
  // arcface_torch rewrites the logits under no_grad: d(out)/d(cos) = s everywhere.
  torch::Tensor x = cos_logits().requires_grad_(true);
  torch::Tensor y = x * 1.0;  // non-leaf, like the clamp output in the head
  CombinedMarginLoss loss(64, 1.0, 0.5, 0.0);
  loss->forward(y, torch::tensor({0, 1}, torch::kLong)).sum().backward();
  EXPECT_ALL_CLOSE(x.grad(), torch::full({2, 3}, 64.0f), 0.0);
}

TEST(MarginLoss, RowsWithoutTargetAreOnlyScaled) {
  CombinedMarginLoss loss(64, 1.0, 0.0, 0.4);
  const torch::Tensor out = loss->forward(cos_logits(), torch::tensor({-1, 1}, torch::kLong));
  EXPECT_ALL_CLOSE(out[0], torch::tensor({32.0f, 12.8f, -19.2f}), 2e-5);
  EXPECT_NEAR(out[1][1].item<float>(), 25.6f, 2e-5);
}

TEST(MarginLoss, InterclassFilteringZeroesHighNegatives) {
  CombinedMarginLoss loss(64, 1.0, 0.0, 0.4, /*interclass_filtering_threshold=*/0.55);
  const torch::Tensor out = loss->forward(cos_logits(), torch::tensor({0, 1}, torch::kLong));
  // Row 1: 0.6 is a negative above 0.55 -> 0; the target 0.8 is never filtered.
  EXPECT_ALL_CLOSE(out, torch::tensor({6.4f, 12.8f, -19.2f, 6.4f, 25.6f, 0.0f}).view({2, 3}), 2e-5);
}

TEST(MarginLoss, AdaFaceMatchesHandComputedValues) {
  AdaFaceLoss loss(0.4, 0.333, 64, 0.01);
  loss->train();
  const torch::Tensor out =
      loss->forward(cos_logits(), torch::tensor({10.0f, 30.0f}), torch::tensor({0, 1}, torch::kLong));
  // EMA: mean 20 -> 20; unbiased std 14.1421 -> 0.01·14.1421 + 0.99·100 = 99.1414214.
  EXPECT_NEAR(loss->batch_mean.item<float>(), 20.0f, 1e-5);
  EXPECT_NEAR(loss->batch_std.item<float>(), 99.1414214f, 1e-4);
  // z = ±0.0335880439; target: 64·(cos(acos(c) − m·z) − (m + m·z)).
  const torch::Tensor expected =
      torch::tensor({6.5123329467f, 12.8f, -19.2f, 6.4f, 25.2514220496f, 38.4f}).view({2, 3});
  EXPECT_ALL_CLOSE(out, expected, 5e-5);
  // Evaluation mode leaves the statistics alone.
  loss->eval();
  loss->forward(cos_logits(), torch::tensor({50.0f, 60.0f}), torch::tensor({0, 1}, torch::kLong));
  EXPECT_NEAR(loss->batch_mean.item<float>(), 20.0f, 1e-5);
}

TEST(MarginHead, CrossEntropyOfArcFaceLogits) {
  MarginLossOptions lo;  // arcface, s 64, m 0.5
  ClassCentresOptions co;
  co.num_classes = 3;
  co.embedding_size = 3;
  MarginHead head(lo, co);
  {
    torch::NoGradGuard no_grad;
    head->centres->weight.copy_(torch::eye(3) * 7.0);  // rows are normalised anyway
  }
  // Unit directions (0.6, 0.8, 0) and (0, 0.28, 0.96), with arbitrary norms.
  const torch::Tensor emb = torch::tensor({3.0f, 4.0f, 0.0f, 0.0f, 0.56f, 1.92f}).view({2, 3});
  const auto out = head->forward(emb, torch::tensor({1, 2}, torch::kLong));
  EXPECT_NEAR(out.loss.item<float>(), 5.938860228514734f, 2e-4);
  EXPECT_EQ(out.correct.item<int64_t>(), 2);
  out.loss.backward();
  EXPECT_TRUE(head->centres->weight.grad().defined());
}

TEST(MarginHead, PartialFcSamplingKeepsPositivesAndRemapsLabels) {
  torch::manual_seed(3);
  ClassCentresOptions co;
  co.num_classes = 100;
  co.embedding_size = 8;
  co.sample_rate = 0.1;
  ClassCentres centres(co);
  centres->train();
  const torch::Tensor labels = torch::tensor({97, 3, 42, 3}, torch::kLong);
  const torch::Tensor emb = torch::nn::functional::normalize(torch::randn({4, 8}),
                                                             torch::nn::functional::NormalizeFuncOptions().dim(1));
  const auto out = centres->forward(emb, labels);
  ASSERT_EQ(out.cosine.size(1), 10);
  // The remapped column of each sample holds the cosine to its own centre.
  const torch::Tensor wn = torch::nn::functional::normalize(centres->weight.detach(),
                                                            torch::nn::functional::NormalizeFuncOptions().dim(1));
  for (int64_t i = 0; i < 4; ++i) {
    const float expect = (emb[i] * wn[labels[i].item<int64_t>()]).sum().item<float>();
    EXPECT_NEAR(out.cosine[i][out.labels[i].item<int64_t>()].item<float>(), expect, 1e-5);
  }
  // Without sampling (evaluation) all classes are there.
  centres->eval();
  EXPECT_EQ(centres->forward(emb, labels).cosine.size(1), 100);
}

TEST(MarginHead, MemoryEstimateAndBadOptions) {
  // 300K identities × 512: weight + momentum in float32 = 1.2288 GB.
  EXPECT_EQ(class_centre_bytes(300000, 512), int64_t{1228800000});
  EXPECT_EQ(logits_bytes(128, 300000, false), int64_t{153600000});
  MarginLossOptions lo;
  lo.type = "sphereface";
  EXPECT_THROW(lo.check(), Error);
  lo.type = "combined";
  lo.m2 = 0.5;
  lo.m3 = 0.4;
  EXPECT_THROW(lo.check(), Error);
}

}  // namespace
}  // namespace idsynth::recognition
