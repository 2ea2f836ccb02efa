// The one face recogniser interface: aligned face crops -> raw (un-normalised) embeddings, whatever
// holds the network: an ONNX file (insightface / Arc2Face ArcFace, any single-input single-output
// model), an IResNet weight file (safetensors / torch checkpoint, arcface_torch names), or an IResNet
// module in memory (the model being trained). Every caller (the ID filter, `embed`, `eval verify`,
// `eval idsim`, training validation) goes through it, so the input convention lives in one place.
//
// Input (insightface model_zoo/arcface_onnx.py, ArcFaceONNX): crops are resized to the input size
// (bilinear), turned RGB and normalised as cv::dnn::blobFromImages does, (x − mean) · (1/std), with
// mean 0 / std 1 when the first 8 node names of an ONNX graph include one starting with Sub/_minus
// and one with Mul/_mul (MXNet exports normalise inside the graph), 127.5 / 127.5 otherwise and for
// IResNet (arcface_torch's ((x/255) − 0.5)/0.5, equal up to rounding). A graph with a fixed batch
// dimension runs on exactly that many rows (the last batch is padded).
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <opencv2/core.hpp>

#include <memory>
#include <string>
#include <vector>

#include "recognition/iresnet.h"

namespace idsynth {
struct OnnxNodeInfo;
}

namespace idsynth::recognition {

struct InputNorm {
  float mean = 127.5f;
  float std = 127.5f;
};
// ArcFaceONNX's rule on the graph's node names (see above).
InputNorm arcface_input_norm(const std::vector<OnnxNodeInfo>& nodes);

class Recognizer {
 public:
  virtual ~Recognizer() = default;
  // Raw embeddings [N, D] float32 on the CPU of BGR uint8 crops of any size.
  at::Tensor embed_bgr(const std::vector<cv::Mat>& crops_bgr) const;
  // The same for a (N, H, W, 3) uint8 RGB tensor (what `.bin` packs decode to).
  at::Tensor embed_rgb(const at::Tensor& rgb) const;

  int input_size() const { return input_size_; }
  const InputNorm& norm() const { return norm_; }
  const std::string& describe() const { return description_; }

 protected:
  // One normalised batch [B, 3, S, S] float32 (CPU) -> embeddings [B, D] (any device and dtype).
  virtual at::Tensor forward(const at::Tensor& blob) const = 0;

  InputNorm norm_;
  int input_size_ = 112;
  int64_t fixed_batch_ = -1;  // the ONNX input's batch dimension when the file fixes it
  std::string description_;
};

// An ONNX file (by content) or an IResNet weight file. dtype: float32, float16 or bfloat16.
std::unique_ptr<Recognizer> load_recognizer(const std::string& path, c10::Device device,
                                            c10::ScalarType dtype = c10::kFloat);
// An IResNet held in memory (shared, not copied), e.g. the backbone being trained; runs under
// NoGradGuard in whatever train/eval mode the caller set.
std::unique_ptr<Recognizer> module_recognizer(IResNet net, c10::Device device, std::string description);

// L2 normalisation along dim 1 (Face.normed_embedding).
at::Tensor l2_normalize(const at::Tensor& x);

}  // namespace idsynth::recognition
