// Ref: deepinsight/insightface recognition/arcface_torch/backbones/iresnet.py
#include "recognition/iresnet.h"

#include <ATen/Context.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/utils.h>

#include <mutex>
#include <sstream>

#include "core/check.h"
#include "core/invariant_kernels.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/weights.h"

namespace idsynth::recognition {

namespace {

// BatchNorm eps of every IResNet norm layer (2-D and the 1-D `features`).
constexpr double kBnEps = 1e-5;
// The trunk divides 112 by 2⁴: the fc sees a 7×7 map per channel.
constexpr int64_t kFinalMap = 7;

struct DepthEntry {
  const char* name;
  std::vector<int64_t> layers;
};

const std::vector<DepthEntry>& depth_table() {
  static const std::vector<DepthEntry> table = {
      {"r18", {2, 2, 2, 2}},   {"r34", {3, 4, 6, 3}},    {"r50", {3, 4, 14, 3}},
      {"r100", {3, 13, 30, 3}}, {"r200", {6, 26, 60, 6}},
  };
  return table;
}

torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

torch::nn::BatchNorm2d bn2d(int64_t c) { return torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(c).eps(kBnEps)); }

std::string join(const std::vector<int64_t>& v) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  return os.str();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config

IResNetConfig IResNetConfig::from_name(const std::string& name) {
  for (const auto& e : depth_table()) {
    if (name == e.name) {
      IResNetConfig c;
      c.layers = e.layers;
      return c;
    }
  }
  std::string accepted;
  for (const auto& e : depth_table()) accepted += std::string(accepted.empty() ? "" : ", ") + e.name;
  fail("IResNet: network name: expected one of ", accepted, ", found '", name, "'");
}

IResNetConfig IResNetConfig::from_weights(const TensorDict& weights, const std::string& prefix) {
  auto shape_of = [&](const std::string& name) -> const at::Tensor& {
    const at::Tensor* t = weights.find(prefix + name);
    IDSYNTH_CHECK(t != nullptr, weights.source(), ": IResNet weights: expected tensor '", prefix + name,
                  "', not found");
    return *t;
  };
  IResNetConfig c;
  c.layers.clear();
  c.widths.clear();
  for (int stage = 1; stage <= 4; ++stage) {
    const std::string base = cat("layer", stage, ".");
    int64_t n = 0;
    while (weights.contains(cat(prefix, base, n, ".conv1.weight"))) ++n;
    IDSYNTH_CHECK(n > 0, weights.source(), ": IResNet weights: expected '", prefix, base,
                  "0.conv1.weight' (stage ", stage, "), not found");
    c.layers.push_back(n);
    c.widths.push_back(shape_of(base + "0.conv1.weight").size(0));
  }
  const at::Tensor& stem = shape_of("conv1.weight");
  IDSYNTH_CHECK(stem.dim() == 4 && stem.size(0) == c.widths[0] && stem.size(1) == 3, weights.source(),
                ": IResNet weights: conv1.weight: expected [", c.widths[0], ", 3, 3, 3], found ",
                shape_string(stem.sizes()));
  const at::Tensor& fc = shape_of("fc.weight");
  IDSYNTH_CHECK(fc.dim() == 2, weights.source(), ": IResNet weights: fc.weight: expected 2 dims, found ",
                shape_string(fc.sizes()));
  c.num_features = fc.size(0);
  IDSYNTH_CHECK(fc.size(1) == c.fc_in(), weights.source(), ": IResNet weights: fc.weight: expected ",
                c.fc_in(), " inputs (", c.widths.back(), "·7·7 for 112×112 input), found ", fc.size(1));
  return c;
}

void IResNetConfig::check() const {
  IDSYNTH_CHECK(layers.size() == 4, "IResNet config: layers: expected 4 stages, found ", layers.size());
  IDSYNTH_CHECK(widths.size() == 4, "IResNet config: widths: expected 4 stages, found ", widths.size());
  for (size_t i = 0; i < 4; ++i) {
    IDSYNTH_CHECK(layers[i] >= 1, "IResNet config: layers[", i, "]: expected >= 1, found ", layers[i]);
    IDSYNTH_CHECK(widths[i] >= 1, "IResNet config: widths[", i, "]: expected >= 1, found ", widths[i]);
  }
  IDSYNTH_CHECK(num_features >= 1, "IResNet config: num_features: expected >= 1, found ", num_features);
  IDSYNTH_CHECK(dropout >= 0.0 && dropout < 1.0, "IResNet config: dropout: expected [0, 1), found ", dropout);
}

std::string IResNetConfig::to_string() const {
  return cat("layers=[", join(layers), "] widths=[", join(widths), "] num_features=", num_features,
             " dropout=", dropout, " fp16=", fp16 ? "true" : "false");
}

// ---------------------------------------------------------------------------------------------
// IBasicBlock

IBasicBlockImpl::IBasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, bool with_downsample) {
  bn1 = register_module("bn1", bn2d(inplanes));
  conv1 = register_module("conv1", conv3x3(inplanes, planes, 1));
  bn2 = register_module("bn2", bn2d(planes));
  prelu = register_module("prelu", torch::nn::PReLU(torch::nn::PReLUOptions().num_parameters(planes)));
  conv2 = register_module("conv2", conv3x3(planes, planes, stride));
  bn3 = register_module("bn3", bn2d(planes));
  if (with_downsample) {
    downsample = register_module(
        "downsample",
        torch::nn::Sequential(
            torch::nn::Conv2d(torch::nn::Conv2dOptions(inplanes, planes, 1).stride(stride).bias(false)),
            bn2d(planes)));
  }
}

