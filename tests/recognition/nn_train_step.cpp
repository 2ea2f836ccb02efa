// The training math on the test device (IDSYNTH_TEST_DEVICE, CPU by default; a GPU machine reruns
// this file with IDSYNTH_TEST_DEVICE=cuda): a tiny IResNet + margin head trained for a few steps the
// way the trainer steps (float16 autocast + dynamic loss scaling on CUDA, float32 on the CPU), the
// loss scaler skipping an injected inf gradient, data parallel over two replicas against one model
// on the two half-batches, replication of the backbone, and the generator states of checkpoints.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "core/check.h"
#include "recognition/iresnet.h"
#include "recognition/margin_losses.h"
#include "recognition/train_optim.h"
#include "recognition/train_parallel.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::recognition {
namespace {

constexpr int64_t kClasses = 4;

IResNetConfig tiny_backbone() {
  IResNetConfig c;
  c.layers = {1, 1, 1, 1};
  c.widths = {8, 8, 16, 16};
  c.num_features = 16;
  return c;
}

MarginHead tiny_head(c10::Device device) {
  MarginLossOptions lo;
  lo.type = "cosface";
  lo.s = 16;
  lo.m3 = 0.2;
  ClassCentresOptions co;
  co.num_classes = kClasses;
  co.embedding_size = 16;
  MarginHead head(lo, co);
  head->to(device);
  head->train();
  return head;
}

// 4 classes × 4 images: a fixed random pattern per class plus per-image noise, in [-1, 1]-ish.
struct Batch {
  at::Tensor images, labels;
};
Batch class_batch(c10::Device device) {
  torch::manual_seed(11);
  const at::Tensor centres = torch::randn({kClasses, 3, 112, 112}) * 0.6;
  const at::Tensor labels = torch::arange(kClasses, torch::kLong).repeat_interleave(4);
  const at::Tensor images = centres.index_select(0, labels) + torch::randn({4 * kClasses, 3, 112, 112}) * 0.4;
  return {images.to(device), labels.to(device)};
}

bool all_finite(torch::nn::Module& m) {
  for (const auto& p : m.parameters())
    if (!torch::isfinite(p).all().item<bool>()) return false;
  return true;
}

// The trainer's step: forward (autocast on CUDA), scaled backward, unscale, clip, SGD, broadcast.
struct Rig {
  c10::Device device;
  bool amp;
  IResNet net;
  MarginHead head;
  std::unique_ptr<torch::optim::SGD> sgd;
  std::unique_ptr<LossScaler> scaler;
  std::unique_ptr<DataParallel> parallel;
  std::vector<at::Tensor> params, backbone_params;

  Rig(c10::Device d, bool use_amp, bool scaling, std::vector<c10::Device> replicas = {})
      : device(d), amp(use_amp), net(nullptr), head(nullptr) {
    torch::manual_seed(3);
    net = IResNet(tiny_backbone());
    net->to(device);
    net->train();
    head = tiny_head(device);
    sgd = std::make_unique<torch::optim::SGD>(make_sgd({net.get(), head.get()}, {"bn", "prelu"}, 0.9, 5e-4));
    params = optimizer_params(*sgd);
    backbone_params = net->parameters();
    scaler = std::make_unique<LossScaler>(scaling, 1024.0, 2);
    parallel = std::make_unique<DataParallel>(net, replicas.empty() ? std::vector<c10::Device>{device} : replicas, amp);
  }

