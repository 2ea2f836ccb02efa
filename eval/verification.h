// The insightface 10-fold face-verification protocol (LFW, CFP-FP, CPLFW, AgeDB-30, CALFW), computed
// exactly as arcface_torch does it, in float64, plus TAR at fixed FAR and the XNorm diagnostic.
//
// Pair p of a benchmark is (embedding 2p, embedding 2p+1). With flip on, the raw (un-normalised)
// outputs for the image and its mirror image are summed, then each row is L2-normalised; the
// distance is the squared L2 distance of the normalised rows (range [0, 4]). 400 thresholds
// k*0.01, "same" when dist < t, contiguous unshuffled folds, per fold the FIRST threshold of best
// training accuracy, its test accuracy; mean and population std of the fold accuracies.
// Ref: insightface recognition/arcface_torch/eval/verification.py (test, evaluate, calculate_roc,
//      calculate_accuracy); sklearn.model_selection.KFold; sklearn.preprocessing.normalize.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/json.h"
#include "core/json_fields.h"

namespace idsynth::eval {

// numpy's float64 summation order (pairwise, 8 accumulators, blocks of 128) so that means and
// standard deviations reproduce np.mean / np.std bit for bit.
double numpy_sum(const double* x, int64_t n);
double numpy_mean(const std::vector<double>& x);
double numpy_std(const std::vector<double>& x);  // population std (ddof 0), as np.std

// np.arange(0, 4, 0.01): 400 values, value k = k * 0.01 in float64 (0.07 -> 0.07000000000000001).
std::vector<double> protocol_thresholds();

// sklearn KFold(n_splits, shuffle=False): contiguous [begin, end) test ranges; the first n % k folds
// hold one extra pair. Throws when n < n_splits.
std::vector<std::pair<int64_t, int64_t>> kfold_ranges(int64_t n, int64_t n_splits);

// Rows of `raw` (plus rows of `raw_flip` when defined) summed in float64 and L2-normalised
// (sklearn normalize: zero rows stay zero). Returns (N, D) float64.
at::Tensor fuse_and_normalize(const at::Tensor& raw, const at::Tensor& raw_flip);

// Squared L2 distance of rows 2p and 2p+1 of `normalized` (float64): P values.
std::vector<double> pair_distances(const at::Tensor& normalized);

// Mean L2 norm over every raw row of both tensors (the second may be undefined), as test() logs it.
double xnorm(const at::Tensor& raw, const at::Tensor& raw_flip);

struct FoldResult {
  int64_t test_begin = 0;  // test pairs [test_begin, test_end)
  int64_t test_end = 0;
  int64_t n_same = 0;      // same-identity pairs in the test fold
  int64_t n_diff = 0;
  int64_t best_index = 0;  // index into the thresholds
  double best_threshold = 0.0;
  double train_accuracy = 0.0;
  double test_accuracy = 0.0;
};

// True accept rate at a false accept rate, over all pairs (no folds). Impostor distances sorted
// ascending d_1 <= ... <= d_N; with k = floor(far_target * N) false accepts allowed, the threshold is
// d_(k+1) and a pair is accepted when dist < threshold, so at most k impostors are accepted
// (exactly k unless distances tie); k >= N accepts everything. `far` is the achieved rate.
// With N impostor pairs, FAR targets below 1/N all give threshold d_1 (zero false accepts): such a
// TAR says nothing about that FAR, and resolved() is false (printers show "n/a").
struct TarAtFar {
  double far_target = 0.0;
  double threshold = 0.0;
  double far = 0.0;
  double tar = 0.0;
  int64_t impostors = 0;
  bool resolved() const { return far_target * static_cast<double>(impostors) >= 1.0; }
};

struct VerificationResult {
  std::vector<double> thresholds;
  std::vector<double> dist;  // per pair
  std::vector<FoldResult> folds;
  std::vector<double> fold_accuracies;
  double accuracy = 0.0;     // mean of fold_accuracies
  double std = 0.0;          // population std of fold_accuracies
  std::vector<double> tpr;   // per threshold: mean over folds of the test-fold rate (0 for 0/0)
  std::vector<double> fpr;
  std::vector<TarAtFar> tar_at_far;
  double xnorm = 0.0;        // 0 when computed from distances only

