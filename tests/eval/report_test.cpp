// report.html / summary.md from verification and generation metrics.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "core/file_util.h"
#include "core/json.h"
#include "eval/report.h"
#include "eval/verification.h"
#include "core/image.h"
#include "tests/support/goldens.h"
#include "tests/support/process.h"

#include <filesystem>
#include <opencv2/core.hpp>

namespace idsynth::eval {
namespace {

json::Value sample_metrics() {
  // Two separable-ish synthetic benchmarks through the real protocol, as cmd_eval stores them.
  json::Value metrics = json::Value::object();
  for (const std::string name : {"lfw", "agedb_30"}) {
    at::manual_seed(name.size());
    const at::Tensor emb = at::randn({240, 16});
    std::vector<bool> same;
    for (int i = 0; i < 120; ++i) same.push_back(i % 2 == 0);
    const VerificationResult r = evaluate_embeddings(emb, at::Tensor(), same);
    json::Value m = json::Value::object();
    m.set("accuracy", r.accuracy);
    m.set("std", r.std);
    json::Value th = json::Value::array();
    for (double t : r.best_thresholds()) th.push_back(t);
    m.set("best_thresholds", th);
    json::Value tar = json::Value::object();
    json::Value t3 = json::Value::object();
    t3.set("tar", r.tar_at_far[0].tar);
    tar.set("1e-03", t3);
    m.set("tar_at_far", tar);
    m.set("xnorm", r.xnorm);
    json::Value roc = json::Value::object(), tpr = json::Value::array(), fpr = json::Value::array();
    for (size_t k = 0; k < r.tpr.size(); ++k) tpr.push_back(r.tpr[k]), fpr.push_back(r.fpr[k]);
    roc.set("tpr", tpr);
    roc.set("fpr", fpr);
    m.set("roc", roc);
    metrics.set(name, m);
  }
  json::Value fid = json::Value::object();
  fid.set("fid", 6.628);
  metrics.set("fid", fid);
  return metrics;
}

TEST(Report, HtmlAndMarkdownHoldTheTableAndRoc) {
  const json::Value metrics = sample_metrics();
  const std::string dir = test::temp_dir("report");
  write_reports(dir, metrics, "run <1>");
  const std::string html = read_text_file(dir + "/report.html");
  const std::string md = read_text_file(dir + "/summary.md");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);  // self-contained, static
  EXPECT_NE(html.find("run &lt;1&gt;"), std::string::npos);
  EXPECT_EQ(std::count(html.begin(), html.end(), '\n') > 10, true);
  size_t polylines = 0;
  for (size_t p = html.find("<polyline"); p != std::string::npos; p = html.find("<polyline", p + 1)) ++polylines;
  EXPECT_EQ(polylines, 2u);
  const double acc = metrics.at("lfw").at("accuracy").as_double();
  char cell[32];
  std::snprintf(cell, sizeof cell, "%.2f", 100 * acc);
  EXPECT_NE(html.find(std::string("<td>") + cell + "</td>"), std::string::npos);
  EXPECT_NE(md.find("| lfw | " + std::string(cell) + " |"), std::string::npos) << md;
  EXPECT_NE(md.find("**fid**"), std::string::npos);
  EXPECT_EQ(json::parse_file(dir + "/metrics.json").at("fid").at("fid").as_double(), 6.628);
}

// The report as a person sees it: Debian's Chromium renders it headless; the screenshot is kept
// as a test artefact in <build>/test-artifacts/report.png.
TEST(Report, RendersInHeadlessChromium) {
  const char* chromium = "/usr/bin/chromium";
  if (!file_exists(chromium)) {
    if (test::goldens_required()) FAIL() << "chromium not installed (scripts/install-deps.sh installs it)";
    GTEST_SKIP() << "chromium not installed: cannot render report.html";
  }
  const std::string dir = test::temp_dir("report-chromium");
  write_reports(dir, sample_metrics(), "chromium check");
  const std::string artifacts = std::string(IDSYNTH_BINARY_DIR) + "/test-artifacts";
  std::filesystem::create_directories(artifacts);
  const std::string flags = std::string(chromium) +
                            " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
                            " --disable-component-update --disable-sync --user-data-dir=" + dir + "/profile";
  const std::string page = "file://" + dir + "/report.html";
  auto dom = test::run_command(flags + " --dump-dom " + page);
  ASSERT_EQ(dom.exit_code, 0) << dom.err;
  // The parsed document still holds both ROC curves and the results table: nothing failed to parse.
  size_t polylines = 0;
  for (size_t p = dom.out.find("<polyline"); p != std::string::npos; p = dom.out.find("<polyline", p + 1)) ++polylines;
  EXPECT_EQ(polylines, 2u);
  EXPECT_NE(dom.out.find("<table"), std::string::npos);
  auto shot = test::run_command(flags + " --window-size=1200,1600 --screenshot=" + artifacts + "/report.png " + page);
  ASSERT_EQ(shot.exit_code, 0) << shot.err;
  const cv::Mat png = read_image_rgb(artifacts + "/report.png");
  EXPECT_EQ(png.cols, 1200);
  cv::Scalar mean, stddev;
  cv::meanStdDev(png, mean, stddev);
  EXPECT_GT(stddev[0] + stddev[1] + stddev[2], 5.0) << "blank screenshot";
}

}  // namespace
}  // namespace idsynth::eval
