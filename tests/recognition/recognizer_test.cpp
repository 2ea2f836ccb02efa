// The one Recognizer interface: a weight file, the same IResNet held in memory, BGR crops and RGB
// tensors all give the same embeddings, because the input convention lives in one place.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <opencv2/imgproc.hpp>

#include <fstream>

#include "core/check.h"
#include "core/weights.h"
#include "recognition/iresnet.h"
#include "recognition/recognizer.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::recognition {
namespace {

TEST(Recognizer, FileModuleBgrAndRgbAgree) {
  const std::string path = test::temp_dir("recognizer") + "/r.safetensors";
  write_random_iresnet(path, 16, 3);
  const auto from_file = load_recognizer(path, torch::kCPU);
  EXPECT_EQ(from_file->input_size(), 112);
  EXPECT_EQ(from_file->norm().mean, 127.5f);
  EXPECT_NE(from_file->describe().find(path), std::string::npos);
  const auto in_memory = module_recognizer(load_iresnet(path, torch::kCPU), torch::kCPU, "module");

  auto gen = at::detail::createCPUGenerator(5);
  const at::Tensor rgb = at::randint(0, 256, {3, 112, 112, 3}, gen, at::kByte);
  std::vector<cv::Mat> bgr;
  for (int64_t i = 0; i < rgb.size(0); ++i) {
    cv::Mat m(112, 112, CV_8UC3, rgb[i].data_ptr()), b;
    cv::cvtColor(m, b, cv::COLOR_RGB2BGR);
    bgr.push_back(b);
  }
  const at::Tensor a = from_file->embed_rgb(rgb);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{3, 16}));
  EXPECT_TRUE(at::equal(a, from_file->embed_bgr(bgr)));
  EXPECT_TRUE(at::equal(a, in_memory->embed_rgb(rgb)));
  // Other crop sizes are resized to the input size (bilinear), as cv::dnn::blobFromImages does.
  std::vector<cv::Mat> big;
  for (const auto& m : bgr) {
    cv::Mat r;
    cv::resize(m, r, cv::Size(224, 224), 0, 0, cv::INTER_LINEAR);
    big.push_back(r);
  }
  EXPECT_EQ(from_file->embed_bgr(big).sizes(), a.sizes());
  // The arithmetic is insightface's blob: (x - 127.5) * (1 / 127.5), RGB, NCHW.
  const at::Tensor blob = (rgb.permute({0, 3, 1, 2}).to(at::kFloat) - 127.5f) * (1.0f / 127.5f);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(a, load_iresnet(path, torch::kCPU)->forward(blob)));
}

TEST(Recognizer, BadInputIsNamed) {
  const std::string dir = test::temp_dir("recognizer-bad");
  const std::string path = dir + "/r.safetensors";
  write_random_iresnet(path, 8, 1);
  const auto r = load_recognizer(path, torch::kCPU);
  try {
    r->embed_rgb(at::zeros({2, 112, 112, 4}, at::kByte));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected (N, H, W, 3) uint8 RGB"), std::string::npos) << e.what();
  }
  const std::string junk = dir + "/junk.bin";
  std::ofstream(junk) << "not a model";
  try {
    load_recognizer(junk, torch::kCPU);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(junk), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace idsynth::recognition
