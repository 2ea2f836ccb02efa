// Throughput of the evaluation models on this machine: FID Inception features (images/s), LPIPS-alex
// pairs/s, and the 10-fold verification protocol on an LFW-sized set (6000 pairs), next to a float32
// matrix product measured in the same run as the yardstick. Random weights (speed does not depend on
// them). Usage: bench_nn_eval_throughput [threads] [batch]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

#include "core/log.h"
#include "eval/inception_fid.h"
#include "eval/lpips.h"
#include "eval/verification.h"

using namespace idsynth;

namespace {

template <typename F>
double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    log::Stopwatch sw;
    f();
    best = std::min(best, sw.seconds());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int64_t batch = argc > 2 ? std::atoll(argv[2]) : 8;
  at::set_num_threads(threads);
  torch::NoGradGuard no_grad;
  std::printf("threads %d, batch %lld\n", threads, static_cast<long long>(batch));

  // 0. yardstick: 1024x1024 float32 matrix product
  const at::Tensor a = at::randn({1024, 1024}), b = at::randn({1024, 1024});
  const double mm = best_seconds(3, [&] { at::mm(a, b); });
  std::printf("matmul 1024^3 f32: %.1f GFLOP/s\n", 2.0 * 1024 * 1024 * 1024 / mm / 1e9);

  // 1. FID features: 512x512 inputs resized to 299 inside, as for generated faces
  eval::InceptionV3FID inception;
  inception->eval();
  const at::Tensor images = at::rand({batch, 3, 512, 512});
  inception->forward(images.slice(0, 0, 1));  // warm-up
  const double fid_s = best_seconds(2, [&] { inception->forward(images); });
  std::printf("FID Inception pool3: %.2f images/s (%.3f s per batch of %lld, 512x512 -> 299)\n", batch / fid_s,
              fid_s, static_cast<long long>(batch));

  // 2. LPIPS-alex pairs at 512x512 and at 112x112 (aligned crops)
  eval::Lpips lpips(eval::LpipsNet::alex);
  lpips->eval();
  for (int64_t size : {int64_t{512}, int64_t{112}}) {
    const at::Tensor x0 = at::rand({batch, 3, size, size}) * 2 - 1, x1 = at::rand({batch, 3, size, size}) * 2 - 1;
    lpips->forward(x0.slice(0, 0, 1), x1.slice(0, 0, 1));
    const double s = best_seconds(2, [&] { lpips->forward(x0, x1); });
    std::printf("LPIPS alex %lldx%lld: %.2f pairs/s (full forward of both images)\n", static_cast<long long>(size),
                static_cast<long long>(size), batch / s);
  }

  // 3. the verification protocol itself on 6000 pairs of 512-d embeddings (flip-sum)
  const at::Tensor emb = at::randn({12000, 512}), emb_flip = at::randn({12000, 512});
  std::vector<bool> same(6000);
  for (size_t i = 0; i < same.size(); ++i) same[i] = (i / 300) % 2 == 0;
  const double proto = best_seconds(2, [&] { eval::evaluate_embeddings(emb, emb_flip, same); });
  std::printf("verification protocol, 6000 pairs x 512-d, 400 thresholds, 10 folds: %.3f s\n", proto);
  return 0;
}
