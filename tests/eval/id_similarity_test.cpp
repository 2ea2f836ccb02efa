// `idsynth eval idsim` as a library: cosines of a tiny random IResNet's embeddings to target vectors,
// checked against the same network run directly here on the decoded pixels (its own preprocessing:
// RGB, (v - 127.5) / 127.5, L2 normalisation, dot product in float64); numpy-style statistics on
// hand-computed values; a dataset of HDF5 shards; one-line errors for bad input.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "dataset/generate_config.h"
#include "core/check.h"
#include "core/config.h"
#include "core/file_util.h"
#include "formats/image.h"
#include "formats/npy.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "dataset/export.h"
#include "eval/id_similarity.h"
#include "formats/dataset_folder.h"
#include "formats/shard_file.h"
#include "recognition/face_embedder.h"
#include "recognition/iresnet.h"
#include "tests/support/goldens.h"
#include "tests/support/process.h"

namespace idsynth::eval {
namespace {

constexpr int64_t kDim = 16;

struct Fixture {
  std::string dir, model_path;
  recognition::IResNet net{nullptr};
  std::shared_ptr<const recognition::FaceEmbedder> embedder;
};

// A tiny random IResNet saved as safetensors; `net` keeps the same weights for the expected values.
Fixture make_fixture(const std::string& tag) {
  Fixture f;
  f.dir = test::temp_dir(tag);
  recognition::IResNetConfig c;
  c.layers = {1, 1, 1, 1};
  c.widths = {8, 8, 16, 16};
  c.num_features = kDim;
  torch::manual_seed(11);
  f.net = recognition::IResNet(c);
  f.net->eval();
  f.model_path = f.dir + "/recognizer.safetensors";
  save_safetensors(f.model_path, module_state(*f.net));
  std::shared_ptr<const recognition::Recognizer> rec = recognition::load_recognizer(f.model_path, c10::Device(c10::kCPU));
  f.embedder = std::make_shared<const recognition::FaceEmbedder>(rec);
  return f;
}

// The expected embedding, computed without FaceEmbedder: RGB 112x112 uint8 -> unit vector (double).
at::Tensor reference_embedding(recognition::IResNet& net, const cv::Mat& rgb) {
  torch::NoGradGuard no_grad;
  EXPECT_EQ(rgb.rows, 112);
  const at::Tensor x = (formats::mat_to_tensor(rgb).permute({2, 0, 1}).to(at::kFloat).unsqueeze(0) - 127.5) / 127.5;
  const at::Tensor e = net->forward(x)[0].to(at::kDouble);
  return e / e.norm();
}

cv::Mat random_face(int64_t seed) {
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
  // Smooth-ish content (upsampled noise) so the network sees structure, not only pixel noise.
  const at::Tensor small = at::randint(0, 256, {14, 14, 3}, gen, at::kFloat);
  const at::Tensor big = at::upsample_bilinear2d(small.permute({2, 0, 1}).unsqueeze(0), {112, 112}, false)[0];
  return formats::tensor_to_mat(big.permute({1, 2, 0}).round().clamp(0, 255).to(at::kByte).contiguous());
}

std::string sample_name(int64_t id, int64_t img) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%05lld_%03lld.png", static_cast<long long>(id), static_cast<long long>(img));
  return buf;
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

TEST(IdSimilarity, StatisticsAsNumpyComputesThem) {
  // numpy: mean 0.55, std (ddof 0) sqrt(0.0725) , median (0.5 + 0.7) / 2, histogram over [-1, 1] in 4 bins
  const std::vector<double> cos = {0.2, 0.5, 0.7, 1.0, -1.0, 0.0};
  const std::vector<int64_t> ids = {0, 0, 1, 1, 2, 2};
  const IdSimStats s = summarize_id_similarity(ids, cos, 4);
  const double mean = (0.2 + 0.5 + 0.7 + 1.0 - 1.0 + 0.0) / 6.0;
  double var = 0.0;
  for (double c : cos) var += (c - mean) * (c - mean);
  EXPECT_NEAR(s.mean, mean, 1e-15);
  EXPECT_NEAR(s.std, std::sqrt(var / 6.0), 1e-15);
  EXPECT_NEAR(s.median, (0.2 + 0.5) / 2.0, 1e-15);  // sorted: -1 0 0.2 0.5 0.7 1
  EXPECT_EQ(s.min, -1.0);
  EXPECT_EQ(s.max, 1.0);
  // bins [-1,-0.5) [-0.5,0) [0,0.5) [0.5,1]: -1 | - | 0 0.2 | 0.5 0.7 1.0
  EXPECT_EQ(s.hist_counts, (std::vector<int64_t>{1, 0, 2, 3}));
  EXPECT_EQ(s.hist_edges, (std::vector<double>{-1.0, -0.5, 0.0, 0.5, 1.0}));
  ASSERT_EQ(s.per_identity.size(), 3u);
  EXPECT_EQ(s.per_identity[1].identity, 1);
  EXPECT_EQ(s.per_identity[1].count, 2);
  EXPECT_NEAR(s.per_identity[1].mean, 0.85, 1e-15);
  EXPECT_EQ(s.per_identity[1].min, 0.7);
  EXPECT_NEAR(s.identity_mean, (0.35 + 0.85 - 0.5) / 3.0, 1e-15);
  EXPECT_THROW(summarize_id_similarity({}, {}, 4), Error);
}

TEST(IdSimilarity, FolderCosinesMatchTheNetworkRunDirectly) {
  Fixture f = make_fixture("idsim-folder");
  const std::string images = f.dir + "/images";
  std::filesystem::create_directories(images);
  // 3 identities x 3 images (identity 1 has only 2); targets: a noisy copy of each identity's first face
  const std::vector<int64_t> per_id = {3, 2, 3};
  std::vector<at::Tensor> targets;
  std::map<std::pair<int64_t, int64_t>, at::Tensor> emb;
  for (int64_t id = 0; id < 3; ++id) {
    for (int64_t k = 0; k < per_id[static_cast<size_t>(id)]; ++k) {
      const cv::Mat face = random_face(100 * id + k);
      formats::write_image_rgb(images + "/" + sample_name(id, k), face);
      emb[{id, k}] = reference_embedding(f.net, face);
    }
    targets.push_back(3.0 * (emb[{id, 0}] + 0.1 * at::randn({kDim}, at::kDouble)));  // not unit length on purpose
  }
  write_file_atomic(images + "/sample.json", "{}");  // ignored
  const at::Tensor ids = at::stack(targets).to(at::kFloat);
  formats::save_npy(f.dir + "/ids.npy", ids);

  IdSimOptions o;
  o.batch_size = 4;  // several batches, one split inside an identity
  o.grid_identities = 2;
  o.grid_images = 2;
  o.thumb = 32;
  const at::Tensor read = formats::read_identity_vectors(f.dir + "/ids.npy");
  EXPECT_NEAR((read.norm(2, 1) - 1).abs().max().item<double>(), 0.0, 1e-6);
  const IdSimResult r = id_similarity_of_folder(*f.embedder, read, f.dir + "/ids.npy", images, o);

  ASSERT_EQ(r.cosine.size(), 8u);
  EXPECT_TRUE(r.failed.empty());
  std::vector<double> expected;
  double max_diff = 0.0;
  for (size_t i = 0; i < r.cosine.size(); ++i) {
    const at::Tensor t = ids[r.identity[i]].to(at::kDouble);
    const double want = at::dot(emb[{r.identity[i], r.image[i]}], t / t.norm()).item<double>();
    expected.push_back(want);
    max_diff = std::max(max_diff, std::abs(r.cosine[i] - want));
  }
  std::cout << "idsim cosines vs direct network run: max|diff| " << max_diff << "\n";
  EXPECT_LT(max_diff, 1e-5);
  EXPECT_EQ(r.identity, (std::vector<int64_t>{0, 0, 0, 1, 1, 2, 2, 2}));
  EXPECT_EQ(r.image, (std::vector<int64_t>{0, 1, 2, 0, 1, 0, 1, 2}));
  // the identities' first faces are close to their targets, the others are random
  EXPECT_GT(r.cosine[0], 0.5);
  double mean = 0.0;
  for (double e : expected) mean += e;
  mean /= static_cast<double>(expected.size());
  EXPECT_NEAR(r.stats.mean, mean, 1e-5);
  EXPECT_NEAR(r.stats.median, median_of(expected), 1e-5);
  EXPECT_EQ(r.stats.per_identity.size(), 3u);
  EXPECT_EQ(r.stats.per_identity[1].count, 2);
  EXPECT_NEAR(r.stats.per_identity[1].mean, (expected[3] + expected[4]) / 2.0, 1e-5);
  // the face grid: identities 0 and 1, images 0 and 1 each, decodable 32x32 JPEGs
  ASSERT_EQ(r.faces.size(), 4u);
  EXPECT_EQ(r.faces[2].identity, 1);
  EXPECT_EQ(r.faces[3].image, 1);

  const json::Value j = id_similarity_metrics(r).to_json();
  EXPECT_EQ(j.at("count").as_int(), 8);
  EXPECT_EQ(j.at("identities").as_int(), 3);
  int64_t total = 0;
  for (const auto& c : j.at("histogram").at("counts").as_array()) total += c.as_int();
  EXPECT_EQ(total, 8);
  EXPECT_EQ(j.at("histogram").at("edges").as_array().size(), static_cast<size_t>(o.bins + 1));
  EXPECT_EQ(j.at("faces").as_array().size(), 4u);
}

TEST(IdSimilarity, DatasetShardsWithStoredVectorsAndCrops) {
  Fixture f = make_fixture("idsim-dataset");
  const std::string dir = f.dir + "/dataset";
  dataset::GenerateConfig cfg;
  cfg.identities.count = 3;
  cfg.identities.dim = kDim;
  cfg.output.dir = dir;
  cfg.output.identities_per_shard = 2;  // shards {0, 1} and {2}
  cfg.output.images_per_identity = 2;
  std::filesystem::create_directories(formats::shards_dir(dir));
  write_file_atomic(dir + "/config.resolved.yaml", config::to_yaml(cfg));
  at::manual_seed(5);
  const at::Tensor vectors = at::randn({3, kDim});
  std::vector<double> expected;
  for (int64_t shard = 0; shard < 2; ++shard) {
    formats::ShardData d;
    d.shard_index = shard;
    d.dim = kDim;
    for (int64_t id = shard * 2; id < std::min<int64_t>(3, shard * 2 + 2); ++id) {
      d.identity_index.push_back(id);
      for (int64_t k = 0; k < kDim; ++k) d.identity_vectors.push_back(vectors[id][k].item<float>());
      for (int32_t k = 0; k < 2; ++k) {
        // full image: a 160x160 frame that would embed differently; aligned crop: the 112x112 face
        const cv::Mat crop = random_face(7 * id + k + 1);
        cv::Mat full(160, 160, CV_8UC3, cv::Scalar(30, 200, 90));
        d.labels.push_back(id);
        d.image_index.push_back(k);
        d.attempt.push_back(0);
        d.seed.push_back(static_cast<uint64_t>(id * 10 + k));
        d.similarity.push_back(std::nanf(""));
        d.images.push_back(formats::encode_image_rgb(full, ".jpg", 90));
        d.aligned.push_back(formats::encode_image_rgb(crop, ".jpg", 90));
        // expected from the decoded JPEG, as stored
        const cv::Mat decoded = formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(d.aligned.back().data()),
                                                 d.aligned.back().size(), "test");
        const at::Tensor t = vectors[id].to(at::kDouble);
        expected.push_back(at::dot(reference_embedding(f.net, decoded), t / t.norm()).item<double>());
      }
    }
    const std::string h5 = formats::shard_h5_path(dir, shard);
    formats::write_shard(h5, d);
    formats::ShardRecord rec;
    rec.index = shard;
    rec.file = std::filesystem::path(h5).filename().string();
    rec.size = file_size(h5);
    rec.first_identity = shard * 2;
    rec.identities = static_cast<int64_t>(d.identity_index.size());
    rec.images = static_cast<int64_t>(d.size());
    formats::write_record(dir, rec);
  }
  IdSimOptions o;
  o.batch_size = 3;
  const IdSimResult r = id_similarity_of_dataset(*f.embedder, at::Tensor(), "", dir, dataset::dataset_shard_count(dir), o);
  ASSERT_EQ(r.cosine.size(), expected.size());
  double max_diff = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) max_diff = std::max(max_diff, std::abs(r.cosine[i] - expected[i]));
  std::cout << "idsim over shards vs direct network run: max|diff| " << max_diff << "\n";
  EXPECT_LT(max_diff, 1e-5);
  EXPECT_EQ(r.identity, (std::vector<int64_t>{0, 0, 1, 1, 2, 2}));

