#include "core/safetensors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "core/check.h"
#include "core/file_util.h"
#include "core/json.h"

namespace idsynth {
namespace {

// Headers of real checkpoints are a few hundred KB; the format's own reader caps them at 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

bool dtype_from_code(const std::string& name, at::ScalarType* out) {
  static const std::pair<const char*, at::ScalarType> table[] = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool},
  };
  for (const auto& entry : table)
    if (name == entry.first) {
      *out = entry.second;
      return true;
    }
  return false;
}

}  // namespace

bool looks_like_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char head[9];
  if (!in.read(reinterpret_cast<char*>(head), 9)) return false;
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(head[i]) << (8 * i);
  return n >= 2 && n <= kMaxHeaderBytes && head[8] == '{';
}

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path), map_(std::make_shared<MappedFile>(path)) {
  const uint64_t size = map_->size();
  IDSYNTH_CHECK(size >= 8, path, ": safetensors header length: expected 8 bytes, found a file of ", size, " bytes");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(map_->data()[i]) << (8 * i);
  IDSYNTH_CHECK(header_len <= kMaxHeaderBytes, path, ": safetensors header length: expected at most ", kMaxHeaderBytes,
                " bytes, found ", header_len);
  IDSYNTH_CHECK(header_len <= size - 8, path, ": safetensors header length: expected at most the ", size - 8,
                " bytes after the length field, found ", header_len, " (truncated file?)");
  data_start_ = 8 + header_len;
  const uint64_t data_size = size - data_start_;

  std::string text(reinterpret_cast<const char*>(map_->data() + 8), header_len);
  json::Value header = json::parse(text, path + " (safetensors header)");
  IDSYNTH_CHECK(header.is_object(), path, ": safetensors header: expected a JSON object, found ", header.type_name());

  for (const auto& [name, entry] : header.as_object()) {
    if (name == "__metadata__") {
      IDSYNTH_CHECK(entry.is_object(), path, ": __metadata__: expected an object of strings, found ", entry.type_name());
      for (const auto& [k, v] : entry.as_object())
        metadata_[k] = v.as_string(cat(path, ": __metadata__.", k));
      continue;
    }
    const std::string where = cat(path, ": tensor '", name, "'");
    IDSYNTH_CHECK(entry.is_object(), where, ": expected an object, found ", entry.type_name());
    SafeTensorInfo info;
    info.name = name;
    const json::Value* dtype = entry.find("dtype");
    IDSYNTH_CHECK(dtype && dtype->is_string(), where, ": dtype: expected a string, found ", dtype ? dtype->type_name() : "nothing");
    IDSYNTH_CHECK(dtype_from_code(dtype->as_string(), &info.dtype), where,
                  ": dtype: expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL, found ", dtype->as_string());
    const json::Value* shape = entry.find("shape");
    IDSYNTH_CHECK(shape && shape->is_array(), where, ": shape: expected an array, found ", shape ? shape->type_name() : "nothing");
    uint64_t numel = 1;
    for (const auto& d : shape->as_array()) {
      int64_t dim = d.as_int(where + ": shape");
      IDSYNTH_CHECK(dim >= 0, where, ": shape: expected non-negative sizes, found ", dim);
      IDSYNTH_CHECK(dim == 0 || numel <= (uint64_t{1} << 62) / static_cast<uint64_t>(dim), where, ": shape: too large");
      numel *= static_cast<uint64_t>(dim);
      info.shape.push_back(dim);
    }
    const json::Value* offsets = entry.find("data_offsets");
    IDSYNTH_CHECK(offsets && offsets->is_array() && offsets->as_array().size() == 2, where,
                  ": data_offsets: expected [begin, end]");
    int64_t b = offsets->as_array()[0].as_int(where + ": data_offsets");
    int64_t e = offsets->as_array()[1].as_int(where + ": data_offsets");
    IDSYNTH_CHECK(b >= 0 && e >= b, where, ": data_offsets: expected 0 <= begin <= end, found [", b, ", ", e, "]");
    info.begin = static_cast<uint64_t>(b);
    info.end = static_cast<uint64_t>(e);
    IDSYNTH_CHECK(info.end <= data_size, where, ": data_offsets: end ", info.end, " is past the ", data_size,
                  " data bytes of the file (truncated file?)");
    const uint64_t nbytes = numel * at::elementSize(info.dtype);
    IDSYNTH_CHECK(info.end - info.begin == nbytes, where, ": data_offsets: expected ", nbytes, " bytes for ",
                  dtype->as_string(), " ", shape_string(info.shape), ", found ", info.end - info.begin);
    infos_.push_back(std::move(info));
  }
  std::sort(infos_.begin(), infos_.end(), [](const SafeTensorInfo& a, const SafeTensorInfo& c) {
    return a.begin != c.begin ? a.begin < c.begin : a.end < c.end;
  });
  for (size_t i = 1; i < infos_.size(); ++i)
    IDSYNTH_CHECK(infos_[i].begin >= infos_[i - 1].end || infos_[i].begin == infos_[i].end ||
                      infos_[i - 1].begin == infos_[i - 1].end,
                  path, ": tensors '", infos_[i - 1].name, "' and '", infos_[i].name, "': expected disjoint data, found overlapping offsets");
}

