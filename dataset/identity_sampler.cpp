#include "dataset/identity_sampler.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/log.h"

namespace idsynth::dataset {

IdentitySample sample_identities(const IdentitySamplerOptions& o, int bins) {
  IDSYNTH_CHECK(o.count >= 1, "identities.count: expected >= 1, found ", o.count);
  IDSYNTH_CHECK(o.dim >= 2, "identities.dim: expected >= 2, found ", o.dim);
  IDSYNTH_CHECK(o.max_similarity > -1.0 && o.max_similarity <= 1.0, "identities.max_similarity: expected a value in (-1, 1], found ",
                o.max_similarity);
  if (o.gallery.defined())
    IDSYNTH_CHECK(o.gallery.dim() == 2 && o.gallery.size(1) == o.dim, "identities.gallery: expected [G, ", o.dim,
                  "] vectors, found ", o.gallery.sizes());
  const int64_t limit = o.max_candidates > 0 ? o.max_candidates : 1000 * o.count;
  auto gen = at::detail::createCPUGenerator(o.seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);

  at::Tensor gallery;
  if (o.gallery.defined()) {
    gallery = o.gallery.to(o.device, at::kFloat);
    gallery = gallery / gallery.norm(2, 1, true).clamp_min(1e-12);
  }
  // A fitted Gaussian: candidates are mean + z L^T with L L^T the covariance of the unit `like`
  // rows, plus a ridge of 1e-3 of the mean variance so that directions they never use stay open.
  at::Tensor like_mean, like_factor;
  if (o.like.defined()) {
    IDSYNTH_CHECK(o.like.dim() == 2 && o.like.size(1) == o.dim && o.like.size(0) >= 2, "identities.like: expected [L >= 2, ",
                  o.dim, "] vectors, found ", o.like.sizes());
    at::Tensor x = o.like.to(at::kDouble);
    x = x / x.norm(2, 1, true).clamp_min(1e-12);
    like_mean = x.mean(0);
    const at::Tensor centred = x - like_mean;
    at::Tensor cov = at::matmul(centred.t(), centred) / static_cast<double>(x.size(0) - 1);
    cov += at::eye(o.dim, at::kDouble) * (1e-3 * cov.diagonal().mean().item<double>() + 1e-12);
    like_factor = at::linalg_cholesky(cov).to(at::kFloat);
    like_mean = like_mean.to(at::kFloat);
  }
  // Accepted vectors live in one preallocated device buffer; `n` rows are filled.
  at::Tensor accepted = at::empty({o.count, o.dim}, f32.device(o.device));
  int64_t n = 0, drawn = 0;
  const float thr = static_cast<float>(o.max_similarity);
  while (n < o.count) {
    IDSYNTH_CHECK(drawn < limit, "identities: only ", n, " of ", o.count, " identities found after ", drawn,
                  " candidates: max_similarity ", o.max_similarity, " is too strict for dimension ", o.dim,
                  o.like.defined() ? " and the spread of identities.like" : "");
    at::Tensor cand = at::randn({o.batch, o.dim}, gen, f32);
    if (like_factor.defined()) cand = at::matmul(cand, like_factor.t()) + like_mean;
    drawn += o.batch;
    cand = (cand / cand.norm(2, 1, true)).to(o.device);
    // 1. Against everything accepted so far and the gallery: a batched product on the device.
    at::Tensor ok = at::ones({o.batch}, at::TensorOptions().dtype(at::kBool).device(o.device));
    if (n > 0) ok &= std::get<0>(at::matmul(cand, accepted.narrow(0, 0, n).t()).max(1)) < thr;
    if (gallery.defined() && gallery.size(0) > 0)
      ok &= std::get<0>(at::matmul(cand, gallery.t()).max(1)) < static_cast<float>(o.max_gallery_similarity);
    // 2. Within the batch, greedily in draw order.
    at::Tensor gram = at::matmul(cand, cand.t()).to(at::kCPU);
    at::Tensor ok_cpu = ok.to(at::kCPU);
    const float* g = gram.data_ptr<float>();
    const bool* okp = ok_cpu.data_ptr<bool>();
    std::vector<int64_t> take;
    for (int64_t i = 0; i < o.batch && n + static_cast<int64_t>(take.size()) < o.count; ++i) {
      if (!okp[i]) continue;
      bool clear = true;
      for (int64_t j : take)
        if (g[i * o.batch + j] >= thr) {
          clear = false;
          break;
        }
      if (clear) take.push_back(i);
    }
    if (!take.empty()) {
      at::Tensor idx = at::tensor(take, at::TensorOptions().dtype(at::kLong)).to(o.device);
      accepted.narrow(0, n, static_cast<int64_t>(take.size())).copy_(cand.index_select(0, idx));
      n += static_cast<int64_t>(take.size());
    }
    LOG_DBG("identities: ", n, "/", o.count, " accepted of ", drawn, " drawn");
  }

  IdentitySample out;
  out.ids = accepted.to(at::kCPU);
  out.candidates = drawn;
  out.acceptance_rate = static_cast<double>(o.count) / static_cast<double>(drawn);
  // Nearest-neighbour cosines, in blocks so 100K identities never need an N x N matrix.
  at::Tensor nearest = at::full({o.count}, -1.0f, f32.device(o.device));
  if (o.count > 1) {
    const int64_t block = 4096;
    for (int64_t s = 0; s < o.count; s += block) {
      const int64_t len = std::min(block, o.count - s);
      at::Tensor sims = at::matmul(accepted.narrow(0, s, len), accepted.t());
      sims.narrow(1, s, len).fill_diagonal_(-2.0f);
      nearest.narrow(0, s, len).copy_(std::get<0>(sims.max(1)));
    }
  }
  nearest = nearest.to(at::kCPU);
  out.nearest_histogram = std::vector<int64_t>(static_cast<size_t>(bins), 0);
  const float* p = nearest.data_ptr<float>();
  for (int64_t i = 0; i < o.count; ++i) {
    int b = static_cast<int>(std::floor((p[i] + 1.0) / 2.0 * bins));
    out.nearest_histogram[static_cast<size_t>(std::clamp(b, 0, bins - 1))]++;
  }
  out.nearest_max = o.count > 1 ? nearest.max().item<double>() : -1.0;
  out.nearest_mean = o.count > 1 ? nearest.mean().item<double>() : -1.0;
  return out;
}

std::string describe(const IdentitySample& s) {
  std::string r = cat(s.ids.size(0), " identities of dimension ", s.ids.size(1), " from ", s.candidates,
                      " candidates (acceptance ", s.acceptance_rate * 100.0, "%); nearest-neighbour cosine: mean ",
                      s.nearest_mean, ", max ", s.nearest_max, "\n");
  const int bins = static_cast<int>(s.nearest_histogram.size());
  const int64_t peak = *std::max_element(s.nearest_histogram.begin(), s.nearest_histogram.end());
  for (int b = 0; b < bins; ++b) {
    if (s.nearest_histogram[static_cast<size_t>(b)] == 0) continue;
    char label[48];
    std::snprintf(label, sizeof label, "  [%+.2f, %+.2f) %7ld ", -1.0 + 2.0 * b / bins, -1.0 + 2.0 * (b + 1) / bins,
                  static_cast<long>(s.nearest_histogram[static_cast<size_t>(b)]));
    r += label + std::string(static_cast<size_t>(40 * s.nearest_histogram[static_cast<size_t>(b)] / std::max<int64_t>(peak, 1)), '#') + "\n";
  }
  return r;
}

}  // namespace idsynth::dataset
