#include "formats/image.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/check.h"
#include "core/file_util.h"

namespace idsynth::formats {

cv::Mat decode_image_rgb(const uint8_t* data, size_t size, const std::string& source) {
  IDSYNTH_CHECK(size > 0, source, ": image: expected encoded image bytes, found an empty buffer");
  cv::Mat buf(1, static_cast<int>(size), CV_8UC1, const_cast<uint8_t*>(data));
  cv::Mat bgr;
  try {
    bgr = cv::imdecode(buf, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    fail(source, ": image: cannot decode (", e.what(), ")");
  }
  IDSYNTH_CHECK(!bgr.empty(), source, ": image: expected a decodable JPEG/PNG, found corrupt or unsupported data (",
                size, " bytes)");
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

cv::Mat read_image_rgb(const std::string& path) {
  const std::string bytes = read_text_file(path);
  return decode_image_rgb(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
}

std::string encode_image_rgb(const cv::Mat& rgb, const std::string& ext, int jpeg_quality) {
  IDSYNTH_CHECK(rgb.type() == CV_8UC3, "encode_image_rgb: expected an 8-bit 3-channel image");
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> out;
  std::vector<int> params;
  if (ext == ".jpg" || ext == ".jpeg") params = {cv::IMWRITE_JPEG_QUALITY, jpeg_quality};
  IDSYNTH_CHECK(cv::imencode(ext, bgr, out, params), "encode_image_rgb: OpenCV cannot encode '", ext, "'");
  return std::string(out.begin(), out.end());
}

void write_image_rgb(const std::string& path, const cv::Mat& rgb, int jpeg_quality) {
  const auto dot = path.find_last_of('.');
  IDSYNTH_CHECK(dot != std::string::npos, path, ": expected an image extension (.png, .jpg)");
  write_file_atomic(path, encode_image_rgb(rgb, path.substr(dot), jpeg_quality));
}

cv::Mat tensor_to_mat(const at::Tensor& hwc) {
  IDSYNTH_CHECK(hwc.dim() == 3 && hwc.size(2) == 3 && hwc.scalar_type() == at::kByte,
                "tensor_to_mat: expected a [H, W, 3] uint8 tensor");
  at::Tensor c = hwc.to(at::kCPU).contiguous();
  cv::Mat m(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_8UC3, c.data_ptr());
  return m.clone();
}

at::Tensor mat_to_tensor(const cv::Mat& rgb) {
  IDSYNTH_CHECK(rgb.type() == CV_8UC3, "mat_to_tensor: expected an 8-bit 3-channel image");
  cv::Mat c = rgb.isContinuous() ? rgb : rgb.clone();
  return at::from_blob(c.data, {c.rows, c.cols, 3}, at::kByte).clone();
}

}  // namespace idsynth::formats
