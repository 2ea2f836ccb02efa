#include "eval/report.h"

#include <cstdio>
#include <filesystem>
#include <vector>

#include "core/check.h"
#include "core/file_util.h"

namespace idsynth::eval {

namespace {

constexpr int kPlotSize = 360;  // px, square ROC plot area
constexpr int kMargin = 40;
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"};

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

bool is_verification(const json::Value& v) { return v.is_object() && v.contains("accuracy") && v.contains("std"); }

double tar_at(const json::Value& v, const char* key) {
  const json::Value* t = v.find("tar_at_far");
  const json::Value* e = t ? t->find(key) : nullptr;
  return e ? e->at("tar").as_double() : -1.0;
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

}  // namespace

std::string roc_svg(const json::Value& metrics) {
  const int w = kPlotSize + 2 * kMargin, h = kPlotSize + 2 * kMargin;
  std::string svg = cat("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", w + 160, "\" height=\"", h,
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
  int series = 0;
  for (const auto& [name, v] : metrics.as_object()) {
    const json::Value* roc = is_verification(v) ? v.find("roc") : nullptr;
    if (!roc) continue;
    const auto& fpr = roc->at("fpr").as_array();
    const auto& tpr = roc->at("tpr").as_array();
    IDSYNTH_CHECK(fpr.size() == tpr.size(), "report: ", name, ": roc: expected fpr and tpr of equal length, found ",
                  fpr.size(), " and ", tpr.size());
    const char* color = kColors[series % (sizeof kColors / sizeof *kColors)];
    std::string points;
    for (size_t i = 0; i < fpr.size(); ++i)
      points += fmt("%.1f,", kMargin + kPlotSize * fpr[i].as_double()) +
                fmt("%.1f ", kMargin + kPlotSize * (1.0 - tpr[i].as_double()));
    svg += cat("<polyline fill=\"none\" stroke=\"", color, "\" stroke-width=\"2\" points=\"", points, "\"/>\n");
    svg += cat("<rect x=\"", w, "\" y=\"", kMargin + 18 * series, "\" width=\"12\" height=\"12\" fill=\"", color,
               "\"/><text x=\"", w + 18, "\" y=\"", kMargin + 18 * series + 11, "\">", escape_html(name),
               "</text>\n");
    ++series;
  }
  svg += "</svg>\n";
  return svg;
}

std::string report_html(const json::Value& metrics, const std::string& title) {
  IDSYNTH_CHECK(metrics.is_object(), "report: metrics: expected an object, found ", metrics.type_name());
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + escape_html(title) +
                     "</title>\n<style>body{font-family:sans-serif;margin:2em;color:#222}"
                     "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 10px;"
                     "text-align:right}th{background:#eee}td:first-child{text-align:left}</style></head><body>\n";
  html += "<h1>" + escape_html(title) + "</h1>\n";
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
    other += "<tr><td>" + escape_html(name) + "</td><td style=\"text-align:left\"><code>" +
             escape_html(v.dump()) + "</code></td></tr>\n";
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
  for (const auto& [name, v] : metrics.as_object())
    if (!is_verification(v)) md += "- **" + name + "**: `" + v.dump() + "`\n";
  return md;
}

void write_reports(const std::string& dir, const json::Value& metrics, const std::string& title) {
  std::filesystem::create_directories(dir);
  const std::filesystem::path d(dir);
  json::write_file((d / "metrics.json").string(), metrics);
  write_file_atomic((d / "report.html").string(), report_html(metrics, title));
  write_file_atomic((d / "summary.md").string(), report_markdown(metrics, title));
}

}  // namespace idsynth::eval
