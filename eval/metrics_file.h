// metrics.json as the `idsynth eval` commands write it: one object whose entries are metrics.
// `eval verify` keys one entry per benchmark by its pack's file stem ("lfw", "agedb_30"); `eval idsim`,
// `eval fid`, `eval lpips` and `eval audit` write one entry each, named "idsim", "fid", "lpips" and
// "audit". `eval report`
// merges several such files per run.
//
// The entries carry no kind marker (files written so far have none, and the bytes stay as they
// were), so the entry's name decides: metric_kind() is the one place that says how.
#pragma once

#include <optional>
#include <string>

#include "core/json.h"
#include "eval/audit.h"
#include "eval/fid.h"
#include "eval/id_similarity.h"
#include "eval/lpips.h"
#include "core/json_fields.h"
#include "eval/verification.h"

namespace idsynth::eval {

enum class MetricKind { verification, idsim, fid, lpips, audit, other };

// "idsim", "fid", "lpips" and "audit" name their metric; every other object entry is a verification
// benchmark; anything that is not an object is `other` (shown as a plain value, never interpreted).
// A pack whose stem is one of the reserved names would be misread, so `eval verify` refuses it.
MetricKind metric_kind(const std::string& name, const json::Value& entry);

// One metrics.json (or several merged), each entry read by its metric's from_json.
struct EvalMetrics {
  json_fields::Keyed<VerificationMetrics> verification;  // in file order
  std::optional<IdSimMetrics> idsim;
  std::optional<FidMetrics> fid;
  std::optional<LpipsMetrics> lpips;
  std::optional<AuditMetrics> audit;
  json_fields::Keyed<json::Value> other;

  // `where` names the file in errors; an entry's error adds the entry and field names.
  static EvalMetrics from_json(const json::Value& metrics, const std::string& where);
  const VerificationMetrics* find_verification(const std::string& name) const;
};

}  // namespace idsynth::eval
