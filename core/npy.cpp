#include "core/npy.h"

#include <ATen/ATen.h>

#include <cstring>
#include <regex>
#include <vector>

#include "core/check.h"
#include "core/file_util.h"

namespace idsynth {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

// The value of 'key' in the header dict, as written by numpy (a quoted string, a bool or a tuple).
std::string header_field(const std::string& header, const std::string& key, const std::string& path) {
  const std::regex re("['\"]" + key + "['\"]\\s*:\\s*('[^']*'|\"[^\"]*\"|True|False|\\([^)]*\\))");
  std::smatch m;
  IDSYNTH_CHECK(std::regex_search(header, m, re), path, ": .npy header: missing field '", key, "' in ", header);
  return m[1].str();
}

}  // namespace

at::Tensor read_npy_matrix(const std::string& path) {
  MappedFile file(path);
  const uint8_t* p = file.data();
  const size_t size = file.size();
  // 1. magic, version, header length
  IDSYNTH_CHECK(size >= kMagicSize + 4 && std::memcmp(p, kMagic, kMagicSize) == 0, path,
                ": expected a NumPy .npy file (magic \\x93NUMPY), found other data");
  const int major = p[6];
  IDSYNTH_CHECK(major >= 1 && major <= 3, path, ": .npy version: expected 1, 2 or 3, found ", major);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<size_t>(p[8]) | static_cast<size_t>(p[9]) << 8;
    offset = 10;
  } else {
    IDSYNTH_CHECK(size >= 12, path, ": .npy header: file too short (", size, " bytes)");
    header_len = static_cast<size_t>(p[8]) | static_cast<size_t>(p[9]) << 8 | static_cast<size_t>(p[10]) << 16 |
                 static_cast<size_t>(p[11]) << 24;
    offset = 12;
  }
  IDSYNTH_CHECK(header_len <= size - offset, path, ": .npy header length ", header_len, " exceeds the file size ", size);
  const std::string header(reinterpret_cast<const char*>(p + offset), header_len);
  const size_t data_start = offset + header_len;
  // 2. dtype, order, shape
  std::string descr = header_field(header, "descr", path);
  descr = descr.substr(1, descr.size() - 2);
  size_t item = 0;
  if (descr == "<f4") item = 4;
  else if (descr == "<f8") item = 8;
  else fail(path, ": .npy descr: expected '<f4' or '<f8' (little-endian float32/float64), found '", descr, "'");
  IDSYNTH_CHECK(header_field(header, "fortran_order", path) == "False", path,
                ": .npy fortran_order: expected False (C order), found True");
  const std::string shape_text = header_field(header, "shape", path);
  std::vector<int64_t> shape;
  const std::regex num("\\d+");
  for (auto it = std::sregex_iterator(shape_text.begin(), shape_text.end(), num); it != std::sregex_iterator(); ++it) {
    IDSYNTH_CHECK(it->str().size() <= 12, path, ": .npy shape: dimension too large in ", shape_text);
    shape.push_back(std::stoll(it->str()));
  }
  IDSYNTH_CHECK(shape.size() == 1 || shape.size() == 2, path, ": .npy shape: expected a 1-D or 2-D array, found ", shape_text);
  if (shape.size() == 1) shape.insert(shape.begin(), 1);
  // 3. data size must match exactly
  const uint64_t count = static_cast<uint64_t>(shape[0]) * static_cast<uint64_t>(shape[1]);
  IDSYNTH_CHECK(shape[1] == 0 || count / static_cast<uint64_t>(shape[1]) == static_cast<uint64_t>(shape[0]), path,
                ": .npy shape overflows: ", shape_text);
  const uint64_t want = count * item;
  IDSYNTH_CHECK(want / item == count && size - data_start == want, path, ": .npy data: expected ", want, " bytes for shape ",
                shape_text, " ", descr, ", found ", size - data_start);
  auto dtype = item == 4 ? at::kFloat : at::kDouble;
  auto t = at::empty({shape[0], shape[1]}, at::TensorOptions().dtype(dtype));
  if (want > 0) std::memcpy(t.data_ptr(), p + data_start, want);
  return t.to(at::kFloat);
}

void save_npy(const std::string& path, const at::Tensor& tensor) {
  IDSYNTH_CHECK(tensor.dim() == 1 || tensor.dim() == 2, path, ": save_npy: expected 1 or 2 dims, found ", tensor.dim());
  IDSYNTH_CHECK(tensor.scalar_type() == at::kFloat || tensor.scalar_type() == at::kDouble, path,
                ": save_npy: expected float32 or float64, found ", tensor.scalar_type());
  auto t = tensor.contiguous().cpu();
  std::string shape = tensor.dim() == 1 ? cat("(", t.size(0), ",)") : cat("(", t.size(0), ", ", t.size(1), ")");
  std::string header = cat("{'descr': '", t.scalar_type() == at::kFloat ? "<f4" : "<f8", "', 'fortran_order': False, 'shape': ",
                           shape, ", }");
  // Pad with spaces so that the data starts on a 64-byte boundary, ending with '\n'.
  while ((kMagicSize + 4 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string bytes(kMagic, kMagicSize);
  bytes += '\x01';
  bytes += '\x00';
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>((header.size() >> 8) & 0xff);
  bytes += header;
  bytes.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * t.element_size());
  write_file_atomic(path, bytes);
}

}  // namespace idsynth
