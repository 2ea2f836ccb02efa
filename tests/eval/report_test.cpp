// report.html / summary.md from verification and generation metrics.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "core/check.h"
#include "core/file_util.h"
#include "core/json.h"
#include "formats/image.h"
#include "eval/id_similarity.h"
#include "eval/report.h"
#include "eval/verification.h"
#include "tests/support/goldens.h"
#include "tests/support/process.h"

#include <filesystem>
#include <sstream>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

namespace idsynth::eval {
namespace {

json::Value sample_metrics(uint64_t seed = 0) {
  // Two separable-ish synthetic benchmarks through the real protocol, as `eval verify` stores them, and
  // a FID entry written by hand (only the distance, as a published number would be given).
  json::Value metrics = json::Value::object();
  for (const std::string name : {"lfw", "agedb_30"}) {
    at::manual_seed(name.size() + seed);
    const at::Tensor emb = at::randn({240, 16});
    std::vector<bool> same;
    for (int i = 0; i < 120; ++i) same.push_back(i % 2 == 0);
    metrics.set(name, verification_metrics(evaluate_embeddings(emb, at::Tensor(), same), false, 120).to_json());
  }
  json::Value fid = json::Value::object();
  fid.set("fid", 6.628);
  metrics.set("fid", fid);
  return metrics;
}

// An "idsim" entry as `idsynth eval idsim` writes it: statistics of `n` cosines around `centre`, and
// a face grid of 2 identities x 3 solid-colour thumbnails (colour chosen off the plot palette, so a
// screenshot shows whether the inline JPEGs were decoded).
json::Value idsim_metrics(double centre, int64_t n, const cv::Scalar& rgb = cv::Scalar(0, 230, 230)) {
  IdSimResult r;
  at::manual_seed(static_cast<uint64_t>(n));
  const at::Tensor c = (centre + 0.08 * at::randn({n}, at::kDouble)).clamp(-1, 1);
  for (int64_t i = 0; i < n; ++i) {
    r.identity.push_back(i % 5);
    r.image.push_back(i / 5);
    r.cosine.push_back(c[i].item<double>());
  }
  r.stats = summarize_id_similarity(r.identity, r.cosine, 40);
  const cv::Mat thumb(32, 32, CV_8UC3, rgb);
  for (int64_t id = 0; id < 2; ++id)
    for (int64_t k = 0; k < 3; ++k)
      r.faces.push_back({id, k, r.cosine[static_cast<size_t>(k * 5 + id)], base64_encode(formats::encode_image_rgb(thumb, ".jpg", 80))});
  return id_similarity_metrics(r).to_json();
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

TEST(Report, Base64AsRfc4648) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode(std::string("\xff\x00\xfe", 3)), "/wD+");
}

TEST(Report, IdsimSectionHasHistogramTableAndFaceGrid) {
  json::Value metrics = sample_metrics();
  metrics.set("idsim", idsim_metrics(0.8, 40));
  const std::string dir = test::temp_dir("report-idsim");
  write_reports(dir, metrics, "with idsim");
  const std::string html = read_text_file(dir + "/report.html");
  EXPECT_EQ(count_of(html, "<svg class=\"histogram\""), 1u);
  EXPECT_EQ(count_of(html, "<path d=\"M"), 1u);                  // one histogram outline
  EXPECT_EQ(count_of(html, "<polyline"), 2u);                    // the two ROC curves, unchanged
  EXPECT_EQ(count_of(html, "<table class=\"faces\">"), 1u);
  EXPECT_EQ(count_of(html, "src=\"data:image/jpeg;base64,"), 6u);  // 2 identities x 3 images
  EXPECT_EQ(count_of(html, "<tr><th>identity "), 2u);
  const std::string jpeg = metrics.at("idsim").at("faces").as_array()[0].at("jpeg").as_string();
  EXPECT_NE(html.find(jpeg), std::string::npos);
  // self-contained: no scripts, no external resources
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);
  EXPECT_EQ(html.find("href="), std::string::npos);
  char mean[32];
  std::snprintf(mean, sizeof mean, "%.4f", metrics.at("idsim").at("mean").as_double());
  EXPECT_NE(html.find(std::string("<td>") + mean + "</td>"), std::string::npos);
  // the histogram's legend states the same mean; the markdown summary too, without the thumbnails
  const std::string md = read_text_file(dir + "/summary.md");
  EXPECT_NE(md.find(std::string("**idsim**: mean ") + mean), std::string::npos) << md;
  EXPECT_EQ(md.find(jpeg), std::string::npos);
  EXPECT_LT(html.size(), 200000u);
}

// Two runs side by side: the table has the paper's column order, the average, idsim, FID and LPIPS,
// the best cell of each column in bold; ROC curves per benchmark and histograms are overlaid.
std::vector<RunMetrics> two_runs() {
  json::Value a = sample_metrics(0), b = sample_metrics(7);
  a.set("idsim", idsim_metrics(0.80, 40));
  b.set("idsim", idsim_metrics(0.60, 30, cv::Scalar(0, 230, 230)));
  json::Value fa = json::Value::object(), fb = json::Value::object(), la = json::Value::object();
  fa.set("fid", 6.628);
  fb.set("fid", 9.5);
  la.set("diversity", 0.508);
  a.set("fid", fa);
  b.set("fid", fb);
  a.set("lpips", la);
  return {{"arc2face", a}, {"baseline", b}};
}

