#include "dataset/id_filter.h"

#include <ATen/Parallel.h>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <limits>

#include "core/check.h"
#include "core/file_util.h"
#include "formats/image.h"
#include "recognition/face_align.h"
#include "recognition/scrfd.h"

namespace idsynth::dataset {

namespace {
constexpr int kAlignedSize = 112;  // insightface's aligned crop
}

IdFilter::IdFilter(const IdFilterOptions& options) : options_(options) {
  const bool detect = options.alignment == "detect";
  IDSYNTH_CHECK(options.alignment == "fixed" || detect, "filter.alignment: expected fixed or detect, found '",
                options.alignment, "'");
  if (options.recognizer.empty() && !detect) return;
  std::shared_ptr<const recognition::ScrfdDetector> detector;
  if (detect) {
    IDSYNTH_CHECK(file_exists(options.detector), "model.detector: file not found: '", options.detector, "'");
    recognition::ScrfdConfig dc;
    dc.det_width = dc.det_height = options.det_size;
    detector = std::make_shared<const recognition::ScrfdDetector>(options.detector, options.device, dc);
  }
  IDSYNTH_CHECK(!options.recognizer.empty(), "filter.alignment: 'detect' needs model.recognizer as well");
  IDSYNTH_CHECK(file_exists(options.recognizer), "model.recognizer: file not found: '", options.recognizer, "'");
  std::shared_ptr<const recognition::Recognizer> recognizer = recognition::load_recognizer(options.recognizer, options.device);
  embedder_ = std::make_unique<recognition::FaceEmbedder>(recognizer, detector);
  // One probe embedding: the width must match the identity vectors.
  const at::Tensor probe = recognizer->embed_bgr({cv::Mat(kAlignedSize, kAlignedSize, CV_8UC3, cv::Scalar(127, 127, 127))});
  IDSYNTH_CHECK(probe.dim() == 2 && probe.size(1) == options.identity_dim, options.recognizer,
                ": model.recognizer: embeddings have width ", probe.size(1), ", identities.dim is ", options.identity_dim);
}

std::vector<FilteredImage> IdFilter::process(const at::Tensor& images, const at::Tensor& identity_vectors) const {
  // Worker and TBB threads start with OpenMP's default team size; use the process-wide setting so
  // the recogniser computes the same numbers whichever thread runs it.
  at::init_num_threads();
  const int64_t b = images.size(0);
  std::vector<FilteredImage> out(static_cast<size_t>(b));
  std::vector<cv::Mat> rgb(static_cast<size_t>(b)), bgr(static_cast<size_t>(b)), aligned(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) {
    rgb[i] = formats::tensor_to_mat(images[i].contiguous());
    cv::cvtColor(rgb[i], bgr[i], cv::COLOR_RGB2BGR);
  }
  const at::Tensor ids = identity_vectors.to(at::kFloat).contiguous();
  if (embedder_ == nullptr) {
    for (int64_t i = 0; i < b; ++i) {
      out[i].accepted = true;
      out[i].similarity = std::numeric_limits<float>::quiet_NaN();
      cv::resize(rgb[i], aligned[i], cv::Size(kAlignedSize, kAlignedSize), 0, 0, cv::INTER_LINEAR);
    }
  } else {
    std::vector<recognition::EmbedResult> emb;
    {
      std::lock_guard<std::mutex> lock(embed_mutex_);
      emb = embedder_->has_detector() ? embedder_->embed_photos(bgr) : embedder_->embed_aligned(bgr);
    }
    for (int64_t i = 0; i < b; ++i) {
      FilteredImage& f = out[i];
      if (!emb[i].ok) {  // no face found: rejected, redrawn
        f.face_found = false;
        f.similarity = -std::numeric_limits<float>::infinity();
        continue;
      }
      // Cosine in double over float32 inputs: the same sum on every machine and thread count.
      const at::Tensor e = emb[i].embedding.to(at::kFloat).contiguous();
      const float* pe = e.data_ptr<float>();
      const float* pv = ids[i].data_ptr<float>();
      double dot = 0.0;
      for (int64_t d = 0; d < e.numel(); ++d) dot += static_cast<double>(pe[d]) * pv[d];
      f.similarity = static_cast<float>(dot);
      f.accepted = f.similarity >= options_.min_similarity;
      if (embedder_->has_detector()) {
        aligned[i] = recognition::norm_crop(rgb[i], emb[i].face.kps, kAlignedSize);
      } else {
        cv::resize(rgb[i], aligned[i], cv::Size(kAlignedSize, kAlignedSize), 0, 0, cv::INTER_LINEAR);
      }
    }
  }
  for (int64_t i = 0; i < b; ++i) {
    FilteredImage& f = out[i];
    if (!f.accepted) continue;
    if (options_.store_full_image) f.full_jpeg = formats::encode_image_rgb(rgb[i], ".jpg", options_.jpeg_quality);
    if (options_.store_aligned_crop) f.aligned_jpeg = formats::encode_image_rgb(aligned[i], ".jpg", options_.jpeg_quality);
  }
  return out;
}

}  // namespace idsynth::dataset
