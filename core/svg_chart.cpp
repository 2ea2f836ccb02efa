#include "core/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/check.h"

namespace idsynth::svg {

namespace {

// Room around the plot area, px: tick labels on the left (and right), axis titles above, tick labels
// and the x title below; the legend gets a column of its own so it never covers a curve.
constexpr double kLeft = 60, kRight = 16, kRightWithAxis = 60, kTop = 30, kTitle = 22, kBottom = 44;
constexpr double kLegendWidth = 220, kLegendRow = 18;

const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"};

std::string coord(double v) { return format_number("%.1f", v); }

void check_axis(const Axis& a, const char* which) {
  IDSYNTH_CHECK(std::isfinite(a.min) && std::isfinite(a.max) && a.max > a.min, "svg chart: ", which, " axis '", a.title,
                "': expected a finite range with max > min, found ", a.min, " .. ", a.max);
}

// Axis value to pixel, for one axis laid along [from, to] px.
struct Scale {
  double lo, hi, from, to;
  double operator()(double v) const { return from + (to - from) * (v - lo) / (hi - lo); }
};

std::string tick_label(const Axis& a, double v) {
  // A tick reached by adding steps may land a rounding error off zero; "-0.00" would look like a bug.
  if (std::fabs(v) < 1e-9 * (a.max - a.min)) v = 0.0;
  return escape_xml(format_number(a.tick_format.c_str(), v));
}

bool on_axis(const Axis& a, double v) {
  const double slack = 1e-9 * (a.max - a.min);
  return v >= a.min - slack && v <= a.max + slack;
}

}  // namespace

std::vector<double> ticks(double min, double max, double step) {
  IDSYNTH_CHECK(step > 0 && std::isfinite(step), "svg chart: ticks: expected a positive step, found ", step);
  std::vector<double> out;
  // Multiples of the step rather than a running sum, so rounding does not pile up along the axis.
  for (int64_t k = 0;; ++k) {
    const double v = min + static_cast<double>(k) * step;
    if (v > max + 1e-9 * step) break;
    out.push_back(v);
  }
  return out;
}

const char* series_color(size_t i) { return kPalette[i % (sizeof kPalette / sizeof *kPalette)]; }

std::string escape_xml(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
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

std::string render(const Chart& c) {
  check_axis(c.x, "x");
  check_axis(c.y, "y");
  if (c.y_right) check_axis(*c.y_right, "right y");
  // 1. layout
  bool any_label = false;
  for (const auto& l : c.lines) any_label = any_label || !l.label.empty();
  for (const auto& b : c.bars) any_label = any_label || !b.label.empty();
  const double pw = c.plot_width, ph = c.plot_height;
  const double left = kLeft, top = kTop + (c.title.empty() ? 0 : kTitle);
  const double right = c.y_right ? kRightWithAxis : kRight;
  const double width = left + pw + right + (any_label ? kLegendWidth : 0), height = top + ph + kBottom;
  const Scale sx{c.x.min, c.x.max, left, left + pw};
  const Scale sy{c.y.min, c.y.max, top + ph, top};
  const Scale sy_right = c.y_right ? Scale{c.y_right->min, c.y_right->max, top + ph, top} : sy;

  std::string svg = cat("<svg", c.css_class.empty() ? "" : " class=\"" + escape_xml(c.css_class) + "\"",
                        " xmlns=\"http://www.w3.org/2000/svg\" width=\"", width, "\" height=\"", height, "\" viewBox=\"0 0 ",
                        width, " ", height, "\" font-family=\"sans-serif\" font-size=\"12\">\n");
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  if (!c.title.empty())
    svg += cat("<text x=\"", coord(left + pw / 2), "\" y=\"16\" text-anchor=\"middle\">", escape_xml(c.title), "</text>\n");

  // 2. grid and tick labels, then the frame over the grid
  for (double v : c.x.ticks) {
    if (!on_axis(c.x, v)) continue;
    const std::string px = coord(sx(v));
    svg += cat("<line x1=\"", px, "\" y1=\"", coord(top), "\" x2=\"", px, "\" y2=\"", coord(top + ph),
               "\" stroke=\"#ddd\"/><text x=\"", px, "\" y=\"", coord(top + ph + 16), "\" text-anchor=\"middle\">",
               tick_label(c.x, v), "</text>\n");
  }
  for (double v : c.y.ticks) {
    if (!on_axis(c.y, v)) continue;
    const std::string py = coord(sy(v));
    svg += cat("<line x1=\"", coord(left), "\" y1=\"", py, "\" x2=\"", coord(left + pw), "\" y2=\"", py,
               "\" stroke=\"#ddd\"/><text x=\"", coord(left - 6), "\" y=\"", coord(sy(v) + 4), "\" text-anchor=\"end\">",
               tick_label(c.y, v), "</text>\n");
  }
  if (c.y_right)
    for (double v : c.y_right->ticks) {
      if (!on_axis(*c.y_right, v)) continue;
      svg += cat("<text x=\"", coord(left + pw + 6), "\" y=\"", coord(sy_right(v) + 4), "\">", tick_label(*c.y_right, v),
                 "</text>\n");
    }
  svg += cat("<rect x=\"", coord(left), "\" y=\"", coord(top), "\" width=\"", coord(pw), "\" height=\"", coord(ph),
             "\" fill=\"none\" stroke=\"#333\"/>\n");
  svg += cat("<text x=\"", coord(left + pw / 2), "\" y=\"", coord(height - 8), "\" text-anchor=\"middle\">",
             escape_xml(c.x.title), "</text>\n");
  svg += cat("<text x=\"4\" y=\"", coord(top - 10), "\">", escape_xml(c.y.title), "</text>\n");
  if (c.y_right)
    svg += cat("<text x=\"", coord(left + pw + right - 4), "\" y=\"", coord(top - 10), "\" text-anchor=\"end\">",
               escape_xml(c.y_right->title), "</text>\n");

  // 3. histograms first, so lines stay on top of their fill
  for (const auto& b : c.bars) {
    IDSYNTH_CHECK(b.edges.size() == b.heights.size() + 1, "svg chart: bars '", b.label,
                  "': expected one more edge than heights, found ", b.edges.size(), " and ", b.heights.size());
    const double base = sy(c.y.min);
    std::string d;
    double last = 0.0;
    for (size_t i = 0; i < b.heights.size(); ++i) {
      const double lo = std::max(b.edges[i], c.x.min), hi = std::min(b.edges[i + 1], c.x.max);
      if (!(hi > lo)) continue;
      const double h = std::isfinite(b.heights[i]) ? std::clamp(b.heights[i], c.y.min, c.y.max) : c.y.min;
      if (d.empty()) d = cat("M", coord(sx(lo)), ",", coord(base));
      d += cat(" L", coord(sx(lo)), ",", coord(sy(h)), " L", coord(sx(hi)), ",", coord(sy(h)));
      last = hi;
    }
    if (!d.empty()) {
      d += cat(" L", coord(sx(last)), ",", coord(base), " Z");
      svg += cat("<path d=\"", d, "\" fill=\"", b.color, "\" fill-opacity=\"0.2\" stroke=\"", b.color,
                 "\" stroke-width=\"1.5\"/>\n");
    }
    if (b.marker && std::isfinite(*b.marker) && on_axis(c.x, *b.marker)) {
      const std::string mx = coord(sx(*b.marker));
      svg += cat("<line x1=\"", mx, "\" y1=\"", coord(top), "\" x2=\"", mx, "\" y2=\"", coord(top + ph), "\" stroke=\"",
                 b.color, "\" stroke-dasharray=\"4 3\"/>\n");
    }
  }
  for (const auto& l : c.lines) {
    IDSYNTH_CHECK(l.x.size() == l.y.size(), "svg chart: line '", l.label, "': expected as many x as y values, found ",
                  l.x.size(), " and ", l.y.size());
    IDSYNTH_CHECK(!l.right_axis || c.y_right, "svg chart: line '", l.label, "': expected a right axis to measure it on");
    const Scale& ys = l.right_axis ? sy_right : sy;
    std::string points;
    for (size_t i = 0; i < l.x.size(); ++i)
      if (std::isfinite(l.x[i]) && std::isfinite(l.y[i])) points += cat(coord(sx(l.x[i])), ",", coord(ys(l.y[i])), " ");
    if (!points.empty()) points.pop_back();
    svg += cat("<polyline fill=\"none\" stroke=\"", l.color, "\" stroke-width=\"1.5\" points=\"", points, "\"/>\n");
  }

  // 4. legend: one swatch per labelled series, lines first, in the order given
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& l : c.lines)
    if (!l.label.empty()) entries.emplace_back(l.label, l.color);
  for (const auto& b : c.bars)
    if (!b.label.empty()) entries.emplace_back(b.label, b.color);
  const double lx = left + pw + right + 12;
  for (size_t i = 0; i < entries.size(); ++i) {
    const double ly = top + kLegendRow * static_cast<double>(i);
    svg += cat("<rect x=\"", coord(lx), "\" y=\"", coord(ly), "\" width=\"12\" height=\"12\" fill=\"", entries[i].second,
               "\"/><text x=\"", coord(lx + 18), "\" y=\"", coord(ly + 11), "\">", escape_xml(entries[i].first), "</text>\n");
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace idsynth::svg
