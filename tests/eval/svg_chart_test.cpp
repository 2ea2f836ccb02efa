// core/svg_chart: the one plotter behind the ROC curves, the similarity histograms and the training
// loss curve. (Tested here, beside the reports that use it most.)
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/check.h"
#include "core/svg_chart.h"
#include "tests/support/process.h"

namespace idsynth::svg {
namespace {

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

Chart two_axis_chart() {
  Chart c;
  c.css_class = "test";
  c.title = "loss & accuracy";
  c.plot_width = 200;
  c.plot_height = 100;
  c.x = {"step", 0.0, 10.0, ticks(0.0, 10.0, 2.5), "%.1f"};
  c.y = {"loss", 0.0, 4.0, ticks(0.0, 4.0, 1.0), "%.0f"};
  c.y_right = Axis{"accuracy", 0.0, 1.0, ticks(0.0, 1.0, 0.5), "%.2f"};
  c.lines.push_back({"loss <left>", series_color(0), {0, 5, 10}, {4, NAN, 0}, false});
  c.lines.push_back({"", series_color(1), {0, 10}, {0, 1}, true});
  c.bars.push_back({"hist", series_color(2), {-5, 0, 5, 10, 20}, {1, 2, 3, 8}, 6.0});
  return c;
}

TEST(SvgChart, TicksAreMultiplesOfTheStep) {
  EXPECT_EQ(ticks(0.0, 1.0, 0.25), (std::vector<double>{0.0, 0.25, 0.5, 0.75, 1.0}));
  const std::vector<double> t = ticks(-0.25, 1.0, 0.05);
  ASSERT_EQ(t.size(), 26u);  // 1.0 is reached although 0.05 is not exact in binary
  EXPECT_NEAR(t.back(), 1.0, 1e-12);
  EXPECT_EQ(ticks(0.0, 3.0, 2.0), (std::vector<double>{0.0, 2.0}));
}

TEST(SvgChart, LinesBarsAxesAndLegend) {
  const std::string svg = render(two_axis_chart());
  EXPECT_EQ(svg.rfind("<svg class=\"test\" xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u) << svg.substr(0, 200);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  EXPECT_EQ(count_of(svg, "<polyline"), 2u);
  EXPECT_EQ(count_of(svg, "<path d=\"M"), 1u);
  EXPECT_EQ(count_of(svg, "stroke-dasharray"), 1u);  // the bars' marker
  // the NaN point is left out of the first line: two points, not three
  const size_t first = svg.find("<polyline");
  const std::string points = svg.substr(svg.find("points=\"", first) + 8, svg.find('"', svg.find("points=\"", first) + 8) -
                                                                             (svg.find("points=\"", first) + 8));
  EXPECT_EQ(count_of(points, ","), 2u) << points;
  // labels: escaped title and legend, tick labels in their formats on all three axes
  EXPECT_NE(svg.find(">loss &amp; accuracy</text>"), std::string::npos);
  EXPECT_NE(svg.find(">loss &lt;left&gt;</text>"), std::string::npos);
  EXPECT_EQ(svg.find("<left>"), std::string::npos);
  EXPECT_NE(svg.find(">hist</text>"), std::string::npos);
  EXPECT_EQ(count_of(svg, "width=\"12\" height=\"12\""), 2u);  // unlabelled lines get no legend entry
  EXPECT_NE(svg.find(">7.5</text>"), std::string::npos);
  EXPECT_NE(svg.find(">3</text>"), std::string::npos);
  EXPECT_NE(svg.find(">0.50</text>"), std::string::npos);
  EXPECT_NE(svg.find(">accuracy</text>"), std::string::npos);
  // the bars are clipped to the x axis: the outline starts at x = 0 (the plot's left edge, 60 px)
  EXPECT_NE(svg.find("<path d=\"M60.0,"), std::string::npos) << svg;
}

TEST(SvgChart, BadChartsAreOneLineErrors) {
  const auto message = [](const Chart& c) {
    try {
      render(c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  Chart c = two_axis_chart();
  c.x.max = c.x.min;
  EXPECT_NE(message(c).find("x axis 'step': expected a finite range with max > min, found 0 .. 0"), std::string::npos)
      << message(c);
  c = two_axis_chart();
  c.lines[0].y.pop_back();
  EXPECT_NE(message(c).find("line 'loss <left>': expected as many x as y values, found 3 and 2"), std::string::npos);
  c = two_axis_chart();
  c.bars[0].heights.push_back(1);
  EXPECT_NE(message(c).find("bars 'hist': expected one more edge than heights, found 5 and 5"), std::string::npos);
  c = two_axis_chart();
  c.y_right.reset();
  EXPECT_NE(message(c).find("expected a right axis"), std::string::npos);
  EXPECT_EQ(test::count_lines(message(c)), 0);
}

}  // namespace
}  // namespace idsynth::svg
