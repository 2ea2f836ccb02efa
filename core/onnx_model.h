// ONNX import: reads an ONNX ModelProto (graph + initializers) and runs it with libtorch ops on any
// device, so the insightface recognisers and SCRFD detectors run next to the generator instead of in
// a CPU-only side runtime. Covers the operator set of insightface/PyTorch exports (opsets 7–17);
// any other op is an error naming the op type and the node.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor_dict.h"

namespace idsynth {

struct OnnxValueInfo {
  std::string name;
  std::vector<int64_t> shape;  // -1 for a dynamic or unknown dimension
};

struct OnnxNodeInfo {
  std::string name;
  std::string op_type;
};

class OnnxModel {
 public:
  // Parses `path`. Float initializers go to `device` in `dtype` (float32, or float16/bfloat16 for
  // speed); integer tensors (shape arithmetic) stay on the CPU. External-data files are refused.
  explicit OnnxModel(const std::string& path, c10::Device device = c10::kCPU, c10::ScalarType dtype = c10::kFloat);
  // The same from serialized bytes; `source` names the model in errors.
  static OnnxModel from_bytes(const std::string& bytes, const std::string& source, c10::Device device = c10::kCPU,
                              c10::ScalarType dtype = c10::kFloat);
  ~OnnxModel();
  OnnxModel(OnnxModel&&) noexcept;
  OnnxModel& operator=(OnnxModel&&) noexcept;

  // Graph inputs that are not initializers, and graph outputs, in file order.
  const std::vector<OnnxValueInfo>& inputs() const;
  const std::vector<OnnxValueInfo>& outputs() const;
  // Every node of the file (before constant folding), in file order.
  const std::vector<OnnxNodeInfo>& nodes() const;
  int64_t opset() const;
  const std::string& source() const;
  c10::Device device() const;
  c10::ScalarType dtype() const;

  // Runs the graph. `inputs` follow inputs() order; they are moved to the model's device and, when
  // floating point, to its dtype. Outputs follow outputs() order; floating outputs are float32.
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) const;
  // One input, first output.
  at::Tensor forward(const at::Tensor& input) const;

 private:
  struct Impl;
  explicit OnnxModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The initializers of an ONNX file as a TensorDict (CPU, file dtypes), for `idsynth weights`.
TensorDict read_onnx_initializers(const std::string& path);

// True when the first bytes look like a serialized ModelProto (protobuf field 1 ir_version, or an
// early opset/graph field), without parsing the whole file.
bool looks_like_onnx(const std::string& path);

}  // namespace idsynth
