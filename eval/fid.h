// Fréchet Inception Distance as pytorch-fid computes it: pool3 activations of every image of a
// folder (sorted paths), their float64 mean and unbiased covariance, and
//   d² = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂).
// pytorch-fid takes tr √(Σ₁Σ₂) from scipy.linalg.sqrtm (Schur method). Here it comes from symmetric
// eigendecompositions, which cannot go complex: for positive semi-definite Σ₁, Σ₂ the eigenvalues of
// Σ₁Σ₂ equal those of the symmetric S₁Σ₂S₁ with S₁ = Σ₁^½, so tr √(Σ₁Σ₂) = Σᵢ √max(λᵢ(S₁Σ₂S₁), 0).
// Statistics files are pytorch-fid's `.npz` (`mu`, `sigma`), readable and writable both ways.
// Ref: pytorch-fid src/pytorch_fid/fid_score.py (calculate_frechet_distance,
//      calculate_activation_statistics, compute_statistics_of_path, save_fid_stats).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "eval/inception_fid.h"
#include "core/json_fields.h"

namespace idsynth::eval {

struct FidStats {
  at::Tensor mu;      // (D) float64
  at::Tensor sigma;   // (D, D) float64
  int64_t count = 0;  // images behind the statistics (0 when read from a file)
  std::string source; // folder or file, for messages

  int64_t dim() const { return mu.defined() ? mu.size(0) : 0; }
};

// μ = mean over rows, Σ = np.cov(act, rowvar=False) (divides by N − 1). Needs N >= 2.
FidStats compute_stats(const at::Tensor& activations, const std::string& source = "activations");

// Fréchet distance between two sets of statistics; both must have the same dimension.
double frechet_distance(const FidStats& a, const FidStats& b);

// pytorch-fid `.npz` statistics: `mu` (D) and `sigma` (D, D), any float dtype. When `expected_dim`
// is positive, a file of another dimension is refused with both numbers in the message.
FidStats read_fid_stats(const std::string& path, int64_t expected_dim = 0);
void write_fid_stats(const std::string& path, const FidStats& stats);

// Image files of a folder as pytorch-fid lists them: extensions bmp jpg jpeg pgm png ppm tif tiff webp
// (lower or upper case), sorted by path. Throws when the folder is missing or holds none.
std::vector<std::string> list_fid_images(const std::string& dir);

struct FidFeatureOptions {
  int64_t batch_size = 50;  // pytorch-fid's default; the last batch may be smaller
  std::string device = "cpu";
};

// pool3 activations (N, 2048) float64 of the images: RGB [0, 1] (v / 255), each batch resized inside
// the network. Images of one batch must share a size (as in pytorch-fid's DataLoader).
at::Tensor fid_activations(InceptionV3FID& model, const std::vector<std::string>& paths,
                           const FidFeatureOptions& options = {});

// Statistics of a folder: list, activations, compute_stats.
FidStats fid_stats_of_folder(InceptionV3FID& model, const std::string& dir, const FidFeatureOptions& options = {});

// The "fid" entry of metrics.json. `idsynth eval fid` writes all three fields; a hand-written entry
// (a published number) may give only the distance.
struct FidMetrics {
  static constexpr const char* kEntry = "fid";
  double fid = 0.0;
  std::optional<int64_t> images;         // generated images behind the statistics
  std::optional<std::string> reference;  // the reference statistics file or folder

  template <class Self, class F>
  static void fields(Self& m, F& f) {
    f("fid", m.fid);
    f("images", m.images);
    f("reference", m.reference);
  }
  json::Value to_json() const { return json_fields::write(*this); }
  static FidMetrics from_json(const json::Value& entry, const std::string& where) {
    return json_fields::read<FidMetrics>(entry, where);
  }
};

}  // namespace idsynth::eval
