// An ordered name -> tensor map: what every weight reader returns and every loader consumes.
#pragma once

#include <ATen/Tensor.h>

#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace idsynth {

class TensorDict {
 public:
  void insert(const std::string& name, at::Tensor tensor);  // replaces an existing entry
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const at::Tensor* find(const std::string& name) const;
  const at::Tensor& at(const std::string& name) const;  // throws idsynth::Error naming `source()`
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  const std::vector<std::pair<std::string, at::Tensor>>& items() const { return items_; }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

  // The file the tensors came from, for error messages.
  const std::string& source() const { return source_; }
  void set_source(std::string source) { source_ = std::move(source); }

  // Total element count over all tensors.
  int64_t numel() const;

 private:
  std::vector<std::pair<std::string, at::Tensor>> items_;
  std::unordered_map<std::string, size_t> index_;
  std::string source_;
};

// "[320, 4, 3, 3]"
std::string shape_string(at::IntArrayRef shape);
// Safetensors dtype names: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL.
std::string dtype_name(at::ScalarType type);

}  // namespace idsynth
