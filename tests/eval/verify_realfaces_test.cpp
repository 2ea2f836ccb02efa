// End to end on real photos: the insightface-format pairs.bin of goldens/realfaces, embedded by the
// real pretrained recogniser fr_feature.onnx (scripts/fetch-test-models.sh), through the 10-fold
// protocol: accuracy and every fold's threshold identical to expected.json, with and without flip.
// Skips when the model or the golden folder is absent (test data only, never committed).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdlib>

#include "core/file_util.h"
#include "core/json.h"
#include "formats/bin_pack.h"
#include "eval/pack_embeddings.h"
#include "recognition/recognizer.h"
#include "eval/verification.h"
#include "tests/support/goldens.h"

namespace idsynth::eval {
namespace {

TEST(VerifyRealFaces, OnnxRecognizerReproducesExpectedJson) {
  IDSYNTH_REQUIRE_GOLDEN(bin_path, "realfaces/pairs.bin");
  IDSYNTH_REQUIRE_GOLDEN(expected_path, "realfaces/expected.json");
  IDSYNTH_REQUIRE_TEST_RECOGNIZER(model);
  // A small network run image by image (its graph has batch 1): one thread avoids OpenMP barrier spinning.
  at::set_num_threads(1);
  const json::Value expected = json::parse_file(expected_path);
  const formats::BinPack pack = formats::read_bin(bin_path);
  auto recognizer = recognition::load_recognizer(model, c10::kCPU);
  const PackEmbeddings emb = embed_pack(*recognizer, pack, {64, true});

  // 1. raw outputs of the first four images (and their mirror images)
  double max_raw = 0.0;
  for (const auto& e : expected.at("first4_embeddings").as_array()) {
    const int64_t i = e.at("bin_index").as_int();
    const auto& raw8 = e.at("raw_first8").as_array();
    const auto& flip8 = e.at("raw_flip_first8").as_array();
    for (int64_t j = 0; j < 8; ++j) {
      max_raw = std::max(max_raw, std::abs(emb.raw[i][j].item<double>() - raw8[static_cast<size_t>(j)].as_double()));
      max_raw = std::max(max_raw, std::abs(emb.raw_flip[i][j].item<double>() - flip8[static_cast<size_t>(j)].as_double()));
    }
  }
  std::cout << "raw embedding max|diff| (first 4 images, 8 values, both flips) " << max_raw << "\n";
  EXPECT_LT(max_raw, 1e-4);

  // 2. the protocol, flip and no flip
  for (const bool flip : {true, false}) {
    const json::Value& m = expected.at(flip ? "flip" : "no_flip");
    const VerificationResult r = evaluate_embeddings(emb.raw, flip ? emb.raw_flip : at::Tensor(), pack.issame);
    double max_dist = 0.0;
    const auto& dist = m.at("squared_l2_distances").as_array();
    for (size_t p = 0; p < dist.size(); ++p) max_dist = std::max(max_dist, std::abs(r.dist[p] - dist[p].as_double()));
    std::cout << (flip ? "flip" : "no flip") << ": accuracy " << r.accuracy << " +- " << r.std
              << ", max|d dist| " << max_dist << ", xnorm " << r.xnorm << "\n";
    EXPECT_LT(max_dist, 1e-4);
    EXPECT_EQ(r.accuracy, m.at("accuracy_mean").as_double());
    EXPECT_NEAR(r.std, m.at("accuracy_std").as_double(), 1e-12);
    const auto& folds = m.at("folds").as_array();
    for (size_t k = 0; k < folds.size(); ++k)
      EXPECT_EQ(r.folds[k].best_index, folds[k].at("best_threshold_index").as_int()) << "fold " << k;
    if (flip) {
      EXPECT_NEAR(r.xnorm, expected.at("xnorm").as_double(), 1e-4);
    }
  }
}

}  // namespace
}  // namespace idsynth::eval
