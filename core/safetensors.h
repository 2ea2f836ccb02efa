// safetensors files (https://github.com/huggingface/safetensors, format: 8-byte little-endian
// header length, JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, data).
// The reader memory-maps the file and returns tensors that alias the map; every header field,
// offset and size is validated against the file before any tensor is made.
#pragma once

#include <ATen/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor_dict.h"

namespace idsynth {

class MappedFile;

struct SafeTensorInfo {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

class SafeTensorsFile {
 public:
  explicit SafeTensorsFile(const std::string& path);
  const std::string& path() const { return path_; }
  const std::vector<SafeTensorInfo>& infos() const { return infos_; }  // in file (offset) order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  // A CPU tensor aliasing the mapping (kept alive by the tensor); copied when the data is not
  // aligned to the element size.
  at::Tensor tensor(const std::string& name) const;
  TensorDict all() const;

 private:
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  uint64_t data_start_ = 0;
  std::vector<SafeTensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// True when the first bytes look like a safetensors header (length, then '{').
bool looks_like_safetensors(const std::string& path);

// Writes tensors (any device, contiguous or not) in the given order, atomically.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
void save_safetensors(const std::string& path, const TensorDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace idsynth
