// ArcFace 5-point alignment: the similarity transform from detected landmarks to the ArcFace
// template (Umeyama, as scikit-image estimates it) and the cv::warpAffine crop.
// Ref: deepinsight/insightface python-package/insightface/utils/face_align.py (estimate_norm, norm_crop)
//      scikit-image 0.19 skimage/transform/_geometric.py (_umeyama, SimilarityTransform.estimate)
#pragma once

#include <opencv2/core.hpp>

#include <array>

namespace idsynth::recognition {

// Five (x, y) points in image pixels: left eye, right eye, nose tip, left and right mouth corner
// ("left" = the image's left). Float32, like insightface's landmark arrays.
using Landmarks5 = std::array<cv::Point2f, 5>;

// The 112×112 ArcFace template (float32, as insightface stores `arcface_dst`).
const Landmarks5& arcface_template();

// Least-squares similarity transform src -> dst (rotation, uniform scale, translation) by
// Umeyama's method with the reflection check, computed the way skimage 0.19's `_umeyama` does it
// for float32 input: means, centring, covariance and variances in float32, the SVD in float32
// (LAPACK), rotation and translation in float64. The float64-everywhere estimate differs by up to
// ~3e-5, which moves some warped pixels by a few grey levels. Returns [scale·R | t] (2×3).
cv::Matx23d umeyama_similarity(const Landmarks5& src, const Landmarks5& dst);

// insightface `estimate_norm(lmk, image_size)`: image_size a multiple of 112 scales the template;
// otherwise a multiple of 128 scales it by size/128 and shifts x by 8·size/128. Other sizes throw.
cv::Matx23d estimate_norm(const Landmarks5& landmarks, int image_size = 112);

// cv::warpAffine(image, M, (size, size)), INTER_LINEAR, BORDER_CONSTANT 0: insightface's crop.
cv::Mat warp_crop(const cv::Mat& image, const cv::Matx23d& M, int size);

// insightface `norm_crop(img, landmark, image_size)`.
cv::Mat norm_crop(const cv::Mat& image, const Landmarks5& landmarks, int image_size = 112);

}  // namespace idsynth::recognition
