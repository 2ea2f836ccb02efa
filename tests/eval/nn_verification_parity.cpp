// The 10-fold verification protocol against goldens/verification accuracy_* (insightface
// verification.test() with nfolds=10, numpy/sklearn in float64).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "core/check.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "eval/verification.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::eval {
namespace {

std::vector<bool> issame_of(const at::Tensor& u8) {
  const at::Tensor t = u8.to(at::kLong).contiguous();
  std::vector<bool> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(t.data_ptr<int64_t>()[i] != 0);
  return v;
}

at::Tensor to_tensor(const std::vector<double>& v) {
  return at::tensor(at::ArrayRef<double>(v), at::kDouble);
}

double max_rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

TEST(VerificationProtocol, Thresholds) {
  const auto t = protocol_thresholds();
  ASSERT_EQ(t.size(), 400u);
  EXPECT_EQ(t[0], 0.0);
  EXPECT_EQ(t[7], 0.07000000000000001);
  EXPECT_EQ(t[399], 3.99);
}

TEST(VerificationProtocol, KFoldMatchesSklearn) {
  const auto r = kfold_ranges(605, 10);  // 605 = 10*60 + 5: the first five folds have 61 pairs
  ASSERT_EQ(r.size(), 10u);
  EXPECT_EQ(r[0], std::make_pair(int64_t{0}, int64_t{61}));
  EXPECT_EQ(r[4], std::make_pair(int64_t{244}, int64_t{305}));
  EXPECT_EQ(r[5], std::make_pair(int64_t{305}, int64_t{365}));
  EXPECT_EQ(r[9], std::make_pair(int64_t{545}, int64_t{605}));
  EXPECT_THROW(kfold_ranges(5, 10), Error);
}

TEST(VerificationProtocol, NumpyMeanStd) {
  const std::vector<double> x = {1.0, 2.0, 4.0, 8.0};
  EXPECT_DOUBLE_EQ(numpy_mean(x), 3.75);
  EXPECT_DOUBLE_EQ(numpy_std(x), std::sqrt(((2.75 * 2.75) + (1.75 * 1.75) + (0.25 * 0.25) + (4.25 * 4.25)) / 4));
}

TEST(VerificationProtocol, TarAtFarDefinition) {
  // 10 impostors at 0.1..1.0, 4 genuine pairs; FAR 0.1 allows one false accept -> threshold 0.2.
  std::vector<double> dist;
  std::vector<bool> same;
  for (int i = 1; i <= 10; ++i) dist.push_back(0.1 * i), same.push_back(false);
  for (double d : {0.05, 0.15, 0.25, 0.5}) dist.push_back(d), same.push_back(true);
  const auto r = tar_at_far(dist, same, {0.1, 1e-3, 1.0});
  EXPECT_DOUBLE_EQ(r[0].threshold, 0.2);
  EXPECT_DOUBLE_EQ(r[0].far, 0.1);
  EXPECT_DOUBLE_EQ(r[0].tar, 0.5);
  EXPECT_DOUBLE_EQ(r[1].threshold, 0.1);  // zero false accepts allowed
  EXPECT_DOUBLE_EQ(r[1].far, 0.0);
  EXPECT_DOUBLE_EQ(r[1].tar, 0.25);
  EXPECT_TRUE(std::isinf(r[2].threshold));
  EXPECT_DOUBLE_EQ(r[2].tar, 1.0);
  // Ten impostors resolve FAR 0.1 and 1, not 1e-3 (it would need a thousand).
  EXPECT_EQ(r[0].impostors, 10);
  EXPECT_TRUE(r[0].resolved());
  EXPECT_FALSE(r[1].resolved());
  EXPECT_TRUE(r[2].resolved());
  // The metrics.json entry keeps the count, and its reader says the same.
  const VerificationMetrics m = verification_metrics(evaluate_distances(dist, same, {2, {0.1, 1e-3}}), false, 14);
  ASSERT_TRUE(m.tar_at(1e-3) && m.tar_at(0.1));
  EXPECT_EQ(m.tar_at(1e-3)->impostors, 10);
  EXPECT_FALSE(m.tar_at(1e-3)->resolves(1e-3));
  EXPECT_TRUE(m.tar_at(0.1)->resolves(0.1));
  EXPECT_FALSE(VerificationMetrics::from_json(m.to_json(), "test").tar_at(1e-3)->resolves(1e-3));
}

TEST(VerificationParity, FlipSumProtocolMatchesGolden) {
  IDSYNTH_REQUIRE_GOLDEN(inputs_path, "verification/accuracy_inputs.safetensors");
  IDSYNTH_REQUIRE_GOLDEN(expected_path, "verification/accuracy_expected.safetensors");
  SafeTensorsFile inputs(inputs_path), expected(expected_path);
  const at::Tensor emb = inputs.tensor("embeddings"), emb_flip = inputs.tensor("embeddings_flip");
  const auto issame = issame_of(inputs.tensor("issame"));

  const at::Tensor normalized = fuse_and_normalize(emb, emb_flip);
  EXPECT_ALL_CLOSE(normalized, expected.tensor("normalized_flipsum"), 1e-15);
  const auto res = evaluate_embeddings(emb, emb_flip, issame);

  EXPECT_ALL_CLOSE(to_tensor(res.dist), expected.tensor("dist"), 1e-12);
  EXPECT_ALL_CLOSE(to_tensor(res.tpr), expected.tensor("tpr"), 1e-15);
  EXPECT_ALL_CLOSE(to_tensor(res.fpr), expected.tensor("fpr"), 1e-15);
  // Fold accuracies and thresholds are ratios of counts and grid values: exactly equal.
  EXPECT_ALL_CLOSE(to_tensor(res.fold_accuracies), expected.tensor("accuracy_folds"), 0.0);
  EXPECT_ALL_CLOSE(to_tensor(res.best_thresholds()), expected.tensor("best_thresholds"), 0.0);
  EXPECT_NEAR(res.accuracy, expected.tensor("acc_mean").item<double>(), 1e-12);
  EXPECT_NEAR(res.std, expected.tensor("acc_std").item<double>(), 1e-12);
  EXPECT_LT(max_rel(res.xnorm, expected.tensor("xnorm").item<double>()), 1e-12);
  std::cout << "flip: acc " << res.accuracy << " std " << res.std << " |d acc| "
            << std::abs(res.accuracy - expected.tensor("acc_mean").item<double>()) << " |d std| "
            << std::abs(res.std - expected.tensor("acc_std").item<double>()) << " max|d dist| "
            << test::max_abs_diff(to_tensor(res.dist), expected.tensor("dist")) << " xnorm rel "
            << max_rel(res.xnorm, expected.tensor("xnorm").item<double>()) << "\n";
  ASSERT_EQ(res.folds.size(), 10u);
  for (size_t k = 0; k < res.folds.size(); ++k) {
    EXPECT_EQ(res.folds[k].test_begin, static_cast<int64_t>(60 * k));
    EXPECT_EQ(res.folds[k].test_end, static_cast<int64_t>(60 * (k + 1)));
    EXPECT_EQ(res.folds[k].n_same + res.folds[k].n_diff, 60);
  }
}

TEST(VerificationParity, NoFlipProtocolMatchesGolden) {
  IDSYNTH_REQUIRE_GOLDEN(inputs_path, "verification/accuracy_inputs.safetensors");
  IDSYNTH_REQUIRE_GOLDEN(expected_path, "verification/accuracy_expected.safetensors");
  SafeTensorsFile inputs(inputs_path), expected(expected_path);
  const auto issame = issame_of(inputs.tensor("issame"));
  const auto res = evaluate_embeddings(inputs.tensor("embeddings"), at::Tensor(), issame);
  EXPECT_ALL_CLOSE(to_tensor(res.fold_accuracies), expected.tensor("accuracy_folds_noflip"), 0.0);
  EXPECT_NEAR(res.accuracy, expected.tensor("acc_mean_noflip").item<double>(), 1e-12);
  EXPECT_NEAR(res.std, expected.tensor("acc_std_noflip").item<double>(), 1e-12);
  std::cout << "no flip: |d acc| " << std::abs(res.accuracy - expected.tensor("acc_mean_noflip").item<double>())
            << " |d std| " << std::abs(res.std - expected.tensor("acc_std_noflip").item<double>()) << "\n";
}

TEST(VerificationProtocol, RejectsMismatchedCounts) {
  const at::Tensor emb = at::randn({8, 4});
  EXPECT_THROW(evaluate_embeddings(emb, at::Tensor(), std::vector<bool>(3, true)), Error);
  EXPECT_THROW(evaluate_embeddings(emb, at::randn({6, 4}), std::vector<bool>(4, true)), Error);
}

}  // namespace
}  // namespace idsynth::eval

