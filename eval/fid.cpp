// Ref: pytorch-fid src/pytorch_fid/fid_score.py (see fid.h).
#include "eval/fid.h"

#include <ATen/ATen.h>
#include <Eigen/Dense>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>

#include "core/check.h"
#include "core/device.h"
#include "core/log.h"
#include "formats/image.h"
#include "formats/npy.h"

namespace idsynth::eval {

namespace {

namespace fs = std::filesystem;
using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Matrix to_matrix(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kDouble).contiguous();
  return Eigen::Map<const Matrix>(c.data_ptr<double>(), c.size(0), c.size(1));
}

void check_stats(const FidStats& s) {
  IDSYNTH_CHECK(s.mu.defined() && s.sigma.defined() && s.mu.dim() == 1, s.source,
                ": mu: expected a vector, found ", s.mu.defined() ? shape_string(s.mu.sizes()) : "nothing");
  IDSYNTH_CHECK(s.sigma.dim() == 2 && s.sigma.size(0) == s.mu.size(0) && s.sigma.size(1) == s.mu.size(0), s.source,
                ": sigma: expected [", s.mu.size(0), ", ", s.mu.size(0), "] to match mu, found ",
                shape_string(s.sigma.sizes()));
  IDSYNTH_CHECK(at::isfinite(s.mu).all().item<bool>() && at::isfinite(s.sigma).all().item<bool>(), s.source,
                ": expected finite mu and sigma, found NaN or infinity");
}

// Σ^½ of a symmetric positive semi-definite matrix (negative round-off eigenvalues clipped to 0).
Matrix sqrt_psd(const Matrix& m) {
  const Eigen::SelfAdjointEigenSolver<Matrix> es(m);
  IDSYNTH_CHECK(es.info() == Eigen::Success, "fid: eigendecomposition of a covariance did not converge");
  const Eigen::VectorXd root = es.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  return es.eigenvectors() * root.asDiagonal() * es.eigenvectors().transpose();
}

bool has_fid_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  static const char* kExts[] = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"};
  for (const char* e : kExts)
    if (ext == e) return true;
  return false;
}

}  // namespace

FidStats compute_stats(const at::Tensor& activations, const std::string& source) {
  IDSYNTH_CHECK(activations.dim() == 2, source, ": activations: expected (N, D), found ",
                shape_string(activations.sizes()));
  IDSYNTH_CHECK(activations.size(0) >= 2, source, ": expected at least 2 images for a covariance, found ",
                activations.size(0));
  const at::Tensor act = activations.to(at::kCPU, at::kDouble).contiguous();
  FidStats s;
  s.source = source;
  s.count = act.size(0);
  s.mu = act.mean(0);
  const at::Tensor centred = act - s.mu;
  s.sigma = centred.t().matmul(centred) / static_cast<double>(s.count - 1);
  return s;
}

double frechet_distance(const FidStats& a, const FidStats& b) {
  check_stats(a);
  check_stats(b);
  IDSYNTH_CHECK(a.dim() == b.dim(), "fid: expected statistics of equal dimension, found ", a.dim(), " (", a.source,
                ") and ", b.dim(), " (", b.source, ")");
  const Matrix s1 = to_matrix(a.sigma), s2 = to_matrix(b.sigma);
  const at::Tensor diff = a.mu.to(at::kDouble) - b.mu.to(at::kDouble);
  // 1. tr √(Σ₁Σ₂) = Σ √λ(S₁Σ₂S₁), S₁ = Σ₁^½, symmetrised against round-off
  const Matrix root1 = sqrt_psd(0.5 * (s1 + s1.transpose()));
  Matrix inner = root1 * s2 * root1;
  inner = 0.5 * (inner + inner.transpose());
  const Eigen::SelfAdjointEigenSolver<Matrix> es(inner, Eigen::EigenvaluesOnly);
  IDSYNTH_CHECK(es.info() == Eigen::Success, "fid: eigendecomposition of S1*Sigma2*S1 did not converge");
  const double tr_covmean = es.eigenvalues().cwiseMax(0.0).cwiseSqrt().sum();
  // 2. d² = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂)
  return diff.dot(diff).item<double>() + s1.trace() + s2.trace() - 2.0 * tr_covmean;
}

