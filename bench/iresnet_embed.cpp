// IResNet embeddings per second on the CPU: the native libtorch module, the same network through
// idsynth's ONNX import, and OpenCV DNN on that ONNX file, in one run with random weights.
//   bench_iresnet_embed [--depth r100] [--batch 64] [--iters 1] [--threads N]
// The ONNX file is written from the module's weights with the protobuf API (BatchNorm kept as
// nodes, PReLU slopes [C,1,1], Flatten + Gemm(transB) like arcface_torch's torch2onnx export).
#include <ATen/ATen.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <iostream>
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <string>
#include <thread>

#include "core/onnx_model.h"
#include "recognition/iresnet.h"

using namespace idsynth;
using namespace idsynth::recognition;

namespace {

// ONNX graph writer for the IResNet topology.
class GraphWriter {
 public:
  explicit GraphWriter(onnx::GraphProto* g) : g_(g) {}

  void init(const std::string& name, const at::Tensor& t) {
    at::Tensor c = t.detach().to(at::kFloat).contiguous();
    auto* p = g_->add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : c.sizes()) p->add_dims(d);
    p->set_raw_data(std::string(static_cast<const char*>(c.data_ptr()), c.numel() * sizeof(float)));
  }
  onnx::NodeProto* node(const std::string& op, std::vector<std::string> in, const std::string& out) {
    auto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(op + "_" + std::to_string(count_++));
    for (auto& i : in) n->add_input(i);
    n->add_output(out);
    return n;
  }
  static void ints(onnx::NodeProto* n, const char* name, std::vector<int64_t> v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  }
  static void i(onnx::NodeProto* n, const char* name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  std::string conv(const std::string& x, const torch::nn::Conv2d& m, const std::string& name) {
    init(name + ".weight", m->weight);
    const auto& o = m->options;
    auto* n = node("Conv", {x, name + ".weight"}, name);
    const int64_t k = o.kernel_size()->at(0), s = o.stride()->at(0);
    const int64_t p = c10::get<torch::ExpandingArray<2>>(o.padding())->at(0);
    ints(n, "kernel_shape", {k, k});
    ints(n, "strides", {s, s});
    ints(n, "pads", {p, p, p, p});
    return name;
  }
  template <typename BN>
  std::string bn(const std::string& x, const BN& m, const std::string& name) {
    for (const char* f : {"weight", "bias", "running_mean", "running_var"}) {
      const std::string key = f;
      at::Tensor t = key == "weight" ? m->weight : key == "bias" ? m->bias : key == "running_mean" ? m->running_mean : m->running_var;
      init(name + "." + key, t);
    }
    node("BatchNormalization", {x, name + ".weight", name + ".bias", name + ".running_mean", name + ".running_var"}, name);
    return name;
  }
  std::string prelu(const std::string& x, const torch::nn::PReLU& m, const std::string& name) {
    init(name + ".weight", m->weight.reshape({-1, 1, 1}));
    node("PRelu", {x, name + ".weight"}, name);
    return name;
  }

 private:
  onnx::GraphProto* g_;
  int count_ = 0;
};

std::string export_onnx(IResNet& model) {
  onnx::ModelProto proto;
  proto.set_ir_version(6);
  proto.set_producer_name("idsynth bench");
  auto* op = proto.add_opset_import();
  op->set_domain("");
  op->set_version(11);
  auto* g = proto.mutable_graph();
  g->set_name("iresnet");
  auto add_io = [](onnx::ValueInfoProto* v, const std::string& name, std::vector<int64_t> dims) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    for (auto d : dims) {
      auto* dim = tt->mutable_shape()->add_dim();
      if (d < 0)
        dim->set_dim_param("None");
      else
        dim->set_dim_value(d);
    }
  };
  add_io(g->add_input(), "data", {-1, 3, 112, 112});
  GraphWriter w(g);
  std::string x = w.prelu(w.bn(w.conv("data", model->conv1, "conv1"), model->bn1, "bn1"), model->prelu, "prelu");
  int stage = 1;
  for (auto* layer : {&model->layer1, &model->layer2, &model->layer3, &model->layer4}) {
    for (size_t b = 0; b < (*layer)->size(); ++b) {
      auto blk = (*layer)[b]->as<IBasicBlockImpl>();
      const std::string p = "layer" + std::to_string(stage) + "." + std::to_string(b) + ".";
      std::string y = w.bn(x, blk->bn1, p + "bn1");
      y = w.bn(w.conv(y, blk->conv1, p + "conv1"), blk->bn2, p + "bn2");
      y = w.bn(w.conv(w.prelu(y, blk->prelu, p + "prelu"), blk->conv2, p + "conv2"), blk->bn3, p + "bn3");
      std::string sc = x;
      if (!blk->downsample.is_empty()) {
        const torch::nn::Conv2d conv(std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(blk->downsample->ptr(0)));
        const torch::nn::BatchNorm2d norm(std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(blk->downsample->ptr(1)));
        sc = w.bn(w.conv(x, conv, p + "downsample.0"), norm, p + "downsample.1");
      }
      w.node("Add", {y, sc}, p + "add");
      x = p + "add";
    }
    ++stage;
  }
  x = w.bn(x, model->bn2, "bn2");
  GraphWriter::i(w.node("Flatten", {x}, "flat"), "axis", 1);
  w.init("fc.weight", model->fc->weight);
  w.init("fc.bias", model->fc->bias);
  GraphWriter::i(w.node("Gemm", {"flat", "fc.weight", "fc.bias"}, "fc"), "transB", 1);
  w.bn(std::string("fc"), model->features, "features");
  add_io(g->add_output(), "features", {-1, model->config().num_features});
  return proto.SerializeAsString();
}

