// Align + embed with a real pretrained recogniser (faceplugin fr_feature.onnx, fetched by
// scripts/fetch-test-models.sh) against goldens/realfaces, and the batch's handling of bad images.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <sstream>

#include "core/json.h"
#include "core/safetensors.h"
#include "recognition/face_embedder.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::recognition {
namespace {

std::vector<std::string> photo_names(const SafeTensorsFile& f) {
  std::vector<std::string> names;
  std::stringstream ss(f.metadata().at("photos"));
  std::string item;
  while (std::getline(ss, item, ',')) names.push_back(item);
  return names;
}

TEST(RealFaces, AlignAndEmbedMatchReference) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "realfaces");
  IDSYNTH_REQUIRE_TEST_RECOGNIZER(model);
  at::set_num_threads(2);
  std::shared_ptr<const Recognizer> rec = load_recognizer(model, torch::kCPU);
  EXPECT_EQ(rec->norm().mean, 127.5f);  // fr_feature starts with Conv/PRelu: insightface's 127.5/127.5
  EXPECT_EQ(rec->input_size(), 112);
  SafeTensorsFile emb(dir + "/embeddings.safetensors");
  const auto names = photo_names(emb);
  ASSERT_EQ(names.size(), 25u);
  const json::Value lm = json::parse_file(dir + "/landmarks.json");
  std::vector<cv::Mat> photos, aligned;
  std::vector<Landmarks5> five;
  for (const auto& name : names) {
    photos.push_back(cv::imread(dir + "/photos/" + name, cv::IMREAD_COLOR));
    const std::string stem = name.substr(0, name.find('.'));
    aligned.push_back(cv::imread(dir + "/aligned/" + stem + ".png", cv::IMREAD_COLOR));
    const auto& pts = lm.at("photos").at(name).at("five").as_array();
    Landmarks5 l;
    for (int k = 0; k < 5; ++k)
      l[k] = cv::Point2f(static_cast<float>(pts[k].as_array()[0].as_double()),
                         static_cast<float>(pts[k].as_array()[1].as_double()));
    five.push_back(l);
  }
  // 1. our crops are the reference crops, pixel for pixel
  std::vector<cv::Mat> crops;
  for (size_t i = 0; i < photos.size(); ++i) {
    crops.push_back(norm_crop(photos[i], five[i]));
    EXPECT_EQ(cv::norm(crops.back(), aligned[i], cv::NORM_INF), 0.0) << names[i];
  }
  // 2. raw embeddings vs OpenCV DNN's
  const at::Tensor ref = emb.tensor("direct_crop");
  const at::Tensor raw = rec->embed_bgr(crops);
  EXPECT_ALL_CLOSE(raw, ref, 1e-4);
  // 3. the embedder API on a few images: normalised vectors from photo + landmarks and from the
  //    stored aligned crops (the other rows are the same computation)
  FaceEmbedder embedder(rec);
  const auto from_photos = embedder.embed_with_landmarks({photos[0], photos[1]}, {five[0], five[1]});
  const auto from_crops = embedder.embed_aligned({aligned[0], aligned[1]});
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(from_photos[static_cast<size_t>(i)].ok && from_crops[static_cast<size_t>(i)].ok);
    const at::Tensor expect = l2_normalize(ref.slice(0, i, i + 1))[0];
    EXPECT_ALL_CLOSE(from_photos[static_cast<size_t>(i)].embedding, expect, 1e-5);
    EXPECT_ALL_CLOSE(from_crops[static_cast<size_t>(i)].embedding, expect, 1e-5);
  }
  const at::Tensor all = l2_normalize(raw);
  // 4. pair cosines (master.csv order) and same/different separation
  const json::Value expected = json::parse_file(dir + "/expected.json");
  const auto& cos_ref = expected.at("pair_cosine_no_flip_direct_crops").as_array();
  std::ifstream csv(dir + "/master.csv");
  std::string line;
  std::getline(csv, line);
  double worst = 0, same_min = 2, diff_max = -2, same_sum = 0, diff_sum = 0;
  int same_n = 0, diff_n = 0, row = 0;
  while (std::getline(csv, line)) {
    std::stringstream ss(line);
    std::string a, b, decision;
    std::getline(ss, a, ',');
    std::getline(ss, b, ',');
    std::getline(ss, decision, ',');
    const auto ia = std::find(names.begin(), names.end(), a) - names.begin();
    const auto ib = std::find(names.begin(), names.end(), b) - names.begin();
    const double c = (all[ia] * all[ib]).sum().item<double>();
    worst = std::max(worst, std::abs(c - cos_ref[static_cast<size_t>(row)].as_double()));
    if (decision.rfind("Yes", 0) == 0) {
      same_min = std::min(same_min, c);
      same_sum += c;
      ++same_n;
    } else {
      diff_max = std::max(diff_max, c);
      diff_sum += c;
      ++diff_n;
    }
    ++row;
  }
  EXPECT_EQ(row, 300);
  EXPECT_LE(worst, 1e-5);
  EXPECT_GT(same_sum / same_n, diff_sum / diff_n + 0.5);
  std::cout << "[realfaces] max|raw - reference| = " << test::max_abs_diff(raw, ref) << ", max|cos - reference| = "
            << worst << "; same-person mean " << same_sum / same_n << " (min " << same_min << "), different mean "
            << diff_sum / diff_n << " (max " << diff_max << ")\n";
}