  // The same vectors from a file give the same cosines; a file with too few rows is an error.
  formats::save_npy(f.dir + "/ids.npy", vectors);
  const IdSimResult r2 = id_similarity_of_dataset(*f.embedder, formats::read_identity_vectors(f.dir + "/ids.npy"),
                                                  f.dir + "/ids.npy", dir, dataset::dataset_shard_count(dir), o);
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(r2.cosine[i], r.cosine[i], 1e-6);
  formats::save_npy(f.dir + "/two.npy", vectors.slice(0, 0, 2));
  try {
    id_similarity_of_dataset(*f.embedder, formats::read_identity_vectors(f.dir + "/two.npy"), f.dir + "/two.npy", dir, dataset::dataset_shard_count(dir), o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected a row for every identity"), std::string::npos) << e.what();
  }
}

// Real photos, real recogniser: the aligned crops of goldens/realfaces as a sample folder (photo k =
// identity k), targets from the golden fr_feature.onnx outputs (embeddings.safetensors,
// direct_crop). Own targets give cosine 1; targets shifted by one photo give exactly the cosines of
// the golden vectors to each other.
TEST(IdSimilarity, RealFacesAgainstGoldenEmbeddings) {
  IDSYNTH_REQUIRE_GOLDEN(aligned, "realfaces/aligned");
  IDSYNTH_REQUIRE_GOLDEN(emb_path, "realfaces/embeddings.safetensors");
  IDSYNTH_REQUIRE_TEST_RECOGNIZER(model);
  at::set_num_threads(1);  // a batch-1 graph: one thread avoids OpenMP barrier spinning
  const at::Tensor golden = SafeTensorsFile(emb_path).tensor("direct_crop").to(at::kDouble);  // [25, 512] raw
  const int64_t n = golden.size(0);
  const std::string dir = test::temp_dir("idsim-realfaces"), images = dir + "/images";
  std::filesystem::create_directories(images);
  for (int64_t k = 0; k < n; ++k)
    std::filesystem::copy_file(aligned + "/img" + std::to_string(k + 1) + ".png", images + "/" + sample_name(k, 0));
  std::shared_ptr<const recognition::Recognizer> rec = recognition::load_recognizer(model, c10::Device(c10::kCPU));
  const recognition::FaceEmbedder embedder(rec);
  const at::Tensor unit = golden / golden.norm(2, 1, true);
  IdSimOptions o;
  o.grid_identities = 0;
  const IdSimResult own = id_similarity_of_folder(embedder, golden.to(at::kFloat), "golden", images, o);
  const at::Tensor shifted_targets = golden.roll(-1, 0);  // identity k's target: photo k + 1
  const IdSimResult shifted = id_similarity_of_folder(embedder, shifted_targets.to(at::kFloat), "golden shifted", images, o);
  ASSERT_EQ(own.cosine.size(), static_cast<size_t>(n));
  ASSERT_EQ(shifted.cosine.size(), static_cast<size_t>(n));
  double max_own = 0.0, max_shift = 0.0, mean = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    max_own = std::max(max_own, std::abs(own.cosine[static_cast<size_t>(k)] - 1.0));
    const double want = at::dot(unit[k], unit[(k + 1) % n]).item<double>();
    mean += want / static_cast<double>(n);
    max_shift = std::max(max_shift, std::abs(shifted.cosine[static_cast<size_t>(k)] - want));
  }
  std::cout << "realfaces idsim: own targets max|cos - 1| " << max_own << ", shifted targets max|diff| " << max_shift
            << ", mean cosine to the next photo " << mean << "\n";
  EXPECT_LT(max_own, 1e-5);
  EXPECT_LT(max_shift, 1e-5);
  EXPECT_NEAR(shifted.stats.mean, mean, 1e-5);
  EXPECT_LT(shifted.stats.mean, 0.5);  // different people (mostly): far from 1
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(IdSimilarity, BadInputGivesOneLineErrors) {
  Fixture f = make_fixture("idsim-bad");
  const std::string images = f.dir + "/images", empty = f.dir + "/empty";
  std::filesystem::create_directories(images);
  std::filesystem::create_directories(empty);
  write_file_atomic(empty + "/notes.txt", "no faces here");
  for (int64_t id = 0; id < 3; ++id) formats::write_image_rgb(images + "/" + sample_name(id, 0), random_face(id));
  formats::save_npy(f.dir + "/ids3.npy", at::randn({3, kDim}));
  formats::save_npy(f.dir + "/ids2.npy", at::randn({2, kDim}));
  formats::save_npy(f.dir + "/narrow.npy", at::randn({3, 8}));
  formats::save_npy(f.dir + "/nan.npy", at::full({2, kDim}, std::nanf("")));
  const IdSimOptions o;
  const auto run = [&](const std::string& ids, const std::string& dir) {
    return error_of([&] { id_similarity_of_folder(*f.embedder, formats::read_identity_vectors(ids), ids, dir, o); });
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {run(f.dir + "/ids3.npy", empty), "expected {identity:05d}_{image:03d}.png files"},
      {run(f.dir + "/ids2.npy", images), "expected a row for every identity"},
      {run(f.dir + "/narrow.npy", images), "width: expected the recogniser's embedding size 16, found 8"},
      {run(f.dir + "/nan.npy", images), "contains NaN or Inf"},
      {run(f.dir + "/missing.npy", images), "ids: file not found"},
      {error_of([&] {
         IdSimOptions d;
         d.align = "detect";
         IdSimilarityRun(*f.embedder, d, "x");
       }),
       "expected a face detector"},
      {error_of([&] {
         IdSimOptions d;
         d.align = "landmarks";
         d.check();
       }),
       "--align: expected fixed or detect"},
  };
  for (const auto& [msg, want] : cases) {
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_EQ(test::count_lines(msg), 0) << msg;
  }
}

}  // namespace
}  // namespace idsynth::eval
