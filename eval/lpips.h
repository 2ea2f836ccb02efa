// LPIPS v0.1 perceptual distance (alex and vgg trunks) and "LPIPS diversity".
//
// x -> (x - shift) / scale per RGB channel; the 5 ReLU feature maps of torchvision's AlexNet or
// VGG16 `features`; each map unit-normalised over channels (x / (sqrt(sum_c x^2) + 1e-10)); squared
// difference; a 1x1 conv to one channel (the v0.1 linear weights, no bias); spatial mean; sum over
// the 5 layers. Inputs are RGB in [-1, 1] (or [0, 1] with normalize = true).
//
// Parameter names are the lpips module's own (`net.slice1.0.weight`, `lin0.model.1.weight`);
// torchvision checkpoints (`features.3.weight`) are mapped onto them by one table of slice bounds.
// Ref: richzhang/PerceptualSimilarity lpips/lpips.py (LPIPS, ScalingLayer, NetLinLayer,
//      normalize_tensor, spatial_average), lpips/pretrained_networks.py (alexnet, vgg16).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/json_fields.h"

namespace idsynth::eval {

enum class LpipsNet { alex, vgg };
// "alex" | "vgg"; anything else throws listing the accepted names.
LpipsNet parse_lpips_net(const std::string& name);
const char* lpips_net_name(LpipsNet net);

// One trunk slice: torchvision `features` layers [a, b); convs registered under their index.
class LpipsSliceImpl : public torch::nn::Module {
 public:
  LpipsSliceImpl();
  void add(std::function<at::Tensor(const at::Tensor&)> op);
  at::Tensor forward(const at::Tensor& x);

 private:
  std::vector<std::function<at::Tensor(const at::Tensor&)>> ops_;
};
TORCH_MODULE(LpipsSlice);

// The five trunk slices, registered as `slice1` .. `slice5` with torchvision's `features` indices.
class LpipsTrunkImpl : public torch::nn::Module {
 public:
  explicit LpipsTrunkImpl(LpipsNet net);
  std::vector<at::Tensor> forward(const at::Tensor& x);  // 5 ReLU outputs
  const std::vector<int64_t>& channels() const { return channels_; }

 private:
  std::vector<LpipsSlice> slices_;
  std::vector<int64_t> channels_;
};
TORCH_MODULE(LpipsTrunk);

class LpipsImpl : public torch::nn::Module {
 public:
  explicit LpipsImpl(LpipsNet net);

  // (N, 3, H, W) pairs -> (N, 1, 1, 1) distances; `per_layer` receives the 5 terms when given.
  at::Tensor forward(const at::Tensor& in0, const at::Tensor& in1, bool normalize = false,
                     std::vector<at::Tensor>* per_layer = nullptr);

  // The unit-normalised feature maps of a batch (computed once per image for all-pairs distances).
  std::vector<at::Tensor> normalized_features(const at::Tensor& images, bool normalize = false);
  // Distances between row i of `a` and row i of `b` (features from normalized_features): (N, 1, 1, 1).
  at::Tensor distance_from_features(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b,
                                    std::vector<at::Tensor>* per_layer = nullptr);

  LpipsNet net_type() const { return net_type_; }

 private:
  LpipsNet net_type_;
  LpipsTrunk net{nullptr};
  std::vector<torch::nn::Conv2d> lins_;  // lin<k>.model.1: the 1x1 conv, no bias
  at::Tensor shift_, scale_;                 // ScalingLayer constants (not in the weight files)
};
TORCH_MODULE(Lpips);

// Builds LPIPS and loads the trunk (torchvision `alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth`, or
// their safetensors copies; `classifier.*` ignored) and the v0.1 linear layers (lpips `alex.pth`,
// `vgg.pth`), strictly by name. Eval mode.
Lpips load_lpips(LpipsNet net, const std::string& trunk_path, const std::string& lin_path);

// LPIPS diversity: per identity the mean distance over all K(K-1)/2 unordered pairs of its images
// (K >= 2), then the mean over identities. `identities[i]` is (K_i, 3, H, W) in [-1, 1].
struct LpipsDiversity {
  double mean = 0.0;                  // mean over identities
  std::vector<double> per_identity;   // mean over pairs, per identity
  int64_t pairs = 0;                  // pairs evaluated in total
};
LpipsDiversity lpips_diversity(Lpips& model, const std::vector<at::Tensor>& identities, int64_t batch_size = 16);

// The "lpips" entry of metrics.json. `idsynth eval lpips` writes every field; a hand-written entry (a
// published number) may give only the diversity.
struct LpipsMetrics {
  static constexpr const char* kEntry = "lpips";
  double diversity = 0.0;                  // LpipsDiversity::mean
  std::optional<std::string> net;          // the --net given: alex | vgg (vgg16)
  std::optional<int64_t> identities;
  std::optional<int64_t> pairs;
  std::optional<std::vector<double>> per_identity;

  template <class Self, class F>
  static void fields(Self& m, F& f) {
    f("diversity", m.diversity);
    f("net", m.net);
    f("identities", m.identities);
    f("pairs", m.pairs);
    f("per_identity", m.per_identity);
  }
  json::Value to_json() const { return json_fields::write(*this); }
  static LpipsMetrics from_json(const json::Value& entry, const std::string& where) {
    return json_fields::read<LpipsMetrics>(entry, where);
  }
};

// The entry for a diversity run with the trunk named `net` as the user gave it.
LpipsMetrics lpips_metrics(const LpipsDiversity& diversity, const std::string& net);

}  // namespace idsynth::eval