TEST(FaceEmbedder, BadImagesAreReportedAndTheBatchGoesOn) {
  IDSYNTH_REQUIRE_GOLDEN(onnx_dir, "onnx");
  IDSYNTH_REQUIRE_GOLDEN(photo, "realfaces/photos/img12.jpg");
  IDSYNTH_REQUIRE_TEST_RECOGNIZER(model);
  at::set_num_threads(2);
  // The golden SCRFD-structured detector finds "faces" on the photo and nothing on a black image.
  auto det = std::make_shared<const ScrfdDetector>(onnx_dir + "/scrfd_decode.onnx", torch::kCPU);
  FaceEmbedder embedder(load_recognizer(model, torch::kCPU), det);
  const std::string tmp = test::temp_dir("embed_bad");
  {
    std::ifstream in(photo, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(tmp + "/corrupt.jpg", std::ios::binary) << bytes.substr(0, 200);
  }
  const cv::Mat corrupt = cv::imread(tmp + "/corrupt.jpg", cv::IMREAD_COLOR);
  const auto results = embedder.embed_photos({cv::Mat(300, 400, CV_8UC3, cv::Scalar::all(128)), corrupt,
                                              cv::imread(photo, cv::IMREAD_COLOR)});
  ASSERT_EQ(results.size(), 3u);
  EXPECT_FALSE(results[0].ok);
  EXPECT_EQ(results[0].error, "no face detected");
  EXPECT_FALSE(results[1].ok);
  EXPECT_EQ(results[1].error, "unreadable image");
  ASSERT_TRUE(results[2].ok);
  EXPECT_NEAR(results[2].embedding.norm().item<double>(), 1.0, 1e-5);
  // The largest detection drives the crop.
  const auto faces = det->detect(cv::imread(photo, cv::IMREAD_COLOR));
  EXPECT_FLOAT_EQ(results[2].face.area(), faces[static_cast<size_t>(largest_face(faces))].area());
}

TEST(FaceEmbedder, InputNormFromNodeNames) {
  EXPECT_EQ(arcface_input_norm({{"Conv_0", "Conv"}, {"PRelu_1", "PRelu"}}).mean, 127.5f);
  const InputNorm mx = arcface_input_norm({{"_minusscalar0", "Sub"}, {"_mulscalar0", "Mul"}, {"conv0", "Conv"}});
  EXPECT_EQ(mx.mean, 0.0f);
  EXPECT_EQ(mx.std, 1.0f);
  EXPECT_EQ(arcface_input_norm({{"Sub_0", "Sub"}}).std, 127.5f);  // both are needed
}

}  // namespace
}  // namespace idsynth::recognition
