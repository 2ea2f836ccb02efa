// Alignment against insightface norm_crop / estimate_norm (goldens/align) and the realfaces matrices.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <opencv2/imgcodecs.hpp>

#include "core/check.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "recognition/face_align.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::recognition {
namespace {

Landmarks5 landmarks_at(const at::Tensor& t) {  // t: [5, 2] float32
  auto c = t.contiguous();
  auto a = c.accessor<float, 2>();
  Landmarks5 l;
  for (int i = 0; i < 5; ++i) l[i] = cv::Point2f(a[i][0], a[i][1]);
  return l;
}

at::Tensor to_tensor(const cv::Matx23d& m) {
  return torch::tensor({m(0, 0), m(0, 1), m(0, 2), m(1, 0), m(1, 1), m(1, 2)}, torch::kDouble).view({2, 3});
}

at::Tensor to_tensor(const cv::Mat& img) {  // HWC uint8
  return torch::from_blob(img.data, {img.rows, img.cols, img.channels()}, torch::kUInt8).clone();
}

TEST(FaceAlignParity, MatchesInsightfaceNormCrop) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "align");
  SafeTensorsFile inputs(dir + "/inputs.safetensors");
  SafeTensorsFile expected(dir + "/expected.safetensors");
  at::Tensor img_t = inputs.tensor("image_bgr").contiguous();
  cv::Mat image(static_cast<int>(img_t.size(0)), static_cast<int>(img_t.size(1)), CV_8UC3, img_t.data_ptr());
  const at::Tensor lm = inputs.tensor("landmarks");
  struct Case {
    int index;
    int size;
    std::string m_name, crop_name;
    int64_t slot;  // index into the expected stacks, -1 for unstacked
  };
  const std::vector<Case> cases = {{0, 112, "M_112", "crop_112", 0},
                                   {1, 112, "M_112", "crop_112", 1},
                                   {0, 224, "M_224", "crop_224", -1},
                                   {0, 128, "M_128", "crop_128", -1}};
  double worst_m = 0.0, worst_px = 0.0;
  for (const auto& c : cases) {
    SCOPED_TRACE("landmarks " + std::to_string(c.index) + " size " + std::to_string(c.size));
    const Landmarks5 l = landmarks_at(lm[c.index]);
    const cv::Matx23d M = estimate_norm(l, c.size);
    at::Tensor m_ref = expected.tensor(c.m_name);
    at::Tensor crop_ref = expected.tensor(c.crop_name);
    if (c.slot >= 0) {
      m_ref = m_ref[c.slot];
      crop_ref = crop_ref[c.slot];
    }
    EXPECT_ALL_CLOSE(to_tensor(M), m_ref, 1e-5);
    worst_m = std::max(worst_m, test::max_abs_diff(to_tensor(M), m_ref));
    const cv::Mat crop = norm_crop(image, l, c.size);
    ASSERT_EQ(crop.rows, c.size);
    ASSERT_EQ(crop.type(), CV_8UC3);
    EXPECT_ALL_CLOSE(to_tensor(crop).to(torch::kInt), crop_ref.to(torch::kInt), 1.0);
    worst_px = std::max(worst_px, test::max_abs_diff(to_tensor(crop), crop_ref));
    // Warping with the reference matrix itself is exact.
    const cv::Mat exact = warp_crop(image, cv::Matx23d(m_ref.contiguous().data_ptr<double>()), c.size);
    EXPECT_EQ(test::max_abs_diff(to_tensor(exact), crop_ref), 0.0);
  }
  std::cout << "[align] max|M - M_ref| = " << worst_m << ", max crop difference = " << worst_px << " grey levels\n";
}

// The realfaces photos give larger coordinates (up to 1868 px), where float32 vs float64 matters.
TEST(FaceAlignParity, RealfacesMatricesInFloat32) {
  IDSYNTH_REQUIRE_GOLDEN(path, "realfaces/landmarks.json");
  const json::Value root = json::parse_file(path);
  const auto& photos = root.at("photos");
  double worst = 0.0, worst64 = 0.0;
  int n = 0;
  for (const auto& [name, entry] : photos.as_object()) {
    Landmarks5 l;
    const auto& five = entry.at("five").as_array();
    for (int i = 0; i < 5; ++i)
      l[i] = cv::Point2f(static_cast<float>(five[i].as_array()[0].as_double()),
                         static_cast<float>(five[i].as_array()[1].as_double()));
    const cv::Matx23d M = estimate_norm(l);
    const auto& ref = entry.at("norm_crop_M").as_array();
    const auto& ref64 = entry.at("M_float64").as_array();
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 3; ++c) {
        worst = std::max(worst, std::abs(M(r, c) - ref[r].as_array()[c].as_double()));
        worst64 = std::max(worst64, std::abs(M(r, c) - ref64[r].as_array()[c].as_double()));
      }
    ++n;
  }
  EXPECT_EQ(n, 25);
  EXPECT_LE(worst, 1e-5);
  std::cout << "[align] realfaces: max|M - norm_crop_M| = " << worst << " (vs the float64 estimate: " << worst64
            << ")\n";
}

TEST(FaceAlign, RejectsOddSizes) {
  Landmarks5 l = arcface_template();
  EXPECT_THROW(estimate_norm(l, 100), Error);
  // Aligning the template onto itself is the identity.
  const cv::Matx23d M = estimate_norm(l, 112);
  EXPECT_NEAR(M(0, 0), 1.0, 1e-6);
  EXPECT_NEAR(M(1, 1), 1.0, 1e-6);
  EXPECT_NEAR(M(0, 1), 0.0, 1e-6);
  EXPECT_NEAR(M(0, 2), 0.0, 1e-4);
}

}  // namespace
}  // namespace idsynth::recognition