bool SafeTensorsFile::contains(const std::string& name) const {
  return std::any_of(infos_.begin(), infos_.end(), [&](const SafeTensorInfo& i) { return i.name == name; });
}

at::Tensor SafeTensorsFile::tensor(const std::string& name) const {
  auto it = std::find_if(infos_.begin(), infos_.end(), [&](const SafeTensorInfo& i) { return i.name == name; });
  IDSYNTH_CHECK(it != infos_.end(), path_, ": tensor '", name, "': expected in the file, found no such tensor");
  const uint8_t* ptr = map_->data() + data_start_ + it->begin;
  const auto opts = at::TensorOptions().dtype(it->dtype);
  if (it->end == it->begin) return at::empty(it->shape, opts);
  if (reinterpret_cast<uintptr_t>(ptr) % at::elementSize(it->dtype) != 0) {
    at::Tensor out = at::empty(it->shape, opts);
    std::memcpy(out.data_ptr(), ptr, it->end - it->begin);
    return out;
  }
  auto keep = map_;
  return at::from_blob(const_cast<uint8_t*>(ptr), it->shape, [keep](void*) {}, opts);
}

TensorDict SafeTensorsFile::all() const {
  TensorDict dict;
  dict.set_source(path_);
  for (const auto& info : infos_) dict.insert(info.name, tensor(info.name));
  return dict;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json::Value header = json::Value::object();
  if (!metadata.empty()) {
    json::Value meta = json::Value::object();
    for (const auto& [k, v] : metadata) meta.set(k, v);
    header.set("__metadata__", meta);
  }
  std::vector<at::Tensor> cpu;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    IDSYNTH_CHECK(name != "__metadata__", path, ": tensor name '__metadata__' is reserved");
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    json::Value entry = json::Value::object();
    entry.set("dtype", dtype_name(c.scalar_type()));
    json::Value shape = json::Value::array();
    for (int64_t d : c.sizes()) shape.push_back(d);
    entry.set("shape", shape);
    entry.set("data_offsets", json::Value(json::Value::Array{json::Value(offset), json::Value(offset + nbytes)}));
    header.set(name, entry);
    offset += nbytes;
    cpu.push_back(std::move(c));
  }
  std::string head = header.dump();
  // Pad the header with spaces so the data section starts 8-byte aligned, as the reference writer does.
  while ((8 + head.size()) % 8 != 0) head += ' ';
  std::string bytes;
  bytes.reserve(8 + head.size() + offset);
  const uint64_t n = head.size();
  for (int i = 0; i < 8; ++i) bytes += static_cast<char>((n >> (8 * i)) & 0xFF);
  bytes += head;
  for (const auto& c : cpu) bytes.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  write_file_atomic(path, bytes);
}

void save_safetensors(const std::string& path, const TensorDict& tensors, const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, tensors.items(), metadata);
}

}  // namespace idsynth
