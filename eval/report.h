// Human-readable reports of `idsynth eval` results: next to metrics.json, a self-contained
// report.html (inline SVG charts and inline base64 JPEG thumbnails, no scripts, no external files) and
// a Markdown summary; and the side-by-side comparison of several runs (`idsynth eval report`).
//
// Every entry of metrics.json is read through its metric's from_json (eval/metrics_file.h says which
// metric an entry is), and each metric has its own report section, in HTML and in Markdown:
// verification (table and ROC curves), ID similarity (statistics, histogram, per-identity table, face
// grid), the audit (nearest-real histogram with its threshold line, flagged identities beside their
// nearest real faces, dataset quality), FID and LPIPS (a row each of the generation metrics). Entries
// that are no metric are listed as plain values.
#pragma once

#include <string>
#include <vector>

#include "core/json.h"
#include "eval/metrics_file.h"

namespace idsynth::eval {

// Standard base64 (RFC 4648, with '=' padding), for data: URIs.
std::string base64_encode(const std::string& bytes);

// The ROC curves (FPR on x, TPR on y) of the named entries that have one, as one inline <svg>.
std::string roc_svg(const json_fields::Keyed<const VerificationMetrics*>& entries);

// One inline <svg> with the similarity histogram of each named entry overlaid, as the fraction of
// images per bin (so runs of different sizes compare).
std::string histogram_svg(const json_fields::Keyed<const IdSimMetrics*>& entries);

// A table of face thumbnails: one row per identity, each image with its cosine. Empty when the entry
// holds no faces.
std::string face_grid_html(const IdSimMetrics& idsim);

std::string report_html(const json::Value& metrics, const std::string& title);
std::string report_markdown(const json::Value& metrics, const std::string& title);

// Writes <dir>/metrics.json, <dir>/report.html and <dir>/summary.md, each atomically.
void write_reports(const std::string& dir, const json::Value& metrics, const std::string& title);

// ---- several runs side by side -------------------------------------------------------------
struct RunMetrics {
  std::string name;
  json::Value metrics;  // a metrics.json object (several merged when a run names several folders)
};

// <dir>/metrics.json of an eval run, every entry checked by its metric's reader; one-line errors for
// a missing file, bad JSON, an entry that is not an object, or a field a metric needs.
json::Value read_run_metrics(const std::string& dir);

// Adds <dir>/metrics.json to the run `name`: a new run, or more entries of one named before (its
// verify, idsim, fid and lpips folders). An entry that an earlier folder of the run gave is an error.
void add_run_metrics(std::vector<RunMetrics>& runs, const std::string& name, const std::string& dir);

// Table like the paper's (rows = runs; columns = verification benchmarks in the paper's order, their
// average, ID similarity, FID, LPIPS, the audit's flagged fraction and mean nearest-real cosine; best
// value of each column in bold), ROC curves per benchmark
// with one curve per run, the similarity histograms overlaid, and each run's face grid.
std::string compare_html(const std::vector<RunMetrics>& runs, const std::string& title);
std::string compare_markdown(const std::vector<RunMetrics>& runs, const std::string& title);

// Writes <dir>/comparison.json ({"runs": {name: metrics}}), <dir>/report.html and <dir>/summary.md.
void write_compare_reports(const std::string& dir, const std::vector<RunMetrics>& runs, const std::string& title);

}  // namespace idsynth::eval
