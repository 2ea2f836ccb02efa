#include "eval/report.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

#include "core/check.h"
#include "core/file_util.h"
#include "core/svg_chart.h"

namespace idsynth::eval {

namespace {

namespace fs = std::filesystem;
using json_fields::Keyed;

constexpr size_t kPerIdentityRows = 20;  // per-identity table rows shown in report.html
// The paper's FR table order; other benchmarks follow in the order first seen.
const char* kPaperBenchmarks[] = {"lfw", "cfp_fp", "cplfw", "agedb_30", "calfw"};

std::string esc(const std::string& s) { return svg::escape_xml(s); }

const char* kStyle =
    "<style>body{font-family:sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 10px;"
    "text-align:right}th{background:#eee}td:first-child{text-align:left}table.generation td{text-align:left}"
    "table.faces td{padding:2px;text-align:center;font-size:11px}table.faces img{display:block}</style>";

std::string html_head(const std::string& title) {
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + esc(title) + "</title>\n" + kStyle +
         "</head><body>\n<h1>" + esc(title) + "</h1>\n";
}

// ---- tables ------------------------------------------------------------------------------------

// One table for both formats, so the HTML report and the Markdown summary cannot disagree. The first
// column names the row.
struct Table {
  std::string css_class;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::vector<bool>> bold;  // per row and cell; rows without an entry have none
};

bool is_bold(const Table& t, size_t i, size_t j) { return i < t.bold.size() && j < t.bold[i].size() && t.bold[i][j]; }

std::string table_html(const Table& t) {
  std::string html = t.css_class.empty() ? "<table><tr>" : "<table class=\"" + t.css_class + "\"><tr>";
  for (const auto& h : t.header) html += "<th>" + esc(h) + "</th>";
  html += "</tr>\n";
  for (size_t i = 0; i < t.rows.size(); ++i) {
    html += "<tr>";
    for (size_t j = 0; j < t.rows[i].size(); ++j)
      html += is_bold(t, i, j) ? "<td><b>" + esc(t.rows[i][j]) + "</b></td>" : "<td>" + esc(t.rows[i][j]) + "</td>";
    html += "</tr>\n";
  }
  return html + "</table>\n";
}

std::string table_markdown(const Table& t) {
  std::string md = "|";
  for (const auto& h : t.header) md += " " + h + " |";
  md += "\n|";
  for (size_t j = 0; j < t.header.size(); ++j) md += j == 0 ? "---|" : "---:|";
  md += "\n";
  for (size_t i = 0; i < t.rows.size(); ++i) {
    md += "|";
    for (size_t j = 0; j < t.rows[i].size(); ++j)
      md += is_bold(t, i, j) ? " **" + t.rows[i][j] + "** |" : " " + t.rows[i][j] + " |";
    md += "\n";
  }
  return md;
}

std::string percent(double fraction) { return format_number("%.2f", 100 * fraction); }

// ---- verification ------------------------------------------------------------------------------

Table verification_table(const Keyed<VerificationMetrics>& entries) {
  Table t{"verification",
          {"benchmark", "accuracy (%)", "std (%)", "TAR@FAR=1e-3", "TAR@FAR=1e-4", "XNorm", "best threshold per fold"},
          {},
          {}};
  for (const auto& [name, v] : entries) {
    std::vector<std::string> row = {name, percent(v.accuracy), percent(v.std)};
    for (double far : {1e-3, 1e-4}) {
      const VerificationMetrics::Tar* tar = v.tar_at(far);
      row.push_back(!tar ? "-" : tar->resolves(far) ? format_number("%.4f", tar->tar) : "n/a");
    }
    row.push_back(v.xnorm ? format_number("%.4f", *v.xnorm) : "-");
    std::string thresholds;
    if (v.best_thresholds)
      for (double x : *v.best_thresholds) thresholds += (thresholds.empty() ? "" : " ") + format_number("%.2f", x);
    row.push_back(thresholds);
    t.rows.push_back(row);
  }
  return t;
}

std::string verification_html(const Keyed<VerificationMetrics>& entries) {
  if (entries.empty()) return "";
  std::string html = "<h2>Face verification (insightface 10-fold protocol)</h2>\n" + table_html(verification_table(entries));
  bool unresolved = false;
  for (const auto& [name, v] : entries)
    for (double far : {1e-3, 1e-4}) unresolved = unresolved || (v.tar_at(far) && !v.tar_at(far)->resolves(far));
  if (unresolved)
    html += "<p>n/a: the pack has fewer than 1/FAR impostor pairs, so no threshold can be placed at that false accept "
            "rate.</p>\n";
  Keyed<const VerificationMetrics*> curves;
  bool any_roc = false;
  for (const auto& [name, v] : entries) {
    curves.emplace_back(name, &v);
    any_roc = any_roc || v.roc.has_value();
  }
  if (any_roc) html += "<h2>ROC (mean over test folds)</h2>\n" + roc_svg(curves);
  return html;
}

std::string verification_markdown(const Keyed<VerificationMetrics>& entries) {
  return entries.empty() ? "" : table_markdown(verification_table(entries)) + "\n";
}

// ---- ID similarity -----------------------------------------------------------------------------

Table idsim_table(const IdSimMetrics& m) {
  Table t{"idsim", {"images", "identities", "mean", "std", "median", "min", "max", "mean of identity means"}, {}, {}};
  std::vector<std::string> row = {cat(m.count), cat(m.identities)};
  for (double x : {m.mean, m.std, m.median, m.min, m.max, m.identity_mean}) row.push_back(format_number("%.4f", x));
  t.rows.push_back(row);
  return t;
}

std::string idsim_html(const IdSimMetrics& m) {
  std::string html = "<h2>ID similarity (cosine of target vector and face embedding)</h2>\n" + table_html(idsim_table(m));
  if (m.failed > 0)
    html += cat("<p>", m.failed, " images gave no embedding (no face detected or unreadable) and are not counted.</p>\n");
  html += histogram_svg({{IdSimMetrics::kEntry, &m}});
  if (!m.per_identity.empty()) {
    Table per{"per-identity", {"identity", "images", "mean", "min", "max"}, {}, {}};
    for (size_t i = 0; i < m.per_identity.size() && i < kPerIdentityRows; ++i) {
      const IdentitySimilarity& p = m.per_identity[i];
      per.rows.push_back({cat(p.identity), cat(p.count), format_number("%.4f", p.mean), format_number("%.4f", p.min),
                          format_number("%.4f", p.max)});
    }
    html += "<h3>Per identity</h3>\n" + table_html(per);
    if (m.per_identity.size() > kPerIdentityRows)
      html += cat("<p>First ", kPerIdentityRows, " of ", m.per_identity.size(), " identities; all are in metrics.json.</p>\n");
  }
  const std::string grid = face_grid_html(m);
  if (!grid.empty()) html += "<h3>Sample faces per identity</h3>\n" + grid;
  return html;
}

std::string idsim_markdown(const IdSimMetrics& m) {
  return cat("- **", IdSimMetrics::kEntry, "**: mean ", format_number("%.4f", m.mean), ", std ", format_number("%.4f", m.std),
             ", median ", format_number("%.4f", m.median), ", min ", format_number("%.4f", m.min), " over ", m.count,
             " images of ", m.identities, " identities\n");
}

// ---- audit: closeness to real people, dataset quality ---------------------------------------------

// The fractions of a distribution's histogram as bars (the table below the chart gives the numbers).
svg::Bars audit_bars(const std::string& label, size_t series, const AuditMetrics::Distribution& d) {
  svg::Bars bars{label, svg::series_color(series), d.edges, {}, std::nullopt};
  double total = 0.0;
  for (int64_t c : d.counts) total += static_cast<double>(c);
  for (int64_t c : d.counts) bars.heights.push_back(total > 0 ? static_cast<double>(c) / total : 0.0);
  return bars;
}

// The nearest-real cosines of the synthetic identities over the gallery's own nearest negatives, with
// the threshold as a vertical line.
std::string audit_svg(const AuditMetrics& m) {
  svg::Chart chart;
  chart.css_class = "audit-histogram";
  chart.plot_width = 480;
  chart.plot_height = 220;
  chart.bars.push_back(audit_bars("synthetic → nearest real", 0, m.nearest_real));
  if (m.gallery_nearest_negative.count > 0)
    chart.bars.push_back(audit_bars("real → nearest other real", 1, m.gallery_nearest_negative));
  double xmin = std::min(m.threshold, 1.0), ymax = 0.0;
  for (const auto& b : chart.bars)
    for (size_t i = 0; i < b.heights.size(); ++i) {
      if (b.heights[i] > 0 && i < b.edges.size()) xmin = std::min(xmin, b.edges[i]);
      ymax = std::max(ymax, b.heights[i]);
    }
  xmin = std::clamp(std::floor(xmin * 4.0) / 4.0, -1.0, 0.75);
  ymax = ymax > 0 ? std::min(1.0, std::ceil(ymax * 10.0 + 1e-9) / 10.0) : 1.0;
  chart.lines.push_back({"threshold " + format_number("%.3f", m.threshold), "#000000", {m.threshold, m.threshold}, {0.0, ymax}, false});
  chart.x = {"cosine of identity centres", xmin, 1.0, svg::ticks(xmin, 1.0, (1.0 - xmin) > 0.5 ? 0.25 : 0.05), "%.2f"};
  chart.y = {"fraction of identities", 0.0, ymax, svg::ticks(0.0, ymax, ymax / 4), "%.3f"};
  return svg::render(chart);
}

Table audit_table(const AuditMetrics& m) {
  Table t{"audit", {"gallery", "real identities", "synthetic identities", "centres from", "threshold", "flagged"}, {}, {}};
  t.rows.push_back({cat(m.gallery, " (", m.gallery_kind, m.gallery_images ? cat(", ", m.gallery_images, " images") : "", ")"),
                    cat(m.gallery_identities),
                    cat(m.identities, m.images ? cat(" (", m.images, " images)") : ""),
                    m.synthetic == "images" ? "images (recogniser)" : "stored identity vectors",
                    format_number("%.4f", m.threshold) + " (" + m.threshold_rule + ")",
                    cat(m.flagged_count, " (", percent(m.flagged_fraction), "%)")});
  return t;
}

Table audit_quality_table(const AuditMetrics& m) {
  Table t{"audit-quality", {"distribution", "count", "mean", "std", "min", "median", "p99", "max"}, {}, {}};
  const auto row = [&](const std::string& name, const AuditMetrics::Distribution& d) {
    std::vector<std::string> r = {name, cat(d.count)};
    for (double x : {d.mean, d.std, d.min, d.median, d.p99, d.max}) r.push_back(d.count ? format_number("%.4f", x) : "-");
    t.rows.push_back(r);
  };
  row("synthetic identity → nearest real identity", m.nearest_real);
  row("real identity → nearest other real identity", m.gallery_nearest_negative);
  if (m.inter_class) row("synthetic identity → nearest other synthetic identity", *m.inter_class);
  if (m.intra_class) row("synthetic image → its identity centre", *m.intra_class);
  return t;
}

std::string thumb_html(const std::optional<std::string>& jpeg, const std::string& alt) {
  return jpeg ? "<img alt=\"" + esc(alt) + "\" src=\"data:image/jpeg;base64," + esc(*jpeg) + "\">" : "-";
}

std::string audit_html(const AuditMetrics& m) {
  std::string html = "<h2>Audit: closeness to real people</h2>\n" + table_html(audit_table(m)) + audit_svg(m);
  if (!m.flagged.empty()) {
    html += "<h3>Flagged synthetic identities</h3>\n<table class=\"faces\"><tr><th>identity</th><th>synthetic</th>"
            "<th>nearest real</th><th>real identity</th><th>cosine</th><th>images above threshold</th></tr>\n";
    for (size_t i = 0; i < m.flagged.size() && i < kPerIdentityRows; ++i) {
      const AuditMetrics::Flagged& f = m.flagged[i];
      int64_t above = 0;
      for (const auto& im : f.images) above += im.cosine > m.threshold;
      html += cat("<tr><td>", f.identity, "</td><td>", thumb_html(f.face, cat("synthetic identity ", f.identity)), "</td><td>",
                  thumb_html(f.nearest_face, "real identity " + f.nearest), "</td><td>", esc(f.nearest), "</td><td>",
                  format_number("%.4f", f.cosine), "</td><td>",
                  f.images.empty() ? std::string("-") : cat(above, " of ", f.images.size()), "</td></tr>\n");
    }
    html += "</table>\n";
    if (m.flagged.size() > kPerIdentityRows)
      html += cat("<p>First ", kPerIdentityRows, " of ", m.flagged.size(), " flagged identities; all are in metrics.json.</p>\n");
  }
  html += "<h3>Dataset quality</h3>\n" + table_html(audit_quality_table(m));
  if (m.duplicate_pairs)
    html += cat("<p>Near-duplicate images (cosine above ", format_number("%.2f", m.duplicate_threshold.value_or(0.0)), "): ",
                *m.duplicate_pairs, " pairs in ", m.duplicate_identities.value_or(0), " identities.</p>\n");
  return html;
}

std::string audit_markdown(const AuditMetrics& m) {
  std::string md = cat("- **", AuditMetrics::kEntry, "**: ", m.flagged_count, " of ", m.identities,
                       " synthetic identities flagged (nearest real cosine above ", format_number("%.4f", m.threshold), ", ",
                       m.threshold_rule, "); nearest real mean ", format_number("%.4f", m.nearest_real.mean), ", max ",
                       format_number("%.4f", m.nearest_real.max), "; gallery ", m.gallery, " (", m.gallery_identities,
                       " identities)\n");
  if (m.inter_class)
    md += cat("  - inter-class nearest synthetic centre: mean ", format_number("%.4f", m.inter_class->mean), ", max ",
              format_number("%.4f", m.inter_class->max), "\n");
  if (m.intra_class)
    md += cat("  - intra-class cosine to centre: mean ", format_number("%.4f", m.intra_class->mean), ", std ",
              format_number("%.4f", m.intra_class->std), "\n");
  if (m.duplicate_pairs) md += cat("  - near-duplicate pairs: ", *m.duplicate_pairs, "\n");
  for (const auto& f : m.flagged) md += cat("  - flagged: identity ", f.identity, " ~ ", f.nearest, " (", format_number("%.4f", f.cosine), ")\n");
  return md;
}

// ---- FID, LPIPS and entries that are no metric: one row each of the generation metrics ---------

struct GenerationRow {
  std::string name, value, details;
};

GenerationRow fid_row(const FidMetrics& m) {
  std::string details = m.images ? cat(*m.images, " images") : "";
  if (m.reference) details += (details.empty() ? "vs " : " vs ") + *m.reference;
  return {FidMetrics::kEntry, format_number("%.4f", m.fid), details};
}

GenerationRow lpips_row(const LpipsMetrics& m) {
  std::vector<std::string> parts;
  if (m.net) parts.push_back(*m.net);
  if (m.identities) parts.push_back(cat(*m.identities, " identities"));
  if (m.pairs) parts.push_back(cat(*m.pairs, " pairs"));
  if (m.per_identity && !m.per_identity->empty()) {
    const auto [lo, hi] = std::minmax_element(m.per_identity->begin(), m.per_identity->end());
    parts.push_back("per identity " + format_number("%.4f", *lo) + " to " + format_number("%.4f", *hi));
  }
  std::string details;
  for (const auto& p : parts) details += (details.empty() ? "" : ", ") + p;
  return {LpipsMetrics::kEntry, "diversity " + format_number("%.4f", m.diversity), details};
}

// A value that is no metric, shortened: a long array shows as its length.
GenerationRow other_row(const std::string& name, const json::Value& v) {
  const bool long_array = v.is_array() && v.as_array().size() > 8;
  return {name, long_array ? cat("[", v.as_array().size(), " values]") : v.dump(), ""};
}

std::vector<GenerationRow> generation_rows(const EvalMetrics& m) {
  std::vector<GenerationRow> rows;
  if (m.fid) rows.push_back(fid_row(*m.fid));
  if (m.lpips) rows.push_back(lpips_row(*m.lpips));
  for (const auto& [name, v] : m.other) rows.push_back(other_row(name, v));
  return rows;
}

std::string generation_html(const EvalMetrics& m) {
  Table t{"generation", {"metric", "value", "details"}, {}, {}};
  for (const auto& r : generation_rows(m)) t.rows.push_back({r.name, r.value, r.details});
  return t.rows.empty() ? "" : "<h2>Generation metrics</h2>\n" + table_html(t);
}

std::string generation_markdown(const EvalMetrics& m) {
  std::string md;
  for (const auto& r : generation_rows(m))
    md += "- **" + r.name + "**: " + r.value + (r.details.empty() ? "" : " (" + r.details + ")") + "\n";
  return md;
}

}  // namespace

std::string base64_encode(const std::string& bytes) {
  // OpenSSL's encoder: standard alphabet, '=' padding, no line breaks, a terminating NUL.
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

// Colours follow the position in `entries`, also for entries that draw nothing, so that a run keeps
// its colour in every chart of a comparison.
std::string roc_svg(const Keyed<const VerificationMetrics*>& entries) {
  svg::Chart chart;
  chart.css_class = "roc";
  chart.x = {"false positive rate", 0.0, 1.0, svg::ticks(0.0, 1.0, 0.25), "%g"};
  chart.y = {"true positive rate", 0.0, 1.0, svg::ticks(0.0, 1.0, 0.25), "%g"};
  for (size_t k = 0; k < entries.size(); ++k) {
    const auto& [label, v] = entries[k];
    if (v && v->roc) chart.lines.push_back({label, svg::series_color(k), v->roc->fpr, v->roc->tpr, false});
  }
  return svg::render(chart);
}

std::string histogram_svg(const Keyed<const IdSimMetrics*>& entries) {
  // x runs from the first non-empty bin of any entry (rounded down to 0.25) to 1, y to the largest
  // fraction rounded up to 0.1: the mass of the distribution fills the plot.
  svg::Chart chart;
  chart.css_class = "histogram";
  chart.plot_width = 480;
  chart.plot_height = 220;
  double xmin = 1.0, ymax = 0.0;
  for (size_t k = 0; k < entries.size(); ++k) {
    const auto& [label, m] = entries[k];
    if (!m) continue;
    svg::Bars bars{cat(label, " (mean ", format_number("%.3f", m->mean), ")"), svg::series_color(k), m->histogram.edges, {},
                   m->mean};
    double total = 0.0;
    for (int64_t c : m->histogram.counts) total += static_cast<double>(c);
    for (size_t b = 0; b < m->histogram.counts.size(); ++b) {
      const double fraction = total > 0 ? static_cast<double>(m->histogram.counts[b]) / total : 0.0;
      bars.heights.push_back(fraction);
      if (fraction > 0 && b < bars.edges.size()) xmin = std::min(xmin, bars.edges[b]);
      ymax = std::max(ymax, fraction);
    }
    chart.bars.push_back(std::move(bars));
  }
  xmin = std::clamp(std::floor(xmin * 4.0) / 4.0, -1.0, 0.75);
  ymax = ymax > 0 ? std::ceil(ymax * 10.0 + 1e-9) / 10.0 : 1.0;
  chart.x = {"cosine to identity", xmin, 1.0, svg::ticks(xmin, 1.0, (1.0 - xmin) > 0.5 ? 0.25 : 0.05), "%.2f"};
  chart.y = {"fraction of images", 0.0, ymax, svg::ticks(0.0, ymax, ymax / 4), "%.3f"};
  return svg::render(chart);
}

std::string face_grid_html(const IdSimMetrics& idsim) {
  if (idsim.faces.empty()) return "";
  std::string html = "<table class=\"faces\">\n";
  for (size_t i = 0; i < idsim.faces.size(); ++i) {
    const FaceThumb& f = idsim.faces[i];
    if (i == 0 || f.identity != idsim.faces[i - 1].identity)
      html += cat(i == 0 ? "" : "</tr>\n", "<tr><th>identity ", f.identity, "</th>");
    html += cat("<td><img alt=\"identity ", f.identity, " image ", f.image, "\" src=\"data:image/jpeg;base64,",
                esc(f.jpeg_base64), "\">", format_number("%.3f", f.cosine), "</td>");
  }
  return html + "</tr>\n</table>\n";
}

std::string report_html(const json::Value& metrics, const std::string& title) {
  const EvalMetrics m = EvalMetrics::from_json(metrics, "report: metrics");
  std::string html = html_head(title) + verification_html(m.verification);
  if (m.idsim) html += idsim_html(*m.idsim);
  if (m.audit) html += audit_html(*m.audit);
  return html + generation_html(m) + "</body></html>\n";
}

std::string report_markdown(const json::Value& metrics, const std::string& title) {
  const EvalMetrics m = EvalMetrics::from_json(metrics, "report: metrics");
  std::string md = "# " + title + "\n\n" + verification_markdown(m.verification);
  if (m.idsim) md += idsim_markdown(*m.idsim);
  if (m.audit) md += audit_markdown(*m.audit);
  return md + generation_markdown(m);
}

void write_reports(const std::string& dir, const json::Value& metrics, const std::string& title) {
  // Both reports first: metrics that cannot be read back fail before anything is written.
  const std::string html = report_html(metrics, title), md = report_markdown(metrics, title);
  fs::create_directories(dir);
  const fs::path d(dir);
  json::write_file((d / "metrics.json").string(), metrics);
  write_file_atomic((d / "report.html").string(), html);
  write_file_atomic((d / "summary.md").string(), md);
}

// ---- several runs ----------------------------------------------------------------------------

json::Value read_run_metrics(const std::string& dir) {
  const std::string path = (fs::path(dir) / "metrics.json").string();
  IDSYNTH_CHECK(fs::is_regular_file(path), path,
                ": not found (expected the metrics.json an `idsynth eval` command writes with --out ", dir, ")");
  const json::Value m = json::parse_file(path);
  IDSYNTH_CHECK(m.is_object(), path, ": expected a metrics object, found ", m.type_name());
  IDSYNTH_CHECK(!m.as_object().empty(), path, ": expected metrics, found an empty object");
  for (const auto& [name, v] : m.as_object())
    IDSYNTH_CHECK(v.is_object(), path, ": ", name, ": expected an object of metrics, found ", v.type_name());
  EvalMetrics::from_json(m, path);  // every entry through its metric's reader, so errors name this file
  return m;
}

void add_run_metrics(std::vector<RunMetrics>& runs, const std::string& name, const std::string& dir) {
  const json::Value m = read_run_metrics(dir);
  auto it = std::find_if(runs.begin(), runs.end(), [&](const RunMetrics& r) { return r.name == name; });
  if (it == runs.end()) {
    runs.push_back({name, m});
    return;
  }
  for (const auto& [key, value] : m.as_object()) {
    IDSYNTH_CHECK(!it->metrics.contains(key), (fs::path(dir) / "metrics.json").string(), ": ", key,
                  ": expected once per run, found it already in an earlier folder of run ", name);
    it->metrics.set(key, value);
  }
}

namespace {

struct Column {
  std::string header;
  bool higher_better = true;
  std::function<std::optional<double>(const EvalMetrics&)> value;
  std::function<std::string(const EvalMetrics&, double)> text;
};

std::vector<EvalMetrics> read_runs(const std::vector<RunMetrics>& runs) {
  IDSYNTH_CHECK(!runs.empty(), "report: expected at least one run, found none");
  std::vector<EvalMetrics> out;
  for (const auto& r : runs) out.push_back(EvalMetrics::from_json(r.metrics, "report: run " + r.name));
  return out;
}

std::vector<std::string> benchmark_names(const std::vector<EvalMetrics>& runs) {
  std::vector<std::string> seen;
  for (const auto& r : runs)
    for (const auto& [name, v] : r.verification)
      if (std::find(seen.begin(), seen.end(), name) == seen.end()) seen.push_back(name);
  std::vector<std::string> out;
  for (const char* b : kPaperBenchmarks)
    if (std::find(seen.begin(), seen.end(), b) != seen.end()) out.push_back(b);
  for (const auto& s : seen)
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  return out;
}

std::vector<Column> compare_columns(const std::vector<EvalMetrics>& runs) {
  std::vector<Column> cols;
  const auto plain = [](const char* f) { return [f](const EvalMetrics&, double v) { return format_number(f, v); }; };
  const std::vector<std::string> benches = benchmark_names(runs);
  for (const auto& b : benches)
    cols.push_back({b, true, [b](const EvalMetrics& m) -> std::optional<double> {
                      const VerificationMetrics* v = m.find_verification(b);
                      if (!v) return std::nullopt;
                      return 100.0 * v->accuracy;
                    },
                    plain("%.2f")});
  if (benches.size() >= 2)
    cols.push_back({"Avg", true, [benches](const EvalMetrics& m) -> std::optional<double> {
                      double sum = 0.0;
                      for (const auto& b : benches) {
                        const VerificationMetrics* v = m.find_verification(b);
                        if (!v) return std::nullopt;  // an average over fewer is not comparable
                        sum += 100.0 * v->accuracy;
                      }
                      return sum / static_cast<double>(benches.size());
                    },
                    plain("%.2f")});
  cols.push_back({"ID sim.", true,
                  [](const EvalMetrics& m) { return m.idsim ? std::optional<double>(m.idsim->mean) : std::nullopt; },
                  [](const EvalMetrics& m, double v) {
                    return format_number("%.3f", v) + " ± " + format_number("%.3f", m.idsim->std);
                  }});
  cols.push_back({"FID", false, [](const EvalMetrics& m) { return m.fid ? std::optional<double>(m.fid->fid) : std::nullopt; },
                  plain("%.3f")});
  cols.push_back({"LPIPS", true,
                  [](const EvalMetrics& m) { return m.lpips ? std::optional<double>(m.lpips->diversity) : std::nullopt; },
                  plain("%.3f")});
  cols.push_back({"flagged", false,
                  [](const EvalMetrics& m) { return m.audit ? std::optional<double>(m.audit->flagged_fraction) : std::nullopt; },
                  [](const EvalMetrics& m, double v) {
                    return cat(m.audit->flagged_count, "/", m.audit->identities, " (", percent(v), "%)");
                  }});
  cols.push_back({"nearest real", false,
                  [](const EvalMetrics& m) { return m.audit ? std::optional<double>(m.audit->nearest_real.mean) : std::nullopt; },
                  plain("%.3f")});
  // Only the columns some run has.
  std::vector<Column> present;
  for (auto& c : cols) {
    bool any = false;
    for (const auto& r : runs) any = any || c.value(r).has_value();
    if (any) present.push_back(std::move(c));
  }
  return present;
}

Table compare_table(const std::vector<RunMetrics>& runs, const std::vector<EvalMetrics>& metrics) {
  const std::vector<Column> cols = compare_columns(metrics);
  Table t{"comparison", {"run"}, {}, {}};
  for (const auto& c : cols) t.header.push_back(c.header + (c.higher_better ? " ↑" : " ↓"));
  for (const auto& r : runs) t.rows.push_back({r.name});
  t.bold.assign(runs.size(), std::vector<bool>(cols.size() + 1, false));
  for (size_t j = 0; j < cols.size(); ++j) {
    std::optional<double> best;
    for (const auto& m : metrics)
      if (const auto v = cols[j].value(m)) {
        if (!best || (cols[j].higher_better ? *v > *best : *v < *best)) best = v;
      }
    for (size_t i = 0; i < runs.size(); ++i) {
      const auto v = cols[j].value(metrics[i]);
      t.rows[i].push_back(v ? cols[j].text(metrics[i], *v) : "-");
      t.bold[i][j + 1] = v && runs.size() > 1 && *v == *best;
    }
  }
  return t;
}

const char* kCompareNote =
    "Verification columns: accuracy (%) of the 10-fold protocol; flagged: synthetic identities whose nearest real "
    "identity is above the audit threshold; nearest real: their mean nearest-real cosine; best of each column in bold.";

}  // namespace

std::string compare_html(const std::vector<RunMetrics>& runs, const std::string& title) {
  const std::vector<EvalMetrics> metrics = read_runs(runs);
  // 1. the table
  std::string html = html_head(title) + "<h2>Results</h2>\n" + table_html(compare_table(runs, metrics)) + "<p>" +
                     esc(kCompareNote) + "</p>\n";
  // 2. ROC per benchmark, one curve per run
  const std::vector<std::string> benches = benchmark_names(metrics);
  if (!benches.empty()) html += "<h2>ROC per benchmark</h2>\n";
  for (const auto& b : benches) {
    Keyed<const VerificationMetrics*> curves;
    bool any_roc = false;
    for (size_t i = 0; i < runs.size(); ++i) {
      const VerificationMetrics* v = metrics[i].find_verification(b);
      curves.emplace_back(runs[i].name, v);
      any_roc = any_roc || (v && v->roc);
    }
    if (any_roc) html += "<h3>" + esc(b) + "</h3>\n" + roc_svg(curves);
  }
  // 3. similarity histograms overlaid, and each run's faces
  Keyed<const IdSimMetrics*> hists;
  bool any_idsim = false;
  for (size_t i = 0; i < runs.size(); ++i) {
    hists.emplace_back(runs[i].name, metrics[i].idsim ? &*metrics[i].idsim : nullptr);
    any_idsim = any_idsim || metrics[i].idsim.has_value();
  }
  if (any_idsim) {
    html += "<h2>ID similarity distribution</h2>\n" + histogram_svg(hists);
    for (const auto& [name, m] : hists) {
      const std::string grid = m ? face_grid_html(*m) : "";
      if (!grid.empty()) html += "<h3>Sample faces: " + esc(name) + "</h3>\n" + grid;
    }
  }
  return html + "</body></html>\n";
}

std::string compare_markdown(const std::vector<RunMetrics>& runs, const std::string& title) {
  const std::vector<EvalMetrics> metrics = read_runs(runs);
  return "# " + title + "\n\n" + table_markdown(compare_table(runs, metrics)) + "\n" + kCompareNote + "\n";
}

void write_compare_reports(const std::string& dir, const std::vector<RunMetrics>& runs, const std::string& title) {
  const std::string html = compare_html(runs, title), md = compare_markdown(runs, title);
  fs::create_directories(dir);
  const fs::path d(dir);
  json::Value all = json::Value::object(), by_name = json::Value::object();
  for (const auto& r : runs) by_name.set(r.name, r.metrics);
  all.set("runs", by_name);
  json::write_file((d / "comparison.json").string(), all);
  write_file_atomic((d / "report.html").string(), html);
  write_file_atomic((d / "summary.md").string(), md);
}

}  // namespace idsynth::eval