torch::Tensor IBasicBlockImpl::forward(const torch::Tensor& x) {
  auto out = bn1(x);
  out = kernels::conv2d(conv1, out);
  out = bn2(out);
  out = prelu(out);
  out = kernels::conv2d(conv2, out);  // [N, planes, H/stride, W/stride]
  out = bn3(out);
  auto identity = x;
  if (downsample) {
    const torch::nn::Conv2d projection(downsample->ptr<torch::nn::Conv2dImpl>(0));
    identity = downsample[1]->as<torch::nn::BatchNorm2d>()->forward(kernels::conv2d(projection, x));
  }
  return out + identity;
}

// ---------------------------------------------------------------------------------------------
// IResNet

IResNetImpl::IResNetImpl(IResNetConfig config) : config_(std::move(config)) {
  config_.check();
  const auto& w = config_.widths;
  conv1 = register_module("conv1", conv3x3(3, w[0], 1));
  bn1 = register_module("bn1", bn2d(w[0]));
  prelu = register_module("prelu", torch::nn::PReLU(torch::nn::PReLUOptions().num_parameters(w[0])));
  int64_t inplanes = w[0];
  auto make_layer = [&](int64_t planes, int64_t blocks) {
    torch::nn::Sequential layer;
    // Every stage has stride 2, so block 0 always needs the projection shortcut.
    layer->push_back(IBasicBlock(inplanes, planes, 2, true));
    inplanes = planes;
    for (int64_t i = 1; i < blocks; ++i) layer->push_back(IBasicBlock(inplanes, planes, 1, false));
    return layer;
  };
  layer1 = register_module("layer1", make_layer(w[0], config_.layers[0]));
  layer2 = register_module("layer2", make_layer(w[1], config_.layers[1]));
  layer3 = register_module("layer3", make_layer(w[2], config_.layers[2]));
  layer4 = register_module("layer4", make_layer(w[3], config_.layers[3]));
  bn2 = register_module("bn2", bn2d(w[3]));
  dropout = register_module("dropout", torch::nn::Dropout(torch::nn::DropoutOptions(config_.dropout)));
  fc = register_module("fc", torch::nn::Linear(config_.fc_in(), config_.num_features));
  features = register_module("features",
                             torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(config_.num_features).eps(kBnEps)));
  if (config_.fp16) set_trunk_dtype(c10::kHalf);
}

void IResNetImpl::set_trunk_dtype(c10::ScalarType dtype) {
  for (torch::nn::Module* m : std::vector<torch::nn::Module*>{
           conv1.get(), bn1.get(), prelu.get(), layer1.get(), layer2.get(), layer3.get(), layer4.get(), bn2.get()})
    m->to(dtype);
  trunk_dtype_ = dtype;
}

torch::Tensor IResNetImpl::forward(const torch::Tensor& input) {
  const int64_t expected_fc_map = kFinalMap;
  // 1. stem: [N, 3, 112, 112] -> [N, w0, 112, 112]
  auto x = input.to(trunk_dtype_);
  x = prelu(bn1(kernels::conv2d(conv1, x)));
  // 2. stages: 112 -> 56 -> 28 -> 14 -> 7
  x = layer1->forward(x);
  x = layer2->forward(x);
  x = layer3->forward(x);
  x = layer4->forward(x);  // [N, w3, 7, 7]
  TORCH_CHECK(x.size(2) == expected_fc_map && x.size(3) == expected_fc_map,
              "IResNet: expected a 112×112 input (7×7 before fc), found a final map of ", x.sizes());
  // 3. head: bn2 -> flatten (c·49 + h·7 + w) -> dropout -> fc -> features, fc always in float32
  x = bn2(x);
  x = torch::flatten(x, 1);  // [N, w3·49]
  x = dropout(x);
  x = kernels::linear(fc, x.to(torch::kFloat));  // [N, num_features]
  return features(x);
}

