// `idsynth eval verify` over several packs where one is broken: the others are evaluated and
// written, the broken one named, exit code 3; metrics.json that does not fit (a file size limit
// standing in for a full disk) is an error naming it, and the previous metrics.json stays.
// (The dataset and training faults are in tests/dataset/fault_test.cpp.)
#include <gtest/gtest.h>

#include <filesystem>

#include "core/file_util.h"
#include "core/json.h"
#include "tests/support/goldens.h"
#include "tests/support/process.h"

namespace idsynth {
namespace {

namespace fs = std::filesystem;
using test::count_lines;
using test::idsynth_binary;
using test::run_command;

struct Packs {
  std::string dir, recognizer, good_a, good_b, broken;
};

// Two good packs (copies of the golden realfaces pack) and one cut in half, and a random recogniser.
Packs make_packs(const std::string& bin) {
  Packs p;
  p.dir = test::temp_dir("fault_cli_verify");
  auto init = run_command(idsynth_binary() + " --log-level error init-model --out " + p.dir +
                          "/m --text-hidden-size 16 --with-recognizer");
  EXPECT_EQ(init.exit_code, 0) << init.err;
  p.recognizer = p.dir + "/m/recognizer.safetensors";
  p.good_a = p.dir + "/lfw.bin";
  p.good_b = p.dir + "/cfp_fp.bin";
  p.broken = p.dir + "/agedb_30.bin";
  fs::copy_file(bin, p.good_a);
  fs::copy_file(bin, p.good_b);
  const std::string bytes = read_text_file(bin);
  write_file_atomic(p.broken, bytes.substr(0, bytes.size() / 2));
  return p;
}

// One test, so that the packs are embedded only three times (--no-flip: half the work).
TEST(FaultCli, VerifyEvaluatesTheGoodPacksNamesTheBrokenOneAndExitsThreeAndMetricsJsonFailsCleanly) {
  IDSYNTH_REQUIRE_GOLDEN(bin, "realfaces/pairs.bin");
  const Packs p = make_packs(bin);
  const std::string out = p.dir + "/out";
  auto verify = [&](const std::string& packs, const std::string& out_dir) {
    return idsynth_binary() + " --threads 2 --log-level error eval verify --no-flip --recognizer " + p.recognizer +
           " --bin " + packs + " --out " + out_dir;
  };
  auto r = run_command(verify(p.good_a + " " + p.broken + " " + p.good_b, out));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("idsynth eval verify: error: " + p.broken), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("[lfw] Accuracy-NoFlip"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[cfp_fp] Accuracy-NoFlip"), std::string::npos) << r.out;
  const json::Value metrics = json::parse_file(out + "/metrics.json");
  EXPECT_NE(metrics.find("lfw"), nullptr);
  EXPECT_NE(metrics.find("cfp_fp"), nullptr);
  EXPECT_EQ(metrics.find("agedb_30"), nullptr);
  // Only broken packs: nothing to write, exit 1 with the pack's error.
  r = run_command(verify(p.broken, p.dir + "/none"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(p.broken), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(p.dir + "/none/metrics.json"));

  // metrics.json does not fit: RLIMIT_FSIZE of 512 bytes (prlimit), SIGXFSZ ignored (inherited
  // through exec), so the write fails with EFBIG as on a full disk. The previous file stays.
  IDSYNTH_REQUIRE_ENVIRONMENT(run_command("command -v prlimit").exit_code == 0, "prlimit (util-linux) not installed");
  const std::string before = read_text_file(out + "/metrics.json");
  ASSERT_GT(before.size(), 512u);
  r = run_command("trap '' XFSZ; exec prlimit --fsize=512 " + verify(p.good_a, out));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(out + "/metrics.json: write failed (File too large)"), std::string::npos) << r.err;
  EXPECT_EQ(read_text_file(out + "/metrics.json"), before);
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

}  // namespace
}  // namespace idsynth
