// ONNX graph import and execution with libtorch ops.
// Ref: onnx/docs/Operators.md (opsets 7–17) for every operator's attributes and defaults.
#include "core/onnx_model.h"

#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "core/check.h"
#include "core/invariant_kernels.h"
#include "core/log.h"

namespace idsynth {

namespace {

using at::Tensor;

// ---------------------------------------------------------------------------------------------
// Tensors from TensorProto

at::ScalarType scalar_type_of(int32_t onnx_type, const std::string& where) {
  switch (onnx_type) {
    case onnx::TensorProto::FLOAT: return at::kFloat;
    case onnx::TensorProto::UINT8: return at::kByte;
    case onnx::TensorProto::INT8: return at::kChar;
    case onnx::TensorProto::INT16: return at::kShort;
    case onnx::TensorProto::INT32: return at::kInt;
    case onnx::TensorProto::INT64: return at::kLong;
    case onnx::TensorProto::BOOL: return at::kBool;
    case onnx::TensorProto::FLOAT16: return at::kHalf;
    case onnx::TensorProto::DOUBLE: return at::kDouble;
    case onnx::TensorProto::BFLOAT16: return at::kBFloat16;
    default: fail(where, ": data type: expected a numeric ONNX type, found type id ", onnx_type);
  }
}

Tensor tensor_from_proto(const onnx::TensorProto& t, const std::string& where) {
  IDSYNTH_CHECK(t.data_location() != onnx::TensorProto::EXTERNAL, where,
                ": data is stored in an external file; idsynth reads self-contained ONNX files only "
                "(re-save with onnx.save_model(model, path, save_as_external_data=False))");
  const at::ScalarType type = scalar_type_of(t.data_type(), where);
  std::vector<int64_t> shape;
  int64_t numel = 1;
  for (int64_t d : t.dims()) {
    IDSYNTH_CHECK(d >= 0 && (d == 0 || numel <= std::numeric_limits<int64_t>::max() / d), where,
                  ": dims: expected non-negative sizes with a representable product, found ", d);
    shape.push_back(d);
    numel *= d;
  }
  const size_t elem = at::elementSize(type);
  // The values present must match the dims before anything is allocated: the dims alone may claim
  // any size (fuzz_onnx: 33 GB asked for by a 180 KB file).
  if (t.has_raw_data()) {
    const std::string& raw = t.raw_data();
    const bool fits = static_cast<uint64_t>(numel) <= std::numeric_limits<uint64_t>::max() / elem;
    IDSYNTH_CHECK(fits && raw.size() == static_cast<size_t>(numel) * elem, where, ": raw_data: expected ",
                  fits ? cat(static_cast<size_t>(numel) * elem) : std::string("an unrepresentable number of"),
                  " bytes for shape ", shape_string(shape), ", found ", raw.size());
    Tensor out = at::empty(shape, at::TensorOptions().dtype(type));
    if (numel > 0) std::memcpy(out.data_ptr(), raw.data(), raw.size());
    return out;
  }
  auto check_count = [&](int64_t n, const char* field) {
    IDSYNTH_CHECK(n == numel, where, ": ", field, ": expected ", numel, " values for shape ", shape_string(shape),
                  ", found ", n);
  };
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: check_count(t.float_data_size(), "float_data"); break;
    case onnx::TensorProto::DOUBLE: check_count(t.double_data_size(), "double_data"); break;
    case onnx::TensorProto::INT64: check_count(t.int64_data_size(), "int64_data"); break;
    default: check_count(t.int32_data_size(), "int32_data");
  }
  Tensor out = at::empty(shape, at::TensorOptions().dtype(type));
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT:
      if (numel > 0) std::memcpy(out.data_ptr(), t.float_data().data(), numel * sizeof(float));
      break;
    case onnx::TensorProto::DOUBLE:
      if (numel > 0) std::memcpy(out.data_ptr(), t.double_data().data(), numel * sizeof(double));
      break;
    case onnx::TensorProto::INT64:
      if (numel > 0) std::memcpy(out.data_ptr(), t.int64_data().data(), numel * sizeof(int64_t));
      break;
    default: {
      // int32_data carries every narrower type, one value (or 16-bit pattern) per entry.
      auto* bytes = static_cast<uint8_t*>(out.data_ptr());
      for (int64_t i = 0; i < numel; ++i) {
        const int32_t v = t.int32_data(static_cast<int>(i));
        if (elem == 4) {
          std::memcpy(bytes + 4 * i, &v, 4);
        } else if (elem == 2) {
          const uint16_t b = static_cast<uint16_t>(v);
          std::memcpy(bytes + 2 * i, &b, 2);
        } else {
          bytes[i] = static_cast<uint8_t>(v);
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Node context: inputs, attributes, errors that name the node

struct Ctx {
  const onnx::NodeProto& node;
  const std::vector<Tensor>& in;
  int64_t opset;
  const std::string& source;
  at::ScalarType float_type;  // the model's floating dtype

  std::string where() const { return cat(source, ": node '", node.name(), "' (", node.op_type(), ")"); }
  [[noreturn]] void error(const std::string& what) const { fail(where(), ": ", what); }

  bool has(size_t i) const { return i < in.size() && in[i].defined(); }
  const Tensor& input(size_t i) const {
    if (!has(i)) error(cat("input ", i, ": expected a tensor, found none"));
    return in[i];
  }
  const onnx::AttributeProto* attr(const char* name) const {
    for (const auto& a : node.attribute())
      if (a.name() == name) return &a;
    return nullptr;
  }
  int64_t i(const char* name, int64_t def) const {
    const auto* a = attr(name);
    return a ? a->i() : def;
  }
  float f(const char* name, float def) const {
    const auto* a = attr(name);
    return a ? a->f() : def;
  }
  std::string s(const char* name, const std::string& def) const {
    const auto* a = attr(name);
    return a ? a->s() : def;
  }
  std::vector<int64_t> ints(const char* name, std::vector<int64_t> def = {}) const {
    const auto* a = attr(name);
    return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : def;
  }
  std::vector<float> floats(const char* name) const {
    const auto* a = attr(name);
    return a ? std::vector<float>(a->floats().begin(), a->floats().end()) : std::vector<float>{};
  }
};

std::vector<int64_t> to_ints(const Tensor& t) {
  Tensor c = t.to(at::kCPU).to(at::kLong).contiguous().reshape({-1});
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::vector<double> to_doubles(const Tensor& t) {
  Tensor c = t.to(at::kCPU).to(at::kDouble).contiguous().reshape({-1});
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

int64_t norm_axis(const Ctx& c, int64_t axis, int64_t rank) {
  const int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= std::max<int64_t>(rank, 1)) c.error(cat("axis: expected within rank ", rank, ", found ", axis));
  return a;
}

// Two operands on one device (CPU integer shape tensors meet device tensors) and one dtype family.
std::pair<Tensor, Tensor> align_operands(Tensor a, Tensor b) {
  if (a.device() != b.device()) {
    if (a.is_cpu())
      a = a.to(b.device());
    else
      b = b.to(a.device());
  }
  if (a.is_floating_point() && !b.is_floating_point()) b = b.to(a.scalar_type());
  if (b.is_floating_point() && !a.is_floating_point()) a = a.to(b.scalar_type());
  return {a, b};
}

// Spatial padding [x1_begin, x2_begin, ..., x1_end, x2_end] from pads / auto_pad.
std::vector<int64_t> spatial_pads(const Ctx& c, const Tensor& x, const std::vector<int64_t>& kernel,
                                  const std::vector<int64_t>& strides, const std::vector<int64_t>& dilations) {
  const size_t n = kernel.size();
  std::vector<int64_t> pads = c.ints("pads", std::vector<int64_t>(2 * n, 0));
  if (pads.size() != 2 * n) c.error(cat("pads: expected ", 2 * n, " values, found ", pads.size()));
  const std::string auto_pad = c.s("auto_pad", "NOTSET");
  if (auto_pad == "VALID") {
    std::fill(pads.begin(), pads.end(), 0);
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (size_t i = 0; i < n; ++i) {
      const int64_t in = x.size(static_cast<int64_t>(i) + 2);
      const int64_t out = (in + strides[i] - 1) / strides[i];
      const int64_t total = std::max<int64_t>(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in);
      const int64_t small = total / 2;
      pads[i] = auto_pad == "SAME_UPPER" ? small : total - small;
      pads[i + n] = total - pads[i];
    }
  } else if (auto_pad != "NOTSET" && !auto_pad.empty()) {
    c.error(cat("auto_pad: expected NOTSET, VALID, SAME_UPPER or SAME_LOWER, found '", auto_pad, "'"));
  }
  return pads;
}

bool symmetric(const std::vector<int64_t>& pads) {
  const size_t n = pads.size() / 2;
  for (size_t i = 0; i < n; ++i)
    if (pads[i] != pads[i + n]) return false;
  return true;
}

// at::constant_pad_nd wants the last dimension first.
Tensor pad_explicit(const Tensor& x, const std::vector<int64_t>& pads, double value) {
  const size_t n = pads.size() / 2;
  std::vector<int64_t> p;
  for (size_t i = n; i-- > 0;) {
    p.push_back(pads[i]);
    p.push_back(pads[i + n]);
  }
  return at::constant_pad_nd(x, p, value);
}

void require_2d(const Ctx& c, const Tensor& x) {
  if (x.dim() != 4) c.error(cat("input: expected a 4-D NCHW tensor, found shape ", shape_string(x.sizes())));
}

// ---------------------------------------------------------------------------------------------
// Operators

using Outputs = std::vector<Tensor>;
using OpFn = std::function<Outputs(const Ctx&)>;

Outputs op_conv(const Ctx& c) {
  const Tensor& x = c.input(0);
  const Tensor& w = c.input(1);
  const Tensor b = c.has(2) ? c.in[2] : Tensor();
  if (x.dim() < 3) c.error(cat("input: expected N, C and spatial dims, found ", shape_string(x.sizes())));
  const size_t n = static_cast<size_t>(x.dim() - 2);
  std::vector<int64_t> kernel = c.ints("kernel_shape", std::vector<int64_t>(w.sizes().begin() + 2, w.sizes().end()));
  std::vector<int64_t> strides = c.ints("strides", std::vector<int64_t>(n, 1));
  std::vector<int64_t> dilations = c.ints("dilations", std::vector<int64_t>(n, 1));
  std::vector<int64_t> pads = spatial_pads(c, x, kernel, strides, dilations);
  Tensor input = x;
  std::vector<int64_t> padding(pads.begin(), pads.begin() + static_cast<std::ptrdiff_t>(n));
  if (!symmetric(pads)) {
    input = pad_explicit(x, pads, 0.0);
    std::fill(padding.begin(), padding.end(), 0);
  }
  // 2-D: the batch-invariant kernel (core/invariant_kernels.h), so a face's embedding does not
  // depend on the batch it is embedded in.
  if (n == 2) return {kernels::conv2d(input, w, b, strides, padding, dilations, c.i("group", 1))};
  return {at::convolution(input, w, b, strides, padding, dilations, false, std::vector<int64_t>(n, 0),
                          c.i("group", 1))};
}

Outputs op_batchnorm(const Ctx& c) {
  return {at::batch_norm(c.input(0), c.input(1), c.input(2), c.input(3), c.input(4), false, 0.0,
                         c.f("epsilon", 1e-5f), true)};
}

Outputs op_prelu(const Ctx& c) {
  const Tensor& x = c.input(0);
  const Tensor& slope = c.input(1);
  // Per-channel slopes ([C], for 2-D input, or [C, 1, 1] for NCHW) map to at::prelu.
  if (x.dim() >= 2 && slope.numel() == x.size(1) && slope.dim() == x.dim() - 1 &&
      slope.numel() == slope.size(0))
    return {at::prelu(x, slope.reshape({-1}))};
  if (x.dim() == 2 && slope.dim() == 1 && slope.numel() == x.size(1)) return {at::prelu(x, slope)};
  return {at::where(x >= 0, x, x * slope)};
}

template <Tensor (*F)(const Tensor&)>
Outputs op_unary(const Ctx& c) {
  return {F(c.input(0))};
}

Outputs op_leaky_relu(const Ctx& c) { return {at::leaky_relu(c.input(0), c.f("alpha", 0.01f))}; }

Outputs op_clip(const Ctx& c) {
  const Tensor& x = c.input(0);
  if (c.opset < 11) {
    return {at::clamp(x, c10::optional<at::Scalar>(at::Scalar(c.f("min", -std::numeric_limits<float>::infinity()))),
                      c10::optional<at::Scalar>(at::Scalar(c.f("max", std::numeric_limits<float>::infinity()))))};
  }
  c10::optional<at::Scalar> lo, hi;
  if (c.has(1)) lo = at::Scalar(to_doubles(c.in[1]).at(0));
  if (c.has(2)) hi = at::Scalar(to_doubles(c.in[2]).at(0));
  return {at::clamp(x, lo, hi)};
}

Outputs op_binary(const Ctx& c) {
  auto [a, b] = align_operands(c.input(0), c.input(1));
  const std::string& op = c.node.op_type();
  if (op == "Add") return {a + b};
  if (op == "Sub") return {a - b};
  if (op == "Mul") return {a * b};
  if (op == "Pow") return {at::pow(a, b)};
  // Div: integers truncate (C semantics), floats divide.
  if (a.is_floating_point()) return {a / b};
  return {at::div(a, b, "trunc")};
}

Outputs op_flatten(const Ctx& c) {
  const Tensor& x = c.input(0);
  const int64_t axis = c.i("axis", 1) < 0 ? c.i("axis", 1) + x.dim() : c.i("axis", 1);
  if (axis < 0 || axis > x.dim()) c.error(cat("axis: expected within [0, ", x.dim(), "], found ", c.i("axis", 1)));
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.size(d);
  return {x.reshape({outer, outer == 0 ? 0 : x.numel() / std::max<int64_t>(outer, 1)})};
}

Outputs op_gemm(const Ctx& c) {
  Tensor a = c.input(0), b = c.input(1);
  if (a.dim() != 2 || b.dim() != 2) c.error("inputs: expected 2-D A and B");
  if (c.i("transA", 0)) a = a.t();
  if (c.i("transB", 0)) b = b.t();
  const double alpha = c.f("alpha", 1.0f), beta = c.f("beta", 1.0f);
  // A plain layer (y = a·b + bias per row): the batch-invariant kernel, as Conv.
  if (alpha == 1.0 && beta == 1.0 && kernels::onednn_inference(a, b) && (!c.has(2) || c.in[2].numel() == b.size(1)) &&
      (!c.has(2) || c.in[2].dim() == 1 || (c.in[2].dim() == 2 && c.in[2].size(0) == 1)))
    return {kernels::linear(a, b.t(), c.has(2) ? c.in[2].reshape({-1}) : Tensor())};
  if (c.has(2)) return {at::addmm(c.in[2], a, b, beta, alpha)};
  Tensor y = at::mm(a, b);
  return {alpha == 1.0 ? y : y * alpha};
}

Outputs op_matmul(const Ctx& c) {
  auto [a, b] = align_operands(c.input(0), c.input(1));
  if (a.dim() == 2 && b.dim() == 2 && kernels::onednn_inference(a, b)) return {kernels::linear(a, b.t(), Tensor())};
  return {at::matmul(a, b)};
}

Outputs op_reshape(const Ctx& c) {
  const Tensor& x = c.input(0);
  std::vector<int64_t> shape = c.opset < 5 ? c.ints("shape") : to_ints(c.input(1));
  const bool allowzero = c.i("allowzero", 0) != 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0 && !allowzero) {
      if (static_cast<int64_t>(i) >= x.dim()) c.error(cat("shape[", i, "] = 0 copies a dimension the input lacks"));
      shape[i] = x.size(static_cast<int64_t>(i));
    }
  }
  return {x.reshape(shape)};
}

Outputs op_transpose(const Ctx& c) {
  const Tensor& x = c.input(0);
  std::vector<int64_t> perm = c.ints("perm");
  if (perm.empty())
    for (int64_t d = x.dim(); d-- > 0;) perm.push_back(d);
  if (static_cast<int64_t>(perm.size()) != x.dim())
    c.error(cat("perm: expected ", x.dim(), " entries, found ", perm.size()));
  return {x.permute(perm)};
}

Outputs op_concat(const Ctx& c) {
  std::vector<Tensor> parts;
  c10::Device device = c10::kCPU;
  bool floating = false;
  for (const auto& t : c.in) {
    if (!t.defined()) continue;
    if (!t.is_cpu()) device = t.device();
    floating = floating || t.is_floating_point();
    parts.push_back(t);
  }
  if (parts.empty()) c.error("inputs: expected at least one tensor");
  for (auto& t : parts) {
    t = t.to(device);
    if (floating && !t.is_floating_point()) t = t.to(c.float_type);
  }
  return {at::cat(parts, norm_axis(c, c.i("axis", 0), parts[0].dim()))};
}

// Nearest-neighbour source index of each output position along one dimension.
Tensor nearest_indices(const Ctx& c, int64_t in, int64_t out, double scale, const std::string& ctm,
                       const std::string& nearest_mode) {
  std::vector<int64_t> idx(static_cast<size_t>(out));
  for (int64_t i = 0; i < out; ++i) {
    double x;
    if (ctm == "asymmetric") {
      x = i / scale;
    } else if (ctm == "half_pixel") {
      x = (i + 0.5) / scale - 0.5;
    } else if (ctm == "pytorch_half_pixel") {
      x = out > 1 ? (i + 0.5) / scale - 0.5 : 0.0;
    } else if (ctm == "align_corners") {
      x = out == 1 ? 0.0 : static_cast<double>(i) * (in - 1) / (out - 1);
    } else if (ctm == "tf_half_pixel_for_nn") {
      x = (i + 0.5) / scale;
    } else {
      c.error(cat("coordinate_transformation_mode: expected asymmetric, half_pixel, pytorch_half_pixel, "
                  "align_corners or tf_half_pixel_for_nn, found '", ctm, "'"));
    }
    double r;
    if (nearest_mode == "floor") {
      r = std::floor(x);
    } else if (nearest_mode == "ceil") {
      r = std::ceil(x);
    } else if (nearest_mode == "round_prefer_floor") {
      r = x == std::floor(x) + 0.5 ? std::floor(x) : std::round(x);
    } else if (nearest_mode == "round_prefer_ceil") {
      r = std::floor(x + 0.5);
    } else {
      c.error(cat("nearest_mode: expected floor, ceil, round_prefer_floor or round_prefer_ceil, found '",
                  nearest_mode, "'"));
    }
    idx[static_cast<size_t>(i)] = std::min<int64_t>(std::max<int64_t>(static_cast<int64_t>(r), 0), in - 1);
  }
  return at::tensor(idx, at::kLong);
}

Outputs op_resize(const Ctx& c) {
  const Tensor& x = c.input(0);
  const bool upsample = c.node.op_type() == "Upsample";
  const std::string mode = c.s("mode", "nearest");
  if (mode != "nearest") c.error(cat("mode: only 'nearest' is supported, found '", mode, "'"));
  // Upsample (opset 7–9) is Resize with asymmetric coordinates and floor rounding.
  const std::string ctm = upsample ? "asymmetric" : c.s("coordinate_transformation_mode", c.opset >= 11 ? "half_pixel" : "asymmetric");
  const std::string nearest_mode = upsample || c.opset < 11 ? "floor" : c.s("nearest_mode", "round_prefer_floor");
  std::vector<double> scales;
  std::vector<int64_t> sizes;
  if (upsample && c.opset < 9) {
    for (float f : c.floats("scales")) scales.push_back(f);
  } else if (upsample || c.opset < 11) {
    scales = to_doubles(c.input(1));
  } else {
    if (c.has(2) && c.in[2].numel() > 0) scales = to_doubles(c.in[2]);
    if (c.has(3) && c.in[3].numel() > 0) sizes = to_ints(c.in[3]);
  }
  const int64_t rank = x.dim();
  if (!sizes.empty() && static_cast<int64_t>(sizes.size()) != rank)
    c.error(cat("sizes: expected ", rank, " values, found ", sizes.size()));
  if (sizes.empty() && static_cast<int64_t>(scales.size()) != rank)
    c.error(cat("scales: expected ", rank, " values (or sizes), found ", scales.size()));
  Tensor y = x;
  for (int64_t d = 0; d < rank; ++d) {
    const int64_t in = x.size(d);
    const int64_t out = sizes.empty() ? static_cast<int64_t>(std::floor(in * scales[static_cast<size_t>(d)]))
                                      : sizes[static_cast<size_t>(d)];
    if (out == in && (sizes.empty() ? scales[static_cast<size_t>(d)] == 1.0 : true)) continue;
    if (out <= 0) c.error(cat("output size along dim ", d, ": expected > 0, found ", out));
    const double scale = sizes.empty() ? scales[static_cast<size_t>(d)] : static_cast<double>(out) / in;
    y = y.index_select(d, nearest_indices(c, in, out, scale, ctm, nearest_mode).to(y.device()));
  }
  return {y};
}

Outputs op_maxpool(const Ctx& c) {
  const Tensor& x = c.input(0);
  require_2d(c, x);
  const std::vector<int64_t> kernel = c.ints("kernel_shape");
  if (kernel.size() != 2) c.error("kernel_shape: expected 2 values");
  const std::vector<int64_t> strides = c.ints("strides", {1, 1});
  const std::vector<int64_t> dilations = c.ints("dilations", {1, 1});
  const std::vector<int64_t> pads = spatial_pads(c, x, kernel, strides, dilations);
  const bool ceil_mode = c.i("ceil_mode", 0) != 0;
  if (c.node.output_size() > 1 && !c.node.output(1).empty()) c.error("output 'Indices' is not supported");
  const bool torch_padding_ok = symmetric(pads) && pads[0] * 2 <= kernel[0] && pads[1] * 2 <= kernel[1];
  if (torch_padding_ok) return {at::max_pool2d(x, kernel, strides, {pads[0], pads[1]}, dilations, ceil_mode)};
  return {at::max_pool2d(pad_explicit(x, pads, -std::numeric_limits<double>::infinity()), kernel, strides, {0, 0},
                         dilations, ceil_mode)};
}

Outputs op_avgpool(const Ctx& c) {
  const Tensor& x = c.input(0);
  require_2d(c, x);
  const std::vector<int64_t> kernel = c.ints("kernel_shape");
  if (kernel.size() != 2) c.error("kernel_shape: expected 2 values");
  const std::vector<int64_t> strides = c.ints("strides", {1, 1});
  const std::vector<int64_t> pads = spatial_pads(c, x, kernel, strides, {1, 1});
  const bool ceil_mode = c.i("ceil_mode", 0) != 0;
  const bool include_pad = c.i("count_include_pad", 0) != 0;
  if (symmetric(pads) && pads[0] * 2 <= kernel[0] && pads[1] * 2 <= kernel[1])
    return {at::avg_pool2d(x, kernel, strides, {pads[0], pads[1]}, ceil_mode, include_pad)};
  // Asymmetric padding: pool the zero-padded input, and divide by the pooled valid-pixel mask
  // when padding must not count.
  const Tensor padded = pad_explicit(x, pads, 0.0);
  Tensor sum = at::avg_pool2d(padded, kernel, strides, {0, 0}, ceil_mode, true);
  if (include_pad) return {sum};
  const Tensor ones = pad_explicit(at::ones_like(x.select(1, 0).unsqueeze(1)), pads, 0.0);
  return {sum / at::avg_pool2d(ones, kernel, strides, {0, 0}, ceil_mode, true)};
}

Outputs op_global_pool(const Ctx& c) {
  const Tensor& x = c.input(0);
  std::vector<int64_t> dims;
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  if (c.node.op_type() == "GlobalMaxPool") return {at::amax(x, dims, true)};
  return {at::mean(x, dims, true)};
}

Outputs op_softmax(const Ctx& c) {
  const Tensor& x = c.input(0);
  if (c.opset >= 13) return {at::softmax(x, norm_axis(c, c.i("axis", -1), x.dim()))};
  // Before opset 13 the input is coerced to 2-D at `axis`.
  const int64_t axis = norm_axis(c, c.i("axis", 1), x.dim());
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.size(d);
  return {at::softmax(x.reshape({outer, -1}), 1).reshape(x.sizes())};
}

Outputs op_shape(const Ctx& c) {
  const Tensor& x = c.input(0);
  const int64_t rank = x.dim();
  int64_t start = c.i("start", 0), end = c.i("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, start, rank);
  std::vector<int64_t> dims(x.sizes().begin() + start, x.sizes().begin() + end);
  return {at::tensor(dims, at::kLong)};
}

Outputs op_gather(const Ctx& c) {
  const Tensor& x = c.input(0);
  Tensor idx = c.input(1).to(at::kLong);
  const int64_t axis = norm_axis(c, c.i("axis", 0), x.dim());
  idx = at::where(idx < 0, idx + x.size(axis), idx);
  Tensor out = x.index_select(axis, idx.reshape({-1}).to(x.device()));
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().begin() + axis);
  for (int64_t s : idx.sizes()) shape.push_back(s);
  shape.insert(shape.end(), x.sizes().begin() + axis + 1, x.sizes().end());
  return {out.reshape(shape)};
}

std::vector<int64_t> axes_of(const Ctx& c) {
  if (c.opset >= 13) return c.has(1) ? to_ints(c.in[1]) : std::vector<int64_t>{};
  return c.ints("axes");
}

Outputs op_unsqueeze(const Ctx& c) {
  Tensor x = c.input(0);
  std::vector<int64_t> axes = axes_of(c);
  const int64_t out_rank = x.dim() + static_cast<int64_t>(axes.size());
  for (auto& a : axes) a = norm_axis(c, a, out_rank);
  std::sort(axes.begin(), axes.end());
  for (int64_t a : axes) x = x.unsqueeze(a);
  return {x};
}

Outputs op_squeeze(const Ctx& c) {
  Tensor x = c.input(0);
  std::vector<int64_t> axes = axes_of(c);
  if (axes.empty()) return {x.squeeze()};
  for (auto& a : axes) a = norm_axis(c, a, x.dim());
  std::sort(axes.rbegin(), axes.rend());
  for (int64_t a : axes) {
    if (x.size(a) != 1) c.error(cat("axes: dimension ", a, " has size ", x.size(a), ", expected 1"));
    x = x.squeeze(a);
  }
  return {x};
}

Outputs op_slice(const Ctx& c) {
  Tensor x = c.input(0);
  std::vector<int64_t> starts, ends, axes, steps;
  if (c.opset < 10) {
    starts = c.ints("starts");
    ends = c.ints("ends");
    axes = c.ints("axes");
  } else {
    starts = to_ints(c.input(1));
    ends = to_ints(c.input(2));
    if (c.has(3)) axes = to_ints(c.in[3]);
    if (c.has(4)) steps = to_ints(c.in[4]);
  }
  if (ends.size() != starts.size()) c.error("starts and ends: expected equal lengths");
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (axes.size() != starts.size() || steps.size() != starts.size())
    c.error("axes and steps: expected one per start");
  for (size_t i = 0; i < starts.size(); ++i) {
    const int64_t axis = norm_axis(c, axes[i], x.dim());
    const int64_t dim = x.size(axis);
    if (steps[i] <= 0) c.error(cat("steps: only positive steps are supported, found ", steps[i]));
    int64_t s = starts[i] < 0 ? starts[i] + dim : starts[i];
    int64_t e = ends[i] < 0 ? ends[i] + dim : ends[i];
    s = std::clamp<int64_t>(s, 0, dim);
    e = std::clamp<int64_t>(e, 0, dim);
    x = x.slice(axis, s, std::max(s, e), steps[i]);
  }
  return {x};
}

Outputs op_cast(const Ctx& c) {
  at::ScalarType to = scalar_type_of(static_cast<int32_t>(c.i("to", onnx::TensorProto::FLOAT)), c.where());
  // A float32 cast inside a half-precision model keeps the model's precision.
  if (to == at::kFloat) to = c.float_type;
  return {c.input(0).to(to)};
}

Outputs op_constant(const Ctx& c) {
  if (const auto* a = c.attr("value")) return {tensor_from_proto(a->t(), c.where() + ": value")};
  if (const auto* a = c.attr("value_float")) return {at::scalar_tensor(a->f(), at::kFloat)};
  if (const auto* a = c.attr("value_int")) return {at::scalar_tensor(a->i(), at::kLong)};
  if (const auto* a = c.attr("value_floats"))
    return {at::tensor(std::vector<float>(a->floats().begin(), a->floats().end()), at::kFloat)};
  if (const auto* a = c.attr("value_ints"))
    return {at::tensor(std::vector<int64_t>(a->ints().begin(), a->ints().end()), at::kLong)};
  c.error("attribute: expected value, value_float(s) or value_int(s)");
}

Outputs op_constant_of_shape(const Ctx& c) {
  const std::vector<int64_t> shape = to_ints(c.input(0));
  Tensor value = at::zeros({1}, at::kFloat);
  if (const auto* a = c.attr("value")) value = tensor_from_proto(a->t(), c.where() + ": value");
  return {at::full(shape, value.reshape({-1})[0].item(), at::TensorOptions().dtype(value.scalar_type()))};
}

Outputs op_identity(const Ctx& c) {
  Outputs out{c.input(0)};
  // Dropout's optional mask output: everything kept at inference.
  if (c.node.op_type() == "Dropout" && c.node.output_size() > 1)
    out.push_back(at::ones(c.input(0).sizes(), at::TensorOptions().dtype(at::kBool).device(c.input(0).device())));
  return out;
}

const std::map<std::string, OpFn>& op_table() {
  static const std::map<std::string, OpFn> table = {
      {"Conv", op_conv},
      {"BatchNormalization", op_batchnorm},
      {"PRelu", op_prelu},
      {"Relu", op_unary<at::relu>},
      {"Sigmoid", op_unary<at::sigmoid>},
      {"Tanh", op_unary<at::tanh>},
      {"Exp", op_unary<at::exp>},
      {"Sqrt", op_unary<at::sqrt>},
      {"Neg", op_unary<at::neg>},
      {"Floor", op_unary<at::floor>},
      {"Ceil", op_unary<at::ceil>},
      {"LeakyRelu", op_leaky_relu},
      {"Clip", op_clip},
      {"Add", op_binary},
      {"Sub", op_binary},
      {"Mul", op_binary},
      {"Div", op_binary},
      {"Pow", op_binary},
      {"Flatten", op_flatten},
      {"Gemm", op_gemm},
      {"MatMul", op_matmul},
      {"Reshape", op_reshape},
      {"Transpose", op_transpose},
      {"Concat", op_concat},
      {"Resize", op_resize},
      {"Upsample", op_resize},
      {"MaxPool", op_maxpool},
      {"AveragePool", op_avgpool},
      {"GlobalAveragePool", op_global_pool},
      {"GlobalMaxPool", op_global_pool},
      {"Softmax", op_softmax},
      {"Shape", op_shape},
      {"Gather", op_gather},
      {"Unsqueeze", op_unsqueeze},
      {"Squeeze", op_squeeze},
      {"Slice", op_slice},
      {"Cast", op_cast},
      {"Constant", op_constant},
      {"ConstantOfShape", op_constant_of_shape},
      {"Identity", op_identity},
      {"Dropout", op_identity},
  };
  return table;
}

std::vector<OnnxValueInfo> value_infos(const google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>& list,
                                       const std::unordered_set<std::string>& skip) {
  std::vector<OnnxValueInfo> out;
  for (const auto& v : list) {
    if (skip.count(v.name())) continue;
    OnnxValueInfo info{v.name(), {}};
    if (v.type().has_tensor_type() && v.type().tensor_type().has_shape())
      for (const auto& d : v.type().tensor_type().shape().dim())
        info.shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
    out.push_back(std::move(info));
  }
  return out;
}

onnx::ModelProto parse_model(const std::string& bytes, const std::string& source) {
  onnx::ModelProto model;
  IDSYNTH_CHECK(!bytes.empty(), source, ": not an ONNX model: the file is empty");
  IDSYNTH_CHECK(model.ParseFromString(bytes), source, ": not an ONNX model: protobuf ModelProto parsing failed");
  IDSYNTH_CHECK(model.has_graph() && model.graph().node_size() > 0 && model.opset_import_size() > 0, source,
                ": not an ONNX model: expected a graph with nodes and an opset_import, found ",
                model.graph().node_size(), " nodes and ", model.opset_import_size(), " opset entries");
  return model;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  IDSYNTH_CHECK(f.good(), path, ": cannot open the ONNX file");
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// OnnxModel

struct OnnxModel::Impl {
  std::string source;
  onnx::ModelProto model;  // nodes and attributes; initializers are released after conversion
  int64_t opset = 0;
  c10::Device device = c10::kCPU;
  at::ScalarType dtype = at::kFloat;
  std::unordered_map<std::string, Tensor> constants;
  std::vector<const onnx::NodeProto*> program;  // the nodes left after constant folding
  std::vector<OnnxValueInfo> inputs, outputs;
  std::vector<OnnxNodeInfo> nodes;

  Tensor place(Tensor t) const {
    if (t.is_floating_point()) return t.to(device, dtype);
    return t;  // integer tensors are shape arithmetic: CPU
  }

  Outputs eval(const onnx::NodeProto& node, const std::vector<Tensor>& in) const {
    const auto& table = op_table();
    auto it = table.find(node.op_type());
    if (it == table.end() || (!node.domain().empty() && node.domain() != "ai.onnx")) {
      std::string accepted;
      for (const auto& [name, fn] : table) accepted += (accepted.empty() ? "" : ", ") + name;
      fail(source, ": node '", node.name(), "': operator '", node.op_type(),
           node.domain().empty() ? "" : "' in domain '" + node.domain(), "' is not supported (supported: ", accepted,
           ")");
    }
    Ctx ctx{node, in, opset, source, dtype};
    try {
      Outputs out = it->second(ctx);
      for (auto& t : out)
        if (t.defined() && t.is_floating_point() && t.scalar_type() != dtype) t = t.to(dtype);
      return out;
    } catch (const c10::Error& e) {
      fail(ctx.where(), ": ", e.what_without_backtrace());
    }
  }

  void build(onnx::ModelProto parsed) {
    model = std::move(parsed);
    for (const auto& o : model.opset_import())
      if (o.domain().empty() || o.domain() == "ai.onnx") opset = o.version();
    IDSYNTH_CHECK(opset > 0, source, ": opset_import: expected the default ONNX domain, not found");
    auto* graph = model.mutable_graph();
    std::unordered_set<std::string> init_names;
    for (const auto& t : graph->initializer()) {
      constants[t.name()] = place(tensor_from_proto(t, cat(source, ": initializer '", t.name(), "'")));
      init_names.insert(t.name());
    }
    graph->clear_initializer();
    inputs = value_infos(graph->input(), init_names);
    outputs = value_infos(graph->output(), {});
    // Fold every node whose inputs are all constants (weight reshapes, shape arithmetic on fixed
    // shapes); the rest is the program run per call.
    for (const auto& node : graph->node()) {
      nodes.push_back({node.name(), node.op_type()});
      bool foldable = true;
      std::vector<Tensor> in;
      for (const auto& name : node.input()) {
        if (name.empty()) {
          in.emplace_back();
          continue;
        }
        auto it = constants.find(name);
        if (it == constants.end()) {
          foldable = false;
          break;
        }
        in.push_back(it->second);
      }
      if (foldable) {
        Outputs out = eval(node, in);
        for (int k = 0; k < node.output_size() && k < static_cast<int>(out.size()); ++k)
          constants[node.output(k)] = out[static_cast<size_t>(k)];
      } else {
        // Unknown operators fail at load, not at the first call.
        if (!op_table().count(node.op_type())) eval(node, {});
        program.push_back(&node);
      }
    }
    LOG_DBG(source, ": ONNX opset ", opset, ", ", nodes.size(), " nodes (", program.size(), " after folding), ",
            constants.size(), " constants, ", inputs.size(), " inputs, ", outputs.size(), " outputs");
  }

  std::vector<Tensor> run(const std::vector<Tensor>& args) const {
    IDSYNTH_CHECK(args.size() == inputs.size(), source, ": inputs: expected ", inputs.size(), " tensors, found ",
                  args.size());
    std::unordered_map<std::string, Tensor> env;
    for (size_t i = 0; i < args.size(); ++i) env[inputs[i].name] = place(args[i]);
    auto lookup = [&](const std::string& name) -> Tensor {
      if (name.empty()) return Tensor();
      auto it = env.find(name);
      if (it != env.end()) return it->second;
      auto ct = constants.find(name);
      if (ct != constants.end()) return ct->second;
      fail(source, ": value '", name, "' is used before it is produced (graph not topologically sorted?)");
    };
    for (const onnx::NodeProto* node : program) {
      std::vector<Tensor> in;
      in.reserve(static_cast<size_t>(node->input_size()));
      for (const auto& name : node->input()) in.push_back(lookup(name));
      Outputs out = eval(*node, in);
      for (int k = 0; k < node->output_size() && k < static_cast<int>(out.size()); ++k)
        env[node->output(k)] = std::move(out[static_cast<size_t>(k)]);
    }
    std::vector<Tensor> result;
    for (const auto& o : outputs) {
      Tensor t = lookup(o.name);
      result.push_back(t.is_floating_point() ? t.to(at::kFloat) : t);
    }
    return result;
  }
};

OnnxModel::OnnxModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OnnxModel::OnnxModel(const std::string& path, c10::Device device, c10::ScalarType dtype)
    : OnnxModel(from_bytes(read_all(path), path, device, dtype)) {}

OnnxModel OnnxModel::from_bytes(const std::string& bytes, const std::string& source, c10::Device device,
                                c10::ScalarType dtype) {
  IDSYNTH_CHECK(c10::isFloatingType(dtype), source, ": dtype: expected a floating type, found ", dtype);
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  impl->device = device;
  impl->dtype = dtype;
  log::Stopwatch watch;
  impl->build(parse_model(bytes, source));
  LOG_INF(source, ": ONNX model loaded, taking ", watch.seconds(), " s");
  return OnnxModel(std::move(impl));
}

OnnxModel::~OnnxModel() = default;
OnnxModel::OnnxModel(OnnxModel&&) noexcept = default;
OnnxModel& OnnxModel::operator=(OnnxModel&&) noexcept = default;

const std::vector<OnnxValueInfo>& OnnxModel::inputs() const { return impl_->inputs; }
const std::vector<OnnxValueInfo>& OnnxModel::outputs() const { return impl_->outputs; }
const std::vector<OnnxNodeInfo>& OnnxModel::nodes() const { return impl_->nodes; }
int64_t OnnxModel::opset() const { return impl_->opset; }
const std::string& OnnxModel::source() const { return impl_->source; }
c10::Device OnnxModel::device() const { return impl_->device; }
c10::ScalarType OnnxModel::dtype() const { return impl_->dtype; }

std::vector<at::Tensor> OnnxModel::run(const std::vector<at::Tensor>& inputs) const { return impl_->run(inputs); }

at::Tensor OnnxModel::forward(const at::Tensor& input) const { return impl_->run({input}).at(0); }

TensorDict read_onnx_initializers(const std::string& path) {
  const onnx::ModelProto model = parse_model(read_all(path), path);
  TensorDict dict;
  dict.set_source(path);
  for (const auto& t : model.graph().initializer())
    dict.insert(t.name(), tensor_from_proto(t, cat(path, ": initializer '", t.name(), "'")));
  return dict;
}

bool looks_like_onnx(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  unsigned char head[2] = {0, 0};
  if (!f.read(reinterpret_cast<char*>(head), 2)) return false;
  // ModelProto field 1 (ir_version, varint) comes first in every exporter's output.
  return head[0] == 0x08 && head[1] > 0 && head[1] < 32;
}

}  // namespace idsynth
