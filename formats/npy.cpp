// Ref: numpy/lib/format.py (see npy.h).
#include "formats/npy.h"

#include <ATen/ATen.h>
#include <zip.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <unistd.h>

#include "core/check.h"
#include "core/file_util.h"

namespace idsynth::formats {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
// Members above this size are refused before any allocation (a 2048x2048 float64 sigma is 32 MiB).
constexpr uint64_t kMaxMemberBytes = uint64_t{4} << 30;

struct DtypeInfo {
  at::ScalarType type;
  size_t itemsize;
};

DtypeInfo parse_descr(const std::string& descr, const std::string& source) {
  // '|' (not applicable) is allowed for one-byte types; '=' means native (little-endian here).
  IDSYNTH_CHECK(descr.size() >= 3, source, ": npy header: descr: expected a type like '<f8', found '", descr, "'");
  const char order = descr[0];
  const std::string code = descr.substr(1);
  IDSYNTH_CHECK(order == '<' || order == '|' || order == '=', source,
                ": npy header: descr: expected little-endian data, found '", descr, "'");
  static const std::vector<std::pair<std::string, DtypeInfo>> table = {
      {"f8", {at::kDouble, 8}}, {"f4", {at::kFloat, 4}}, {"f2", {at::kHalf, 2}},  {"i8", {at::kLong, 8}},
      {"i4", {at::kInt, 4}},    {"i2", {at::kShort, 2}}, {"i1", {at::kChar, 1}}, {"u1", {at::kByte, 1}},
      {"b1", {at::kBool, 1}}};
  for (const auto& [name, info] : table)
    if (code == name) return info;
  std::string accepted;
  for (const auto& e : table) accepted += (accepted.empty() ? "" : ", ") + e.first;
  fail(source, ": npy header: descr: expected one of {", accepted, "}, found '", descr, "'");
}

// The value text after 'key': in the header dict (up to the matching ',' / '}' at depth 0).
std::string header_field(const std::string& header, const std::string& key, const std::string& source) {
  const std::string quoted[] = {"'" + key + "'", "\"" + key + "\""};
  size_t pos = std::string::npos;
  for (const auto& q : quoted)
    if ((pos = header.find(q)) != std::string::npos) {
      pos += q.size();
      break;
    }
  IDSYNTH_CHECK(pos != std::string::npos, source, ": npy header: expected the key '", key, "', found ", header);
  pos = header.find(':', pos);
  IDSYNTH_CHECK(pos != std::string::npos, source, ": npy header: expected ':' after '", key, "'");
  ++pos;
  int depth = 0;
  size_t end = pos;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(' || c == '[') ++depth;
    else if (c == ')' || c == ']') --depth;
    else if ((c == ',' || c == '}') && depth == 0) break;
  }
  std::string v = header.substr(pos, end - pos);
  const auto b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& source) {
  IDSYNTH_CHECK(text.size() >= 2 && text.front() == '(' && text.back() == ')', source,
                ": npy header: shape: expected a tuple, found '", text, "'");
  std::vector<int64_t> shape;
  std::string num;
  for (size_t i = 1; i + 1 <= text.size(); ++i) {
    const char c = i + 1 == text.size() ? ',' : text[i];
    if (c >= '0' && c <= '9') {
      num += c;
      IDSYNTH_CHECK(num.size() <= 15, source, ": npy header: shape: dimension too large in '", text, "'");
    } else if (c == ',') {
      if (!num.empty()) shape.push_back(std::stoll(num));
      num.clear();
    } else {
      IDSYNTH_CHECK(c == ' ' || c == 'L', source, ": npy header: shape: unexpected '", c, "' in '", text, "'");
    }
  }
  return shape;
}

}  // namespace

at::Tensor parse_npy(const std::string& bytes, const std::string& source) {
  // 1. preamble
  IDSYNTH_CHECK(bytes.size() >= kMagicLen + 4 && std::memcmp(bytes.data(), kMagic, kMagicLen) == 0, source,
                ": expected a .npy array (magic \\x93NUMPY), found ", bytes.size(), " bytes without it");
  const auto major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    IDSYNTH_CHECK(bytes.size() >= 12, source, ": npy: truncated header");
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[8 + i]);
    header_start = 12;
  } else {
    fail(source, ": npy: version: expected 1, 2 or 3, found ", static_cast<int>(major));
  }
  IDSYNTH_CHECK(header_len <= bytes.size() - header_start, source, ": npy: header length ", header_len,
                " runs past the end of the data (", bytes.size() - header_start, " bytes left)");
  const std::string header = bytes.substr(header_start, header_len);
  const size_t data_start = header_start + header_len;

  // 2. header dict
  std::string descr = header_field(header, "descr", source);
  IDSYNTH_CHECK(descr.size() >= 2 && (descr.front() == '\'' || descr.front() == '"') && descr.back() == descr.front(),
                source, ": npy header: descr: expected a quoted simple type, found ", descr);
  const DtypeInfo dtype = parse_descr(descr.substr(1, descr.size() - 2), source);
  const std::string fortran = header_field(header, "fortran_order", source);
  IDSYNTH_CHECK(fortran == "False" || fortran == "True", source,
                ": npy header: fortran_order: expected True or False, found '", fortran, "'");
  const std::vector<int64_t> shape = parse_shape(header_field(header, "shape", source), source);

  // 3. data size, overflow-checked
  uint64_t count = 1;
  for (int64_t d : shape) {
    IDSYNTH_CHECK(d >= 0 && (d == 0 || count <= kMaxMemberBytes / static_cast<uint64_t>(d)), source,
                  ": npy: shape too large");
    count *= static_cast<uint64_t>(d);
  }
  const uint64_t nbytes = count * dtype.itemsize;
  IDSYNTH_CHECK(nbytes == bytes.size() - data_start, source, ": npy: expected ", nbytes, " data bytes for shape ",
                shape_string(shape), ", found ", bytes.size() - data_start);

  // 4. copy; Fortran order is the transpose of the reversed C-order shape
  std::vector<int64_t> storage_shape = shape;
  if (fortran == "True") std::reverse(storage_shape.begin(), storage_shape.end());
  at::Tensor t = at::empty(storage_shape, at::TensorOptions().dtype(dtype.type));
  if (nbytes > 0) std::memcpy(t.data_ptr(), bytes.data() + data_start, nbytes);
  if (fortran == "True") {
    std::vector<int64_t> perm;
    for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) perm.push_back(i);
    t = t.permute(perm).contiguous();
  }
  return t;
}

