// Margin-based softmax losses for face-recognition training and the class-centre matrix they use.
//
//  - CombinedMarginLoss(s, m1, m2, m3): insightface arcface_torch's combined margin. ArcFace is
//    (1, 0.5, 0): cos(θ_y + m2) for the target class; CosFace is (1, 0, 0.4): cos θ_y − m3. As in
//    arcface_torch, the ArcFace rewrite of the target logit happens without gradient (the gradient
//    reaches cos θ as if the margin were an identity), and logits are then multiplied by s.
//  - AdaFace(m, h, s, t_alpha): the margin adapts to the feature norm (an image-quality proxy):
//    with z = clip(h·(‖f‖ − μ)/(σ + eps), −1, 1), the target logit is
//    s·(cos(clip(θ_y − m·z, eps, π − eps)) − (m + m·z)); μ, σ are EMAs (rate t_alpha) of the batch
//    mean and (unbiased) std of the clipped, detached norms, kept as buffers.
//  - ClassCentres: the [num_classes, embedding] weight ("weight", as PartialFC_V2) whose rows are
//    normalised before the cosine logits; optional fp16 logits on CUDA (as PartialFC_V2's fp16) and
//    PartialFC class sampling (positives plus random negatives up to sample_rate·C).
//
// Ref: insightface recognition/arcface_torch/losses.py (CombinedMarginLoss),
//      recognition/arcface_torch/partial_fc_v2.py (PartialFC_V2: normal(0, 0.01) init, clamp(−1, 1));
//      mk-minchul/AdaFace head.py (AdaFace: eps 1e-3, batch_mean 20, batch_std 100 initial values).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

namespace idsynth::recognition {

struct MarginLossOptions {
  std::string type = "arcface";  // arcface | cosface | combined | adaface
  double s = 64.0;               // logit scale (arcface_torch hard-codes 64)
  double m1 = 1.0;               // combined: multiplicative angular margin (only 1 is supported, as arcface_torch v2)
  double m2 = 0.5;               // combined: additive angular margin (ArcFace)
  double m3 = 0.0;               // combined: additive cosine margin (CosFace)
  double interclass_filtering_threshold = 0.0;  // > 0: zero negative logits above it (noisy data)
  double adaface_m = 0.4;
  double adaface_h = 0.333;
  double adaface_t_alpha = 0.01;

  // arcface -> (1, m2, 0) and cosface -> (1, 0, m3) resolved; checks the values.
  MarginLossOptions resolved() const;
  void check() const;
  std::string to_string() const;
};

// Cosine logits [N, C] in [−1, 1] and labels [N] (int64; −1 = no target in this shard of classes)
// -> scaled logits for cross-entropy.
class CombinedMarginLossImpl : public torch::nn::Module {
 public:
  CombinedMarginLossImpl(double s, double m1, double m2, double m3, double interclass_filtering_threshold = 0.0);
  torch::Tensor forward(torch::Tensor logits, const torch::Tensor& labels);

 private:
  double s_, m1_, m2_, m3_, filter_;
};
TORCH_MODULE(CombinedMarginLoss);

class AdaFaceLossImpl : public torch::nn::Module {
 public:
  AdaFaceLossImpl(double m, double h, double s, double t_alpha);
  // cosine [N, C], norms [N] or [N, 1] (feature norms before normalisation), labels [N].
  // In training mode the norm statistics are updated first, as the reference does.
  torch::Tensor forward(const torch::Tensor& cosine, const torch::Tensor& norms, const torch::Tensor& labels);

  torch::Tensor batch_mean;  // [1], starts at 20
  torch::Tensor batch_std;   // [1], starts at 100

 private:
  double m_, h_, s_, t_alpha_;
};
TORCH_MODULE(AdaFaceLoss);

struct ClassCentresOptions {
  int64_t num_classes = 0;
  int64_t embedding_size = 512;
  double sample_rate = 1.0;  // PartialFC: fraction of class centres used per step (1: all)
  bool fp16 = false;         // logits matrix product in half precision (CUDA only; weights stay float32)
};

// Bytes of the class-centre weight plus its momentum buffer (float32), and of one step's logits.
int64_t class_centre_bytes(int64_t num_classes, int64_t embedding_size);
int64_t logits_bytes(int64_t batch, int64_t num_classes, bool fp16);

class ClassCentresImpl : public torch::nn::Module {
 public:
  explicit ClassCentresImpl(ClassCentresOptions options);
  struct Output {
    torch::Tensor cosine;  // [N, C'] float32 in [−1, 1]; C' = sampled classes (C without sampling)
    torch::Tensor labels;  // [N] labels remapped into the sampled columns
  };
  // normalized: [N, D] unit-norm embeddings. Sampling draws from the default CPU generator.
  Output forward(const torch::Tensor& normalized, const torch::Tensor& labels);
  const ClassCentresOptions& options() const { return options_; }

  torch::Tensor weight;  // [num_classes, embedding_size] float32

 private:
  ClassCentresOptions options_;
};
TORCH_MODULE(ClassCentres);

// Class centres + margin loss + cross-entropy: what the trainer calls with the backbone's raw
// embeddings. Sub-modules: "centres" (its "weight") and, for AdaFace, "adaface" (its buffers).
class MarginHeadImpl : public torch::nn::Module {
 public:
  MarginHeadImpl(const MarginLossOptions& loss, const ClassCentresOptions& centres);
  struct Output {
    torch::Tensor loss;     // scalar float32, mean cross-entropy
    torch::Tensor correct;  // scalar int64: argmax of the cosine (no margin) equals the label
  };
  Output forward(const torch::Tensor& embeddings, const torch::Tensor& labels);

  ClassCentres centres{nullptr};
  CombinedMarginLoss combined{nullptr};
  AdaFaceLoss adaface{nullptr};

 private:
  MarginLossOptions loss_;
};
TORCH_MODULE(MarginHead);

}  // namespace idsynth::recognition
