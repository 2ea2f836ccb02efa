// Ref: insightface recognition/arcface_torch/eval/verification.py (see verification.h).
#include "eval/verification.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/check.h"

namespace idsynth::eval {

namespace {

// numpy's pairwise summation block (PW_BLOCKSIZE in loops_utils.h).
constexpr int64_t kPairwiseBlock = 128;

// Squared L2 norm of a row in the order numpy's einsum("ij,ij->i") sums it on x86-64 (two SIMD
// lanes, four vectors per step, accumulated innermost-last), which is what sklearn's normalize uses.
double einsum_row_sq_norm(const double* x, int64_t n) {
  double lane[2] = {0.0, 0.0};
  int64_t i = 0;
  for (; n - i >= 8; i += 8) {
    for (int l = 0; l < 2; ++l) {
      double a3 = x[i + 6 + l] * x[i + 6 + l] + lane[l];
      double a2 = x[i + 4 + l] * x[i + 4 + l] + a3;
      double a1 = x[i + 2 + l] * x[i + 2 + l] + a2;
      lane[l] = x[i + l] * x[i + l] + a1;
    }
  }
  for (; i < n; i += 2) {
    for (int l = 0; l < 2; ++l) {
      const double v = (i + l < n) ? x[i + l] : 0.0;
      lane[l] = v * v + lane[l];
    }
  }
  return 0.0 + (lane[0] + lane[1]);
}

at::Tensor as_rows_f64(const at::Tensor& t, const char* what) {
  IDSYNTH_CHECK(t.dim() == 2, "verification: ", what, ": expected a 2-d (images, dim) tensor, found ",
                t.dim(), " dimensions");
  return t.to(at::kCPU, at::kDouble).contiguous();
}

// (tp, fp, tn, fn) of `dist < threshold` over pairs [begin, end), optionally skipping [skip_begin, skip_end).
struct Counts {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  int64_t correct() const { return tp + tn; }
  int64_t total() const { return tp + fp + tn + fn; }
};

Counts count_range(const std::vector<double>& dist, const std::vector<bool>& issame, double threshold,
                   int64_t begin, int64_t end, Counts c = {}) {
  for (int64_t i = begin; i < end; ++i) {
    const bool predict = dist[static_cast<size_t>(i)] < threshold;
    const bool actual = issame[static_cast<size_t>(i)];
    if (predict && actual) ++c.tp;
    else if (predict) ++c.fp;
    else if (actual) ++c.fn;
    else ++c.tn;
  }
  return c;
}

double rate(int64_t num, int64_t den) { return den == 0 ? 0.0 : static_cast<double>(num) / static_cast<double>(den); }

}  // namespace

double numpy_sum(const double* x, int64_t n) {
  if (n < 8) {
    double res = 0.0;
    for (int64_t i = 0; i < n; ++i) res += x[i];
    return res;
  }
  if (n <= kPairwiseBlock) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = x[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += x[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += x[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_sum(x, n2) + numpy_sum(x + n2, n - n2);
}

double numpy_mean(const std::vector<double>& x) {
  IDSYNTH_CHECK(!x.empty(), "verification: mean of an empty list");
  return (0.0 + numpy_sum(x.data(), static_cast<int64_t>(x.size()))) / static_cast<double>(x.size());
}

double numpy_std(const std::vector<double>& x) {
  const double mean = numpy_mean(x);
  std::vector<double> sq(x.size());
  for (size_t i = 0; i < x.size(); ++i) sq[i] = (x[i] - mean) * (x[i] - mean);
  return std::sqrt(numpy_mean(sq));
}

std::vector<double> protocol_thresholds() {
  // numpy fills arange as start + k * delta with delta = (start + step) - start; start is 0.
  std::vector<double> t(400);
  for (size_t k = 0; k < t.size(); ++k) t[k] = static_cast<double>(k) * 0.01;
  return t;
}

std::vector<std::pair<int64_t, int64_t>> kfold_ranges(int64_t n, int64_t n_splits) {
  IDSYNTH_CHECK(n_splits >= 2, "verification: folds: expected at least 2, found ", n_splits);
  IDSYNTH_CHECK(n >= n_splits, "verification: pairs: expected at least as many pairs as folds (", n_splits,
                "), found ", n);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  int64_t begin = 0;
  for (int64_t k = 0; k < n_splits; ++k) {
    const int64_t size = n / n_splits + (k < n % n_splits ? 1 : 0);
    ranges.emplace_back(begin, begin + size);
    begin += size;
  }
  return ranges;
}

at::Tensor fuse_and_normalize(const at::Tensor& raw, const at::Tensor& raw_flip) {
  at::Tensor e = as_rows_f64(raw, "embeddings");
  if (raw_flip.defined()) {
    const at::Tensor f = as_rows_f64(raw_flip, "flipped embeddings");
    IDSYNTH_CHECK(f.sizes() == e.sizes(), "verification: flipped embeddings: expected shape ",
                  e.sizes(), " like the embeddings, found ", f.sizes());
    e = e + f;
  } else {
    e = e.clone();
  }
  const int64_t rows = e.size(0), dim = e.size(1);
  double* p = e.data_ptr<double>();
  for (int64_t r = 0; r < rows; ++r) {
    double* row = p + r * dim;
    double norm = std::sqrt(einsum_row_sq_norm(row, dim));
    if (norm == 0.0) norm = 1.0;  // sklearn's _handle_zeros_in_scale
    for (int64_t j = 0; j < dim; ++j) row[j] /= norm;
  }
  return e;
}

std::vector<double> pair_distances(const at::Tensor& normalized) {
  const at::Tensor e = as_rows_f64(normalized, "normalized embeddings");
  IDSYNTH_CHECK(e.size(0) % 2 == 0, "verification: embeddings: expected an even number of rows (pairs), found ",
                e.size(0));
  const int64_t pairs = e.size(0) / 2, dim = e.size(1);
  const double* p = e.data_ptr<double>();
  std::vector<double> dist(static_cast<size_t>(pairs));
  std::vector<double> sq(static_cast<size_t>(dim));
  for (int64_t i = 0; i < pairs; ++i) {
    const double* a = p + (2 * i) * dim;
    const double* b = p + (2 * i + 1) * dim;
    for (int64_t j = 0; j < dim; ++j) {
      const double d = a[j] - b[j];
      sq[static_cast<size_t>(j)] = d * d;
    }
    dist[static_cast<size_t>(i)] = 0.0 + numpy_sum(sq.data(), dim);
  }
  return dist;
}

double xnorm(const at::Tensor& raw, const at::Tensor& raw_flip) {
  double total = 0.0;
  int64_t count = 0;
  for (const at::Tensor* t : {&raw, &raw_flip}) {
    if (!t->defined()) continue;
    const at::Tensor e = as_rows_f64(*t, "embeddings");
    const double* p = e.data_ptr<double>();
    for (int64_t r = 0; r < e.size(0); ++r) {
      double sq = 0.0;
      for (int64_t j = 0; j < e.size(1); ++j) sq += p[r * e.size(1) + j] * p[r * e.size(1) + j];
      total += std::sqrt(sq);
      ++count;
    }
  }
  return count == 0 ? 0.0 : total / static_cast<double>(count);
}

std::vector<double> VerificationResult::best_thresholds() const {
  std::vector<double> t;
  for (const auto& f : folds) t.push_back(f.best_threshold);
  return t;
}

std::vector<TarAtFar> tar_at_far(const std::vector<double>& dist, const std::vector<bool>& issame,
                                 const std::vector<double>& far_targets) {
  std::vector<double> impostor, genuine;
  for (size_t i = 0; i < dist.size(); ++i) (issame[i] ? genuine : impostor).push_back(dist[i]);
  std::sort(impostor.begin(), impostor.end());
  std::vector<TarAtFar> out;
  for (double target : far_targets) {
    TarAtFar r;
    r.far_target = target;
    const auto n = static_cast<double>(impostor.size());
    const auto allowed = static_cast<size_t>(std::floor(target * n));
    r.threshold = allowed < impostor.size() ? impostor[allowed] : std::numeric_limits<double>::infinity();
    int64_t fa = 0, ta = 0;
    for (double d : impostor) fa += d < r.threshold;
    for (double d : genuine) ta += d < r.threshold;
    r.far = rate(fa, static_cast<int64_t>(impostor.size()));
    r.tar = rate(ta, static_cast<int64_t>(genuine.size()));
    r.impostors = static_cast<int64_t>(impostor.size());
    out.push_back(r);
  }
  return out;
}

VerificationResult evaluate_distances(const std::vector<double>& dist, const std::vector<bool>& issame,
                                      const VerificationOptions& options) {
  IDSYNTH_CHECK(dist.size() == issame.size(), "verification: issame: expected one entry per pair (", dist.size(),
                "), found ", issame.size());
  VerificationResult res;
  res.thresholds = protocol_thresholds();
  res.dist = dist;
  const auto n = static_cast<int64_t>(dist.size());
  const auto ranges = kfold_ranges(n, options.n_folds);
  const size_t nt = res.thresholds.size();
  std::vector<double> tpr_sum(nt, 0.0), fpr_sum(nt, 0.0);

  for (const auto& [begin, end] : ranges) {
    // 1. training accuracy of every threshold on the other folds; the first maximum wins
    FoldResult fold;
    fold.test_begin = begin;
    fold.test_end = end;
    int64_t best_correct = -1;
    for (size_t k = 0; k < nt; ++k) {
      const Counts train = count_range(dist, issame, res.thresholds[k], end, n,
                                       count_range(dist, issame, res.thresholds[k], 0, begin));
      if (train.correct() > best_correct) {
        best_correct = train.correct();
        fold.best_index = static_cast<int64_t>(k);
      }
    }
    fold.best_threshold = res.thresholds[static_cast<size_t>(fold.best_index)];
    fold.train_accuracy = rate(best_correct, n - (end - begin));
    // 2. test-fold rates at every threshold (for the ROC curve) and accuracy at the chosen one
    for (size_t k = 0; k < nt; ++k) {
      const Counts test = count_range(dist, issame, res.thresholds[k], begin, end);
      tpr_sum[k] += rate(test.tp, test.tp + test.fn);
      fpr_sum[k] += rate(test.fp, test.fp + test.tn);
    }
    const Counts test = count_range(dist, issame, fold.best_threshold, begin, end);
    fold.test_accuracy = rate(test.correct(), test.total());
    fold.n_same = test.tp + test.fn;
    fold.n_diff = test.fp + test.tn;
    res.folds.push_back(fold);
    res.fold_accuracies.push_back(fold.test_accuracy);
  }
  // 3. np.mean over axis 0 of the per-fold curves adds the folds in order
  const auto folds = static_cast<double>(ranges.size());
  res.tpr.resize(nt);
  res.fpr.resize(nt);
  for (size_t k = 0; k < nt; ++k) {
    res.tpr[k] = tpr_sum[k] / folds;
    res.fpr[k] = fpr_sum[k] / folds;
  }
  res.accuracy = numpy_mean(res.fold_accuracies);
  res.std = numpy_std(res.fold_accuracies);
  res.tar_at_far = tar_at_far(dist, issame, options.far_targets);
  return res;
}

VerificationResult evaluate_embeddings(const at::Tensor& raw, const at::Tensor& raw_flip,
                                       const std::vector<bool>& issame, const VerificationOptions& options) {
  const at::Tensor normalized = fuse_and_normalize(raw, raw_flip);
  VerificationResult res = evaluate_distances(pair_distances(normalized), issame, options);
  res.xnorm = xnorm(raw, raw_flip);
  return res;
}

// ---- metrics.json ------------------------------------------------------------------------------

std::string far_label(double far) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0e", far);
  return buf;
}

const VerificationMetrics::Tar* VerificationMetrics::tar_at(double far_target) const {
  if (!tar_at_far) return nullptr;
  const std::string key = far_label(far_target);
  for (const auto& [label, t] : *tar_at_far)
    if (label == key) return &t;
  return nullptr;
}

VerificationMetrics VerificationMetrics::from_json(const json::Value& entry, const std::string& where) {
  VerificationMetrics m = json_fields::read<VerificationMetrics>(entry, where);
  if (m.roc)
    IDSYNTH_CHECK(m.roc->tpr.size() == m.roc->fpr.size() && m.roc->thresholds.size() == m.roc->fpr.size(), where,
                  ": roc: expected thresholds, tpr and fpr of one length, found ", m.roc->thresholds.size(), ", ",
                  m.roc->tpr.size(), " and ", m.roc->fpr.size());
  return m;
}

VerificationMetrics verification_metrics(const VerificationResult& r, bool flip, int64_t pairs) {
  VerificationMetrics m;
  m.accuracy = r.accuracy;
  m.std = r.std;
  m.best_thresholds = r.best_thresholds();
  m.fold_accuracies = r.fold_accuracies;
  m.tar_at_far.emplace();
  for (const auto& t : r.tar_at_far) m.tar_at_far->push_back({far_label(t.far_target), {t.tar, t.far, t.threshold, t.impostors}});
  m.xnorm = r.xnorm;
  m.flip = flip;
  m.pairs = pairs;
  m.roc = VerificationMetrics::Roc{r.thresholds, r.tpr, r.fpr};
  return m;
}

}  // namespace idsynth::eval
