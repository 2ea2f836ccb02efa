#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

#include "core/check.h"
#include "core/file_util.h"

namespace idsynth::eval {

namespace {

namespace fs = std::filesystem;

constexpr int kPlotSize = 360;  // px, square ROC plot area
constexpr int kMargin = 40;
constexpr int kHistWidth = 480, kHistHeight = 220;  // px, histogram plot area
constexpr size_t kPerIdentityRows = 20;              // per-identity table rows shown in report.html
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"};
// The paper's FR table order; other benchmarks follow in the order first seen.
const char* kPaperBenchmarks[] = {"lfw", "cfp_fp", "cplfw", "agedb_30", "calfw"};

const char* color(size_t i) { return kColors[i % (sizeof kColors / sizeof *kColors)]; }

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string escape_html(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

const char* kStyle =
    "<style>body{font-family:sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 10px;"
    "text-align:right}th{background:#eee}td:first-child{text-align:left}"
    "table.faces td{padding:2px;text-align:center;font-size:11px}table.faces img{display:block}</style>";

std::string html_head(const std::string& title) {
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + escape_html(title) + "</title>\n" +
         kStyle + "</head><body>\n<h1>" + escape_html(title) + "</h1>\n";
}

bool is_verification(const json::Value& v) { return v.is_object() && v.contains("accuracy") && v.contains("std"); }
bool is_idsim(const std::string& name, const json::Value& v) {
  return name == "idsim" && v.is_object() && v.contains("mean") && v.contains("histogram");
}

double tar_at(const json::Value& v, const char* key) {
  const json::Value* t = v.find("tar_at_far");
  const json::Value* e = t ? t->find(key) : nullptr;
  return e ? e->at("tar").as_double() : -1.0;
}

// The value without long arrays (per-identity lists, thumbnails), for one table cell or line.
std::string brief_dump(const json::Value& v) {
  if (!v.is_object()) return v.dump();
  json::Value b = json::Value::object();
  for (const auto& [k, x] : v.as_object()) {
    if (x.is_array() && x.as_array().size() > 8)
      b.set(k, cat("[", x.as_array().size(), " values]"));
    else
      b.set(k, x);
  }
  return b.dump();
}

struct Row {
  std::string name;
  std::vector<std::string> cells;
};

// Verification table rows: benchmark, accuracy (%), std (%), TAR@FAR=1e-3, TAR@FAR=1e-4, XNorm, thresholds.
std::vector<Row> verification_rows(const json::Value& metrics) {
  std::vector<Row> rows;
  for (const auto& [name, v] : metrics.as_object()) {
    if (!is_verification(v)) continue;
    Row r{name, {}};
    r.cells.push_back(fmt("%.2f", 100 * v.at("accuracy").as_double()));
    r.cells.push_back(fmt("%.2f", 100 * v.at("std").as_double()));
    for (const char* k : {"1e-03", "1e-04"}) {
      const double t = tar_at(v, k);
      r.cells.push_back(t < 0 ? "-" : fmt("%.4f", t));
    }
    r.cells.push_back(v.contains("xnorm") ? fmt("%.4f", v.at("xnorm").as_double()) : "-");
    std::string th;
    if (const json::Value* b = v.find("best_thresholds"))
      for (const auto& x : b->as_array()) th += (th.empty() ? "" : " ") + fmt("%.2f", x.as_double());
    r.cells.push_back(th);
    rows.push_back(r);
  }
  return rows;
}

const char* kVerificationHeader[] = {"benchmark", "accuracy (%)", "std (%)", "TAR@FAR=1e-3", "TAR@FAR=1e-4",
                                     "XNorm", "best threshold per fold"};

struct Curve {
  std::string label;
  const json::Value* roc;
};

std::string roc_plot(const std::vector<Curve>& curves) {
  const int w = kPlotSize + 2 * kMargin, h = kPlotSize + 2 * kMargin;
  std::string svg = cat("<svg class=\"roc\" xmlns=\"http://www.w3.org/2000/svg\" width=\"", w + 160, "\" height=\"", h,
                        "\" viewBox=\"0 0 ", w + 160, " ", h, "\" font-family=\"sans-serif\" font-size=\"12\">\n");
  svg += cat("<rect x=\"", kMargin, "\" y=\"", kMargin, "\" width=\"", kPlotSize, "\" height=\"", kPlotSize,
             "\" fill=\"none\" stroke=\"#333\"/>\n");
  for (int i = 0; i <= 4; ++i) {  // grid and tick labels every 0.25
    const double p = kMargin + kPlotSize * i / 4.0;
    svg += cat("<line x1=\"", p, "\" y1=\"", kMargin, "\" x2=\"", p, "\" y2=\"", kMargin + kPlotSize,
               "\" stroke=\"#ddd\"/><text x=\"", p - 8, "\" y=\"", kMargin + kPlotSize + 16, "\">", i * 0.25,
               "</text>\n");
    const double q = kMargin + kPlotSize * (4 - i) / 4.0;
    svg += cat("<line x1=\"", kMargin, "\" y1=\"", q, "\" x2=\"", kMargin + kPlotSize, "\" y2=\"", q,
               "\" stroke=\"#ddd\"/><text x=\"", 4, "\" y=\"", q + 4, "\">", i * 0.25, "</text>\n");
  }
  svg += cat("<text x=\"", kMargin + kPlotSize / 2 - 60, "\" y=\"", h - 6, "\">false positive rate</text>\n");
  svg += cat("<text x=\"12\" y=\"", kMargin - 12, "\">true positive rate</text>\n");
  for (size_t series = 0; series < curves.size(); ++series) {
    const auto& fpr = curves[series].roc->at("fpr").as_array();
    const auto& tpr = curves[series].roc->at("tpr").as_array();
    IDSYNTH_CHECK(fpr.size() == tpr.size(), "report: ", curves[series].label,
                  ": roc: expected fpr and tpr of equal length, found ", fpr.size(), " and ", tpr.size());
    std::string points;
    for (size_t i = 0; i < fpr.size(); ++i)
      points += fmt("%.1f,", kMargin + kPlotSize * fpr[i].as_double()) +
                fmt("%.1f ", kMargin + kPlotSize * (1.0 - tpr[i].as_double()));
    const int y = kMargin + 18 * static_cast<int>(series);
    svg += cat("<polyline fill=\"none\" stroke=\"", color(series), "\" stroke-width=\"2\" points=\"", points, "\"/>\n");
    svg += cat("<rect x=\"", w, "\" y=\"", y, "\" width=\"12\" height=\"12\" fill=\"", color(series), "\"/><text x=\"",
               w + 18, "\" y=\"", y + 11, "\">", escape_html(curves[series].label), "</text>\n");
  }
  svg += "</svg>\n";
  return svg;
}

// The "idsim" statistics as table cells: images, identities, mean, std, median, min, max, per-identity mean.
const char* kIdsimHeader[] = {"images", "identities", "mean", "std", "median", "min", "max", "mean of identity means"};
std::vector<std::string> idsim_cells(const json::Value& v) {
  std::vector<std::string> c = {cat(v.at("count").as_int()), cat(v.at("identities").as_int())};
  for (const char* k : {"mean", "std", "median", "min", "max", "identity_mean"})
    c.push_back(fmt("%.4f", v.at(k).as_double()));
  return c;
}

std::string idsim_section(const json::Value& v) {
  std::string html = "<h2>ID similarity (cosine of target vector and face embedding)</h2>\n<table class=\"idsim\"><tr>";
  for (const char* h : kIdsimHeader) html += cat("<th>", h, "</th>");
  html += "</tr>\n<tr>";
  for (const auto& c : idsim_cells(v)) html += "<td>" + c + "</td>";
  html += "</tr></table>\n";
  if (const json::Value* f = v.find("failed"); f && f->as_int() > 0)
    html += cat("<p>", f->as_int(), " images gave no embedding (no face detected or unreadable) and are not counted.</p>\n");
  html += histogram_svg({{"idsim", &v}});
  if (const json::Value* per = v.find("per_identity"); per && !per->as_array().empty()) {
    const auto& rows = per->as_array();
    html += "<h3>Per identity</h3>\n<table class=\"per-identity\"><tr><th>identity</th><th>images</th><th>mean</th>"
            "<th>min</th><th>max</th></tr>\n";
    for (size_t i = 0; i < rows.size() && i < kPerIdentityRows; ++i)
      html += cat("<tr><td>", rows[i].at("identity").as_int(), "</td><td>", rows[i].at("count").as_int(), "</td><td>",
                  fmt("%.4f", rows[i].at("mean").as_double()), "</td><td>", fmt("%.4f", rows[i].at("min").as_double()),
                  "</td><td>", fmt("%.4f", rows[i].at("max").as_double()), "</td></tr>\n");
    html += "</table>\n";
    if (rows.size() > kPerIdentityRows)
      html += cat("<p>First ", kPerIdentityRows, " of ", rows.size(), " identities; all are in metrics.json.</p>\n");
  }
  const std::string grid = face_grid_html(v);
  if (!grid.empty()) html += "<h3>Sample faces per identity</h3>\n" + grid;
  return html;
}

std::string idsim_markdown(const json::Value& v) {
  return cat("- **idsim**: mean ", fmt("%.4f", v.at("mean").as_double()), ", std ", fmt("%.4f", v.at("std").as_double()),
             ", median ", fmt("%.4f", v.at("median").as_double()), ", min ", fmt("%.4f", v.at("min").as_double()),
             " over ", v.at("count").as_int(), " images of ", v.at("identities").as_int(), " identities\n");
}

}  // namespace

std::string base64_encode(const std::string& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                       static_cast<uint8_t>(bytes[i + 2]);
    for (int s : {18, 12, 6, 0}) out += table[(v >> s) & 63];
  }
  if (i < bytes.size()) {  // 1 or 2 bytes left: pad to 4 characters
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? table[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string roc_svg(const json::Value& metrics) {
  std::vector<Curve> curves;
  for (const auto& [name, v] : metrics.as_object())
    if (const json::Value* roc = is_verification(v) ? v.find("roc") : nullptr) curves.push_back({name, roc});
  return roc_plot(curves);
}

std::string histogram_svg(const std::vector<std::pair<std::string, const json::Value*>>& entries) {
  // 1. fractions per bin, and the x range: from the first non-empty bin (rounded down to 0.25) to 1
  struct Series {
    std::string label;
    std::vector<double> edges, frac;
    double mean = 0.0;
  };
  std::vector<Series> series;
  double xmin = 1.0, ymax = 0.0;
  for (const auto& [label, v] : entries) {
    const json::Value& h = v->at("histogram");
    const auto& edges = h.at("edges").as_array();
    const auto& counts = h.at("counts").as_array();
    IDSYNTH_CHECK(edges.size() == counts.size() + 1 && !counts.empty(), "report: ", label,
                  ": idsim histogram: expected one more edge than counts, found ", edges.size(), " and ", counts.size());
    Series s{label, {}, {}, v->at("mean").as_double()};
    double total = 0.0;
    for (const auto& c : counts) total += c.as_double();
    for (const auto& e : edges) s.edges.push_back(e.as_double());
    for (size_t b = 0; b < counts.size(); ++b) {
      s.frac.push_back(total > 0 ? counts[b].as_double() / total : 0.0);
      if (s.frac.back() > 0) xmin = std::min(xmin, s.edges[b]);
      ymax = std::max(ymax, s.frac.back());
    }
    series.push_back(std::move(s));
  }
  xmin = std::clamp(std::floor(xmin * 4.0) / 4.0, -1.0, 0.75);
  ymax = ymax > 0 ? std::ceil(ymax * 10.0 + 1e-9) / 10.0 : 1.0;
  const auto px = [&](double x) { return kMargin + kHistWidth * (x - xmin) / (1.0 - xmin); };
  const auto py = [&](double y) { return kMargin + kHistHeight * (1.0 - y / ymax); };
  // 2. axes, grid, labels
  const int w = kHistWidth + 2 * kMargin + 200, h = kHistHeight + 2 * kMargin;
  std::string svg = cat("<svg class=\"histogram\" xmlns=\"http://www.w3.org/2000/svg\" width=\"", w, "\" height=\"", h,
                        "\" viewBox=\"0 0 ", w, " ", h, "\" font-family=\"sans-serif\" font-size=\"12\">\n");
  svg += cat("<rect x=\"", kMargin, "\" y=\"", kMargin, "\" width=\"", kHistWidth, "\" height=\"", kHistHeight,
             "\" fill=\"none\" stroke=\"#333\"/>\n");
  const double xstep = (1.0 - xmin) > 0.5 ? 0.25 : 0.05;
  for (double x = xmin; x <= 1.0 + 1e-9; x += xstep)
    svg += cat("<line x1=\"", fmt("%.1f", px(x)), "\" y1=\"", kMargin, "\" x2=\"", fmt("%.1f", px(x)), "\" y2=\"",
               kMargin + kHistHeight, "\" stroke=\"#ddd\"/><text x=\"", fmt("%.1f", px(x) - 10), "\" y=\"",
               kMargin + kHistHeight + 16, "\">", fmt("%.2f", x), "</text>\n");
  for (int i = 0; i <= 4; ++i) {
    const double y = ymax * i / 4.0;
    svg += cat("<line x1=\"", kMargin, "\" y1=\"", fmt("%.1f", py(y)), "\" x2=\"", kMargin + kHistWidth, "\" y2=\"",
               fmt("%.1f", py(y)), "\" stroke=\"#ddd\"/><text x=\"2\" y=\"", fmt("%.1f", py(y) + 4), "\">",
               fmt("%.3f", y), "</text>\n");
  }
  svg += cat("<text x=\"", kMargin + kHistWidth / 2 - 50, "\" y=\"", h - 6, "\">cosine to identity</text>\n");
  svg += cat("<text x=\"12\" y=\"", kMargin - 12, "\">fraction of images</text>\n");
  // 3. one step outline per run, lightly filled so overlaps stay visible
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    std::string d = cat("M", fmt("%.1f", px(std::max(xmin, s.edges.front()))), ",", fmt("%.1f", py(0)));
    for (size_t b = 0; b < s.frac.size(); ++b) {
      if (s.edges[b + 1] <= xmin) continue;
      const double x0 = px(std::max(xmin, s.edges[b])), x1 = px(s.edges[b + 1]), y = py(s.frac[b]);
      d += cat(" L", fmt("%.1f", x0), ",", fmt("%.1f", y), " L", fmt("%.1f", x1), ",", fmt("%.1f", y));
    }
    d += cat(" L", fmt("%.1f", px(1.0)), ",", fmt("%.1f", py(0)), " Z");
    svg += cat("<path d=\"", d, "\" fill=\"", color(k), "\" fill-opacity=\"0.2\" stroke=\"", color(k),
               "\" stroke-width=\"1.5\"/>\n");
    const double mx = px(s.mean);
    svg += cat("<line x1=\"", fmt("%.1f", mx), "\" y1=\"", kMargin, "\" x2=\"", fmt("%.1f", mx), "\" y2=\"",
               kMargin + kHistHeight, "\" stroke=\"", color(k), "\" stroke-dasharray=\"4 3\"/>\n");
    const int y = kMargin + 18 * static_cast<int>(k);
    svg += cat("<rect x=\"", kHistWidth + 2 * kMargin, "\" y=\"", y, "\" width=\"12\" height=\"12\" fill=\"", color(k),
               "\"/><text x=\"", kHistWidth + 2 * kMargin + 18, "\" y=\"", y + 11, "\">", escape_html(s.label),
               " (mean ", fmt("%.3f", s.mean), ")</text>\n");
  }
  svg += "</svg>\n";
  return svg;
}

std::string face_grid_html(const json::Value& idsim) {
  const json::Value* faces = idsim.find("faces");
  if (!faces || faces->as_array().empty()) return "";
  std::string html = "<table class=\"faces\">\n";
  int64_t current = -1;
  for (const auto& f : faces->as_array()) {
    const int64_t id = f.at("identity").as_int();
    if (id != current) {
      html += cat(current < 0 ? "" : "</tr>\n", "<tr><th>identity ", id, "</th>");
      current = id;
    }
    const std::string& jpeg = f.at("jpeg").as_string("faces: jpeg");
    IDSYNTH_CHECK(jpeg.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") ==
                      std::string::npos,
                  "report: idsim: faces: jpeg: expected base64 text");
    html += cat("<td><img alt=\"identity ", id, " image ", f.at("image").as_int(), "\" src=\"data:image/jpeg;base64,", jpeg,
                "\">", fmt("%.3f", f.at("cosine").as_double()), "</td>");
  }
  html += "</tr>\n</table>\n";
  return html;
}

std::string report_html(const json::Value& metrics, const std::string& title) {
  IDSYNTH_CHECK(metrics.is_object(), "report: metrics: expected an object, found ", metrics.type_name());
  std::string html = html_head(title);
  const auto rows = verification_rows(metrics);
  if (!rows.empty()) {
    html += "<h2>Face verification (insightface 10-fold protocol)</h2>\n<table><tr>";
    for (const char* hdr : kVerificationHeader) html += cat("<th>", hdr, "</th>");
    html += "</tr>\n";
    for (const auto& r : rows) {
      html += "<tr><td>" + escape_html(r.name) + "</td>";
      for (const auto& c : r.cells) html += "<td>" + escape_html(c) + "</td>";
      html += "</tr>\n";
    }
    html += "</table>\n<h2>ROC (mean over test folds)</h2>\n" + roc_svg(metrics);
  }
  std::string other;
  for (const auto& [name, v] : metrics.as_object()) {
    if (is_verification(v)) continue;
    if (is_idsim(name, v)) {
      html += idsim_section(v);
      continue;
    }
    other += "<tr><td>" + escape_html(name) + "</td><td style=\"text-align:left\"><code>" + escape_html(brief_dump(v)) +
             "</code></td></tr>\n";
  }
  if (!other.empty()) html += "<h2>Generation metrics</h2>\n<table><tr><th>metric</th><th>value</th></tr>\n" + other + "</table>\n";
  html += "</body></html>\n";
  return html;
}

std::string report_markdown(const json::Value& metrics, const std::string& title) {
  std::string md = "# " + title + "\n\n";
  const auto rows = verification_rows(metrics);
  if (!rows.empty()) {
    md += "| ";
    for (const char* hdr : kVerificationHeader) md += cat(hdr, " | ");
    md += "\n|";
    for (size_t i = 0; i < sizeof kVerificationHeader / sizeof *kVerificationHeader; ++i) md += i == 0 ? "---|" : "---:|";
    md += "\n";
    for (const auto& r : rows) {
      md += "| " + r.name + " | ";
      for (const auto& c : r.cells) md += c + " | ";
      md += "\n";
    }
    md += "\n";
  }
  for (const auto& [name, v] : metrics.as_object()) {
    if (is_verification(v)) continue;
    md += is_idsim(name, v) ? idsim_markdown(v) : "- **" + name + "**: `" + brief_dump(v) + "`\n";
  }
  return md;
}

void write_reports(const std::string& dir, const json::Value& metrics, const std::string& title) {
  fs::create_directories(dir);
  const fs::path d(dir);
  json::write_file((d / "metrics.json").string(), metrics);
  write_file_atomic((d / "report.html").string(), report_html(metrics, title));
  write_file_atomic((d / "summary.md").string(), report_markdown(metrics, title));
}

// ---- several runs ----------------------------------------------------------------------------

json::Value read_run_metrics(const std::string& dir) {
  const std::string path = (fs::path(dir) / "metrics.json").string();
  IDSYNTH_CHECK(fs::is_regular_file(path), path, ": not found (expected the metrics.json an `idsynth eval` command writes with --out ",
                dir, ")");
  const json::Value m = json::parse_file(path);
  IDSYNTH_CHECK(m.is_object(), path, ": expected a metrics object, found ", m.type_name());
  IDSYNTH_CHECK(!m.as_object().empty(), path, ": expected metrics, found an empty object");
  for (const auto& [name, v] : m.as_object()) {
    IDSYNTH_CHECK(v.is_object(), path, ": ", name, ": expected an object of metrics, found ", v.type_name());
    if (is_verification(v)) {
      IDSYNTH_CHECK(v.at("accuracy").is_number(), path, ": ", name, ": accuracy: expected a number, found ",
                    v.at("accuracy").type_name());
    } else if (name == "idsim") {
      IDSYNTH_CHECK(v.contains("mean") && v.contains("histogram"), path,
                    ": idsim: expected mean and histogram (as `idsynth eval idsim` writes), found neither");
    } else if (name == "fid") {
      IDSYNTH_CHECK(v.contains("fid") && v.at("fid").is_number(), path, ": fid: fid: expected a number");
    } else if (name == "lpips") {
      IDSYNTH_CHECK(v.contains("diversity") && v.at("diversity").is_number(), path, ": lpips: diversity: expected a number");
    }
  }
  return m;
}

namespace {

struct Column {
  std::string header;
  bool higher_better = true;
  std::function<std::optional<double>(const json::Value&)> value;
  std::function<std::string(const json::Value&, double)> text;
};

std::vector<std::string> benchmark_names(const std::vector<RunMetrics>& runs) {
  std::vector<std::string> seen;
  for (const auto& r : runs)
    for (const auto& [name, v] : r.metrics.as_object())
      if (is_verification(v) && std::find(seen.begin(), seen.end(), name) == seen.end()) seen.push_back(name);
  std::vector<std::string> out;
  for (const char* b : kPaperBenchmarks)
    if (std::find(seen.begin(), seen.end(), b) != seen.end()) out.push_back(b);
  for (const auto& s : seen)
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  return out;
}

std::optional<double> number_at(const json::Value& m, const std::string& entry, const std::string& key) {
  const json::Value* e = m.find(entry);
  const json::Value* x = e && e->is_object() ? e->find(key) : nullptr;
  return x && x->is_number() ? std::optional<double>(x->as_double()) : std::nullopt;
}

std::vector<Column> compare_columns(const std::vector<RunMetrics>& runs) {
  std::vector<Column> cols;
  const auto plain = [](const char* f) { return [f](const json::Value&, double v) { return fmt(f, v); }; };
  const std::vector<std::string> benches = benchmark_names(runs);
  for (const auto& b : benches)
    cols.push_back({b, true, [b](const json::Value& m) -> std::optional<double> {
                      const json::Value* v = m.find(b);
                      if (!v || !is_verification(*v)) return std::nullopt;
                      return 100.0 * v->at("accuracy").as_double();
                    },
                    plain("%.2f")});
  if (benches.size() >= 2)
    cols.push_back({"Avg", true, [benches](const json::Value& m) -> std::optional<double> {
                      double sum = 0.0;
                      for (const auto& b : benches) {
                        const json::Value* v = m.find(b);
                        if (!v || !is_verification(*v)) return std::nullopt;  // an average over fewer is not comparable
                        sum += 100.0 * v->at("accuracy").as_double();
                      }
                      return sum / static_cast<double>(benches.size());
                    },
                    plain("%.2f")});
  cols.push_back({"ID sim.", true, [](const json::Value& m) { return number_at(m, "idsim", "mean"); },
                  [](const json::Value& m, double v) {
                    const auto sd = number_at(m, "idsim", "std");
                    return fmt("%.3f", v) + (sd ? " ± " + fmt("%.3f", *sd) : "");
                  }});
  cols.push_back({"FID", false, [](const json::Value& m) { return number_at(m, "fid", "fid"); }, plain("%.3f")});
  cols.push_back({"LPIPS", true, [](const json::Value& m) { return number_at(m, "lpips", "diversity"); }, plain("%.3f")});
  // Only the columns some run has.
  std::vector<Column> present;
  for (auto& c : cols) {
    bool any = false;
    for (const auto& r : runs) any = any || c.value(r.metrics).has_value();
    if (any) present.push_back(std::move(c));
  }
  return present;
}

struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> cells;  // per run, per column
  std::vector<std::vector<bool>> best;
};

Table compare_table(const std::vector<RunMetrics>& runs) {
  const std::vector<Column> cols = compare_columns(runs);
  Table t;
  t.header.push_back("run");
  for (const auto& c : cols) t.header.push_back(c.header + (c.higher_better ? " ↑" : " ↓"));
  t.cells.assign(runs.size(), {});
  t.best.assign(runs.size(), std::vector<bool>(cols.size(), false));
  for (size_t j = 0; j < cols.size(); ++j) {
    std::optional<double> best;
    for (const auto& r : runs)
      if (const auto v = cols[j].value(r.metrics)) {
        if (!best || (cols[j].higher_better ? *v > *best : *v < *best)) best = v;
      }
    for (size_t i = 0; i < runs.size(); ++i) {
      const auto v = cols[j].value(runs[i].metrics);
      t.cells[i].push_back(v ? cols[j].text(runs[i].metrics, *v) : "-");
      t.best[i][j] = v && runs.size() > 1 && *v == *best;
    }
  }
  return t;
}

void check_runs(const std::vector<RunMetrics>& runs) {
  IDSYNTH_CHECK(!runs.empty(), "report: expected at least one run");
  for (const auto& r : runs)
    IDSYNTH_CHECK(r.metrics.is_object(), "report: run ", r.name, ": expected a metrics object, found ", r.metrics.type_name());
}

}  // namespace

std::string compare_html(const std::vector<RunMetrics>& runs, const std::string& title) {
  check_runs(runs);
  std::string html = html_head(title);
  // 1. the table
  const Table t = compare_table(runs);
  html += "<h2>Results</h2>\n<table class=\"comparison\"><tr>";
  for (const auto& h : t.header) html += "<th>" + escape_html(h) + "</th>";
  html += "</tr>\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    html += "<tr><td>" + escape_html(runs[i].name) + "</td>";
    for (size_t j = 0; j < t.cells[i].size(); ++j)
      html += t.best[i][j] ? "<td><b>" + escape_html(t.cells[i][j]) + "</b></td>" : "<td>" + escape_html(t.cells[i][j]) + "</td>";
    html += "</tr>\n";
  }
  html += "</table>\n<p>Verification columns: accuracy (%) of the 10-fold protocol; best of each column in bold.</p>\n";
  // 2. ROC per benchmark, one curve per run
  const std::vector<std::string> benches = benchmark_names(runs);
  if (!benches.empty()) html += "<h2>ROC per benchmark</h2>\n";
  for (const auto& b : benches) {
    std::vector<Curve> curves;
    for (const auto& r : runs) {
      const json::Value* v = r.metrics.find(b);
      if (const json::Value* roc = v && is_verification(*v) ? v->find("roc") : nullptr) curves.push_back({r.name, roc});
    }
    if (!curves.empty()) html += "<h3>" + escape_html(b) + "</h3>\n" + roc_plot(curves);
  }
  // 3. similarity histograms overlaid, and each run's faces
  std::vector<std::pair<std::string, const json::Value*>> hists;
  for (const auto& r : runs)
    if (const json::Value* v = r.metrics.find("idsim"); v && is_idsim("idsim", *v)) hists.push_back({r.name, v});
  if (!hists.empty()) {
    html += "<h2>ID similarity distribution</h2>\n" + histogram_svg(hists);
    for (const auto& [name, v] : hists) {
      const std::string grid = face_grid_html(*v);
      if (!grid.empty()) html += "<h3>Sample faces: " + escape_html(name) + "</h3>\n" + grid;
    }
  }
  html += "</body></html>\n";
  return html;
}

std::string compare_markdown(const std::vector<RunMetrics>& runs, const std::string& title) {
  check_runs(runs);
  const Table t = compare_table(runs);
  std::string md = "# " + title + "\n\n|";
  for (const auto& h : t.header) md += " " + h + " |";
  md += "\n|";
  for (size_t j = 0; j < t.header.size(); ++j) md += j == 0 ? "---|" : "---:|";
  md += "\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    md += "| " + runs[i].name + " |";
    for (size_t j = 0; j < t.cells[i].size(); ++j) md += t.best[i][j] ? " **" + t.cells[i][j] + "** |" : " " + t.cells[i][j] + " |";
    md += "\n";
  }
  md += "\nVerification columns: accuracy (%) of the 10-fold protocol; best of each column in bold.\n";
  return md;
}

void write_compare_reports(const std::string& dir, const std::vector<RunMetrics>& runs, const std::string& title) {
  check_runs(runs);
  fs::create_directories(dir);
  const fs::path d(dir);
  json::Value all = json::Value::object(), by_name = json::Value::object();
  for (const auto& r : runs) by_name.set(r.name, r.metrics);
  all.set("runs", by_name);
  json::write_file((d / "comparison.json").string(), all);
  write_file_atomic((d / "report.html").string(), compare_html(runs, title));
  write_file_atomic((d / "summary.md").string(), compare_markdown(runs, title));
}

}  // namespace idsynth::eval
