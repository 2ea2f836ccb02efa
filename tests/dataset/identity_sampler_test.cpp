// Identity sampling fitted to a recogniser's vectors (identities.like): the new identities follow
// the given vectors' mean and covariance instead of the isotropic Gaussian, still apart from each
// other; the same options give the same vectors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "dataset/identity_sampler.h"
#include "tests/support/errors.h"

namespace idsynth::dataset {
namespace {

// 500 unit vectors in 16-d that use two directions: e0 plus a spread along e1.
at::Tensor two_direction_vectors() {
  auto gen = at::detail::createCPUGenerator(3);
  at::Tensor x = at::zeros({500, 16});
  x.select(1, 0).fill_(1.0);
  x.select(1, 1).copy_(at::randn({500}, gen) * 0.5);
  return x / x.norm(2, 1, true);
}

TEST(IdentitySampler, LikeDrawsFromTheFittedDistribution) {
  IdentitySamplerOptions o;
  o.count = 50;
  o.dim = 16;
  o.max_similarity = 0.9999;
  o.seed = 7;
  const at::Tensor iso = sample_identities(o).ids;
  o.like = two_direction_vectors();
  const IdentitySample fitted = sample_identities(o);
  EXPECT_TRUE(fitted.ids.equal(sample_identities(o).ids));
  EXPECT_NEAR(fitted.ids.norm(2, 1).min().item<double>(), 1.0, 1e-5);
  // Isotropic vectors point anywhere; fitted ones along e0, with their spread in e1 and (nearly) nowhere else.
  EXPECT_LT(iso.select(1, 0).mean().item<double>(), 0.3);
  EXPECT_GT(fitted.ids.select(1, 0).mean().item<double>(), 0.8);
  const double spread_e1 = fitted.ids.select(1, 1).std().item<double>();
  const double spread_rest = fitted.ids.narrow(1, 2, 14).std().item<double>();
  EXPECT_GT(spread_e1, 0.25);
  EXPECT_LT(spread_rest, 0.05);
  // Still kept apart from each other.
  at::Tensor sims = at::matmul(fitted.ids, fitted.ids.t());
  sims.fill_diagonal_(-1);
  EXPECT_LT(sims.max().item<double>(), 0.9999);
}

TEST(IdentitySampler, LikeOfTheWrongWidthIsOneLine) {
  IdentitySamplerOptions o;
  o.count = 2;
  o.dim = 8;
  o.like = at::randn({10, 16});
  EXPECT_NE(test::error_of([&] { sample_identities(o); }).find("identities.like: expected [L >= 2, 8] vectors, found [10, 16]"),
            std::string::npos);
}

}  // namespace
}  // namespace idsynth::dataset
