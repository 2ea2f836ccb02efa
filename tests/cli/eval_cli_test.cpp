// `idsynth eval idsim` and `idsynth eval report` as a user runs them: idsim's statistics agree with
// cosines computed here from `idsynth embed --aligned --per-image` vectors of the same faces; the
// comparison report holds both runs; bad input exits 1 with one line.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "core/file_util.h"
#include "formats/image.h"
#include "core/json.h"
#include "formats/npy.h"
#include "core/safetensors.h"
#include "tests/support/goldens.h"
#include "tests/support/process.h"

namespace idsynth {
namespace {

using test::count_lines;
using test::idsynth_binary;
using test::run_command;

struct EvalFixture {
  std::string tmp, model, images;
  at::Tensor embeddings;  // [6, 16] unit rows from `idsynth embed`, file order = identity-major
};

// A random 16-d IResNet (init-model), 2 identities x 3 faces of 112x112 noise, and their embeddings.
const EvalFixture& setup() {
  static EvalFixture s = [] {
    EvalFixture s;
    s.tmp = test::temp_dir("eval_cli");
    s.model = s.tmp + "/model";
    auto init = run_command(idsynth_binary() + " --log-level warn init-model --out " + s.model +
                            " --size tiny --text-hidden-size 16 --with-recognizer");
    EXPECT_EQ(init.exit_code, 0) << init.err;
    s.images = s.tmp + "/images";
    std::filesystem::create_directories(s.images);
    auto gen = at::detail::createCPUGenerator(3);
    for (int id = 0; id < 2; ++id)
      for (int k = 0; k < 3; ++k) {
        char name[32];
        std::snprintf(name, sizeof name, "/%05d_%03d.png", id, k);
        const at::Tensor img = at::randint(0, 256, {112, 112, 3}, gen, at::kByte);
        formats::write_image_rgb(s.images + name, formats::tensor_to_mat(img));
      }
    write_file_atomic(s.images + "/sample.json", "{}");
    auto emb = run_command(idsynth_binary() + " --log-level warn embed --recognizer " + s.model +
                           "/recognizer.safetensors --aligned --per-image " + s.images + " --out " + s.tmp + "/emb.safetensors");
    EXPECT_EQ(emb.exit_code, 0) << emb.err;
    s.embeddings = SafeTensorsFile(s.tmp + "/emb.safetensors").tensor("ids").to(at::kDouble);
    return s;
  }();
  return s;
}

std::string idsim_command(const std::string& ids, const std::string& images, const std::string& out,
                          const std::string& extra = "") {
  return idsynth_binary() + " --log-level error eval idsim --recognizer " + setup().model + "/recognizer.safetensors --ids " +
         ids + " --images " + images + " --out " + out + " " + extra;
}

TEST(EvalCli, IdsimAgreesWithEmbedVectors) {
  const EvalFixture& s = setup();
  ASSERT_EQ(s.embeddings.sizes(), (std::vector<int64_t>{6, 16}));
  at::manual_seed(4);
  const at::Tensor ids = at::randn({2, 16});
  formats::save_npy(s.tmp + "/ids.npy", ids);
  auto r = run_command(idsim_command(s.tmp + "/ids.npy", s.images, s.tmp + "/run_a"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ID similarity: mean"), std::string::npos) << r.out;
  // cosines from the embed vectors: image (k, j) is row 3k + j
  const at::Tensor t = ids.to(at::kDouble) / ids.to(at::kDouble).norm(2, 1, true);
  std::vector<double> cos;
  for (int64_t i = 0; i < 6; ++i) cos.push_back(at::dot(s.embeddings[i], t[i / 3]).item<double>());
  double mean = 0.0;
  for (double c : cos) mean += c / 6.0;
  std::vector<double> sorted = cos;
  std::sort(sorted.begin(), sorted.end());
  const json::Value m = json::parse_file(s.tmp + "/run_a/metrics.json").at("idsim");
  EXPECT_EQ(m.at("count").as_int(), 6);
  EXPECT_EQ(m.at("identities").as_int(), 2);
  EXPECT_NEAR(m.at("mean").as_double(), mean, 1e-6);
  EXPECT_NEAR(m.at("median").as_double(), 0.5 * (sorted[2] + sorted[3]), 1e-6);
  EXPECT_NEAR(m.at("min").as_double(), sorted.front(), 1e-6);
  const auto& per = m.at("per_identity").as_array();
  ASSERT_EQ(per.size(), 2u);
  EXPECT_NEAR(per[1].at("mean").as_double(), (cos[3] + cos[4] + cos[5]) / 3.0, 1e-6);
  EXPECT_NEAR(per[1].at("min").as_double(), std::min({cos[3], cos[4], cos[5]}), 1e-6);
  EXPECT_EQ(per[1].at("count").as_int(), 3);
  EXPECT_EQ(m.at("faces").as_array().size(), 6u);  // default grid 6 x 6 holds all
  const std::string html = read_text_file(s.tmp + "/run_a/report.html");
  EXPECT_NE(html.find("<svg class=\"histogram\""), std::string::npos);
  EXPECT_NE(html.find("<table class=\"faces\">"), std::string::npos);
  EXPECT_TRUE(file_exists(s.tmp + "/run_a/summary.md"));
}

TEST(EvalCli, ReportComparesRunsAndMergesFolders) {
  const EvalFixture& s = setup();
  formats::save_npy(s.tmp + "/ids_b.npy", at::ones({2, 16}));
  auto a = run_command(idsim_command(s.tmp + "/ids_b.npy", s.images, s.tmp + "/cmp_a", "--grid-images 1"));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  std::filesystem::create_directories(s.tmp + "/cmp_fid");
  write_file_atomic(s.tmp + "/cmp_fid/metrics.json", R"({"fid": {"fid": 6.628, "images": 6}})");
  auto r = run_command(idsynth_binary() + " --log-level error eval report --run ours=" + s.tmp + "/cmp_a --run ours=" +
                       s.tmp + "/cmp_fid --run " + s.tmp + "/cmp_a --title 'two runs' --out " + s.tmp + "/cmp");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string html = read_text_file(s.tmp + "/cmp/report.html");
  EXPECT_NE(html.find("<table class=\"comparison\">"), std::string::npos);
  EXPECT_NE(html.find("<td>ours</td>"), std::string::npos);
  EXPECT_NE(html.find("<td>cmp_a</td>"), std::string::npos);  // named after its folder
  EXPECT_NE(html.find("6.628"), std::string::npos);            // merged from the second folder of "ours"
  const std::string md = read_text_file(s.tmp + "/cmp/summary.md");
  EXPECT_NE(md.find("| ours |"), std::string::npos) << md;
  EXPECT_NE(r.out.find("| cmp_a |"), std::string::npos) << r.out;
  const json::Value all = json::parse_file(s.tmp + "/cmp/comparison.json");
  EXPECT_EQ(all.at("runs").at("ours").at("idsim").at("faces").as_array().size(), 2u);  // --grid-images 1
}

TEST(EvalCli, BadInputExitsOneWithOneLine) {
  const EvalFixture& s = setup();
  const std::string tmp = test::temp_dir("eval_cli_bad");
  const auto expect_error = [&](const std::string& cmd, const std::string& needle) {
    auto r = run_command(cmd);
    EXPECT_EQ(r.exit_code, 1) << cmd << "\n" << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  };
  std::filesystem::create_directories(tmp + "/empty");
  formats::save_npy(tmp + "/ids2.npy", at::randn({2, 16}));
  formats::save_npy(tmp + "/ids1.npy", at::randn({1, 16}));
  formats::save_npy(tmp + "/narrow.npy", at::randn({2, 12}));
  expect_error(idsim_command(tmp + "/ids2.npy", tmp + "/empty", tmp + "/o1"), "found none");
  expect_error(idsim_command(tmp + "/ids1.npy", s.images, tmp + "/o2"), "expected a row for every identity");
  expect_error(idsim_command(tmp + "/narrow.npy", s.images, tmp + "/o3"), "embedding size 16, found 12");
  expect_error(idsim_command(tmp + "/ids2.npy", s.images, tmp + "/o4", "--align detect"), "expected a face detector");
  expect_error(idsim_command(tmp + "/ids2.npy", s.images, tmp + "/o5", "--det-size 320"),
               "--det-size is only used with --align detect");
  expect_error(idsim_command(tmp + "/ids2.npy", s.images, tmp + "/o6", "--align detect --det-size 100"),
               "--det-size: expected a multiple of 32 in 32..2048, found 100");
  EXPECT_FALSE(file_exists(tmp + "/o2/metrics.json"));
  const std::string report = idsynth_binary() + " --log-level error eval report --out " + tmp + "/rep ";
  expect_error(report + "--run a=" + tmp + "/nothing", "metrics.json: not found");
  std::filesystem::create_directories(tmp + "/bad");
  write_file_atomic(tmp + "/bad/metrics.json", "{\"lfw\": [1,");
  expect_error(report + "--run a=" + tmp + "/bad", tmp + "/bad/metrics.json");
  expect_error(report + "--run =" + tmp + "/bad", "expected NAME=DIR or DIR");
  EXPECT_EQ(run_command(report).exit_code, 2);  // --run is required
}

}  // namespace
}  // namespace idsynth
