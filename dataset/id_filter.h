// The ID-consistency filter of dataset generation: every generated face is re-embedded by an
// ArcFace recogniser and kept only if the cosine of its embedding to its identity vector reaches
// filter.min_similarity. The face is cropped either as Arc2Face's own evaluation does (fixed crop:
// the whole image resized to the recogniser input, as ArcFaceONNX's blob does) or by SCRFD
// detection + ArcFace 5-point alignment. The kept faces are JPEG-encoded here too (full image and
// 112x112 aligned crop), so all per-image CPU work runs in one task beside the UNet.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "recognition/face_embedder.h"

namespace idsynth::dataset {

struct IdFilterOptions {
  std::string recognizer;  // empty: keep every face, similarity NaN
  std::string detector;    // used when alignment == "detect"
  std::string alignment = "fixed";
  int det_size = 640;  // SCRFD letterbox edge (filter.det_size)
  double min_similarity = 0.0;
  int jpeg_quality = 95;
  bool store_full_image = true;
  bool store_aligned_crop = true;
  c10::Device device = c10::kCPU;
  int64_t identity_dim = 0;  // checked against the recogniser's embedding width
};

struct FilteredImage {
  bool accepted = false;
  bool face_found = true;   // false: the detector found no face (alignment "detect" only)
  float similarity = 0.0f;  // NaN without a recogniser, -inf without a face
  std::string full_jpeg;     // filled for accepted images when stored
  std::string aligned_jpeg;
};

class IdFilter {
 public:
  // Loads the recogniser and detector and checks the embedding width (throws before any work).
  explicit IdFilter(const IdFilterOptions& options);
  // images: [B, H, W, 3] uint8 RGB (CPU); identity_vectors: [B, D] float32 unit rows, one per image.
  // Thread-safe: the embedding runs under a lock, cropping and JPEG encoding do not.
  std::vector<FilteredImage> process(const at::Tensor& images, const at::Tensor& identity_vectors) const;
  bool active() const { return embedder_ != nullptr; }

 private:
  IdFilterOptions options_;
  std::unique_ptr<recognition::FaceEmbedder> embedder_;
  mutable std::mutex embed_mutex_;
};

}  // namespace idsynth::dataset