namespace idsynth::eval {
namespace {

// The protocol on the real-photo pack's distances (goldens/realfaces: insightface verification.py
// run unmodified on a real recogniser): per-fold thresholds and accuracies must be identical.
TEST(VerificationParity, RealFacesDistancesReproduceFolds) {
  IDSYNTH_REQUIRE_GOLDEN(expected_path, "realfaces/expected.json");
  IDSYNTH_REQUIRE_GOLDEN(csv_path, "realfaces/master.csv");
  std::vector<bool> issame;
  std::istringstream csv(read_text_file(csv_path));
  std::string line;
  std::getline(csv, line);  // header file_x,file_y,Decision
  while (std::getline(csv, line))
    if (!line.empty()) issame.push_back(line.find(",Yes") != std::string::npos);
  ASSERT_EQ(issame.size(), 300u);
  const json::Value expected = json::parse_file(expected_path);
  for (const char* mode : {"flip", "no_flip"}) {
    const json::Value& m = expected.at(mode);
    std::vector<double> dist;
    for (const auto& d : m.at("squared_l2_distances").as_array()) dist.push_back(d.as_double());
    const auto res = evaluate_distances(dist, issame);
    const auto& folds = m.at("folds").as_array();
    ASSERT_EQ(folds.size(), res.folds.size());
    for (size_t k = 0; k < folds.size(); ++k) {
      EXPECT_EQ(res.folds[k].best_index, folds[k].at("best_threshold_index").as_int()) << mode << " fold " << k;
      EXPECT_EQ(res.folds[k].best_threshold, folds[k].at("best_threshold").as_double()) << mode << " fold " << k;
      EXPECT_EQ(res.folds[k].test_accuracy, folds[k].at("test_accuracy").as_double()) << mode << " fold " << k;
      EXPECT_EQ(res.folds[k].train_accuracy, folds[k].at("train_accuracy").as_double()) << mode << " fold " << k;
      EXPECT_EQ(res.folds[k].n_same, folds[k].at("test_same").as_int()) << mode << " fold " << k;
    }
    EXPECT_EQ(res.accuracy, m.at("accuracy_mean").as_double()) << mode;
    EXPECT_NEAR(res.std, m.at("accuracy_std").as_double(), 1e-12) << mode;
  }
}

}  // namespace
}  // namespace idsynth::eval
