// Data-parallel training over several devices in one process, the way arcface_torch trains on all
// local GPUs (DDP, no SyncBN, PartialFC_V2), in the shape of torch.nn.DataParallel:
//  - replica 0 is the backbone being trained (the primary, on devices[0]); the others are copies of
//    it (IResNetImpl::replicate) on devices[1..]; the same device may appear twice;
//  - each step's batch is split into contiguous shards, one per replica; every replica runs its shard
//    forward, and later backward, in its own thread (its CUDA device current there, autocast per
//    thread), with its own BatchNorm batch statistics, as DDP without SyncBN;
//  - the embeddings are gathered on the primary device and the margin head computes the loss over
//    the whole batch: PartialFC_V2 all-gathers the embeddings of every rank and takes the mean
//    cross-entropy over the global batch, so the head sees what it sees here, and the backbone
//    gradient that DDP averages (AllGather's backward scales by the world size) is the gradient of
//    that global mean: the sum of the replicas' gradients computed here;
//  - the replicas' gradients are summed into the primary's, in replica order (deterministic), before
//    loss unscaling, clipping and the one optimiser step on the primary;
//  - broadcast() then copies the primary's parameters and buffers to every replica; the BatchNorm
//    running statistics kept are the primary's (shard 0's), as DDP broadcasts rank 0's buffers.
// With one device there are no threads and no copies: the plain single-device step.
// Ref: torch/nn/parallel/data_parallel.py (replicate, scatter, parallel_apply, gather),
//      torch/nn/parallel/distributed.py (broadcast_buffers), arcface_torch partial_fc_v2.py (AllGather).
#pragma once

#include <c10/core/Device.h>

#include <c10/core/DeviceGuard.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "recognition/iresnet.h"
#include "recognition/margin_losses.h"

namespace idsynth::recognition {

// fn(0..n-1), each in its own thread carrying the caller's thread-local state (grad mode, dispatch
// keys), as torch's parallel_apply; n == 1 runs on the calling thread. Rethrows the first failure
// after every thread has finished. (train-generator's replicas use it too.)
void parallel_apply(size_t n, const std::function<void(size_t)>& fn);

// Makes `device` current on this thread while in scope (CUDA); nothing for the CPU.
class CurrentDevice {
 public:
  explicit CurrentDevice(c10::Device device) {
    if (device.is_cuda()) guard_.reset_device(device);
  }

 private:
  c10::OptionalDeviceGuard guard_;
};

class DataParallel {
 public:
  // `primary` must already be on devices[0]. `autocast`: float16 autocast for the CUDA replicas'
  // forward passes (mixed precision); ignored for CPU replicas.
  DataParallel(IResNet primary, std::vector<c10::Device> devices, bool autocast);
  size_t size() const { return replicas_.size(); }
  const std::vector<c10::Device>& devices() const { return devices_; }
  IResNet& primary() { return replicas_.front(); }
  IResNet& replica(size_t i) { return replicas_.at(i); }

  // Shard sizes of a batch of n over `replicas`: contiguous, as even as possible (the first ones get
  // the remainder), each at least 2 because BatchNorm needs two samples in training; a batch too
  // small for every replica uses fewer (the first ones).
  static std::vector<int64_t> shard_sizes(int64_t n, size_t replicas);

  // images [N, 3, 112, 112] (any device), labels [N] int64 -> the head's output over the whole
  // batch, on the primary device. The graph is kept until backward().
  MarginHeadImpl::Output forward(const at::Tensor& images, const at::Tensor& labels, MarginHeadImpl& head);
  // Backward of `loss` (forward's loss, times the loss scale): through the head on the calling
  // thread, then through every replica in its thread; then every replica's gradient is added to the
  // primary's and cleared. The gradients of the primary and the head are what one optimiser step uses.
  void backward(const at::Tensor& loss);
  // Copies the primary's parameters and buffers to the other replicas (after the optimiser step).
  void broadcast();
  // Rows of the batch each replica got in the last forward (empty for unused replicas).
  const std::vector<int64_t>& last_shards() const { return shards_; }

 private:
  std::vector<IResNet> replicas_;
  std::vector<c10::Device> devices_;
  bool autocast_;
  std::vector<int64_t> shards_;
  std::vector<at::Tensor> embeddings_;  // per used replica, on its device, with its graph
  std::vector<at::Tensor> gathered_;    // the same, detached onto the primary device, float32 leaves
};

}  // namespace idsynth::recognition
