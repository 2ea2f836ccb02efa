// Image codecs (OpenCV) with idsynth's error conventions. Images are RGB in memory, as the
// reference pipelines use them; conversion to OpenCV's BGR happens only at the codec boundary.
#pragma once

#include <ATen/Tensor.h>
#include <opencv2/core.hpp>

#include <string>
#include <vector>

namespace idsynth::formats {

// The most pixels a decoded image may have: 2^26 (8192 x 8192), far above any face image, so a
// hostile header claiming gigapixels is refused before OpenCV allocates for it (OpenCV's own cap,
// 2^30 pixels = 3 GB, is read from the environment when the library loads).
constexpr int64_t kMaxDecodedPixels = int64_t{1} << 26;

struct ImageHeader {
  std::string format;  // "jpeg", "png", "bmp", "webp"
  int64_t width = 0, height = 0;
};
// Reads the format and size from the first bytes, without decoding. Throws one line naming `source`
// for a format other than JPEG, PNG, BMP and WebP (OpenCV's other decoders are not exposed to
// untrusted files), a header it cannot read, or more than kMaxDecodedPixels pixels. Every decode
// here calls it before cv::imdecode.
ImageHeader check_image_header(const uint8_t* data, size_t size, const std::string& source);

// Decodes JPEG/PNG/... bytes to an RGB uint8 image; throws naming `source` when the data is corrupt.
cv::Mat decode_image_rgb(const uint8_t* data, size_t size, const std::string& source);
cv::Mat read_image_rgb(const std::string& path);
// ".png" / ".jpg" encoding of an RGB uint8 image; quality applies to JPEG.
std::string encode_image_rgb(const cv::Mat& rgb, const std::string& ext, int jpeg_quality = 95);
// Writes atomically (temporary name + rename).
void write_image_rgb(const std::string& path, const cv::Mat& rgb, int jpeg_quality = 95);

// [H, W, 3] uint8 CPU tensor <-> RGB cv::Mat (copies).
cv::Mat tensor_to_mat(const at::Tensor& hwc_uint8);
at::Tensor mat_to_tensor(const cv::Mat& rgb);

}  // namespace idsynth::formats
