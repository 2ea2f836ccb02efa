// cv::dnn::blobFromImages as insightface calls it: BGR uint8 images -> NCHW float32 RGB,
// (pixel − mean) · (1/std). Shared by the detector and the recognisers.
#pragma once

#include <ATen/Tensor.h>
#include <opencv2/core.hpp>

#include <vector>

namespace idsynth::recognition {

// All images must be CV_8UC3 of one size. Returns a CPU float32 tensor [N, 3, H, W].
at::Tensor blob_from_bgr(const std::vector<cv::Mat>& images, float mean, float std);

}  // namespace idsynth::recognition
