#include "core/tensor_dict.h"

#include "core/check.h"

namespace idsynth {

void TensorDict::insert(const std::string& name, at::Tensor tensor) {
  auto it = index_.find(name);
  if (it != index_.end()) {
    items_[it->second].second = std::move(tensor);
    return;
  }
  index_.emplace(name, items_.size());
  items_.emplace_back(name, std::move(tensor));
}

const at::Tensor* TensorDict::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

const at::Tensor& TensorDict::at(const std::string& name) const {
  const at::Tensor* t = find(name);
  IDSYNTH_CHECK(t != nullptr, source_, ": tensor '", name, "': expected in the file, found no such tensor");
  return *t;
}

int64_t TensorDict::numel() const {
  int64_t n = 0;
  for (const auto& kv : items_) n += kv.second.numel();
  return n;
}

std::string shape_string(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kDouble: return "F64";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default: return c10::toString(type);
  }
}

}  // namespace idsynth