double seconds_of(const std::function<void()>& f, int iters) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
}

}  // namespace

int main(int argc, char** argv) {
  std::string depth = "r100";
  int64_t batch = 64;
  int iters = 1;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--depth") depth = argv[i + 1];
    else if (a == "--batch") batch = std::stoll(argv[i + 1]);
    else if (a == "--iters") iters = std::stoi(argv[i + 1]);
    else if (a == "--threads") threads = std::stoi(argv[i + 1]);
    else {
      std::cerr << "usage: bench_iresnet_embed [--depth r100] [--batch 64] [--iters 1] [--threads N]\n";
      return 2;
    }
  }
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(threads);
  cv::setNumThreads(threads);
  at::globalContext().setFlushDenormal(true);
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;

  // 1. random-weight IResNet with tame activations (unit BN statistics, small conv weights)
  IResNet model(IResNetConfig::from_name(depth));
  for (auto& p : model->named_parameters()) {
    if (p.key().find("conv") != std::string::npos || p.key().find("downsample.0") != std::string::npos)
      p.value().normal_(0.0, 0.02);
  }
  model->eval();
  const std::string bytes = export_onnx(model);
  OnnxModel onnx = OnnxModel::from_bytes(bytes, depth + ".onnx");
  cv::dnn::Net net = cv::dnn::readNetFromONNX(bytes.data(), bytes.size());
  const at::Tensor x = torch::rand({batch, 3, 112, 112}) * 2 - 1;
  std::cout << "IResNet-" << depth.substr(1) << " " << IResNetConfig::from_name(depth).to_string() << ", batch " << batch
            << ", " << threads << " threads, ONNX " << bytes.size() / 1e6 << " MB\n";

  // 2. the three runtimes; a warm-up call each (one-off weight reordering, allocations)
  at::Tensor y_native, y_onnx, y_cv;
  at::Tensor input = x.slice(0, 0, std::min<int64_t>(batch, 2));  // warm-up on a small batch
  auto run_native = [&] { y_native = model->forward(input); };
  auto run_onnx = [&] { y_onnx = onnx.forward(input); };
  auto run_cv = [&] {
    at::Tensor c = input.contiguous();
    std::vector<int> shape(c.sizes().begin(), c.sizes().end());
    net.setInput(cv::Mat(4, shape.data(), CV_32F, c.data_ptr<float>()));
    cv::Mat out = net.forward();
    y_cv = torch::from_blob(out.ptr<float>(), {out.size[0], out.size[1]}, torch::kFloat).clone();
  };
  run_native();
  run_onnx();
  run_cv();
  input = x;
  const double t_native = seconds_of(run_native, iters);
  const double t_onnx = seconds_of(run_onnx, iters);
  const double t_cv = seconds_of(run_cv, iters);
  const double scale = y_native.abs().max().item<double>();
  std::cout << "native module : " << batch / t_native << " embeddings/s (" << t_native << " s per batch)\n"
            << "ONNX import   : " << batch / t_onnx << " embeddings/s (" << t_onnx << " s), " << t_native / t_onnx
            << "x native; max|diff| " << (y_onnx - y_native).abs().max().item<double>() << " of " << scale << "\n"
            << "OpenCV DNN    : " << batch / t_cv << " embeddings/s (" << t_cv << " s), " << t_native / t_cv
            << "x native; max|diff| " << (y_cv - y_native).abs().max().item<double>() << "\n";
  return 0;
}
