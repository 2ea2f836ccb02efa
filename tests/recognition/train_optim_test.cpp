// SGD, the learning-rate schedules and loss scaling against values computed by hand from PyTorch's
// formulas; torch::optim::SGD against a reference update, bit for bit; momentum buffers carried into a
// fresh optimiser (resume); which IResNet parameters get weight decay.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <memory>
#include <vector>

#include "core/file_util.h"
#include "recognition/iresnet.h"
#include "recognition/train_optim.h"
#include "tests/support/goldens.h"

namespace idsynth::recognition {
namespace {

// Whether `params` holds `p` itself: a tensor with equal values is not the optimiser's parameter.
bool holds(const std::vector<torch::Tensor>& params, const torch::Tensor& p) {
  return std::any_of(params.begin(), params.end(), [&](const torch::Tensor& q) { return q.is_same(p); });
}

TEST(TrainOptim, SgdMatchesPytorchUpdate) {
  auto m = std::make_shared<torch::nn::Module>();
  torch::Tensor w = m->register_parameter("w", torch::ones({1}));
  torch::nn::PReLU prelu = m->register_module("prelu", torch::nn::PReLU());  // weight 0.25, no decay
  torch::optim::SGD sgd = make_sgd({m.get()}, {"prelu"}, 0.9, 0.1);
  const double lrs[] = {0.1, 0.2};
  for (double lr : lrs) {
    w.mutable_grad() = torch::full({1}, 0.5f);
    prelu->weight.mutable_grad() = torch::full({1}, 0.5f);
    set_lr(sgd, lr);
    sgd.step();
  }
  // w: step 1: d = 0.5 + 0.1·1 = 0.6, buf = 0.6, p = 1 − 0.1·0.6 = 0.94;
  //    step 2: d = 0.5 + 0.1·0.94 = 0.594, buf = 0.9·0.6 + 0.594 = 1.134, p = 0.94 − 0.2·1.134 = 0.7132
  EXPECT_NEAR(w.item<float>(), 0.7132f, 1e-6);
  EXPECT_NEAR(momentum_buffer(sgd, w).item<float>(), 1.134f, 1e-6);
  // PReLU weight, no decay: buf = 0.5, p = 0.25 − 0.05 = 0.2; buf = 0.45 + 0.5 = 0.95, p = 0.2 − 0.19 = 0.01
  EXPECT_NEAR(prelu->weight.item<float>(), 0.01f, 1e-6);
  EXPECT_NEAR(momentum_buffer(sgd, prelu->weight).item<float>(), 0.95f, 1e-6);
}

// Bit-identity of trained weights across the move to torch::optim::SGD rests on libtorch running
// PyTorch's update with the same tensor operations in the same order as this reference does.
TEST(TrainOptim, SgdIsBitIdenticalToTheReferenceUpdate) {
  torch::manual_seed(1);
  auto m = std::make_shared<torch::nn::Module>();
  torch::nn::Linear fc = m->register_module("fc", torch::nn::Linear(7, 5));
  torch::nn::BatchNorm1d bn = m->register_module("bn", torch::nn::BatchNorm1d(5));
  const double momentum = 0.9, wd = 5e-4;
  torch::optim::SGD sgd = make_sgd({m.get()}, {"bn"}, momentum, wd);
  struct Ref {
    torch::Tensor param, p, buf;
    bool decay;
  };
  std::vector<Ref> ref;
  for (const auto& p : m->named_parameters())
    ref.push_back({p.value(), p.value().detach().clone(), torch::Tensor(), p.key().rfind("bn.", 0) != 0});
  const double lrs[] = {0.1, 0.05, 0.02, 0.2};
  for (size_t step = 0; step < 4; ++step) {
    set_grads_to_none(sgd);
    for (size_t k = 0; k < ref.size(); ++k) {
      if (step == 2 && k == 0) continue;  // a parameter without a gradient is not stepped
      ref[k].param.mutable_grad() = torch::randn_like(ref[k].p) * 3;
    }
    set_lr(sgd, lrs[step]);
    sgd.step();
    torch::NoGradGuard no_grad;
    for (auto& r : ref) {
      const torch::Tensor& g = r.param.grad();
      if (!g.defined()) continue;
      const torch::Tensor d = r.decay ? g.add(r.p, wd) : g;
      if (r.buf.defined()) {
        r.buf.mul_(momentum).add_(d);
      } else {
        r.buf = d.clone();
      }
      r.p.add_(r.buf, -lrs[step]);
    }
  }
  for (size_t k = 0; k < ref.size(); ++k) {
    EXPECT_TRUE(torch::equal(ref[k].param, ref[k].p)) << "parameter " << k;
    EXPECT_TRUE(torch::equal(momentum_buffer(sgd, ref[k].param), ref[k].buf)) << "momentum " << k;
  }
}

// A checkpoint's momentum buffers put into a fresh optimiser continue the run exactly.
TEST(TrainOptim, MomentumBuffersResume) {
  torch::manual_seed(2);
  auto make = [] {
    auto m = std::make_shared<torch::nn::Module>();
    m->register_module("fc", torch::nn::Linear(4, 3));
    return m;
  };
  auto a = make(), b = make();
  torch::optim::SGD sa = make_sgd({a.get()}, {}, 0.9, 5e-4), sb = make_sgd({b.get()}, {}, 0.9, 5e-4);
  auto step = [](torch::nn::Module& m, torch::optim::SGD& sgd, const std::vector<torch::Tensor>& grads) {
    const std::vector<torch::Tensor> params = m.parameters();
    for (size_t k = 0; k < params.size(); ++k) params[k].mutable_grad() = grads[k].clone();
    set_lr(sgd, 0.1);
    sgd.step();
    set_grads_to_none(sgd);
  };
  std::vector<std::vector<torch::Tensor>> grads(3);
  for (auto& g : grads)
    for (const auto& p : a->parameters()) g.push_back(torch::randn_like(p));
  step(*a, sa, grads[0]);
  step(*a, sa, grads[1]);
  {
    torch::NoGradGuard no_grad;
    const std::vector<torch::Tensor> pa = a->parameters(), pb = b->parameters();
    for (size_t k = 0; k < pa.size(); ++k) {
      pb[k].copy_(pa[k]);
      set_momentum_buffer(sb, pb[k], momentum_buffer(sa, pa[k]));
    }
  }
  step(*a, sa, grads[2]);
  step(*b, sb, grads[2]);
  const std::vector<torch::Tensor> pa = a->parameters(), pb = b->parameters();
  for (size_t k = 0; k < pa.size(); ++k) {
    EXPECT_TRUE(torch::equal(pa[k], pb[k])) << "parameter " << k;
    EXPECT_TRUE(torch::equal(momentum_buffer(sa, pa[k]), momentum_buffer(sb, pb[k]))) << "momentum " << k;
  }
  set_momentum_buffer(sb, pb[0], torch::Tensor());
  EXPECT_FALSE(momentum_buffer(sb, pb[0]).defined());
  EXPECT_TRUE(momentum_buffer(sb, pb[1]).defined());
}

TEST(TrainOptim, NoWeightDecayOnBatchNormAndPrelu) {
  IResNetConfig c = IResNetConfig::from_name("r18");
  c.widths = {4, 4, 4, 4};
  c.num_features = 8;
  IResNet net(c);
  const torch::optim::SGD sgd = make_sgd({net.get()}, {"bn", "prelu"}, 0.9, 5e-4);
  ASSERT_EQ(sgd.param_groups().size(), 2u);
  auto weight_decay = [&](size_t group) {
    return static_cast<const torch::optim::SGDOptions&>(sgd.param_groups()[group].options()).weight_decay();
  };
  EXPECT_EQ(weight_decay(0), 5e-4);
  EXPECT_EQ(weight_decay(1), 0.0);
  const std::vector<torch::Tensor>& decayed = sgd.param_groups()[0].params();
  const std::vector<torch::Tensor>& exempt = sgd.param_groups()[1].params();
  for (const auto& p : net->named_parameters()) {
    const std::string& name = p.key();
    const bool norm_or_prelu = name.find("bn") != std::string::npos || name.find("prelu") != std::string::npos ||
                               name.find("features") != std::string::npos || name.find("downsample.1") != std::string::npos;
    EXPECT_EQ(holds(decayed, p.value()), !norm_or_prelu) << name;
    EXPECT_NE(holds(decayed, p.value()), holds(exempt, p.value())) << name << " not in exactly one group";
  }
  EXPECT_EQ(decayed.size(), 1u + 2 * 8 + 4 + 2);  // stem conv, 2 convs per block, 4 downsample convs, fc weight + bias
  EXPECT_GT(exempt.size(), 0u);
  const torch::optim::SGD by_bias = make_sgd({net.get()}, {"bias"}, 0.9, 5e-4);
  for (const auto& p : net->named_parameters())
    EXPECT_EQ(holds(by_bias.param_groups()[0].params(), p.value()), p.key().find(".bias") == std::string::npos) << p.key();
}

TEST(TrainOptim, Schedules) {
  TrainScheduleConfig s;
  s.type = "polynomial";
  EXPECT_NEAR(LrSchedule(s, 0.1, 10, 1).lr(0), 0.1, 1e-12);
  EXPECT_NEAR(LrSchedule(s, 0.1, 10, 1).lr(5), 0.05, 1e-12);
  s.warmup_epochs = 2;
  const LrSchedule warm(s, 0.1, 10, 1);
  EXPECT_NEAR(warm.lr(0), 0.05, 1e-12);
  EXPECT_NEAR(warm.lr(1), 0.1, 1e-12);
  EXPECT_NEAR(warm.lr(6), 0.05, 1e-12);  // 0.1·(1 − 4/8)
  s.warmup_epochs = 0;
  s.type = "step";
  s.milestones = {"2", "4"};
  const LrSchedule step(s, 0.1, 30, 5);
  EXPECT_NEAR(step.lr(9), 0.1, 1e-12);
  EXPECT_NEAR(step.lr(10), 0.01, 1e-12);
  EXPECT_NEAR(step.lr(20), 0.001, 1e-12);
  s.type = "cosine";
  EXPECT_NEAR(LrSchedule(s, 0.1, 10, 1).lr(5), 0.05, 1e-12);
}

TEST(TrainOptim, LossScalerSkipsOverflowAndGrows) {
  const torch::Tensor p = torch::zeros({2}).requires_grad_(true);
  LossScaler scaler(true, 1024, 2);
  p.mutable_grad() = torch::tensor({2048.0f, 512.0f});
  EXPECT_TRUE(scaler.unscale({p}));
  EXPECT_NEAR(p.grad()[0].item<float>(), 2.0f, 0);
  scaler.update(true);
  scaler.update(true);
  EXPECT_EQ(scaler.scale(), 2048);
  p.mutable_grad() = torch::tensor({std::numeric_limits<float>::infinity(), 1.0f});
  EXPECT_FALSE(scaler.unscale({p}));
  scaler.update(false);
  EXPECT_EQ(scaler.scale(), 1024);
}

TEST(TrainOptim, LogFilesAndReload) {
  const std::string dir = test::temp_dir("train_log");
  TrainLog log(dir);
  for (int64_t s = 1; s <= 4; ++s) log.add(LogRow{s, 0, 10.0 / static_cast<double>(s), 0.1 * static_cast<double>(s), 0.1, 100, 1});
  log.add(ValidationRow{4, "lfw", 0.9, 0.01, 20});
  log.write();
  TrainLog again(dir);
  again.reload(2);
  ASSERT_EQ(again.rows().size(), 2u);
  EXPECT_NEAR(again.rows()[1].loss, 5.0, 1e-9);
  EXPECT_TRUE(again.validation().empty());
  const std::string svg = read_text_file(dir + "/loss_curve.svg");
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
}

}  // namespace
}  // namespace idsynth::recognition
