// Photo -> identity vector: SCRFD detection (or given landmarks, or an already aligned crop) ->
// ArcFace alignment -> recogniser (an insightface ONNX file or a native IResNet) -> L2-normalised
// embedding, batched on the recogniser's device.
// Ref: insightface python-package/insightface/model_zoo/arcface_onnx.py (ArcFaceONNX),
//      app/face_analysis.py (FaceAnalysis.get), Arc2Face's largest-face selection.
#pragma once

#include <ATen/Tensor.h>
#include <opencv2/core.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/onnx_model.h"
#include "recognition/face_align.h"
#include "recognition/iresnet.h"
#include "recognition/scrfd.h"

namespace idsynth::recognition {

// ArcFaceONNX's input normalisation: mean 0 / std 1 when the first 8 node names include one
// starting with Sub/_minus and one with Mul/_mul (MXNet exports normalise inside the graph);
// otherwise 127.5 / 127.5.
struct InputNorm {
  float mean = 127.5f;
  float std = 127.5f;
};
InputNorm arcface_input_norm(const std::vector<OnnxNodeInfo>& nodes);

// A face recogniser on aligned 112×112 BGR crops: an ONNX file (insightface/Arc2Face ArcFace,
// any single-input single-output model) or an IResNet weight file (safetensors / torch checkpoint).
class Recognizer {
 public:
  Recognizer(const std::string& path, c10::Device device, c10::ScalarType dtype = c10::kFloat);
  // Raw (not normalised) embeddings [N, D] float32 on the CPU. Crops of another size are resized to
  // the input size with bilinear interpolation, as cv::dnn::blobFromImages does in ArcFaceONNX.
  at::Tensor embed_raw(const std::vector<cv::Mat>& crops_bgr) const;
  int input_size() const { return input_size_; }
  const InputNorm& norm() const { return norm_; }
  const std::string& path() const { return path_; }
  bool is_onnx() const { return onnx_ != nullptr; }

 private:
  std::string path_;
  c10::Device device_;
  std::shared_ptr<const OnnxModel> onnx_;
  mutable IResNet iresnet_{nullptr};  // torch modules have no const forward
  InputNorm norm_;
  int input_size_ = 112;
  int64_t fixed_batch_ = -1;  // the ONNX input's batch dimension when the file fixes it
  int batch_size_ = 64;
};

// L2 normalisation along dim 1 (Face.normed_embedding).
at::Tensor l2_normalize(const at::Tensor& x);

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
