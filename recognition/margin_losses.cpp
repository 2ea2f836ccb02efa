// Ref: insightface recognition/arcface_torch/losses.py, partial_fc_v2.py; mk-minchul/AdaFace head.py
#include "recognition/margin_losses.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/normalization.h>
#include <torch/utils.h>

#include <cmath>

#include "core/check.h"

namespace idsynth::recognition {

namespace {

// AdaFace's clip margin for cosines and angles.
constexpr double kAdaEps = 1e-3;
// PartialFC_V2 initialises the class centres from N(0, 0.01).
constexpr double kCentreInitStd = 0.01;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Options

MarginLossOptions MarginLossOptions::resolved() const {
  MarginLossOptions r = *this;
  if (type == "arcface") {
    r.m1 = 1.0;
    r.m3 = 0.0;
  } else if (type == "cosface") {
    r.m1 = 1.0;
    r.m2 = 0.0;
  }
  return r;
}

void MarginLossOptions::check() const {
  IDSYNTH_CHECK(type == "arcface" || type == "cosface" || type == "combined" || type == "adaface",
                "loss: type: expected one of arcface, cosface, combined, adaface, found '", type, "'");
  IDSYNTH_CHECK(s > 0, "loss: s: expected > 0, found ", s);
  const MarginLossOptions r = resolved();
  if (type != "adaface") {
    IDSYNTH_CHECK(r.m1 == 1.0, "loss: m1: expected 1.0 (SphereFace-style m1 is not implemented, as in arcface_torch v2), found ",
                  r.m1);
    IDSYNTH_CHECK(r.m2 >= 0 && r.m2 < M_PI, "loss: m2: expected [0, pi), found ", r.m2);
    IDSYNTH_CHECK(r.m3 >= 0 && r.m3 < 2, "loss: m3: expected [0, 2), found ", r.m3);
    IDSYNTH_CHECK(r.m3 == 0.0 || r.m2 == 0.0,
                  "loss: m2/m3: expected an angular (m2) or a cosine (m3) margin, not both, found m2=", r.m2, " m3=", r.m3);
  }
  IDSYNTH_CHECK(adaface_m >= 0 && adaface_m < 1, "loss: adaface_m: expected [0, 1), found ", adaface_m);
  IDSYNTH_CHECK(adaface_h >= 0, "loss: adaface_h: expected >= 0, found ", adaface_h);
  IDSYNTH_CHECK(adaface_t_alpha > 0 && adaface_t_alpha <= 1, "loss: adaface_t_alpha: expected (0, 1], found ",
                adaface_t_alpha);
}

std::string MarginLossOptions::to_string() const {
  if (type == "adaface") return cat("adaface(m=", adaface_m, ", h=", adaface_h, ", s=", s, ", t_alpha=", adaface_t_alpha, ")");
  const MarginLossOptions r = resolved();
  return cat(type, "(s=", s, ", m1=", r.m1, ", m2=", r.m2, ", m3=", r.m3, ")");
}

// ---------------------------------------------------------------------------------------------
// CombinedMarginLoss

CombinedMarginLossImpl::CombinedMarginLossImpl(double s, double m1, double m2, double m3,
                                               double interclass_filtering_threshold)
    : s_(s), m1_(m1), m2_(m2), m3_(m3), filter_(interclass_filtering_threshold) {
  IDSYNTH_CHECK(m1_ == 1.0, "CombinedMarginLoss: m1: expected 1.0, found ", m1_);
}

torch::Tensor CombinedMarginLossImpl::forward(torch::Tensor logits, const torch::Tensor& labels) {
  const torch::Tensor index_positive = torch::where(labels != -1)[0];
  const torch::Tensor target_cols = labels.index_select(0, index_positive);
  // 1. optional inter-class filtering: negatives above the threshold are treated as label noise
  if (filter_ > 0) {
    torch::Tensor keep;
    {
      torch::NoGradGuard no_grad;
      torch::Tensor dirty = (logits > filter_).to(logits.scalar_type());
      torch::Tensor mask = torch::ones({index_positive.size(0), logits.size(1)}, logits.options());
      mask.scatter_(1, target_cols.view({-1, 1}), 0.0);
      dirty.index_put_({index_positive}, dirty.index_select(0, index_positive) * mask);
      keep = 1 - dirty;
    }
    logits = keep * logits;
  }
  // 2. the margin on the target logit
  if (m3_ > 0) {
    // CosFace: cos θ_y − m3, with gradient.
    const torch::Tensor target = logits.index({index_positive, target_cols});
    logits = logits.index_put({index_positive, target_cols}, target - m3_);
  } else {
    // ArcFace: rewritten in place without gradient, exactly as arcface_torch does (every logit
    // goes through arccos/cos, the target gets + m2 in between).
    torch::NoGradGuard no_grad;
    const torch::Tensor target = logits.index({index_positive, target_cols}).arccos_();
    logits.arccos_();
    logits.index_put_({index_positive, target_cols}, target + m2_);
    logits.cos_();
  }
  return logits * s_;
}

// ---------------------------------------------------------------------------------------------
// AdaFace

AdaFaceLossImpl::AdaFaceLossImpl(double m, double h, double s, double t_alpha) : m_(m), h_(h), s_(s), t_alpha_(t_alpha) {
  batch_mean = register_buffer("batch_mean", torch::full({1}, 20.0));
  batch_std = register_buffer("batch_std", torch::full({1}, 100.0));
}

torch::Tensor AdaFaceLossImpl::forward(const torch::Tensor& cosine_in, const torch::Tensor& norms,
                                       const torch::Tensor& labels) {
  // 1. clipped, detached norms; EMA of their batch mean and (unbiased) std
  const torch::Tensor cosine = cosine_in.clamp(-1 + kAdaEps, 1 - kAdaEps);
  const torch::Tensor safe_norms = norms.reshape({-1, 1}).clamp(0.001, 100).detach();  // [N, 1]
  if (is_training()) {
    torch::NoGradGuard no_grad;
    const torch::Tensor mean = safe_norms.mean();
    const torch::Tensor std = safe_norms.std();
    batch_mean.copy_(mean * t_alpha_ + (1 - t_alpha_) * batch_mean);
    batch_std.copy_(std * t_alpha_ + (1 - t_alpha_) * batch_std);
  }
  // 2. margin scaler z in [−1, 1]
  const torch::Tensor z = ((safe_norms - batch_mean) / (batch_std + kAdaEps) * h_).clamp(-1, 1);  // [N, 1]
  const torch::Tensor one_hot = torch::zeros_like(cosine).scatter_(1, labels.view({-1, 1}), 1.0);
  // 3. angular margin −m·z on the target angle, then additive margin m + m·z on its cosine
  const torch::Tensor theta = cosine.acos();
  const torch::Tensor theta_m = (theta + one_hot * (-m_ * z)).clamp(kAdaEps, M_PI - kAdaEps);
  const torch::Tensor out = theta_m.cos() - one_hot * (m_ + m_ * z);
  return out * s_;
}

// ---------------------------------------------------------------------------------------------
// Class centres

int64_t class_centre_bytes(int64_t num_classes, int64_t embedding_size) {
  return 2 * num_classes * embedding_size * static_cast<int64_t>(sizeof(float));  // weight + momentum
}

int64_t logits_bytes(int64_t batch, int64_t num_classes, bool fp16) {
  // fp16: the half product plus its float32 copy for the loss.
  return batch * num_classes * (fp16 ? 6 : 4);
}

ClassCentresImpl::ClassCentresImpl(ClassCentresOptions options) : options_(options) {
  IDSYNTH_CHECK(options_.num_classes >= 1, "class centres: num_classes: expected >= 1, found ", options_.num_classes);
  IDSYNTH_CHECK(options_.embedding_size >= 1, "class centres: embedding_size: expected >= 1, found ",
                options_.embedding_size);
  IDSYNTH_CHECK(options_.sample_rate > 0 && options_.sample_rate <= 1,
                "class centres: sample_rate: expected (0, 1], found ", options_.sample_rate);
  weight = register_parameter("weight", torch::normal(0.0, kCentreInitStd, {options_.num_classes, options_.embedding_size}));
}

ClassCentresImpl::Output ClassCentresImpl::forward(const torch::Tensor& normalized, const torch::Tensor& labels) {
  Output out;
  torch::Tensor w = weight;
  out.labels = labels;
  const int64_t num_sample = static_cast<int64_t>(options_.sample_rate * static_cast<double>(options_.num_classes));
  // 1. PartialFC sampling: every positive centre plus random negatives up to num_sample
  if (is_training() && options_.sample_rate < 1.0) {
    torch::NoGradGuard no_grad;
    const torch::Tensor positive = std::get<0>(at::_unique(labels.cpu(), /*sorted=*/true));
    torch::Tensor index;
    if (num_sample - positive.size(0) >= 0) {
      torch::Tensor perm = torch::rand({options_.num_classes});  // default CPU generator
      perm.index_put_({positive}, 2.0);
      index = std::get<0>(std::get<1>(torch::topk(perm, num_sample)).sort());
    } else {
      index = positive;
    }
    index = index.to(weight.device());
    out.labels = torch::searchsorted(index, labels);
    w = weight.index_select(0, index);
  }
  // 2. cosine logits of normalised centres, optionally as a half-precision product
  const bool half = options_.fp16 && weight.is_cuda();
  const torch::Tensor wn = torch::nn::functional::normalize(w, torch::nn::functional::NormalizeFuncOptions().dim(1));
  torch::Tensor logits = half ? torch::mm(normalized.to(torch::kHalf), wn.to(torch::kHalf).t()).to(torch::kFloat)
                              : torch::mm(normalized.to(torch::kFloat), wn.t());
  out.cosine = logits.clamp(-1, 1);  // [N, C']
  return out;
}

// ---------------------------------------------------------------------------------------------
// MarginHead

MarginHeadImpl::MarginHeadImpl(const MarginLossOptions& loss, const ClassCentresOptions& centres_options)
    : loss_(loss.resolved()) {
  loss.check();
  centres = register_module("centres", ClassCentres(centres_options));
  if (loss_.type == "adaface") {
    adaface = register_module("adaface", AdaFaceLoss(loss_.adaface_m, loss_.adaface_h, loss_.s, loss_.adaface_t_alpha));
  } else {
    combined = register_module("combined", CombinedMarginLoss(loss_.s, loss_.m1, loss_.m2, loss_.m3,
                                                              loss_.interclass_filtering_threshold));
  }
}

MarginHeadImpl::Output MarginHeadImpl::forward(const torch::Tensor& embeddings, const torch::Tensor& labels) {
  // 1. norms and unit embeddings: [N, D] -> [N, 1], [N, D]
  const torch::Tensor emb = embeddings.to(torch::kFloat);
  torch::Tensor normalized, norms;
  if (adaface) {
    norms = emb.norm(2, {1}, /*keepdim=*/true);
    normalized = emb / norms;
  } else {
    normalized = torch::nn::functional::normalize(emb, torch::nn::functional::NormalizeFuncOptions().dim(1));
  }
  // 2. cosine logits [N, C'], margin, cross-entropy
  ClassCentresImpl::Output c = centres->forward(normalized, labels);
  Output out;
  {
    torch::NoGradGuard no_grad;
    out.correct = (c.cosine.argmax(1) == c.labels).sum();
  }
  const torch::Tensor logits = adaface ? adaface->forward(c.cosine, norms, c.labels) : combined->forward(c.cosine, c.labels);
  out.loss = torch::nn::functional::cross_entropy(logits, c.labels);
  return out;
}

}  // namespace idsynth::recognition
