// The idsynth executable as a user runs it: help texts, exit codes, one-line errors, docs/cli.md.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/file_util.h"
#include "tests/support/goldens.h"
#include "tests/support/process.h"

namespace idsynth {
namespace {

using test::idsynth_binary;
using test::count_lines;
using test::run_command;

TEST(Cli, HelpForEveryCommandAndDocsAgree) {
  auto top = run_command(idsynth_binary() + " --help");
  ASSERT_EQ(top.exit_code, 0) << top.err;
  for (const char* cmd : {"init-model", "weights", "config", "identities"}) {
    EXPECT_NE(top.out.find(std::string("  ") + cmd + " "), std::string::npos) << cmd;
    auto r = run_command(idsynth_binary() + " " + cmd + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd << ": " << r.err;
    EXPECT_NE(r.out.find(std::string("usage: idsynth ") + cmd), std::string::npos) << cmd;
  }
  // docs/cli.md is generated from these texts; regenerate into a temp file and compare.
  const std::string fresh = test::temp_dir("docs") + "/cli.md";
  auto gen = run_command(std::string(IDSYNTH_SOURCE_DIR) + "/scripts/gen-cli-docs.sh " + idsynth_binary() + " " + fresh);
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_EQ(read_text_file(fresh), read_text_file(std::string(IDSYNTH_SOURCE_DIR) + "/docs/cli.md"))
      << "docs/cli.md is stale: run scripts/gen-cli-docs.sh";
}

TEST(Cli, UsageErrorsExitTwo) {
  EXPECT_EQ(run_command(idsynth_binary()).exit_code, 2);
  auto r = run_command(idsynth_binary() + " frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos);
  r = run_command(idsynth_binary() + " weights --bogus x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
}

// One option table: every command takes --threads and --log-level; --device, --dtype and
// --recognizer have one spelling and one help text wherever they appear; old spellings still work.
TEST(Cli, SharedOptionsHaveOneSpellingEverywhere) {
  std::string device_help, dtype_help;
  for (const char* cmd : {"sample", "embed", "identities", "eval verify", "eval idsim", "eval fid", "eval lpips",
                          "generate", "train", "weights", "merge", "export", "inspect", "init-model", "config"}) {
    SCOPED_TRACE(cmd);
    auto r = run_command(idsynth_binary() + " " + cmd + " --help");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("--threads arg"), std::string::npos);
    EXPECT_NE(r.out.find("--log-level arg"), std::string::npos);
    const size_t d = r.out.find("--device arg");
    if (d != std::string::npos) {
      EXPECT_NE(r.out.find("cpu, cuda or cuda:N: where", d), std::string::npos);
    }
    if (r.out.find("--dtype arg") != std::string::npos) {
      EXPECT_NE(r.out.find("float32 | float16 | bfloat16"), std::string::npos);
    }
    EXPECT_EQ(r.out.find("fp32"), std::string::npos);
  }
  for (const char* cmd : {"embed", "eval verify", "eval idsim"}) {
    auto r = run_command(idsynth_binary() + " " + cmd + " --help");
    EXPECT_NE(r.out.find("--recognizer arg"), std::string::npos) << cmd;
  }
}

TEST(Cli, OldSpellingsWarnAndStillWork) {
  IDSYNTH_REQUIRE_GOLDEN(bin, "realfaces/pairs.bin");
  const std::string dir = test::temp_dir("old-spellings");
  auto init = run_command(idsynth_binary() + " --log-level error init-model --out " + dir + "/m --text-hidden-size 16 --with-recognizer");
  ASSERT_EQ(init.exit_code, 0) << init.err;
  const std::string rec = dir + "/m/recognizer.safetensors";
  // --model is --recognizer, with a warning; the metrics are the same bytes.
  auto old_r = run_command(idsynth_binary() + " eval verify --model " + rec + " --bin " + bin + " --out " + dir + "/a");
  ASSERT_EQ(old_r.exit_code, 0) << old_r.err;
  EXPECT_NE(old_r.err.find("--model is deprecated; use --recognizer"), std::string::npos) << old_r.err;
  auto new_r = run_command(idsynth_binary() + " eval verify --recognizer " + rec + " --bin " + bin + " --out " + dir + "/b");
  ASSERT_EQ(new_r.exit_code, 0) << new_r.err;
  EXPECT_EQ(new_r.err.find("deprecated"), std::string::npos) << new_r.err;
  EXPECT_EQ(read_text_file(dir + "/a/metrics.json"), read_text_file(dir + "/b/metrics.json"));
  // --dtype fp32 is float32, with a warning; an unknown spelling is an error naming the option.
  auto fp32 = run_command(idsynth_binary() + " embed --recognizer " + rec + " --dtype fp32 --aligned --out " + dir +
                          "/e.safetensors " + dir + "/missing.png");
  EXPECT_NE(fp32.err.find("--dtype fp32 is deprecated; use --dtype float32"), std::string::npos) << fp32.err;
  auto bad = run_command(idsynth_binary() + " embed --recognizer " + rec + " --dtype half --aligned --out " + dir +
                         "/e.safetensors " + dir + "/missing.png");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--dtype: expected float32, bfloat16 or float16, found 'half'"), std::string::npos) << bad.err;
  // A missing required shared option is a usage error.
  auto none = run_command(idsynth_binary() + " eval verify --bin " + bin);
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.err.find("--recognizer"), std::string::npos) << none.err;
  // Global options before the command and the same options after it.
  auto g = run_command(idsynth_binary() + " --threads 1 --log-level debug config --defaults");
  EXPECT_EQ(g.exit_code, 0) << g.err;
  auto bad_global = run_command(idsynth_binary() + " --nope config");
  EXPECT_EQ(bad_global.exit_code, 2);
}

TEST(Cli, FailedChecksNameTheirSourceAtDebugLevel) {
  const std::string dir = test::temp_dir("check-source");
  const std::string cfg = dir + "/c.yaml";
  std::ofstream(cfg) << "generation:\n  steps: 0\n";
  auto quiet = run_command(idsynth_binary() + " generate --config " + cfg);
  EXPECT_EQ(quiet.exit_code, 1);
  EXPECT_EQ(count_lines(quiet.err), 1) << quiet.err;
  const std::string missing = dir + "/none.safetensors";
  auto debug = run_command(idsynth_binary() + " --log-level debug weights " + missing);
  EXPECT_EQ(debug.exit_code, 1);
  EXPECT_NE(debug.err.find("failed check: "), std::string::npos) << debug.err;
  EXPECT_NE(debug.err.find(".cpp:"), std::string::npos) << debug.err;
}

TEST(Cli, WeightsListsGoldenFileAndRejectsBadFile) {
  IDSYNTH_REQUIRE_GOLDEN(path, "vae_tiny/vae/diffusion_pytorch_model.safetensors");
  auto r = run_command(idsynth_binary() + " weights " + path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("safetensors"), std::string::npos);
  EXPECT_NE(r.out.find("decoder.conv_in.weight"), std::string::npos);
  EXPECT_NE(r.out.find("F16   [64, 4, 3, 3]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("total parameters: "), std::string::npos);

  const std::string bad = test::temp_dir("bad") + "/bad.safetensors";
  std::ofstream(bad, std::ios::binary) << std::string("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", 14);
  r = run_command(idsynth_binary() + " weights " + bad);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(bad), std::string::npos) << r.err;
  r = run_command(idsynth_binary() + " weights /nonexistent/file.bin");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent/file.bin"), std::string::npos) << r.err;
}

TEST(Cli, InitModelWritesLoadableFoldersInBothLayouts) {
  const std::string dir = test::temp_dir("init");
  for (const char* layout : {"diffusers", "arc2face"}) {
    const std::string out = dir + "/" + layout;
    auto r = run_command(idsynth_binary() + " init-model --out " + out + " --layout " + layout + " --seed 3");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string unet = out + (std::string(layout) == "arc2face" ? "/arc2face" : "/unet");
    const std::string text = std::string(layout) == "arc2face" ? out + "/encoder/pytorch_model.bin" : out + "/text_encoder/model.safetensors";
    for (const std::string& f : {unet + "/config.json", unet + "/diffusion_pytorch_model.safetensors", text,
                                 out + "/vae/config.json", out + "/scheduler/scheduler_config.json"}) {
      EXPECT_TRUE(file_exists(f)) << f;
    }
    r = run_command(idsynth_binary() + " weights " + text);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("text_model.encoder.layers.1.mlp.fc2.weight"), std::string::npos);
    EXPECT_NE(r.out.find(std::string(layout) == "arc2face" ? "torch zip checkpoint" : "safetensors"), std::string::npos);
  }
  // idsynth's own pipeline loads both layouts (the Arc2Face one reads encoder/pytorch_model.bin).
  auto ids = run_command(idsynth_binary() + " identities --count 2 --dim 64 --max-similarity 0.5 --out " + dir + "/ids.safetensors");
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  std::string images[2];
  int k = 0;
  for (const char* layout : {"diffusers", "arc2face"}) {
    const std::string out = dir + "/samples-" + layout;
    auto s = run_command(idsynth_binary() + " sample --model-dir " + dir + "/" + layout + " --ids " + dir +
                         "/ids.safetensors --images-per-id 1 --seed 5 --steps 3 --out " + out);
    ASSERT_EQ(s.exit_code, 0) << s.err;
    ASSERT_TRUE(file_exists(out + "/00001_000.png"));
    images[k++] = read_text_file(out + "/00001_000.png");
  }
  // Same weights (same seed) in the two layouts: the same image.
  EXPECT_EQ(images[0], images[1]);

  // Same seed, same bytes.
  auto again = run_command(idsynth_binary() + " init-model --out " + dir + "/again --seed 3");
  ASSERT_EQ(again.exit_code, 0);
  EXPECT_EQ(read_text_file(dir + "/again/unet/diffusion_pytorch_model.safetensors"),
            read_text_file(dir + "/diffusers/unet/diffusion_pytorch_model.safetensors"));
}

TEST(Cli, ConfigDefaultsAndOneLineErrors) {
  auto r = run_command(idsynth_binary() + " config --defaults");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("steps: 25  # denoising steps"), std::string::npos) << r.out;
  const std::string cfg = test::temp_dir("cfg") + "/bad.yaml";
  std::ofstream(cfg) << "generation:\n  steps: -1\n";
  r = run_command(idsynth_binary() + " config --config " + cfg);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(count_lines(r.err), 1);
  EXPECT_NE(r.err.find(cfg + ": generation.steps: expected an integer >= 1"), std::string::npos) << r.err;
  r = run_command(idsynth_binary() + " config --set generation.guidance=7.5");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("guidance: 7.5"), std::string::npos);
}

TEST(Cli, IdentitiesAreSeparatedAndDeterministic) {
  const std::string dir = test::temp_dir("ids");
  const std::string args = " identities --count 100 --dim 32 --max-similarity 0.5 --seed 4 --out ";
  auto r = run_command(idsynth_binary() + args + dir + "/a.safetensors");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("acceptance"), std::string::npos);
  // The report's largest nearest-neighbour cosine stays below the threshold.
  const auto at = r.out.find(", max ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double max_cos = std::stod(r.out.substr(at + 6));
  EXPECT_LT(max_cos, 0.5);
  EXPECT_GT(max_cos, 0.0);
  r = run_command(idsynth_binary() + args + dir + "/b.safetensors");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(read_text_file(dir + "/a.safetensors"), read_text_file(dir + "/b.safetensors"));
  // Impossible request: 300 vectors in 2-D that are all >90 degrees apart.
  r = run_command(idsynth_binary() + " identities --count 300 --dim 2 --max-similarity -0.5 --out " + dir + "/c.safetensors");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("too strict"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace idsynth
