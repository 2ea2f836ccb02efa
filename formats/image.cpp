#include "formats/image.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/check.h"
#include "core/file_util.h"

namespace idsynth::formats {

namespace {

uint32_t be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t be32(const uint8_t* p) { return (be16(p) << 16) | be16(p + 2); }
uint32_t le16(const uint8_t* p) { return (uint32_t{p[1]} << 8) | p[0]; }
uint32_t le32(const uint8_t* p) { return (le16(p + 2) << 16) | le16(p); }

// The first SOFn segment's size; markers are walked by their lengths (fill bytes and stand-alone
// markers skipped), so scan data is never reached.
bool jpeg_size(const uint8_t* d, size_t n, int64_t& w, int64_t& h) {
  size_t i = 2;
  while (i + 4 <= n) {
    if (d[i] != 0xFF) return false;
    uint8_t m = d[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {  // stand-alone markers
      i += 2;
      continue;
    }
    if (m == 0xD9 || m == 0xDA) return false;  // end of image / start of scan before any frame header
    const size_t len = be16(d + i + 2);
    if (len < 2) return false;
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (i + 9 > n || len < 7) return false;
      h = be16(d + i + 5);
      w = be16(d + i + 7);
      return true;
    }
    i += 2 + len;
  }
  return false;
}

}  // namespace

ImageHeader check_image_header(const uint8_t* d, size_t n, const std::string& source) {
  ImageHeader h;
  bool read = false;
  if (n >= 24 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) {
    h.format = "png";
    read = std::memcmp(d + 12, "IHDR", 4) == 0;
    h.width = be32(d + 16);
    h.height = be32(d + 20);
  } else if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) {
    h.format = "jpeg";
    read = jpeg_size(d, n, h.width, h.height);
  } else if (n >= 26 && d[0] == 'B' && d[1] == 'M') {
    h.format = "bmp";
    const uint32_t dib = le32(d + 14);
    if (dib == 12) {
      h.width = le16(d + 18);
      h.height = le16(d + 20);
      read = true;
    } else if (dib >= 40) {
      h.width = static_cast<int32_t>(le32(d + 18));
      h.height = std::llabs(static_cast<int32_t>(le32(d + 22)));
      read = h.width >= 0;
    }
  } else if (n >= 30 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) {
    h.format = "webp";
    if (std::memcmp(d + 12, "VP8X", 4) == 0) {
      // 24-bit sides at 24 and 27 (the header ends at byte 30; a 32-bit read would pass it)
      h.width = 1 + (d[24] | (uint32_t{d[25]} << 8) | (uint32_t{d[26]} << 16));
      h.height = 1 + (d[27] | (uint32_t{d[28]} << 8) | (uint32_t{d[29]} << 16));
      read = true;
    } else if (std::memcmp(d + 12, "VP8L", 4) == 0 && d[20] == 0x2F) {
      const uint32_t bits = le32(d + 21);
      h.width = 1 + (bits & 0x3FFF);
      h.height = 1 + ((bits >> 14) & 0x3FFF);
      read = true;
    } else if (std::memcmp(d + 12, "VP8 ", 4) == 0) {
      h.width = le16(d + 26) & 0x3FFF;
      h.height = le16(d + 28) & 0x3FFF;
      read = true;
    }
  } else {
    fail(source, ": image: expected JPEG, PNG, BMP or WebP data, found ", n < 4 ? "too few bytes" : "another format", " (",
         n, " bytes)");
  }
  IDSYNTH_CHECK(read, source, ": image: expected a readable ", h.format, " header, found a truncated or corrupt one (", n, " bytes)");
  // Each side bounded first: two 32-bit sides multiplied can overflow int64 (found by fuzz_image).
  IDSYNTH_CHECK(h.width > 0 && h.height > 0 && h.width <= kMaxDecodedPixels && h.height <= kMaxDecodedPixels &&
                    h.width * h.height <= kMaxDecodedPixels,
                source, ": image: expected at most ",
                kMaxDecodedPixels, " pixels (8192 x 8192), found a ", h.format, " header claiming ", h.width, " x ", h.height);
  return h;
}

cv::Mat decode_image_rgb(const uint8_t* data, size_t size, const std::string& source) {
  IDSYNTH_CHECK(size > 0, source, ": image: expected encoded image bytes, found an empty buffer");
  check_image_header(data, size, source);
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