  std::vector<double> best_thresholds() const;
};

struct VerificationOptions {
  int64_t n_folds = 10;
  std::vector<double> far_targets = {1e-3, 1e-4};
};

// The protocol on precomputed distances. `issame` has one entry per pair.
VerificationResult evaluate_distances(const std::vector<double>& dist, const std::vector<bool>& issame,
                                      const VerificationOptions& options = {});

// The whole protocol from raw embeddings (2P rows, any float dtype). `raw_flip` undefined = no flip.
VerificationResult evaluate_embeddings(const at::Tensor& raw, const at::Tensor& raw_flip,
                                       const std::vector<bool>& issame, const VerificationOptions& options = {});

// TAR at each target FAR, as defined at TarAtFar.
std::vector<TarAtFar> tar_at_far(const std::vector<double>& dist, const std::vector<bool>& issame,
                                 const std::vector<double>& far_targets);

// ---- metrics.json ------------------------------------------------------------------------------

// The key of a FAR target in tar_at_far and in the printed lines: "%.0e", so 1e-3 is "1e-03".
std::string far_label(double far);

// One benchmark's entry in metrics.json, keyed there by the pack's file stem ("lfw"). Only accuracy
// and std are required: an entry written by hand (a paper's published numbers, for `eval report`)
// may hold just those; `idsynth eval verify` writes every field.
struct VerificationMetrics {
  struct Tar {
    double tar = 0.0, far = 0.0, threshold = 0.0;
    std::optional<int64_t> impostors;  // impostor pairs it was measured on (older files: absent)
    template <class Self, class F>
    static void fields(Self& m, F& f) {
      f("tar", m.tar);
      f("far", m.far);
      f("threshold", m.threshold);
      f("impostors", m.impostors);
    }
    // False when there were too few impostor pairs to reach the target FAR (target * impostors < 1).
    bool resolves(double far_target) const { return !impostors || far_target * static_cast<double>(*impostors) >= 1.0; }
  };
  struct Roc {
    std::vector<double> thresholds, tpr, fpr;  // per threshold
    template <class Self, class F>
    static void fields(Self& m, F& f) {
      f("thresholds", m.thresholds);
      f("tpr", m.tpr);
      f("fpr", m.fpr);
    }
  };

  double accuracy = 0.0;  // fraction, mean over folds
  double std = 0.0;
  std::optional<std::vector<double>> best_thresholds;  // per fold
  std::optional<std::vector<double>> fold_accuracies;
  std::optional<json_fields::Keyed<Tar>> tar_at_far;   // keyed by far_label(target)
  std::optional<double> xnorm;
  std::optional<bool> flip;
  std::optional<int64_t> pairs;
  std::optional<Roc> roc;

  template <class Self, class F>
  static void fields(Self& m, F& f) {
    f("accuracy", m.accuracy);
    f("std", m.std);
    f("best_thresholds", m.best_thresholds);
    f("fold_accuracies", m.fold_accuracies);
    f("tar_at_far", m.tar_at_far);
    f("xnorm", m.xnorm);
    f("flip", m.flip);
    f("pairs", m.pairs);
    f("roc", m.roc);
  }
  json::Value to_json() const { return json_fields::write(*this); }
  // Also checks that the ROC arrays are of one length.
  static VerificationMetrics from_json(const json::Value& entry, const std::string& where);
  // The TAR at this FAR target; nullptr when the entry has none.
  const Tar* tar_at(double far_target) const;
};

// The entry for a protocol run: `flip` and `pairs` describe how it was run.
VerificationMetrics verification_metrics(const VerificationResult& result, bool flip, int64_t pairs);

}  // namespace idsynth::eval
