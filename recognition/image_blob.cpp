#include "recognition/image_blob.h"

#include <ATen/ATen.h>

#include "core/check.h"

namespace idsynth::recognition {

at::Tensor blob_from_bgr(const std::vector<cv::Mat>& images, float mean, float std) {
  IDSYNTH_CHECK(!images.empty(), "image blob: expected at least one image");
  const int h = images[0].rows, w = images[0].cols;
  at::Tensor blob = at::empty({static_cast<int64_t>(images.size()), 3, h, w}, at::kFloat);
  const float scale = 1.0f / std;
  float* out = blob.data_ptr<float>();
  const int64_t plane = static_cast<int64_t>(h) * w;
  for (size_t n = 0; n < images.size(); ++n) {
    const cv::Mat& img = images[n];
    IDSYNTH_CHECK(img.type() == CV_8UC3 && img.rows == h && img.cols == w, "image blob: image ", n,
                  ": expected ", w, "x", h, " 8-bit BGR, found ", img.cols, "x", img.rows, " type ", img.type());
    float* base = out + static_cast<int64_t>(n) * 3 * plane;
    for (int y = 0; y < h; ++y) {
      const uint8_t* row = img.ptr<uint8_t>(y);
      for (int x = 0; x < w; ++x) {
        const int64_t o = static_cast<int64_t>(y) * w + x;
        // swapRB: channel 0 of the blob is the image's red (BGR index 2)
        base[o] = (static_cast<float>(row[3 * x + 2]) - mean) * scale;
        base[plane + o] = (static_cast<float>(row[3 * x + 1]) - mean) * scale;
        base[2 * plane + o] = (static_cast<float>(row[3 * x + 0]) - mean) * scale;
      }
    }
  }
  return blob;
}

}  // namespace idsynth::recognition
