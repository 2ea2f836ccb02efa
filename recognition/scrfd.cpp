// Ref: insightface python-package/insightface/model_zoo/scrfd.py
#include "recognition/scrfd.h"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <numeric>

#include "core/check.h"
#include "recognition/image_blob.h"

namespace idsynth::recognition {

namespace {

// SCRFD's input normalisation (scrfd.py: input_mean 127.5, input_std 128).
constexpr float kDetMean = 127.5f;
constexpr float kDetStd = 128.0f;

struct Layout {
  std::vector<int> strides;
  int anchors;
  bool kps;
};

// scrfd.py maps the output count to strides, anchors per location and keypoints.
Layout layout_for(size_t outputs) {
  switch (outputs) {
    case 6: return {{8, 16, 32}, 2, false};
    case 9: return {{8, 16, 32}, 2, true};
    case 10: return {{8, 16, 32, 64, 128}, 1, false};
    case 15: return {{8, 16, 32, 64, 128}, 1, true};
    default: fail("SCRFD: outputs: expected 6, 9, 10 or 15 network outputs, found ", outputs);
  }
}

at::Tensor rows(const at::Tensor& t, int64_t cols, const char* what) {
  at::Tensor c = t.to(at::kCPU).to(at::kFloat).contiguous();
  if (c.dim() == 3) c = c[0];  // batched export [1, N, C]
  IDSYNTH_CHECK(c.dim() == 2 && c.size(1) == cols, "SCRFD: ", what, " output: expected [N, ", cols, "], found ",
                shape_string(t.sizes()));
  return c;
}

}  // namespace

void ScrfdConfig::check() const {
  IDSYNTH_CHECK(det_width > 0 && det_width % 32 == 0 && det_height > 0 && det_height % 32 == 0,
                "SCRFD: det_size: expected multiples of 32, found ", det_width, "x", det_height);
  IDSYNTH_CHECK(det_thresh > 0 && det_thresh < 1, "SCRFD: det_thresh: expected (0, 1), found ", det_thresh);
  IDSYNTH_CHECK(nms_thresh > 0 && nms_thresh <= 1, "SCRFD: nms_thresh: expected (0, 1], found ", nms_thresh);
}

std::vector<FaceDetection> scrfd_decode(const std::vector<at::Tensor>& outputs, int input_h, int input_w,
                                        float det_scale, float det_thresh, float nms_thresh) {
  const Layout layout = layout_for(outputs.size());
  const size_t fmc = layout.strides.size();
  // 1. candidates per stride: score >= threshold, distances × stride around the anchor centres
  std::vector<FaceDetection> cand;
  for (size_t s = 0; s < fmc; ++s) {
    const int stride = layout.strides[s];
    const at::Tensor scores = rows(outputs[s], 1, "score");
    const at::Tensor boxes = rows(outputs[s + fmc], 4, "bbox");
    at::Tensor kps;
    if (layout.kps) kps = rows(outputs[s + 2 * fmc], 10, "kps");
    const int h = input_h / stride, w = input_w / stride;
    const int64_t n = static_cast<int64_t>(h) * w * layout.anchors;
    IDSYNTH_CHECK(scores.size(0) == n && boxes.size(0) == n && (!layout.kps || kps.size(0) == n),
                  "SCRFD: stride ", stride, ": expected ", n, " rows for a ", input_w, "x", input_h, " input, found ",
                  scores.size(0));
    const float* sc = scores.data_ptr<float>();
    const float* bb = boxes.data_ptr<float>();
    const float* kp = layout.kps ? kps.data_ptr<float>() : nullptr;
    const float fs = static_cast<float>(stride);
    for (int64_t r = 0; r < n; ++r) {
      if (!(sc[r] >= det_thresh)) continue;
      const int64_t cell = r / layout.anchors;  // row order (y·W + x)·anchors + anchor
      const float cx = static_cast<float>(cell % w) * fs;
      const float cy = static_cast<float>(cell / w) * fs;
      FaceDetection d;
      d.x1 = (cx - bb[4 * r + 0] * fs) / det_scale;
      d.y1 = (cy - bb[4 * r + 1] * fs) / det_scale;
      d.x2 = (cx + bb[4 * r + 2] * fs) / det_scale;
      d.y2 = (cy + bb[4 * r + 3] * fs) / det_scale;
      d.score = sc[r];
      if (kp) {
        d.has_kps = true;
        for (int k = 0; k < 5; ++k)
          d.kps[k] = cv::Point2f((cx + kp[10 * r + 2 * k] * fs) / det_scale, (cy + kp[10 * r + 2 * k + 1] * fs) / det_scale);
      }
      cand.push_back(d);
    }
  }
  // 2. best score first (numpy argsort()[::-1]: ties keep reverse order of appearance)
  std::vector<size_t> order(cand.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cand[a].score > cand[b].score; });
  // 3. greedy NMS with the +1 pixel area convention, in float32 like scrfd.py
  std::vector<float> areas(cand.size());
  for (size_t i = 0; i < cand.size(); ++i)
    areas[i] = (cand[i].x2 - cand[i].x1 + 1.0f) * (cand[i].y2 - cand[i].y1 + 1.0f);
  std::vector<FaceDetection> keep;
  std::vector<bool> removed(cand.size(), false);
  for (size_t oi = 0; oi < order.size(); ++oi) {
    const size_t i = order[oi];
    if (removed[i]) continue;
    keep.push_back(cand[i]);
    for (size_t oj = oi + 1; oj < order.size(); ++oj) {
      const size_t j = order[oj];
      if (removed[j]) continue;
      const float xx1 = std::max(cand[i].x1, cand[j].x1), yy1 = std::max(cand[i].y1, cand[j].y1);
      const float xx2 = std::min(cand[i].x2, cand[j].x2), yy2 = std::min(cand[i].y2, cand[j].y2);
      const float iw = std::max(0.0f, xx2 - xx1 + 1.0f), ih = std::max(0.0f, yy2 - yy1 + 1.0f);
      const float inter = iw * ih;
      const float ovr = inter / (areas[i] + areas[j] - inter);
      if (!(ovr <= nms_thresh)) removed[j] = true;
    }
  }
  return keep;
}