  // Returns the loss (unscaled) and whether the step was taken; `inject` sees the gradients first.
  std::pair<double, bool> step(const Batch& b, double lr, const std::function<void()>& inject = {}) {
    const MarginHeadImpl::Output out = parallel->forward(b.images, b.labels, *head);
    const double loss = out.loss.item<double>();
    parallel->backward(scaler->enabled() ? out.loss * scaler->scale() : out.loss);
    if (inject) inject();
    const bool finite = scaler->unscale(params);
    if (finite) {
      torch::nn::utils::clip_grad_norm_(backbone_params, 5.0);
      set_lr(*sgd, lr);
      sgd->step();
    }
    scaler->update(finite);
    set_grads_to_none(*sgd);
    parallel->broadcast();
    return {loss, finite};
  }
};

TEST(TrainStep, LossFallsWithMixedPrecisionOnCudaAndWeightsStayFinite) {
  at::set_num_threads(2);
  const c10::Device device = test::test_device();
  const bool cuda = device.is_cuda();
  Rig rig(device, /*amp=*/cuda, /*scaling=*/cuda);
  const Batch b = class_batch(device);
  std::vector<double> losses;
  int taken = 0;
  for (int i = 0; i < 6; ++i) {
    const auto [loss, finite] = rig.step(b, 0.05);
    losses.push_back(loss);
    taken += finite ? 1 : 0;
    ASSERT_TRUE(std::isfinite(loss)) << "step " << i;
  }
  std::printf("train step on %s (%s): loss %.4f -> %.4f, %d of 6 steps taken, loss scale %g\n", device.str().c_str(),
              cuda ? "float16 autocast, loss scaling" : "float32", losses.front(), losses.back(), taken,
              rig.scaler->scale());
  EXPECT_GE(taken, 4);  // the initial scale (1024) may overflow float16 once or twice, no more
  EXPECT_LT(losses.back(), 0.7 * losses.front());
  EXPECT_TRUE(all_finite(*rig.net));
  EXPECT_TRUE(all_finite(*rig.head));
}

TEST(TrainStep, AutocastScopeCastsMatmulsOnCudaOnly) {
  const c10::Device device = test::test_device();
  const at::Tensor a = torch::randn({4, 4}, torch::TensorOptions().device(device));
  {
    AutocastScope on(device.is_cuda());
    EXPECT_EQ(torch::mm(a, a).scalar_type(), device.is_cuda() ? at::kHalf : at::kFloat);
    {
      AutocastScope nested(device.is_cuda());
      EXPECT_EQ(torch::mm(a, a).scalar_type(), device.is_cuda() ? at::kHalf : at::kFloat);
    }
    // leaving the nested scope keeps the outer one on
    EXPECT_EQ(torch::mm(a, a).scalar_type(), device.is_cuda() ? at::kHalf : at::kFloat);
  }
  EXPECT_EQ(torch::mm(a, a).scalar_type(), at::kFloat);
}

TEST(TrainStep, InfGradientSkipsTheStepAndHalvesTheScale) {
  at::set_num_threads(2);
  const c10::Device device = test::test_device();
  Rig rig(device, /*amp=*/device.is_cuda(), /*scaling=*/true);
  const Batch b = class_batch(device);
  const double scale0 = rig.scaler->scale();
  std::vector<at::Tensor> before;
  for (const auto& p : rig.net->parameters()) before.push_back(p.detach().clone());
  const auto [loss, finite] = rig.step(b, 0.05, [&] { rig.net->conv1->weight.mutable_grad()[0][0][0][0] = INFINITY; });
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_FALSE(finite);
  EXPECT_EQ(rig.scaler->scale(), scale0 / 2);
  const std::vector<at::Tensor> after = rig.net->parameters();
  for (size_t k = 0; k < after.size(); ++k) EXPECT_TRUE(torch::equal(after[k], before[k])) << "parameter " << k << " moved";
  EXPECT_TRUE(rig.sgd->state().empty());  // no momentum either
  // Two clean steps (growth interval 2) move the weights and double the scale back.
  int taken = 0;
  for (int i = 0; i < 2; ++i) taken += rig.step(b, 0.05).second ? 1 : 0;
  if (taken == 2) {
    EXPECT_EQ(rig.scaler->scale(), scale0);
  }
  EXPECT_GE(taken, 1);
  EXPECT_FALSE(torch::equal(rig.net->conv1->weight, before[0]));
  EXPECT_TRUE(all_finite(*rig.net));
}

// Test (a) of data parallel: two replicas on the test device (the same device twice) against one
// model that sees the two half-batches one after the other. The loss is the mean over the whole
// batch, so its gradient is the mean of the half-batch gradients: (g_A + g_B) / 2.
TEST(TrainStep, DataParallelGradientIsTheMeanOfTheHalfBatchGradients) {
  at::set_num_threads(2);
  const c10::Device device = test::test_device();
  torch::manual_seed(5);
  IResNet net(tiny_backbone());
  net->to(device);
  net->train();
  MarginHead head = tiny_head(device);
  IResNet ref = IResNet(net->replicate(device));
  IResNet ref_a_only = IResNet(net->replicate(device));
  MarginHead ref_head = tiny_head(device);
  {
    torch::NoGradGuard no_grad;
    ref_head->centres->weight.copy_(head->centres->weight);
  }
  const Batch b = class_batch(device);

  DataParallel dp(net, {device, device}, /*autocast=*/false);
  const MarginHeadImpl::Output out = dp.forward(b.images, b.labels, *head);
  ASSERT_EQ(dp.last_shards(), (std::vector<int64_t>{8, 8}));
  dp.backward(out.loss);

  auto half_grads = [&](int64_t first) {
    const MarginHeadImpl::Output o = ref_head->forward(ref->forward(b.images.narrow(0, first, 8)), b.labels.narrow(0, first, 8));
    o.loss.backward();
    std::vector<at::Tensor> g;
    for (auto& p : ref->parameters()) {
      g.push_back(p.grad().clone());
      p.mutable_grad() = at::Tensor();
    }
    for (auto& p : ref_head->parameters()) {
      g.push_back(p.grad().clone());
      p.mutable_grad() = at::Tensor();
    }
    return std::make_pair(o.loss.item<double>(), g);
  };
  const auto [loss_a, ga] = half_grads(0);
  const auto [loss_b, gb] = half_grads(8);
  EXPECT_NEAR(out.loss.item<double>(), 0.5 * (loss_a + loss_b), 1e-5);

  std::vector<at::Tensor> got = net->parameters();
  for (const auto& p : head->parameters()) got.push_back(p);
  ASSERT_EQ(got.size(), ga.size());
  double worst = 0;
  for (size_t k = 0; k < got.size(); ++k) {
    ASSERT_TRUE(got[k].grad().defined()) << "parameter " << k;
    const at::Tensor expected = (ga[k] + gb[k]) * 0.5;
    // 1e-5 relative to the largest gradient element of the tensor (sums of float32 products)
    const double tol = 1e-5 * std::max(1.0, expected.abs().max().item<double>());
    EXPECT_ALL_CLOSE(got[k].grad(), expected, tol) << "parameter " << k;
    worst = std::max(worst, test::max_abs_diff(got[k].grad(), expected));
  }
  std::printf("data parallel (2 replicas on %s): max |reduced grad - (g_A + g_B)/2| = %.3g over %zu tensors\n",
              device.str().c_str(), worst, got.size());
  // The second replica's gradients were moved into the primary's.
  for (const auto& p : dp.replica(1)->parameters()) EXPECT_FALSE(p.grad().defined());

  // BatchNorm running statistics: the primary's come from its own shard (the first half) alone.
  {
    torch::NoGradGuard no_grad;
    ref_a_only->forward(b.images.narrow(0, 0, 8));
  }
  const std::vector<at::Tensor> nb = net->buffers(), rb = ref_a_only->buffers(), r1 = dp.replica(1)->buffers();
  for (size_t k = 0; k < nb.size(); ++k) EXPECT_ALL_CLOSE(nb[k], rb[k], 1e-6) << "buffer " << k;
  // broadcast(): replica 1 becomes an exact copy of the primary again.
  {
    torch::NoGradGuard no_grad;
    net->conv1->weight.add_(0.5);
  }
  dp.broadcast();
  const std::vector<at::Tensor> np = net->parameters(), p1 = dp.replica(1)->parameters(), b1 = dp.replica(1)->buffers();
  for (size_t k = 0; k < np.size(); ++k) EXPECT_TRUE(torch::equal(np[k], p1[k])) << "parameter " << k;
  for (size_t k = 0; k < nb.size(); ++k) EXPECT_TRUE(torch::equal(nb[k], b1[k])) << "buffer " << k;
}

TEST(TrainStep, ShardSizes) {
  EXPECT_EQ(DataParallel::shard_sizes(16, 2), (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(DataParallel::shard_sizes(17, 3), (std::vector<int64_t>{6, 6, 5}));
  EXPECT_EQ(DataParallel::shard_sizes(5, 4), (std::vector<int64_t>{3, 2, 0, 0}));  // >= 2 per replica
  EXPECT_EQ(DataParallel::shard_sizes(1, 2), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(DataParallel::shard_sizes(9, 1), (std::vector<int64_t>{9}));
}

TEST(TrainStep, ReplicateCopiesParametersAndBuffersAndKeepsTheGenerator) {
  at::set_num_threads(2);
  const c10::Device device = test::test_device();
  torch::manual_seed(9);
  IResNet net(tiny_backbone());
  net->to(device);
  net->train();
  {
    torch::NoGradGuard no_grad;
    net->forward(class_batch(device).images.narrow(0, 0, 4));  // running statistics away from 0/1
  }
  net->features->weight.set_requires_grad(false);
  const at::Tensor rng_before = at::globalContext().defaultGenerator(c10::kCPU).get_state();
  IResNet copy(net->replicate(device));
  EXPECT_TRUE(torch::equal(at::globalContext().defaultGenerator(c10::kCPU).get_state(), rng_before));
  EXPECT_TRUE(copy->is_training());
  const auto np = net->named_parameters(), cp = copy->named_parameters();
  ASSERT_EQ(np.size(), cp.size());
  for (size_t k = 0; k < np.size(); ++k) {
    EXPECT_EQ(np[k].key(), cp[k].key());
    EXPECT_TRUE(torch::equal(np[k].value(), cp[k].value())) << np[k].key();
    EXPECT_EQ(np[k].value().requires_grad(), cp[k].value().requires_grad()) << np[k].key();
    EXPECT_NE(np[k].value().data_ptr(), cp[k].value().data_ptr()) << np[k].key() << " shares storage";
  }
  const auto nb = net->named_buffers(), cb = copy->named_buffers();
  ASSERT_EQ(nb.size(), cb.size());
  for (size_t k = 0; k < nb.size(); ++k) EXPECT_TRUE(torch::equal(nb[k].value(), cb[k].value())) << nb[k].key();
  EXPECT_GT(net->bn1->running_mean.abs().sum().item<double>(), 0);
  // torch::nn::Module::clone works too, and both give the same embeddings in eval mode.
  std::shared_ptr<IResNetImpl> cloned = std::dynamic_pointer_cast<IResNetImpl>(net->clone());
  ASSERT_NE(cloned, nullptr);
  net->eval();
  copy->eval();
  cloned->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor x = class_batch(device).images.narrow(0, 0, 2);
  EXPECT_TRUE(torch::equal(net->forward(x), copy->forward(x)));
  EXPECT_TRUE(torch::equal(net->forward(x), cloned->forward(x)));
}

TEST(TrainStep, GeneratorStatesRoundTrip) {
  const c10::Device device = test::test_device();
  TensorDict saved;
  for (const auto& [name, t] : rng_states()) saved.insert(name, t);
  EXPECT_TRUE(saved.contains("rng.cpu"));
  if (torch::cuda::is_available()) {
    EXPECT_TRUE(saved.contains("rng.cuda.0"));
  }
  const at::Tensor cpu1 = torch::randn({8});
  const at::Tensor dev1 = torch::rand({8}, torch::TensorOptions().device(device));
  restore_rng_states(saved, "test");
  EXPECT_TRUE(torch::equal(torch::randn({8}), cpu1));
  EXPECT_TRUE(torch::equal(torch::rand({8}, torch::TensorOptions().device(device)), dev1));
  TensorDict no_cpu;
  EXPECT_THROW(restore_rng_states(no_cpu, "test"), Error);
}

}  // namespace
}  // namespace idsynth::recognition