FidStats read_fid_stats(const std::string& path, int64_t expected_dim) {
  const TensorDict arrays = formats::read_npz(path);
  IDSYNTH_CHECK(arrays.contains("mu") && arrays.contains("sigma"), path,
                ": expected pytorch-fid statistics with arrays 'mu' and 'sigma', found ", arrays.size(), " arrays");
  FidStats s;
  s.source = path;
  s.mu = arrays.at("mu").to(at::kDouble);
  s.sigma = arrays.at("sigma").to(at::kDouble);
  check_stats(s);
  if (expected_dim > 0)
    IDSYNTH_CHECK(s.dim() == expected_dim, path, ": mu: expected ", expected_dim, "-d statistics (Inception pool3), found ",
                  s.dim(), "-d");
  return s;
}

void write_fid_stats(const std::string& path, const FidStats& stats) {
  check_stats(stats);
  formats::write_npz(path, {{"mu", stats.mu.to(at::kDouble)}, {"sigma", stats.sigma.to(at::kDouble)}});
}

std::vector<std::string> list_fid_images(const std::string& dir) {
  IDSYNTH_CHECK(fs::is_directory(dir), dir, ": expected a folder of images, found none");
  std::vector<std::string> paths;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && has_fid_extension(entry.path())) paths.push_back(entry.path().string());
  std::sort(paths.begin(), paths.end());
  IDSYNTH_CHECK(!paths.empty(), dir, ": expected image files (bmp, jpg, jpeg, pgm, png, ppm, tif, tiff, webp), found none");
  return paths;
}

at::Tensor fid_activations(InceptionV3FID& model, const std::vector<std::string>& paths,
                           const FidFeatureOptions& options) {
  IDSYNTH_CHECK(options.batch_size >= 1, "fid: batch size: expected at least 1, found ", options.batch_size);
  const at::Device device = parse_device(options.device);
  model->to(device);
  model->eval();
  torch::NoGradGuard no_grad;
  log::Stopwatch sw;
  std::vector<at::Tensor> out;
  const auto n = static_cast<int64_t>(paths.size());
  for (int64_t begin = 0; begin < n; begin += options.batch_size) {
    const int64_t end = std::min(n, begin + options.batch_size);
    std::vector<at::Tensor> batch;
    for (int64_t i = begin; i < end; ++i) {
      const std::string& p = paths[static_cast<size_t>(i)];
      const cv::Mat rgb = formats::read_image_rgb(p);  // header checked before decoding
      at::Tensor t = at::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, at::kByte).clone();
      if (!batch.empty())
        IDSYNTH_CHECK(t.size(0) == batch.front().size(1) && t.size(1) == batch.front().size(2), p, ": expected a ", batch.front().size(2), "x",
                      batch.front().size(1), " image like the rest of its batch, found ", rgb.cols, "x", rgb.rows);
      batch.push_back(t.permute({2, 0, 1}));
    }
    const at::Tensor x = at::stack(batch).to(device, at::kFloat) / 255.0;  // [B, 3, H, W] in [0, 1]
    out.push_back(model->forward(x).to(at::kCPU, at::kDouble));
  }
  LOG_INF("fid features of ", n, " images completed, taking ", sw.seconds(), " s (", n / std::max(sw.seconds(), 1e-9),
          " images/s, batch ", options.batch_size, ")");
  return at::cat(out, 0);
}

FidStats fid_stats_of_folder(InceptionV3FID& model, const std::string& dir, const FidFeatureOptions& options) {
  const auto paths = list_fid_images(dir);
  FidStats s = compute_stats(fid_activations(model, paths, options), dir);
  return s;
}

}  // namespace idsynth::eval
