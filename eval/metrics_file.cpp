#include "eval/metrics_file.h"

#include "core/check.h"

namespace idsynth::eval {

MetricKind metric_kind(const std::string& name, const json::Value& entry) {
  if (name == IdSimMetrics::kEntry) return MetricKind::idsim;
  if (name == FidMetrics::kEntry) return MetricKind::fid;
  if (name == LpipsMetrics::kEntry) return MetricKind::lpips;
  if (name == AuditMetrics::kEntry) return MetricKind::audit;
  return entry.is_object() ? MetricKind::verification : MetricKind::other;
}

EvalMetrics EvalMetrics::from_json(const json::Value& metrics, const std::string& where) {
  IDSYNTH_CHECK(metrics.is_object(), where, ": expected a metrics object, found ", metrics.type_name());
  EvalMetrics m;
  for (const auto& [name, entry] : metrics.as_object()) {
    const std::string at = where + ": " + name;
    switch (metric_kind(name, entry)) {
      case MetricKind::verification: m.verification.emplace_back(name, VerificationMetrics::from_json(entry, at)); break;
      case MetricKind::idsim: m.idsim = IdSimMetrics::from_json(entry, at); break;
      case MetricKind::fid: m.fid = FidMetrics::from_json(entry, at); break;
      case MetricKind::lpips: m.lpips = LpipsMetrics::from_json(entry, at); break;
      case MetricKind::audit: m.audit = AuditMetrics::from_json(entry, at); break;
      case MetricKind::other: m.other.emplace_back(name, entry); break;
    }
  }
  return m;
}

const VerificationMetrics* EvalMetrics::find_verification(const std::string& name) const {
  for (const auto& [n, v] : verification)
    if (n == name) return &v;
  return nullptr;
}

}  // namespace idsynth::eval
