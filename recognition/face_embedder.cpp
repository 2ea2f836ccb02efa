// Ref: insightface model_zoo/arcface_onnx.py, app/face_analysis.py; Arc2Face gradio_demo/app.py
#include "recognition/face_embedder.h"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>
#include <torch/nn/module.h>
#include <torch/types.h>

#include "core/check.h"
#include "core/log.h"
#include "core/weights.h"
#include "recognition/image_blob.h"

namespace idsynth::recognition {

namespace {

// Recogniser batch on the device (the ONNX input's batch dimension permitting).
constexpr int kRecognizerBatch = 64;

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

}  // namespace

InputNorm arcface_input_norm(const std::vector<OnnxNodeInfo>& nodes) {
  bool find_sub = false, find_mul = false;
  for (size_t i = 0; i < nodes.size() && i < 8; ++i) {
    const std::string& name = nodes[i].name;
    if (starts_with(name, "Sub") || starts_with(name, "_minus")) find_sub = true;
    if (starts_with(name, "Mul") || starts_with(name, "_mul")) find_mul = true;
  }
  if (find_sub && find_mul) return {0.0f, 1.0f};
  return {127.5f, 127.5f};
}

at::Tensor l2_normalize(const at::Tensor& x) { return x / x.norm(2, {1}, true); }

Recognizer::Recognizer(const std::string& path, c10::Device device, c10::ScalarType dtype)
    : path_(path), device_(device), batch_size_(kRecognizerBatch) {
  const WeightFormat format = detect_weight_format(path);
  if (format == WeightFormat::onnx || (format == WeightFormat::unknown && looks_like_onnx(path))) {
    onnx_ = std::make_shared<const OnnxModel>(path, device, dtype);
    IDSYNTH_CHECK(onnx_->inputs().size() == 1 && onnx_->outputs().size() == 1, path,
                  ": recogniser: expected one input and one output, found ", onnx_->inputs().size(), " and ",
                  onnx_->outputs().size());
    const auto& shape = onnx_->inputs()[0].shape;
    IDSYNTH_CHECK(shape.size() == 4 && shape[1] == 3, path, ": recogniser input '", onnx_->inputs()[0].name,
                  "': expected [N, 3, S, S], found rank ", shape.size());
    if (shape[2] > 0) input_size_ = static_cast<int>(shape[2]);
    IDSYNTH_CHECK(shape[3] <= 0 || shape[3] == shape[2], path, ": recogniser input: expected a square size, found ",
                  shape[2], "x", shape[3]);
    fixed_batch_ = shape[0];
    norm_ = arcface_input_norm(onnx_->nodes());
  } else {
    IDSYNTH_CHECK(format != WeightFormat::unknown, path,
                  ": recogniser: expected an ONNX file or IResNet weights (safetensors, torch checkpoint), found neither");
    iresnet_ = load_iresnet(path, device, dtype == c10::kHalf);
    if (dtype == c10::kBFloat16) iresnet_->set_trunk_dtype(c10::kBFloat16);
  }
  LOG_INF(path, ": recogniser ", onnx_ ? "ONNX" : "IResNet", ", input ", input_size_, "x", input_size_,
          ", normalisation (x - ", norm_.mean, ") / ", norm_.std);
}

at::Tensor Recognizer::embed_raw(const std::vector<cv::Mat>& crops_bgr) const {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  const size_t step = fixed_batch_ > 0 ? static_cast<size_t>(fixed_batch_) : static_cast<size_t>(batch_size_);
  for (size_t begin = 0; begin < crops_bgr.size(); begin += step) {
    const size_t end = std::min(crops_bgr.size(), begin + step);
    std::vector<cv::Mat> batch;
    for (size_t i = begin; i < end; ++i) {
      const cv::Mat& c = crops_bgr[i];
      if (c.rows == input_size_ && c.cols == input_size_) {
        batch.push_back(c);
      } else {
        cv::Mat r;
        cv::resize(c, r, cv::Size(input_size_, input_size_), 0, 0, cv::INTER_LINEAR);
        batch.push_back(r);
      }
    }
    // A file with a fixed batch runs on exactly that many rows: pad the last batch.
    const size_t real = batch.size();
    while (fixed_batch_ > 0 && batch.size() < static_cast<size_t>(fixed_batch_)) batch.push_back(batch.back());
    const at::Tensor blob = blob_from_bgr(batch, norm_.mean, norm_.std);
    at::Tensor y = onnx_ ? onnx_->forward(blob) : iresnet_->forward(blob.to(device_));
    parts.push_back(y.to(at::kCPU).to(at::kFloat).slice(0, 0, static_cast<int64_t>(real)).reshape({static_cast<int64_t>(real), -1}));
  }
  if (parts.empty()) return at::empty({0, 0}, at::kFloat);
  return at::cat(parts, 0);
}

FaceEmbedder::FaceEmbedder(std::shared_ptr<const Recognizer> recognizer, std::shared_ptr<const ScrfdDetector> detector)
    : recognizer_(std::move(recognizer)), detector_(std::move(detector)) {
  IDSYNTH_CHECK(recognizer_ != nullptr, "FaceEmbedder: expected a recogniser");
}

std::vector<EmbedResult> FaceEmbedder::embed_crops(const std::vector<cv::Mat>& crops,
                                                   std::vector<EmbedResult> results) const {
  std::vector<cv::Mat> todo;
  std::vector<size_t> where;
  for (size_t i = 0; i < crops.size(); ++i) {
    if (!results[i].error.empty()) continue;
    todo.push_back(crops[i]);
    where.push_back(i);
  }
  if (!todo.empty()) {
    const at::Tensor emb = l2_normalize(recognizer_->embed_raw(todo));
    for (size_t k = 0; k < where.size(); ++k) {
      results[where[k]].ok = true;
      results[where[k]].embedding = emb[static_cast<int64_t>(k)];
    }
  }
  return results;
}

std::vector<EmbedResult> FaceEmbedder::embed_photos(const std::vector<cv::Mat>& photos) const {
  IDSYNTH_CHECK(detector_ != nullptr, "FaceEmbedder: photos need a face detector (--detector), landmarks or aligned crops");
  std::vector<EmbedResult> results(photos.size());
  std::vector<cv::Mat> crops(photos.size());
  for (size_t i = 0; i < photos.size(); ++i) {
    if (photos[i].empty()) {
      results[i].error = "unreadable image";
      continue;
    }
    const auto faces = detector_->detect(photos[i]);
    const int best = largest_face(faces);
    if (best < 0) {
      results[i].error = "no face detected";
      continue;
    }
    results[i].face = faces[static_cast<size_t>(best)];
    if (!results[i].face.has_kps) {
      results[i].error = "detector gives no keypoints";
      continue;
    }
    crops[i] = norm_crop(photos[i], results[i].face.kps, recognizer_->input_size());
  }
  return embed_crops(crops, std::move(results));
}

std::vector<EmbedResult> FaceEmbedder::embed_with_landmarks(const std::vector<cv::Mat>& photos,
                                                            const std::vector<Landmarks5>& landmarks) const {
  IDSYNTH_CHECK(photos.size() == landmarks.size(), "FaceEmbedder: expected one landmark set per photo, found ",
                landmarks.size(), " for ", photos.size(), " photos");
  std::vector<EmbedResult> results(photos.size());
  std::vector<cv::Mat> crops(photos.size());
  for (size_t i = 0; i < photos.size(); ++i) {
    if (photos[i].empty()) {
      results[i].error = "unreadable image";
      continue;
    }
    crops[i] = norm_crop(photos[i], landmarks[i], recognizer_->input_size());
  }
  return embed_crops(crops, std::move(results));
}

std::vector<EmbedResult> FaceEmbedder::embed_aligned(const std::vector<cv::Mat>& crops) const {
  std::vector<EmbedResult> results(crops.size());
  for (size_t i = 0; i < crops.size(); ++i)
    if (crops[i].empty()) results[i].error = "unreadable image";
  return embed_crops(crops, std::move(results));
}

}  // namespace idsynth::recognition