std::string serialize_npy(const at::Tensor& tensor) {
  const at::Tensor t = tensor.to(at::kCPU).contiguous();
  std::string descr;
  switch (t.scalar_type()) {
    case at::kDouble: descr = "<f8"; break;
    case at::kFloat: descr = "<f4"; break;
    case at::kHalf: descr = "<f2"; break;
    case at::kLong: descr = "<i8"; break;
    case at::kInt: descr = "<i4"; break;
    case at::kShort: descr = "<i2"; break;
    case at::kChar: descr = "|i1"; break;
    case at::kByte: descr = "|u1"; break;
    case at::kBool: descr = "|b1"; break;
    default: fail("npy: cannot store dtype ", dtype_name(t.scalar_type()));
  }
  std::string shape = "(";
  for (int64_t d : t.sizes()) shape += std::to_string(d) + ", ";
  if (t.dim() == 1) shape.resize(shape.size() - 1);       // "(2048,)"
  else if (t.dim() > 1) shape.resize(shape.size() - 2);   // "(2048, 2048)"
  shape += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
  const size_t total = kMagicLen + 4 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out(kMagic, kMagicLen);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xFF);
  out += static_cast<char>((header.size() >> 8) & 0xFF);
  out += header;
  out.append(static_cast<const char*>(t.data_ptr()), t.nbytes());
  return out;
}

at::Tensor read_npy(const std::string& path) {
  const MappedFile file(path);
  return parse_npy(std::string(reinterpret_cast<const char*>(file.data()), file.size()), path);
}

