// Synthetic identities: random unit vectors in ArcFace space that are kept apart from each other
// (cosine below max_similarity, as Vec2Face and the strongest published generators do) and,
// optionally, from a gallery of real people's embeddings so no synthetic identity is a real person.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace idsynth::dataset {

struct IdentitySamplerOptions {
  int64_t count = 100;
  int64_t dim = 512;
  double max_similarity = 0.3;
  at::Tensor gallery;                   // [G, dim] or undefined
  // [L, dim] or undefined: draw candidates from the Gaussian fitted to these (unit) vectors, mean
  // and covariance, instead of the isotropic one. A recogniser trained on a small face domain
  // uses few directions of its space; isotropic vectors there are not faces it knows.
  at::Tensor like;
  double max_gallery_similarity = 1.0;  // used when gallery is defined
  uint64_t seed = 0;
  int64_t batch = 4096;                 // candidates drawn per round
  int64_t max_candidates = 0;           // give up after this many draws (0: 1000 x count)
  c10::Device device = c10::kCPU;       // where the similarity products run
};

struct IdentitySample {
  at::Tensor ids;                // [count, dim] float32, unit rows, CPU
  int64_t candidates = 0;        // vectors drawn
  double acceptance_rate = 0.0;  // count / candidates
  // Nearest-neighbour cosine of every accepted identity: histogram over [-1, 1] in `bins` bins.
  std::vector<int64_t> nearest_histogram;
  double nearest_max = 0.0;
  double nearest_mean = 0.0;
};

// Candidates are Gaussian vectors (isotropic, or fitted to `like`) drawn from one CPU generator
// seeded `seed`, normalised, and accepted in draw order (greedy), so the result depends only on the
// options.
IdentitySample sample_identities(const IdentitySamplerOptions& options, int bins = 40);

// A printable report: acceptance rate and the histogram as text bars.
std::string describe(const IdentitySample& sample);

}  // namespace idsynth::dataset
