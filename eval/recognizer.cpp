// Ref: insightface arcface_onnx.py, arcface_torch/eval/verification.py (see recognizer.h).
#include "eval/recognizer.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>

#include "core/check.h"
#include "core/device.h"
#include "core/log.h"
#include "core/weights.h"
#include "recognition/iresnet.h"
#if __has_include("core/onnx_model.h")
#include "core/onnx_model.h"
#define IDSYNTH_EVAL_HAVE_ONNX 1
#endif

namespace idsynth::eval {

namespace {

constexpr float kArcfaceMean = 127.5f;
constexpr float kArcfaceStd = 127.5f;

// (N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 (x - mean) / std.
at::Tensor to_input(const at::Tensor& rgb, float mean, float std) {
  IDSYNTH_CHECK(rgb.dim() == 4 && rgb.size(3) == 3 && rgb.scalar_type() == at::kByte,
                "recognizer: images: expected (N, H, W, 3) uint8 RGB, found ", rgb.sizes(), " ", rgb.scalar_type());
  return (rgb.permute({0, 3, 1, 2}).to(at::kFloat) - mean) / std;
}

#ifdef IDSYNTH_EVAL_HAVE_ONNX
class OnnxRecognizer : public Recognizer {
 public:
  OnnxRecognizer(const std::string& path, at::Device device) : model_(path, device) {
    IDSYNTH_CHECK(!model_.inputs().empty() && !model_.outputs().empty(), path,
                  ": expected a recogniser with one image input and an embedding output");
    // 1. insightface's input convention from the first 8 node names
    bool sub = false, mul = false;
    const auto& nodes = model_.nodes();
    for (size_t i = 0; i < std::min<size_t>(8, nodes.size()); ++i) {
      const std::string& n = nodes[i].name;
      if (n.rfind("Sub", 0) == 0 || n.rfind("_minus", 0) == 0) sub = true;
      if (n.rfind("Mul", 0) == 0 || n.rfind("_mul", 0) == 0) mul = true;
    }
    if (sub && mul) mean_ = 0.0f, std_ = 1.0f;
    const auto& shape = model_.inputs()[0].shape;
    fixed_batch_one_ = !shape.empty() && shape[0] == 1;
    LOG_INF(path, ": ONNX recogniser, input ", model_.inputs()[0].name, " mean ", mean_, " std ", std_,
            fixed_batch_one_ ? ", batch fixed at 1" : "");
  }

  at::Tensor embed(const at::Tensor& rgb) override {
    const at::Tensor x = to_input(rgb, mean_, std_);
    if (!fixed_batch_one_) return model_.forward(x).to(at::kCPU, at::kFloat).flatten(1);
    std::vector<at::Tensor> rows;
    for (int64_t i = 0; i < x.size(0); ++i) rows.push_back(model_.forward(x.slice(0, i, i + 1)).to(at::kCPU, at::kFloat).flatten(1));
    return at::cat(rows, 0);
  }

  std::string describe() const override { return cat("onnx ", model_.source()); }

 private:
  OnnxModel model_;
  float mean_ = kArcfaceMean, std_ = kArcfaceStd;
  bool fixed_batch_one_ = false;
};
#endif

class IResNetRecognizer : public Recognizer {
 public:
  IResNetRecognizer(const std::string& path, at::Device device)
      : path_(path), device_(device), model_(recognition::load_iresnet(path, device)) {
    model_->eval();
  }

  at::Tensor embed(const at::Tensor& rgb) override {
    torch::NoGradGuard no_grad;
    // arcface_torch: ((x / 255) - 0.5) / 0.5
    const at::Tensor x = ((rgb.permute({0, 3, 1, 2}).to(at::kFloat) / 255.0f) - 0.5f) / 0.5f;
    return model_->forward(x.to(device_)).to(at::kCPU, at::kFloat);
  }

  std::string describe() const override { return cat("iresnet ", path_); }

 private:
  std::string path_;
  at::Device device_;
  recognition::IResNet model_;
};

}  // namespace

std::unique_ptr<Recognizer> load_recognizer(const std::string& path, const std::string& device) {
  const at::Device dev = parse_device(device);
  const WeightFormat format = detect_weight_format(path);
  if (format == WeightFormat::onnx) {
#ifdef IDSYNTH_EVAL_HAVE_ONNX
    return std::make_unique<OnnxRecognizer>(path, dev);
#else
    fail(path, ": ONNX support is not built into this idsynth");
#endif
  }
  IDSYNTH_CHECK(format != WeightFormat::unknown, path,
                ": expected a recogniser (ONNX file or IResNet safetensors / torch checkpoint), found an unknown format");
  return std::make_unique<IResNetRecognizer>(path, dev);
}

PackEmbeddings embed_pack(Recognizer& recognizer, const BinPack& pack, const EmbedOptions& options) {
  IDSYNTH_CHECK(options.batch_size >= 1, "verify: batch size: expected at least 1, found ", options.batch_size);
  torch::NoGradGuard no_grad;
  log::Stopwatch sw;
  std::vector<at::Tensor> raw, flipped;
  for (int64_t begin = 0; begin < pack.num_images(); begin += options.batch_size) {
    const int64_t end = std::min(pack.num_images(), begin + options.batch_size);
    const at::Tensor rgb = decode_bin_images(pack, begin, end);  // [B, H, W, 3]
    raw.push_back(recognizer.embed(rgb));
    if (options.flip) flipped.push_back(recognizer.embed(rgb.flip({2}).contiguous()));  // mirror along W
  }
  PackEmbeddings out;
  out.raw = at::cat(raw, 0);
  if (options.flip) out.raw_flip = at::cat(flipped, 0);
  out.seconds = sw.seconds();
  const int64_t images = pack.num_images() * (options.flip ? 2 : 1);
  LOG_INF(pack.path, ": embedding ", images, " images completed, taking ", out.seconds, " s (",
          static_cast<double>(images) / std::max(out.seconds, 1e-9), " images/s, batch ", options.batch_size, ")");
  return out;
}

}  // namespace idsynth::eval
