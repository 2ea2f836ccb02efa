// ONNX import (core/onnx_model) against PyTorch and OpenCV DNN on goldens/onnx, the SCRFD decode
// golden, and bad input.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <fstream>
#include <opencv2/dnn.hpp>
#include <opencv2/imgcodecs.hpp>

#include "core/check.h"
#include "core/onnx_model.h"
#include "core/safetensors.h"
#include "recognition/image_blob.h"
#include "recognition/scrfd.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth {
namespace {

at::Tensor run_cv_dnn(const std::string& path, const at::Tensor& input, const std::vector<std::string>& outs = {}) {
  cv::dnn::Net net = cv::dnn::readNetFromONNX(path);
  at::Tensor x = input.contiguous();
  std::vector<int> shape(x.sizes().begin(), x.sizes().end());
  cv::Mat blob(static_cast<int>(shape.size()), shape.data(), CV_32F, x.data_ptr<float>());
  net.setInput(blob);
  cv::Mat y = net.forward();
  std::vector<int64_t> ys(y.size.p, y.size.p + y.dims);
  return torch::from_blob(y.ptr<float>(), ys, torch::kFloat).clone();
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

TEST(OnnxParity, IResNetTinyKeptAndFoldedBatchNorm) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "onnx");
  at::set_num_threads(2);
  torch::NoGradGuard no_grad;
  SafeTensorsFile io(dir + "/iresnet_tiny_io.safetensors");
  const at::Tensor x = io.tensor("input");
  const at::Tensor ref64 = io.tensor("expected_torch_f64").to(torch::kFloat);
  for (const std::string name : {"iresnet_tiny.onnx", "iresnet_tiny_folded.onnx"}) {
    SCOPED_TRACE(name);
    OnnxModel model(dir + "/" + name);
    ASSERT_EQ(model.inputs().size(), 1u);
    EXPECT_EQ(model.inputs()[0].name, "input.1");
    EXPECT_EQ(model.inputs()[0].shape, (std::vector<int64_t>{-1, 3, 112, 112}));
    const at::Tensor y = model.forward(x);
    const at::Tensor cv = run_cv_dnn(dir + "/" + name, x);
    EXPECT_ALL_CLOSE(y, ref64, 1e-4);
    EXPECT_ALL_CLOSE(y, io.tensor("expected_torch"), 1e-4);
    EXPECT_ALL_CLOSE(y, cv, 1e-4);
    EXPECT_ALL_CLOSE(cv, io.tensor(name == "iresnet_tiny.onnx" ? "expected_cv2dnn" : "expected_cv2dnn_folded"), 1e-5);
    std::cout << "[onnx] " << name << ": max|ours - torch f64| = " << test::max_abs_diff(y, ref64)
              << ", max|ours - OpenCV DNN| = " << test::max_abs_diff(y, cv) << "\n";
    // Batch of one gives the same rows.
    EXPECT_ALL_CLOSE(model.forward(x.slice(0, 1, 2)), y.slice(0, 1, 2), 1e-5);
  }
}

TEST(OnnxParity, ReducedPrecision) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "onnx");
  at::set_num_threads(2);
  torch::NoGradGuard no_grad;
  SafeTensorsFile io(dir + "/iresnet_tiny_io.safetensors");
  // CPUs run bfloat16 convolutions; float16 is the GPU option and is checked where a GPU exists.
  std::vector<std::pair<c10::Device, c10::ScalarType>> cases = {{torch::kCPU, torch::kBFloat16}};
  if (torch::cuda::is_available()) cases.push_back({torch::kCUDA, torch::kHalf});
  for (const auto& [device, dtype] : cases) {
    OnnxModel model(dir + "/iresnet_tiny_folded.onnx", device, dtype);
    const at::Tensor y = model.forward(io.tensor("input"));
    EXPECT_EQ(y.scalar_type(), torch::kFloat);
    const double cos = torch::cosine_similarity(y.cpu(), io.tensor("expected_torch"), 1).min().item<double>();
    EXPECT_GT(cos, 0.98) << dtype;
  }
}

TEST(OnnxParity, InitializersAsTensorDict) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "onnx");
  const TensorDict inits = read_onnx_initializers(dir + "/iresnet_tiny.onnx");
  SafeTensorsFile weights(dir + "/iresnet_tiny_weights.safetensors");
  ASSERT_TRUE(inits.contains("conv1.weight"));
  EXPECT_EQ(test::max_abs_diff(inits.at("conv1.weight"), weights.tensor("conv1.weight").to(torch::kFloat)), 0.0);
  EXPECT_EQ(test::max_abs_diff(inits.at("fc.weight"), weights.tensor("fc.weight").to(torch::kFloat)), 0.0);
  EXPECT_TRUE(looks_like_onnx(dir + "/iresnet_tiny.onnx"));
  EXPECT_FALSE(looks_like_onnx(dir + "/iresnet_tiny_weights.safetensors"));
}

