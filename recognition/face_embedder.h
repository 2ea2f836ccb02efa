// Photo -> identity vector: SCRFD detection (or given landmarks, or an already aligned crop) ->
// ArcFace alignment -> recogniser (recognition/recognizer.h) -> L2-normalised embedding, batched on
// the recogniser's device.
// Ref: insightface python-package/insightface/model_zoo/arcface_onnx.py (ArcFaceONNX),
//      app/face_analysis.py (FaceAnalysis.get), Arc2Face's largest-face selection.
#pragma once

#include <ATen/Tensor.h>
#include <opencv2/core.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "recognition/face_align.h"
#include "recognition/recognizer.h"
#include "recognition/scrfd.h"

namespace idsynth::recognition {

struct EmbedResult {
  bool ok = false;
  std::string error;       // why no embedding: unreadable image, no face, ...
  at::Tensor embedding;    // [D] float32, L2-normalised
  FaceDetection face;      // the face used (photo pixels), when detected
};

class FaceEmbedder {
 public:
  FaceEmbedder(std::shared_ptr<const Recognizer> recognizer, std::shared_ptr<const ScrfdDetector> detector = nullptr);

  // Detect (largest face, as Arc2Face), align, embed. Needs a detector.
  std::vector<EmbedResult> embed_photos(const std::vector<cv::Mat>& photos_bgr) const;
  // Align with the given 5 points, embed.
  std::vector<EmbedResult> embed_with_landmarks(const std::vector<cv::Mat>& photos_bgr,
                                                const std::vector<Landmarks5>& landmarks) const;
  // Fixed-crop mode: already aligned crops (insightface 112×112, or Arc2Face 512×512 outputs that
  // the recogniser's blob resizes to 112×112).
  std::vector<EmbedResult> embed_aligned(const std::vector<cv::Mat>& crops_bgr) const;

  const Recognizer& recognizer() const { return *recognizer_; }
  bool has_detector() const { return detector_ != nullptr; }

 private:
  std::vector<EmbedResult> embed_crops(const std::vector<cv::Mat>& crops, std::vector<EmbedResult> results) const;
  std::shared_ptr<const Recognizer> recognizer_;
  std::shared_ptr<const ScrfdDetector> detector_;
};

}  // namespace idsynth::recognition