TEST(Report, ComparisonTableLikeThePaper) {
  const auto runs = two_runs();
  const std::string dir = test::temp_dir("report-compare");
  write_compare_reports(dir, runs, "paper table");
  const std::string html = read_text_file(dir + "/report.html");
  const std::string md = read_text_file(dir + "/summary.md");
  // header: lfw before agedb_30 (paper order, not the metrics' order), then Avg, ID sim., FID, LPIPS
  const size_t lfw = html.find("<th>lfw"), agedb = html.find("<th>agedb_30"), avg = html.find("<th>Avg"),
               idsim = html.find("<th>ID sim."), fid = html.find("<th>FID"), lpips = html.find("<th>LPIPS");
  ASSERT_NE(lfw, std::string::npos) << html.substr(0, 2000);
  EXPECT_LT(lfw, agedb);
  EXPECT_LT(agedb, avg);
  EXPECT_LT(avg, idsim);
  EXPECT_LT(idsim, fid);
  EXPECT_LT(fid, lpips);
  // cells: accuracy in %, the average of the two, FID lower is better, LPIPS missing for one run
  const json::Value& a = runs[0].metrics;
  const double acc_lfw = 100 * a.at("lfw").at("accuracy").as_double(), acc_age = 100 * a.at("agedb_30").at("accuracy").as_double();
  char cell[64];
  std::snprintf(cell, sizeof cell, "%.2f", (acc_lfw + acc_age) / 2);
  EXPECT_NE(md.find(cell), std::string::npos) << md;
  EXPECT_NE(html.find("<td><b>6.628</b></td>"), std::string::npos);  // the lower FID is the best
  EXPECT_NE(html.find("<td>9.500</td>"), std::string::npos);
  EXPECT_NE(md.find("| baseline |"), std::string::npos);
  const size_t baseline_row = md.find("| baseline |");
  EXPECT_NE(md.find(" - |", baseline_row), std::string::npos) << "baseline has no LPIPS: expected '-'";
  std::snprintf(cell, sizeof cell, "**%.3f ± %.3f**", a.at("idsim").at("mean").as_double(), a.at("idsim").at("std").as_double());
  EXPECT_NE(md.find(cell), std::string::npos) << md;
  // plots: 2 benchmarks x 2 runs ROC curves, 2 histogram outlines in one svg, 2 face grids
  EXPECT_EQ(count_of(html, "<svg class=\"roc\""), 2u);
  EXPECT_EQ(count_of(html, "<polyline"), 4u);
  EXPECT_EQ(count_of(html, "<svg class=\"histogram\""), 1u);
  EXPECT_EQ(count_of(html, "<path d=\"M"), 2u);
  EXPECT_EQ(count_of(html, "<table class=\"faces\">"), 2u);
  EXPECT_EQ(count_of(html, "src=\"data:image/jpeg;base64,"), 12u);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  const json::Value all = json::parse_file(dir + "/comparison.json");
  EXPECT_EQ(all.at("runs").at("baseline").at("fid").at("fid").as_double(), 9.5);
}

TEST(Report, RunMetricsErrorsAreOneLine) {
  const std::string dir = test::temp_dir("report-bad");
  for (const char* sub : {"missing", "badjson", "array", "idsim", "roc", "scalar", "empty"})
    std::filesystem::create_directories(dir + "/" + sub);
  write_file_atomic(dir + "/badjson/metrics.json", "{\"lfw\": {\"accuracy\": 0.9,");
  write_file_atomic(dir + "/array/metrics.json", "[1, 2]");
  write_file_atomic(dir + "/idsim/metrics.json", "{\"idsim\": {\"count\": 3}}");
  write_file_atomic(dir + "/roc/metrics.json", "{\"lfw\": {\"accuracy\": 0.9, \"std\": 0.01, \"roc\": {\"thresholds\": [0, 1], "
                                              "\"tpr\": [0, \"1\"], \"fpr\": [0, 1]}}}");
  write_file_atomic(dir + "/scalar/metrics.json", "{\"lfw\": 0.99}");
  write_file_atomic(dir + "/empty/metrics.json", "{}");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"missing", "metrics.json: not found"},
      {"badjson", "metrics.json"},
      {"array", "expected a metrics object, found array"},
      {"idsim", "metrics.json: idsim: identities: expected an integer, found nothing"},
      {"roc", "metrics.json: lfw: roc: tpr[1]: expected a number, found string"},
      {"scalar", "metrics.json: lfw: expected an object of metrics, found number"},
      {"empty", "expected metrics, found an empty object"}};
  for (const auto& [sub, want] : cases) {
    std::string msg = "(no error)";
    try {
      read_run_metrics(dir + "/" + sub);
    } catch (const Error& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find(want), std::string::npos) << sub << ": " << msg;
    EXPECT_NE(msg.find(dir + "/" + sub), std::string::npos) << "error must name the file: " << msg;
    EXPECT_EQ(test::count_lines(msg), 0) << msg;
  }
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

