// Human-readable reports of `idsynth eval` results: next to metrics.json, a self-contained
// report.html (inline SVG, no scripts, no external files) and a Markdown summary.
//
// The input is the metrics.json object the eval commands write: verification entries keyed by pack
// stem (accuracy, std, best_thresholds, tar_at_far, xnorm, roc{fpr,tpr}), and optional "fid" and
// "lpips" entries. Unknown keys are listed as plain values.
#pragma once

#include <string>

#include "core/json.h"

namespace idsynth::eval {

// The ROC curves of all verification entries as one inline <svg> (FPR on x, TPR on y).
std::string roc_svg(const json::Value& metrics);

std::string report_html(const json::Value& metrics, const std::string& title);
std::string report_markdown(const json::Value& metrics, const std::string& title);

// Writes <dir>/metrics.json, <dir>/report.html and <dir>/summary.md, each atomically.
void write_reports(const std::string& dir, const json::Value& metrics, const std::string& title);

}  // namespace idsynth::eval