std::shared_ptr<IResNetImpl> IResNetImpl::replicate(c10::Device device) const {
  // The constructor draws initial weights that are overwritten below; keep the default CPU
  // generator where it was, so replicas do not change the run's random stream.
  at::Generator gen = at::globalContext().defaultGenerator(c10::kCPU);
  at::Tensor rng_state;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    rng_state = gen.get_state();
  }
  IResNetConfig config = config_;
  config.fp16 = false;  // the trunk dtype is copied below, whatever set it
  auto copy = std::make_shared<IResNetImpl>(config);
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng_state);
  }
  if (trunk_dtype_ != c10::kFloat) copy->set_trunk_dtype(trunk_dtype_);
  copy->to(device);
  copy->train(is_training());
  torch::NoGradGuard no_grad;
  auto copy_all = [](const torch::OrderedDict<std::string, at::Tensor>& from,
                     torch::OrderedDict<std::string, at::Tensor> to, const char* what) {
    IDSYNTH_CHECK(from.size() == to.size(), "IResNet::replicate: expected ", from.size(), " ", what, ", found ", to.size());
    for (size_t i = 0; i < from.size(); ++i) {
      IDSYNTH_CHECK(from[i].key() == to[i].key(), "IResNet::replicate: ", what, " ", i, ": expected '", from[i].key(),
                    "', found '", to[i].key(), "'");
      to[i].value().copy_(from[i].value());
      to[i].value().set_requires_grad(from[i].value().requires_grad());
    }
  };
  copy_all(named_parameters(true), copy->named_parameters(true), "parameters");
  copy_all(named_buffers(true), copy->named_buffers(true), "buffers");
  return copy;
}

std::shared_ptr<torch::nn::Module> IResNetImpl::clone(const c10::optional<c10::Device>& device) const {
  return replicate(device ? *device : conv1->weight.device());
}

// ---------------------------------------------------------------------------------------------
// Loading

IResNet make_iresnet(const TensorDict& weights, c10::Device device, bool fp16) {
  // DataParallel dumps prefix every name with "module.".
  std::string prefix;
  if (!weights.contains("conv1.weight") && weights.contains("module.conv1.weight")) prefix = "module.";
  IResNetConfig config = IResNetConfig::from_weights(weights, prefix);
  config.fp16 = fp16;
  LOG_DBG("IResNet from ", weights.source(), ": ", config.to_string());
  IResNet model(config);
  // Exports and converted files often lack the BatchNorm step counters; they do not affect inference.
  TensorDict completed = weights;
  for (const auto& [name, tensor] : module_state(*model)) {
    const std::string suffix = ".num_batches_tracked";
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        !weights.contains(prefix + name))
      completed.insert(prefix + name, torch::zeros({}, torch::kLong));
  }
  completed.set_source(weights.source());
  LoadOptions options;
  options.strip_prefix = prefix;
  load_state_dict(*model, completed, options);
  model->to(device);
  model->eval();
  return model;
}

IResNet load_iresnet(const std::string& path, c10::Device device, bool fp16) {
  TensorDict weights = read_weights(path);
  if (weights.source().empty()) weights.set_source(path);
  return make_iresnet(weights, device, fp16);
}

void write_random_iresnet(const std::string& path, int64_t num_features, int64_t seed) {
  IResNetConfig c;
  c.layers = {1, 1, 1, 1};
  c.widths = {8, 8, 16, 16};
  c.num_features = num_features;
  c.check();
  torch::manual_seed(static_cast<uint64_t>(seed) * 3 + 4);
  IResNet net(c);
  torch::NoGradGuard no_grad;
  for (auto& m : net->modules(/*include_self=*/false)) {
    if (auto* bn2 = m->as<torch::nn::BatchNorm2d>()) bn2->options.momentum(1.0);
    if (auto* bn1 = m->as<torch::nn::BatchNorm1d>()) bn1->options.momentum(1.0);
  }
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed) * 3 + 5);
  net->train();
  net->forward(at::rand({16, 3, 112, 112}, gen) * 2.0 - 1.0);
  net->eval();
  save_safetensors(path, module_state(*net), {{"format", "pt"}});
}

}  // namespace idsynth::recognition