int largest_face(const std::vector<FaceDetection>& faces) {
  int best = -1;
  for (size_t i = 0; i < faces.size(); ++i)
    if (best < 0 || faces[i].area() >= faces[static_cast<size_t>(best)].area()) best = static_cast<int>(i);
  return best;
}

ScrfdDetector::ScrfdDetector(const std::string& onnx_path, c10::Device device, ScrfdConfig config)
    : ScrfdDetector(std::make_shared<const OnnxModel>(onnx_path, device), config) {}

ScrfdDetector::ScrfdDetector(std::shared_ptr<const OnnxModel> model, ScrfdConfig config)
    : model_(std::move(model)), config_(config) {
  config_.check();
  layout_for(model_->outputs().size());
  IDSYNTH_CHECK(model_->inputs().size() == 1, model_->source(), ": SCRFD: expected one input, found ",
                model_->inputs().size());
}

cv::Mat ScrfdDetector::letterbox(const cv::Mat& bgr, float& det_scale) const {
  IDSYNTH_CHECK(!bgr.empty() && bgr.type() == CV_8UC3, "SCRFD: image: expected 8-bit BGR, found type ", bgr.type());
  // scrfd.py detect(): fit by aspect ratio, truncate the other side, paste at the top-left.
  const double im_ratio = static_cast<double>(bgr.rows) / bgr.cols;
  const double model_ratio = static_cast<double>(config_.det_height) / config_.det_width;
  int new_w, new_h;
  if (im_ratio > model_ratio) {
    new_h = config_.det_height;
    new_w = static_cast<int>(new_h / im_ratio);
  } else {
    new_w = config_.det_width;
    new_h = static_cast<int>(new_w * im_ratio);
  }
  det_scale = static_cast<float>(static_cast<double>(new_h) / bgr.rows);
  cv::Mat resized;
  cv::resize(bgr, resized, cv::Size(new_w, new_h));
  cv::Mat canvas = cv::Mat::zeros(config_.det_height, config_.det_width, CV_8UC3);
  resized.copyTo(canvas(cv::Rect(0, 0, new_w, new_h)));
  return canvas;
}

std::vector<at::Tensor> ScrfdDetector::run(const cv::Mat& canvas) const {
  return model_->run({blob_from_bgr({canvas}, kDetMean, kDetStd)});
}

std::vector<FaceDetection> ScrfdDetector::detect(const cv::Mat& bgr) const {
  float det_scale = 1.0f;
  const cv::Mat canvas = letterbox(bgr, det_scale);
  return scrfd_decode(run(canvas), canvas.rows, canvas.cols, det_scale, config_.det_thresh, config_.nms_thresh);
}

}  // namespace idsynth::recognition
