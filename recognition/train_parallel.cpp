// Ref: torch/nn/parallel/data_parallel.py, torch/nn/parallel/parallel_apply.py,
//      torch/nn/parallel/distributed.py, insightface arcface_torch partial_fc_v2.py
#include "recognition/train_parallel.h"

#include <ATen/ATen.h>
#include <ATen/ThreadLocalState.h>
#include <torch/autograd.h>

#include <algorithm>
#include <exception>
#include <thread>

#include "core/check.h"
#include "recognition/train_optim.h"

namespace idsynth::recognition {

void parallel_apply(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 1) {
    fn(0);
    return;
  }
  const at::ThreadLocalState tls;
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> threads;
  auto body = [&](size_t i) {
    try {
      at::ThreadLocalStateGuard guard(tls);
      fn(i);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  };
  try {
    for (size_t i = 0; i < n; ++i) threads.emplace_back(body, i);
  } catch (...) {
    for (auto& t : threads) t.join();
    throw;
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

DataParallel::DataParallel(IResNet primary, std::vector<c10::Device> devices, bool autocast)
    : devices_(std::move(devices)), autocast_(autocast) {
  IDSYNTH_CHECK(!devices_.empty(), "data parallel: expected at least one device, found none");
  const c10::Device at = primary->conv1->weight.device();
  IDSYNTH_CHECK(at.type() == devices_[0].type() && (!devices_[0].has_index() || at.index() == devices_[0].index()),
                "data parallel: expected the primary backbone on ", devices_[0].str(), ", found it on ", at.str());
  replicas_.push_back(primary);
  for (size_t i = 1; i < devices_.size(); ++i) replicas_.emplace_back(primary->replicate(devices_[i]));
}

std::vector<int64_t> DataParallel::shard_sizes(int64_t n, size_t replicas) {
  IDSYNTH_CHECK(replicas >= 1, "data parallel: expected at least one replica, found none");
  std::vector<int64_t> sizes(replicas, 0);
  const int64_t used = std::max<int64_t>(1, std::min<int64_t>(static_cast<int64_t>(replicas), n / 2));
  for (int64_t i = 0; i < used; ++i) sizes[i] = n / used + (i < n % used ? 1 : 0);
  return sizes;
}

MarginHeadImpl::Output DataParallel::forward(const at::Tensor& images, const at::Tensor& labels, MarginHeadImpl& head) {
  const c10::Device primary_device = devices_[0];
  shards_ = shard_sizes(images.size(0), replicas_.size());
  const size_t used = static_cast<size_t>(std::count_if(shards_.begin(), shards_.end(), [](int64_t s) { return s > 0; }));
  std::vector<int64_t> offsets(used, 0);
  for (size_t i = 1; i < used; ++i) offsets[i] = offsets[i - 1] + shards_[i - 1];
  embeddings_.assign(used, at::Tensor());
  gathered_.clear();
  // 1. scatter + parallel forward: shard i -> [n_i, num_features] on device i
  parallel_apply(used, [&](size_t i) {
    CurrentDevice current(devices_[i]);
    const at::Tensor x = images.narrow(0, offsets[i], shards_[i]).to(devices_[i]);
    AutocastScope autocast(autocast_ && devices_[i].is_cuda());
    embeddings_[i] = replicas_[i]->forward(x);
  });
  const at::Tensor targets = labels.to(primary_device);
  // 2. one replica: the head continues the same graph, as a single-device step
  if (used == 1) return head.forward(embeddings_[0].to(at::kFloat), targets);
  // 3. gather as float32 leaves on the primary device; the head sees the whole batch
  for (size_t i = 0; i < used; ++i)
    gathered_.push_back(embeddings_[i].detach().to(primary_device, at::kFloat).requires_grad_(true));
  return head.forward(at::cat(gathered_), targets);  // [N, D] -> loss over all N
}

void DataParallel::backward(const at::Tensor& loss) {
  loss.backward();
  if (gathered_.empty()) {
    embeddings_.clear();
    return;
  }
  // 1. each replica back-propagates the gradient of its rows of the gathered embeddings
  const size_t used = gathered_.size();
  parallel_apply(used, [&](size_t i) {
    const at::Tensor& g = gathered_[i].grad();
    if (!g.defined()) return;
    CurrentDevice current(devices_[i]);
    embeddings_[i].backward(g.to(devices_[i], embeddings_[i].scalar_type()));
  });
  embeddings_.clear();
  gathered_.clear();
  // 2. reduce: primary += replica 1 + replica 2 + ... (fixed order), replicas' gradients cleared
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> primary_params = replicas_[0]->parameters();
  for (size_t r = 1; r < used; ++r) {
    std::vector<at::Tensor> params = replicas_[r]->parameters();
    for (size_t k = 0; k < params.size(); ++k) {
      at::Tensor& g = params[k].mutable_grad();
      if (!g.defined()) continue;
      at::Tensor& dst = primary_params[k].mutable_grad();
      if (dst.defined()) {
        dst.add_(g.to(dst.device()));
      } else {
        dst = g.to(primary_params[k].device()).clone();
      }
      g = at::Tensor();
    }
  }
}

void DataParallel::broadcast() {
  if (replicas_.size() == 1) return;
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> params = replicas_[0]->parameters(), buffers = replicas_[0]->buffers();
  for (size_t r = 1; r < replicas_.size(); ++r) {
    CurrentDevice current(devices_[r]);
    std::vector<at::Tensor> p = replicas_[r]->parameters(), b = replicas_[r]->buffers();
    for (size_t k = 0; k < p.size(); ++k) p[k].copy_(params[k]);
    for (size_t k = 0; k < b.size(); ++k) b[k].copy_(buffers[k]);
  }
}

}  // namespace idsynth::recognition
