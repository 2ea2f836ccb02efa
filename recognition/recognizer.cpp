// Ref: insightface python-package/insightface/model_zoo/arcface_onnx.py (ArcFaceONNX.__init__, get_feat).
#include "recognition/recognizer.h"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>
#include <torch/nn/module.h>
#include <torch/types.h>

#include "core/check.h"
#include "core/log.h"
#include "core/onnx_model.h"
#include "core/weights.h"
#include "recognition/image_blob.h"

namespace idsynth::recognition {

namespace {

// Rows per recogniser call when the model does not fix its batch.
constexpr size_t kBatch = 64;

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

class OnnxRecognizer : public Recognizer {
 public:
  OnnxRecognizer(const std::string& path, c10::Device device, c10::ScalarType dtype) : model_(path, device, dtype) {
    IDSYNTH_CHECK(model_.inputs().size() == 1 && model_.outputs().size() == 1, path,
                  ": recogniser: expected one input and one output, found ", model_.inputs().size(), " and ",
                  model_.outputs().size());
    const auto& shape = model_.inputs()[0].shape;
    IDSYNTH_CHECK(shape.size() == 4 && shape[1] == 3, path, ": recogniser input '", model_.inputs()[0].name,
                  "': expected [N, 3, S, S], found rank ", shape.size());
    if (shape[2] > 0) input_size_ = static_cast<int>(shape[2]);
    IDSYNTH_CHECK(shape[3] <= 0 || shape[3] == shape[2], path, ": recogniser input: expected a square size, found ",
                  shape[2], "x", shape[3]);
    fixed_batch_ = shape[0];
    norm_ = arcface_input_norm(model_.nodes());
    description_ = cat("onnx ", path);
  }

 protected:
  at::Tensor forward(const at::Tensor& blob) const override { return model_.forward(blob); }

 private:
  OnnxModel model_;
};

class IResNetRecognizer : public Recognizer {
 public:
  IResNetRecognizer(IResNet net, c10::Device device, std::string description) : net_(std::move(net)), device_(device) {
    description_ = std::move(description);
  }

 protected:
  at::Tensor forward(const at::Tensor& blob) const override { return net_->forward(blob.to(device_)); }

 private:
  mutable IResNet net_;  // torch modules have no const forward
  c10::Device device_;
};

}  // namespace

InputNorm arcface_input_norm(const std::vector<OnnxNodeInfo>& nodes) {
  bool find_sub = false, find_mul = false;
  for (size_t i = 0; i < nodes.size() && i < 8; ++i) {
    const std::string& name = nodes[i].name;
    if (starts_with(name, "Sub") || starts_with(name, "_minus")) find_sub = true;
    if (starts_with(name, "Mul") || starts_with(name, "_mul")) find_mul = true;
  }
  if (find_sub && find_mul) return {0.0f, 1.0f};
  return {127.5f, 127.5f};
}

at::Tensor l2_normalize(const at::Tensor& x) { return x / x.norm(2, {1}, true); }

at::Tensor Recognizer::embed_bgr(const std::vector<cv::Mat>& crops_bgr) const {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  const size_t step = fixed_batch_ > 0 ? static_cast<size_t>(fixed_batch_) : kBatch;
  for (size_t begin = 0; begin < crops_bgr.size(); begin += step) {
    const size_t end = std::min(crops_bgr.size(), begin + step);
    std::vector<cv::Mat> batch;
    for (size_t i = begin; i < end; ++i) {
      const cv::Mat& c = crops_bgr[i];
      if (c.rows == input_size_ && c.cols == input_size_) {
        batch.push_back(c);
      } else {
        cv::Mat r;
        cv::resize(c, r, cv::Size(input_size_, input_size_), 0, 0, cv::INTER_LINEAR);
        batch.push_back(r);
      }
    }
    // A file with a fixed batch runs on exactly that many rows: pad the last batch.
    const size_t real = batch.size();
    while (fixed_batch_ > 0 && batch.size() < static_cast<size_t>(fixed_batch_)) batch.push_back(batch.back());
    const at::Tensor y = forward(blob_from_bgr(batch, norm_.mean, norm_.std));
    const auto rows = static_cast<int64_t>(real);
    parts.push_back(y.to(at::kCPU).to(at::kFloat).slice(0, 0, rows).reshape({rows, -1}));
  }
  if (parts.empty()) return at::empty({0, 0}, at::kFloat);
  return at::cat(parts, 0);
}

at::Tensor Recognizer::embed_rgb(const at::Tensor& rgb) const {
  IDSYNTH_CHECK(rgb.dim() == 4 && rgb.size(3) == 3 && rgb.scalar_type() == at::kByte, description_,
                ": images: expected (N, H, W, 3) uint8 RGB, found ", rgb.sizes(), " ", rgb.scalar_type());
  const at::Tensor images = rgb.to(at::kCPU).contiguous();
  std::vector<cv::Mat> bgr(static_cast<size_t>(images.size(0)));
  for (int64_t i = 0; i < images.size(0); ++i) {
    const cv::Mat view(static_cast<int>(images.size(1)), static_cast<int>(images.size(2)), CV_8UC3,
                       images[i].data_ptr());
    cv::cvtColor(view, bgr[static_cast<size_t>(i)], cv::COLOR_RGB2BGR);
  }
  return embed_bgr(bgr);
}

std::unique_ptr<Recognizer> load_recognizer(const std::string& path, c10::Device device, c10::ScalarType dtype) {
  const WeightFormat format = detect_weight_format(path);
  std::unique_ptr<Recognizer> r;
  if (format == WeightFormat::onnx || (format == WeightFormat::unknown && looks_like_onnx(path))) {
    r = std::make_unique<OnnxRecognizer>(path, device, dtype);
  } else {
    IDSYNTH_CHECK(format != WeightFormat::unknown, path,
                  ": recogniser: expected an ONNX file or IResNet weights (safetensors, torch checkpoint), found neither");
    IResNet net = load_iresnet(path, device, dtype == c10::kHalf);
    if (dtype == c10::kBFloat16) net->set_trunk_dtype(c10::kBFloat16);
    r = std::make_unique<IResNetRecognizer>(std::move(net), device, cat("iresnet ", path));
  }
  LOG_INF(path, ": recogniser ", format == WeightFormat::onnx || format == WeightFormat::unknown ? "ONNX" : "IResNet",
          ", input ", r->input_size(), "x", r->input_size(), ", normalisation (x - ", r->norm().mean, ") / ",
          r->norm().std);
  return r;
}

std::unique_ptr<Recognizer> module_recognizer(IResNet net, c10::Device device, std::string description) {
  return std::make_unique<IResNetRecognizer>(std::move(net), device, std::move(description));
}

}  // namespace idsynth::recognition
