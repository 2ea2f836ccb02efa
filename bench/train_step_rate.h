// IResNet training-step throughput on batches already in memory (no loader): forward, ArcFace
// head, backward, SGD, on one or several devices (DataParallel), float16 autocast with loss scaling
// when asked on CUDA. Shared by bench_train_throughput (next to the loader's rate) and
// bench_nn_train_step (libtorch only, so it also builds on a GPU machine with just PyTorch).
#pragma once

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/log.h"
#include "recognition/iresnet.h"
#include "recognition/margin_losses.h"
#include "recognition/train_optim.h"
#include "recognition/train_parallel.h"

namespace idsynth::bench {

struct TrainStepRate {
  double samples_per_s = 0;
  double seconds_per_step = 0;
};

inline TrainStepRate train_step_rate(const std::string& arch, int64_t batch, int steps, int64_t classes,
                                     const std::vector<c10::Device>& devices, bool amp) {
  using namespace idsynth::recognition;
  torch::manual_seed(0);
  IResNet net(IResNetConfig::from_name(arch));
  net->to(devices.front());
  net->train();
  ClassCentresOptions co;
  co.num_classes = classes;
  MarginHead head(MarginLossOptions{}, co);
  head->to(devices.front());
  torch::optim::SGD sgd = make_sgd({net.get(), head.get()}, {"bn", "prelu"}, 0.9, 5e-4);
  set_lr(sgd, 0.02);
  const std::vector<at::Tensor> params = optimizer_params(sgd);
  LossScaler scaler(amp, 65536.0, 100);
  DataParallel parallel(net, devices, amp);
  const at::Tensor x = torch::randn({batch, 3, 112, 112}).to(devices.front());
  const at::Tensor y = torch::randint(0, classes, {batch}, torch::kLong).to(devices.front());
  auto step = [&] {
    const MarginHeadImpl::Output out = parallel.forward(x, y, *head);
    parallel.backward(scaler.enabled() ? out.loss * scaler.scale() : out.loss);
    const bool finite = scaler.unscale(params);
    if (finite) sgd.step();
    scaler.update(finite);
    set_grads_to_none(sgd);
    parallel.broadcast();
    (void)out.loss.item<double>();  // waits for the device
  };
  step();  // warm-up (cuDNN algorithm search, allocator)
  log::Stopwatch w;
  for (int s = 0; s < steps; ++s) step();
  TrainStepRate r;
  r.seconds_per_step = w.seconds() / steps;
  r.samples_per_s = static_cast<double>(batch) / r.seconds_per_step;
  return r;
}

}  // namespace idsynth::bench