TEST(OnnxParity, ScrfdDecodeGolden) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "onnx");
  at::set_num_threads(2);
  torch::NoGradGuard no_grad;
  SafeTensorsFile expected(dir + "/scrfd_expected.safetensors");
  auto model = std::make_shared<const OnnxModel>(dir + "/scrfd_decode.onnx");
  recognition::ScrfdDetector detector(model);
  const cv::Mat canvas = cv::imread(dir + "/scrfd_det_img.png", cv::IMREAD_COLOR);
  ASSERT_EQ(canvas.rows, 640);
  const auto outs = detector.run(canvas);
  ASSERT_EQ(outs.size(), 9u);
  const char* names[9] = {"raw_score_8", "raw_score_16", "raw_score_32", "raw_bbox_8", "raw_bbox_16",
                          "raw_bbox_32", "raw_kps_8",    "raw_kps_16",   "raw_kps_32"};
  double worst_raw = 0.0;
  for (int i = 0; i < 9; ++i) {
    EXPECT_ALL_CLOSE(outs[static_cast<size_t>(i)], expected.tensor(names[i]), 1e-4);
    worst_raw = std::max(worst_raw, test::max_abs_diff(outs[static_cast<size_t>(i)], expected.tensor(names[i])));
  }
  const float det_scale = std::stof(expected.metadata().count("det_scale") ? expected.metadata().at("det_scale")
                                                                          : "1.1421686746987951");
  const auto dets = recognition::scrfd_decode(outs, 640, 640, det_scale, 0.5f, 0.4f);
  const at::Tensor det_ref = expected.tensor("det");
  const at::Tensor kps_ref = expected.tensor("kps");
  ASSERT_EQ(static_cast<int64_t>(dets.size()), det_ref.size(0));
  at::Tensor det = torch::empty({static_cast<int64_t>(dets.size()), 5});
  at::Tensor kps = torch::empty({static_cast<int64_t>(dets.size()), 5, 2});
  for (size_t i = 0; i < dets.size(); ++i) {
    const auto& d = dets[i];
    det[static_cast<int64_t>(i)] = torch::tensor({d.x1, d.y1, d.x2, d.y2, d.score});
    for (int k = 0; k < 5; ++k) {
      kps[static_cast<int64_t>(i)][k][0] = d.kps[k].x;
      kps[static_cast<int64_t>(i)][k][1] = d.kps[k].y;
    }
  }
  EXPECT_ALL_CLOSE(det.slice(1, 0, 4), det_ref.slice(1, 0, 4), 1e-3);
  EXPECT_ALL_CLOSE(det.select(1, 4), det_ref.select(1, 4), 1e-5);
  EXPECT_ALL_CLOSE(kps, kps_ref, 1e-3);
  std::cout << "[scrfd] raw outputs max diff " << worst_raw << ", " << dets.size() << " detections, box max diff "
            << test::max_abs_diff(det.slice(1, 0, 4), det_ref.slice(1, 0, 4)) << " px, kps max diff "
            << test::max_abs_diff(kps, kps_ref) << " px\n";
  // End to end from the photo when the realfaces photo is present.
  const std::string photo = test::golden_path("realfaces/photos/img12.jpg");
  if (!photo.empty()) {
    const auto full = detector.detect(cv::imread(photo, cv::IMREAD_COLOR));
    ASSERT_EQ(full.size(), dets.size());
    EXPECT_NEAR(full[0].x1, dets[0].x1, 1e-3);
    EXPECT_EQ(recognition::largest_face(full) >= 0, true);
  }
}

TEST(OnnxBadInput, NotAnOnnxFile) {
  const std::string dir = test::temp_dir("onnx_bad");
  const std::string path = dir + "/fake.onnx";
  std::ofstream(path) << "this is not a protobuf \xff\xff\xff\xff";
  try {
    OnnxModel m(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not an ONNX model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_onnx_initializers(dir + "/missing.onnx"), Error);
}

TEST(OnnxBadInput, UnsupportedOperatorAndExternalData) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "onnx");
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(read_bytes(dir + "/iresnet_tiny_folded.onnx")));
  onnx::ModelProto edited = proto;
  auto* node = edited.mutable_graph()->mutable_node(3);
  const std::string node_name = node->name();
  node->set_op_type("FancyNorm");
  try {
    OnnxModel::from_bytes(edited.SerializeAsString(), "edited.onnx");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("FancyNorm"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'" + node_name + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("edited.onnx"), std::string::npos) << msg;
  }
  onnx::ModelProto external = proto;
  auto* init = external.mutable_graph()->mutable_initializer(0);
  init->clear_raw_data();
  init->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* entry = init->add_external_data();
  entry->set_key("location");
  entry->set_value("../../etc/passwd");
  try {
    OnnxModel::from_bytes(external.SerializeAsString(), "external.onnx");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("external"), std::string::npos) << e.what();
  }
}

// fuzz_onnx (out-of-memory, CI's 20-s fuzz step): an initializer whose dims claim far more values
// than its data holds made the reader allocate the claimed size (33 GB from a 180 KB file) before
// comparing. The data is now checked against the dims first.
TEST(OnnxBadInput, InitializerDimsBeyondItsDataAllocateNothing) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "onnx");
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(read_bytes(dir + "/iresnet_tiny_folded.onnx")));
  int index = -1;
  for (int i = 0; i < proto.graph().initializer_size() && index < 0; ++i)
    if (proto.graph().initializer(i).has_raw_data() && proto.graph().initializer(i).raw_data().size() > 0) index = i;
  ASSERT_GE(index, 0) << "no initializer with raw_data";
  for (const bool raw : {true, false}) {
    onnx::ModelProto edited = proto;
    auto* init = edited.mutable_graph()->mutable_initializer(index);
    const std::string name = init->name();
    if (!raw) {  // the same claim with the values in float_data
      init->clear_raw_data();
      init->add_float_data(1.0f);
    }
    init->clear_dims();
    for (int64_t d : {100000, 100000, 10}) init->add_dims(d);  // 10^11 values: 400 GB of float32
    const std::string err = test::error_of([&] { OnnxModel::from_bytes(edited.SerializeAsString(), "claims.onnx"); });
    SCOPED_TRACE(err);
    EXPECT_EQ(err.rfind("claims.onnx", 0), 0u);
    EXPECT_NE(err.find(name), std::string::npos);
    EXPECT_NE(err.find(raw ? ": raw_data: expected 400000000000 bytes for shape [100000, 100000, 10], found "
                           : ": float_data: expected 100000000000 values for shape [100000, 100000, 10], found 1"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace idsynth
