// Human-readable reports of `idsynth eval` results: next to metrics.json, a self-contained
// report.html (inline SVG and inline base64 JPEG thumbnails, no scripts, no external files) and a
// Markdown summary; and the side-by-side comparison of several runs (`idsynth eval report`).
//
// The input is the metrics.json object the eval commands write: verification entries keyed by pack
// stem (accuracy, std, best_thresholds, tar_at_far, xnorm, roc{fpr,tpr}), and optional "idsim"
// (eval/id_similarity.h: statistics, histogram, face thumbnails), "fid" and "lpips" entries.
// Unknown keys are listed as plain values.
#pragma once

#include <string>
#include <vector>

#include "core/json.h"

namespace idsynth::eval {

// Standard base64 (RFC 4648, with '=' padding), for data: URIs.
std::string base64_encode(const std::string& bytes);

// The ROC curves of all verification entries as one inline <svg> (FPR on x, TPR on y).
std::string roc_svg(const json::Value& metrics);

// One inline <svg> with the similarity histogram of each named "idsim" entry overlaid, as the
// fraction of images per bin (so runs of different sizes compare).
std::string histogram_svg(const std::vector<std::pair<std::string, const json::Value*>>& idsim_entries);

// A table of face thumbnails of an "idsim" entry: one row per identity, each image with its cosine.
// Empty when the entry holds no faces.
std::string face_grid_html(const json::Value& idsim);

std::string report_html(const json::Value& metrics, const std::string& title);
std::string report_markdown(const json::Value& metrics, const std::string& title);

// Writes <dir>/metrics.json, <dir>/report.html and <dir>/summary.md, each atomically.
void write_reports(const std::string& dir, const json::Value& metrics, const std::string& title);

// ---- several runs side by side -------------------------------------------------------------
struct RunMetrics {
  std::string name;
  json::Value metrics;  // a metrics.json object (several merged when a run names several folders)
};

// <dir>/metrics.json of an eval run; one-line errors for a missing file, bad JSON, or a value that
// is not a metrics object.
json::Value read_run_metrics(const std::string& dir);

// Table like the paper's (rows = runs; columns = verification benchmarks in the paper's order, their
// average, ID similarity, FID, LPIPS; best value of each column in bold), ROC curves per benchmark
// with one curve per run, the similarity histograms overlaid, and each run's face grid.
std::string compare_html(const std::vector<RunMetrics>& runs, const std::string& title);
std::string compare_markdown(const std::vector<RunMetrics>& runs, const std::string& title);

// Writes <dir>/comparison.json ({"runs": {name: metrics}}), <dir>/report.html and <dir>/summary.md.
void write_compare_reports(const std::string& dir, const std::vector<RunMetrics>& runs, const std::string& title);

}  // namespace idsynth::eval
