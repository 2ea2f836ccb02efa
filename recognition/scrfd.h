// SCRFD face detection (insightface scrfd_10g_bnkps / det_10g and compatible exports): letterbox,
// ONNX network on the model's device, anchor-free decode over strides 8/16/32, NMS, 5 keypoints.
// Ref: deepinsight/insightface python-package/insightface/model_zoo/scrfd.py (SCRFD.detect/forward/nms)
#pragma once

#include <ATen/Tensor.h>
#include <opencv2/core.hpp>

#include <memory>
#include <string>
#include <vector>

#include "core/onnx_model.h"
#include "recognition/face_align.h"

namespace idsynth::recognition {

struct ScrfdConfig {
  int det_width = 640;       // letterbox canvas (insightface prepare(det_size=(640, 640)))
  int det_height = 640;
  float det_thresh = 0.5f;   // keep score >= det_thresh
  float nms_thresh = 0.4f;   // drop IoU > nms_thresh (areas with the +1 pixel convention)
  void check() const;
};

struct FaceDetection {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;  // photo pixels
  float score = 0;
  bool has_kps = false;
  Landmarks5 kps{};
  float area() const { return (x2 - x1) * (y2 - y1); }
};

// The decode of scrfd.py for the network outputs of one letterboxed image: outputs in the file's
// order (scores per stride, then boxes, then keypoints; rank 2 [N, C] or batched [1, N, C]),
// `input_h`/`input_w` the canvas size, `det_scale` = resized height / photo height.
std::vector<FaceDetection> scrfd_decode(const std::vector<at::Tensor>& outputs, int input_h, int input_w,
                                        float det_scale, float det_thresh, float nms_thresh);

// Index of the largest box by (x2 − x1)·(y2 − y1) — FaceAnalysis/Arc2Face's choice (the last
// one on ties, as Python's stable sort leaves it); -1 when empty.
int largest_face(const std::vector<FaceDetection>& faces);

class ScrfdDetector {
 public:
  ScrfdDetector(const std::string& onnx_path, c10::Device device, ScrfdConfig config = {});
  ScrfdDetector(std::shared_ptr<const OnnxModel> model, ScrfdConfig config = {});

  // BGR uint8 photo -> detections in photo pixels, best score first.
  std::vector<FaceDetection> detect(const cv::Mat& bgr) const;
  // The letterboxed canvas (det_height × det_width, photo at the top-left) and its det_scale.
  cv::Mat letterbox(const cv::Mat& bgr, float& det_scale) const;
  // Network outputs for a canvas: blob (x − 127.5)/128, RGB.
  std::vector<at::Tensor> run(const cv::Mat& canvas) const;
  const ScrfdConfig& config() const { return config_; }

 private:
  std::shared_ptr<const OnnxModel> model_;
  ScrfdConfig config_;
};

}  // namespace idsynth::recognition
