// The recogniser behind `idsynth eval verify`: aligned RGB face crops -> raw (un-normalised)
// embeddings, from an ONNX file (insightface's ArcFaceONNX conventions) or an idsynth/arcface_torch
// IResNet checkpoint, and the flip-sum embedding of a whole `.bin` pack, streamed in batches.
//
// Input convention (insightface model_zoo/arcface_onnx.py): if one of the first 8 graph nodes is named
// Sub*/_minus* and one Mul*/_mul*, the model normalises itself (mean 0, std 1); otherwise the input is
// (x - 127.5) / 127.5. IResNet checkpoints use ((x / 255) - 0.5) / 0.5, the same up to rounding.
// A graph with a fixed batch of 1 is run one image at a time.
// Ref: insightface python-package/insightface/model_zoo/arcface_onnx.py (ArcFaceONNX.__init__,
//      get_feat); recognition/arcface_torch/eval/verification.py (test: flip along W, batches).
#pragma once

#include <ATen/Tensor.h>

#include <functional>
#include <memory>
#include <string>

#include "eval/bin_dataset.h"

namespace idsynth::eval {

class Recognizer {
 public:
  virtual ~Recognizer() = default;
  // (N, H, W, 3) uint8 RGB -> (N, D) float32 raw embeddings on the CPU.
  virtual at::Tensor embed(const at::Tensor& rgb) = 0;
  virtual std::string describe() const = 0;
};

// ONNX (by content) or a weight file holding an IResNet (safetensors / torch checkpoint).
std::unique_ptr<Recognizer> load_recognizer(const std::string& path, const std::string& device = "cpu");

struct EmbedOptions {
  int64_t batch_size = 64;
  bool flip = true;  // also embed the mirror image of every crop
};

struct PackEmbeddings {
  at::Tensor raw;       // (2P, D) float32
  at::Tensor raw_flip;  // (2P, D) float32, undefined without flip
  double seconds = 0.0;
};

// Decodes and embeds every image of the pack (and its mirror image) batch by batch.
PackEmbeddings embed_pack(Recognizer& recognizer, const BinPack& pack, const EmbedOptions& options = {});

}  // namespace idsynth::eval
