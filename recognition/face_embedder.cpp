// Ref: insightface model_zoo/arcface_onnx.py, app/face_analysis.py; Arc2Face gradio_demo/app.py
#include "recognition/face_embedder.h"

#include <ATen/ATen.h>

#include "core/check.h"

namespace idsynth::recognition {

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
    const at::Tensor emb = l2_normalize(recognizer_->embed_bgr(todo));
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