at::Tensor read_npy_matrix(const std::string& path) {
  at::Tensor t = read_npy(path);
  IDSYNTH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, path,
                ": .npy descr: expected float32 or float64, found ", dtype_name(t.scalar_type()));
  IDSYNTH_CHECK(t.dim() == 1 || t.dim() == 2, path, ": .npy shape: expected a 1-D or 2-D array, found ", t.dim(),
                " dims");
  if (t.dim() == 1) t = t.unsqueeze(0);
  return t.to(at::kFloat).contiguous();
}

void save_npy(const std::string& path, const at::Tensor& tensor) { write_file_atomic(path, serialize_npy(tensor)); }

TensorDict read_npz(const std::string& path) {
  int err = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_RDONLY, &err);
  if (za == nullptr) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    const std::string why = zip_error_strerror(&ze);
    zip_error_fini(&ze);
    fail(path, ": expected an .npz (zip) archive: ", why);
  }
  std::unique_ptr<zip_t, decltype(&zip_discard)> guard(za, zip_discard);
  TensorDict out;
  out.set_source(path);
  const zip_int64_t n = zip_get_num_entries(za, 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    IDSYNTH_CHECK(zip_stat_index(za, static_cast<zip_uint64_t>(i), 0, &st) == 0 && (st.valid & ZIP_STAT_NAME) &&
                      (st.valid & ZIP_STAT_SIZE),
                  path, ": member ", i, ": unreadable zip entry");
    std::string name = st.name;
    IDSYNTH_CHECK(st.size <= kMaxMemberBytes, path, ": ", name, ": member of ", st.size, " bytes is too large");
    zip_file_t* zf = zip_fopen_index(za, static_cast<zip_uint64_t>(i), 0);
    IDSYNTH_CHECK(zf != nullptr, path, ": ", name, ": cannot open member: ", zip_strerror(za));
    // Read in chunks: the member's size in the zip header is not trusted for one allocation (a
    // 100-byte archive may claim 4 GiB); the buffer grows with the bytes that actually arrive.
    std::string bytes;
    zip_int64_t got = 0;
    while (static_cast<zip_uint64_t>(got) < st.size) {
      const zip_uint64_t chunk = std::min<zip_uint64_t>(st.size - static_cast<zip_uint64_t>(got), zip_uint64_t{1} << 20);
      bytes.resize(static_cast<size_t>(got) + static_cast<size_t>(chunk));
      const zip_int64_t r = zip_fread(zf, bytes.data() + got, chunk);
      if (r <= 0) {
        if (r < 0) got = -1;
        break;
      }
      got += r;
    }
    const std::string read_error = got < 0 ? zip_file_strerror(zf) : "";
    zip_fclose(zf);
    IDSYNTH_CHECK(got == static_cast<zip_int64_t>(st.size), path, ": ", name, ": expected ", st.size,
                  " bytes, read ", got, " ", read_error);
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) name.resize(name.size() - 4);
    out.insert(name, parse_npy(bytes, path + ":" + st.name));
  }
  return out;
}

void write_npz(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& arrays,
               bool compress) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::remove(tmp.c_str());
  int err = 0;
  zip_t* za = zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  IDSYNTH_CHECK(za != nullptr, path, ": cannot create the archive (zip error ", err, ")");
  // libzip reads the buffers at zip_close, so they must outlive it.
  std::vector<std::string> blobs;
  blobs.reserve(arrays.size());
  for (const auto& [name, tensor] : arrays) {
    blobs.push_back(serialize_npy(tensor));
    zip_source_t* src = zip_source_buffer(za, blobs.back().data(), blobs.back().size(), 0);
    const zip_int64_t idx = src == nullptr ? -1 : zip_file_add(za, (name + ".npy").c_str(), src, ZIP_FL_OVERWRITE);
    if (idx < 0) {
      if (src != nullptr) zip_source_free(src);
      const std::string why = zip_strerror(za);
      zip_discard(za);
      fail(path, ": ", name, ": cannot add to the archive: ", why);
    }
    zip_set_file_compression(za, static_cast<zip_uint64_t>(idx), compress ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0);
  }
  if (zip_close(za) != 0) {
    const std::string why = zip_strerror(za);
    zip_discard(za);
    std::remove(tmp.c_str());
    fail(path, ": cannot write the archive: ", why);
  }
  IDSYNTH_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, path, ": cannot rename ", tmp, " into place");
}

}  // namespace idsynth::formats
