// Ref: richzhang/PerceptualSimilarity lpips/lpips.py, lpips/pretrained_networks.py (see lpips.h).
#include "eval/lpips.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/pooling.h>
#include <torch/torch.h>

#include <algorithm>
#include <numeric>

#include "core/check.h"
#include "core/log.h"
#include "core/weights.h"

namespace idsynth::eval {

namespace {

constexpr double kNormEps = 1e-10;  // lpips.normalize_tensor: outside the square root

// One entry of torchvision's `features`: a 3x3/5x5/11x11 conv (in, out, kernel, stride, pad),
// a ReLU, or a 3x3 stride-2 max pool (kernel 3 stride 2 for alex, 2/2 for vgg).
struct Layer {
  enum Kind { conv, relu, pool } kind;
  int64_t in = 0, out = 0, kernel = 0, stride = 1, pad = 0;
};

struct TrunkSpec {
  std::vector<Layer> layers;
  std::vector<int64_t> bounds;  // slice k covers layers [bounds[k], bounds[k+1])
  int64_t pool_kernel;
  int64_t pool_stride;
};

const TrunkSpec& trunk_spec(LpipsNet net) {
  static const TrunkSpec alex = [] {
    TrunkSpec s;
    s.layers = {{Layer::conv, 3, 64, 11, 4, 2}, {Layer::relu}, {Layer::pool},
                {Layer::conv, 64, 192, 5, 1, 2}, {Layer::relu}, {Layer::pool},
                {Layer::conv, 192, 384, 3, 1, 1}, {Layer::relu},
                {Layer::conv, 384, 256, 3, 1, 1}, {Layer::relu},
                {Layer::conv, 256, 256, 3, 1, 1}, {Layer::relu}};
    s.bounds = {0, 2, 5, 8, 10, 12};
    s.pool_kernel = 3;
    s.pool_stride = 2;
    return s;
  }();
  static const TrunkSpec vgg = [] {
    TrunkSpec s;
    const int64_t cfg[] = {64, 64, -1, 128, 128, -1, 256, 256, 256, -1, 512, 512, 512, -1, 512, 512, 512};
    int64_t in = 3;
    for (int64_t c : cfg) {
      if (c < 0) {
        s.layers.push_back({Layer::pool});
      } else {
        s.layers.push_back({Layer::conv, in, c, 3, 1, 1});
        s.layers.push_back({Layer::relu});
        in = c;
      }
    }
    s.bounds = {0, 4, 9, 16, 23, 30};
    s.pool_kernel = 2;
    s.pool_stride = 2;
    return s;
  }();
  return net == LpipsNet::alex ? alex : vgg;
}

// "features.<i>.<rest>" -> "net.slice<k>.<i>.<rest>" (lpips' names for torchvision's trunk).
std::string trunk_key(const TrunkSpec& spec, const std::string& key) {
  const std::string prefix = "features.";
  if (key.rfind(prefix, 0) != 0) return key;
  const size_t dot = key.find('.', prefix.size());
  if (dot == std::string::npos) return key;
  const std::string index = key.substr(prefix.size(), dot - prefix.size());
  if (index.empty() || index.find_first_not_of("0123456789") != std::string::npos) return key;
  const int64_t i = std::stoll(index);
  for (size_t k = 0; k + 1 < spec.bounds.size(); ++k)
    if (i >= spec.bounds[k] && i < spec.bounds[k + 1]) return cat("net.slice", k + 1, ".", key.substr(prefix.size()));
  return key;  // past the last slice (the final max pool has no parameters): left unexpected
}

at::Tensor normalize_tensor(const at::Tensor& x) {
  const at::Tensor norm = at::sqrt(at::sum(x * x, {1}, /*keepdim=*/true));
  return x / (norm + kNormEps);
}

}  // namespace

LpipsNet parse_lpips_net(const std::string& name) {
  if (name == "alex") return LpipsNet::alex;
  if (name == "vgg" || name == "vgg16") return LpipsNet::vgg;
  fail("lpips: net: expected one of {alex, vgg}, found '", name, "'");
}

const char* lpips_net_name(LpipsNet net) { return net == LpipsNet::alex ? "alex" : "vgg"; }

LpipsSliceImpl::LpipsSliceImpl() = default;

void LpipsSliceImpl::add(std::function<at::Tensor(const at::Tensor&)> op) { ops_.push_back(std::move(op)); }

at::Tensor LpipsSliceImpl::forward(const at::Tensor& x) {
  at::Tensor h = x;
  for (const auto& op : ops_) h = op(h);
  return h;
}

LpipsTrunkImpl::LpipsTrunkImpl(LpipsNet net) {
  const TrunkSpec& spec = trunk_spec(net);
  for (size_t k = 0; k + 1 < spec.bounds.size(); ++k) {
    LpipsSlice slice;
    int64_t channels = 0;
    for (int64_t i = spec.bounds[k]; i < spec.bounds[k + 1]; ++i) {
      const Layer& l = spec.layers[static_cast<size_t>(i)];
      const std::string name = std::to_string(i);
      if (l.kind == Layer::conv) {
        // registered under torchvision's index, so parameters are net.slice<k>.<i>.weight
        auto conv = slice->register_module(
            name, torch::nn::Conv2d(torch::nn::Conv2dOptions(l.in, l.out, l.kernel).stride(l.stride).padding(l.pad)));
        slice->add([conv](const at::Tensor& x) mutable { return conv->forward(x); });
        channels = l.out;
      } else if (l.kind == Layer::relu) {
        slice->add([](const at::Tensor& x) { return at::relu(x); });
      } else {
        const int64_t kernel = spec.pool_kernel, stride = spec.pool_stride;
        slice->add([kernel, stride](const at::Tensor& x) { return at::max_pool2d(x, {kernel, kernel}, {stride, stride}); });
      }
    }
    slices_.push_back(register_module(cat("slice", k + 1), slice));
    channels_.push_back(channels);
  }
}

std::vector<at::Tensor> LpipsTrunkImpl::forward(const at::Tensor& x) {
  std::vector<at::Tensor> outs;
  at::Tensor h = x;
  for (auto& slice : slices_) {
    h = slice->forward(h);  // [N, C_k, H_k, W_k] after the slice's ReLU
    outs.push_back(h);
  }
  return outs;
}

LpipsImpl::LpipsImpl(LpipsNet net_type) : net_type_(net_type) {
  net = register_module("net", LpipsTrunk(net_type));
  for (size_t k = 0; k < net->channels().size(); ++k) {
    // lin<k>.model = Sequential(Dropout, Conv2d): only index 1 has a weight (Dropout is a no-op in eval)
    auto model = std::make_shared<torch::nn::Module>();
    auto conv = model->register_module("1", torch::nn::Conv2d(torch::nn::Conv2dOptions(net->channels()[k], 1, 1).bias(false)));
    auto lin = std::make_shared<torch::nn::Module>();
    lin->register_module("model", model);
    register_module(cat("lin", k), lin);
    lins_.push_back(conv);
  }
  // v0.1 ScalingLayer: ImageNet mean/std mapped to [-1, 1]
  shift_ = at::tensor({-.030, -.088, -.188}, at::kFloat).view({1, 3, 1, 1});
  scale_ = at::tensor({.458, .448, .450}, at::kFloat).view({1, 3, 1, 1});
}

std::vector<at::Tensor> LpipsImpl::normalized_features(const at::Tensor& images, bool normalize) {
  IDSYNTH_CHECK(images.dim() == 4 && images.size(1) == 3, "lpips: images: expected (N, 3, H, W), found ",
                images.sizes());
  at::Tensor x = normalize ? 2 * images - 1 : images;
  const auto& w = lins_[0]->weight;
  x = (x.to(w.options()) - shift_.to(w.options())) / scale_.to(w.options());
  std::vector<at::Tensor> feats = net->forward(x);
  for (auto& f : feats) f = normalize_tensor(f);
  return feats;
}

at::Tensor LpipsImpl::distance_from_features(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b,
                                             std::vector<at::Tensor>* per_layer) {
  IDSYNTH_CHECK(a.size() == lins_.size() && b.size() == lins_.size(), "lpips: expected ", lins_.size(),
                " feature maps per side, found ", a.size(), " and ", b.size());
  at::Tensor val;
  if (per_layer) per_layer->clear();
  for (size_t k = 0; k < lins_.size(); ++k) {
    const at::Tensor d = (a[k] - b[k]).pow(2);                                 // [N, C_k, H_k, W_k]
    const at::Tensor res = lins_[k]->forward(d).mean({2, 3}, /*keepdim=*/true);  // [N, 1, 1, 1]
    if (per_layer) per_layer->push_back(res);
    val = val.defined() ? val + res : res;
  }
  return val;
}

at::Tensor LpipsImpl::forward(const at::Tensor& in0, const at::Tensor& in1, bool normalize,
                              std::vector<at::Tensor>* per_layer) {
  IDSYNTH_CHECK(in0.sizes() == in1.sizes(), "lpips: expected two batches of equal shape, found ", in0.sizes(),
                " and ", in1.sizes());
  return distance_from_features(normalized_features(in0, normalize), normalized_features(in1, normalize), per_layer);
}

Lpips load_lpips(LpipsNet net_type, const std::string& trunk_path, const std::string& lin_path) {
  log::Stopwatch sw;
  Lpips model(net_type);
  const TrunkSpec& spec = trunk_spec(net_type);
  TensorDict merged;
  merged.set_source(trunk_path + " + " + lin_path);
  for (const auto& [name, t] : read_weights(trunk_path)) merged.insert(trunk_key(spec, name), t);
  for (const auto& [name, t] : read_weights(lin_path)) merged.insert(name, t);
  LoadOptions options;
  options.ignore_unexpected = {"classifier."};  // torchvision's classifier head
  load_state_dict(*model, merged, options);
  model->eval();
  LOG_INF("loading lpips-", lpips_net_name(net_type), " completed, taking ", sw.seconds(), " s");
  return model;
}

LpipsDiversity lpips_diversity(Lpips& model, const std::vector<at::Tensor>& identities, int64_t batch_size) {
  IDSYNTH_CHECK(!identities.empty(), "lpips diversity: expected at least one identity, found none");
  IDSYNTH_CHECK(batch_size >= 1, "lpips diversity: batch size: expected at least 1, found ", batch_size);
  torch::NoGradGuard no_grad;
  LpipsDiversity out;
  for (size_t id = 0; id < identities.size(); ++id) {
    const at::Tensor& images = identities[id];
    IDSYNTH_CHECK(images.dim() == 4 && images.size(0) >= 2, "lpips diversity: identity ", id,
                  ": expected at least 2 images (K, 3, H, W), found ", images.sizes());
    const int64_t k = images.size(0);
    // 1. features of every image once
    std::vector<std::vector<at::Tensor>> chunks;
    for (int64_t b = 0; b < k; b += batch_size) chunks.push_back(model->normalized_features(images.slice(0, b, std::min(k, b + batch_size))));
    std::vector<at::Tensor> feats;
    for (size_t l = 0; l < chunks[0].size(); ++l) {
      std::vector<at::Tensor> parts;
      for (const auto& c : chunks) parts.push_back(c[l]);
      feats.push_back(at::cat(parts, 0));
    }
    // 2. all unordered pairs i < j, batched
    std::vector<int64_t> ii, jj;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = i + 1; j < k; ++j) ii.push_back(i), jj.push_back(j);
    double sum = 0.0;
    for (size_t b = 0; b < ii.size(); b += static_cast<size_t>(batch_size)) {
      const size_t e = std::min(ii.size(), b + static_cast<size_t>(batch_size));
      const at::Tensor ia = at::tensor(std::vector<int64_t>(ii.begin() + b, ii.begin() + e), at::kLong);
      const at::Tensor ja = at::tensor(std::vector<int64_t>(jj.begin() + b, jj.begin() + e), at::kLong);
      std::vector<at::Tensor> fa, fb;
      for (const auto& f : feats) {
        fa.push_back(f.index_select(0, ia.to(f.device())));
        fb.push_back(f.index_select(0, ja.to(f.device())));
      }
      sum += model->distance_from_features(fa, fb).to(at::kDouble).sum().item<double>();
    }
    out.per_identity.push_back(sum / static_cast<double>(ii.size()));
    out.pairs += static_cast<int64_t>(ii.size());
  }
  out.mean = std::accumulate(out.per_identity.begin(), out.per_identity.end(), 0.0) /
             static_cast<double>(out.per_identity.size());
  return out;
}

LpipsMetrics lpips_metrics(const LpipsDiversity& d, const std::string& net) {
  LpipsMetrics m;
  m.diversity = d.mean;
  m.net = net;
  m.identities = static_cast<int64_t>(d.per_identity.size());
  m.pairs = d.pairs;
  m.per_identity = d.per_identity;
  return m;
}

}  // namespace idsynth::eval