// The report as a person sees it: Debian's Chromium renders it headless (DOM dump with the console
// log on stderr, then a screenshot kept as a test artefact in <build>/test-artifacts/).
struct Rendered {
  std::string dom, console;
  cv::Mat png;
};

Rendered render_in_chromium(const std::string& dir, const std::string& shot_name, int height) {
  const char* chromium = "/usr/bin/chromium";
  const std::string artifacts = std::string(IDSYNTH_BINARY_DIR) + "/test-artifacts";
  std::filesystem::create_directories(artifacts);
  const std::string flags = std::string(chromium) +
                            " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
                            " --disable-component-update --disable-sync --user-data-dir=" + dir + "/profile";
  const std::string page = "file://" + dir + "/report.html";
  Rendered r;
  auto dom = test::run_command(flags + " --enable-logging=stderr --v=0 --dump-dom " + page);
  EXPECT_EQ(dom.exit_code, 0) << dom.err;
  r.dom = dom.out;
  // Console messages (script errors, failed loads, bad markup reports) appear as CONSOLE lines.
  std::istringstream lines(dom.err);
  for (std::string line; std::getline(lines, line);)
    if (line.find("CONSOLE") != std::string::npos || line.find("ERR_") != std::string::npos) r.console += line + "\n";
  auto shot = test::run_command(flags + " --window-size=1200," + std::to_string(height) + " --screenshot=" + artifacts + "/" +
                                shot_name + " " + page);
  EXPECT_EQ(shot.exit_code, 0) << shot.err;
  if (shot.exit_code == 0) r.png = formats::read_image_rgb(artifacts + "/" + shot_name);
  return r;
}

bool have_chromium() { return file_exists("/usr/bin/chromium"); }

// Pixels of the thumbnails' colour (cyan, off the plot palette): the inline JPEGs were decoded and drawn.
int cyan_pixels(const cv::Mat& rgb) {
  cv::Mat mask;
  cv::inRange(rgb, cv::Scalar(0, 200, 200), cv::Scalar(50, 255, 255), mask);
  return cv::countNonZero(mask);
}

TEST(Report, RendersInHeadlessChromium) {
  if (!have_chromium()) {
    if (test::goldens_required()) FAIL() << "chromium not installed (scripts/install-deps.sh installs it)";
    GTEST_SKIP() << "chromium not installed: cannot render report.html";
  }
  const std::string dir = test::temp_dir("report-chromium");
  json::Value metrics = sample_metrics();
  metrics.set("idsim", idsim_metrics(0.8, 40));
  write_reports(dir, metrics, "chromium check");
  const Rendered r = render_in_chromium(dir, "report.png", 2400);
  EXPECT_EQ(r.console, "") << "console messages while rendering report.html";
  // The parsed document still holds both ROC curves, the histogram, the tables and every thumbnail.
  EXPECT_EQ(count_of(r.dom, "<polyline"), 2u);
  EXPECT_EQ(count_of(r.dom, "<path d=\"M"), 1u);
  EXPECT_NE(r.dom.find("<table"), std::string::npos);
  EXPECT_EQ(count_of(r.dom, "<img "), 6u);
  ASSERT_FALSE(r.png.empty());
  EXPECT_EQ(r.png.cols, 1200);
  cv::Scalar mean, stddev;
  cv::meanStdDev(r.png, mean, stddev);
  EXPECT_GT(stddev[0] + stddev[1] + stddev[2], 5.0) << "blank screenshot";
  // 6 thumbnails of 32x32 pixels drawn in their colour (JPEG rounding and borders aside)
  EXPECT_GT(cyan_pixels(r.png), static_cast<int>(0.8 * 6 * 32 * 32)) << "face thumbnails not drawn";
}

TEST(Report, ComparisonRendersInHeadlessChromium) {
  if (!have_chromium()) {
    if (test::goldens_required()) FAIL() << "chromium not installed (scripts/install-deps.sh installs it)";
    GTEST_SKIP() << "chromium not installed: cannot render report.html";
  }
  const std::string dir = test::temp_dir("report-compare-chromium");
  write_compare_reports(dir, two_runs(), "comparison check");
  const Rendered r = render_in_chromium(dir, "report-compare.png", 3000);
  EXPECT_EQ(r.console, "") << "console messages while rendering the comparison report.html";
  EXPECT_EQ(count_of(r.dom, "<polyline"), 4u);
  EXPECT_EQ(count_of(r.dom, "<path d=\"M"), 2u);
  EXPECT_EQ(count_of(r.dom, "<b>"), count_of(read_text_file(dir + "/report.html"), "<b>"));
  EXPECT_EQ(count_of(r.dom, "<img "), 12u);
  ASSERT_FALSE(r.png.empty());
  EXPECT_EQ(r.png.cols, 1200);
  EXPECT_GT(cyan_pixels(r.png), static_cast<int>(0.8 * 12 * 32 * 32)) << "face thumbnails not drawn";
}

}  // namespace
}  // namespace idsynth::eval
