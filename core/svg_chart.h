// Static SVG charts for the eval reports (ROC curves, similarity histograms) and the training log
// (loss curve): line series and histogram outlines over numeric axes, with a frame, grid lines, tick
// labels, axis titles and a legend. No scripts, no external resources, so a chart can sit inline in a
// self-contained report.html or stand alone as a .svg file.
//
// Standard library only: it is part of idsynth_core_nn, which the libtorch-only training code links.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace idsynth::svg {

struct Axis {
  std::string title;
  double min = 0.0, max = 1.0;
  std::vector<double> ticks;       // values that get a grid line and a label; those outside [min, max] are dropped
  std::string tick_format = "%g";  // printf conversion of one double
};

// min, min + step, ... up to max (included when the step lands on it, within rounding).
std::vector<double> ticks(double min, double max, double step);

// A polyline through (x[i], y[i]); points with a non-finite coordinate are left out.
struct Line {
  std::string label;  // legend text; no legend entry when empty
  std::string color;
  std::vector<double> x, y;
  bool right_axis = false;  // y is measured on Chart::y_right
};

// A histogram drawn as one lightly filled step outline, so several overlaid stay readable: bin i spans
// [edges[i], edges[i + 1]] at height heights[i]. Bins outside the x axis are clipped.
struct Bars {
  std::string label;
  std::string color;
  std::vector<double> edges, heights;
  std::optional<double> marker;  // a dashed vertical line at this x (e.g. the mean)
};

struct Chart {
  std::string css_class;  // class of the <svg> element, so pages and tests can find a kind of chart
  std::string title;      // above the plot; none when empty
  int plot_width = 360, plot_height = 360;  // px, the area inside the axes
  Axis x, y;
  std::optional<Axis> y_right;
  std::vector<Line> lines;
  std::vector<Bars> bars;
};

// One <svg> element (with its xmlns, so the text is also a valid standalone .svg file). Throws when an
// axis is empty (max <= min), a line's x and y differ in length, or bars do not have one more edge
// than heights.
std::string render(const Chart& chart);

// The colour of series i, from a fixed palette that cycles.
const char* series_color(size_t i);

// Text for SVG/HTML content and attribute values: & < > " escaped.
std::string escape_xml(const std::string& text);

}  // namespace idsynth::svg
