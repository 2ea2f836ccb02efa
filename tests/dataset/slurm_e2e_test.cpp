// The Slurm path end to end: scripts/slurm/local-cluster.sh starts a one-node cluster (munge,
// slurmctld, slurmd), submits `idsynth generate` as a 4-task job array with sbatch, waits, merges,
// and compares with a single-process run byte for byte. Skips with one line when not root or
// Slurm is not installed; under IDSYNTH_REQUIRE_GOLDENS=1 (CI) that is a failure.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "dataset_test_util.h"
#include "tests/support/process.h"

namespace idsynth::test {
namespace {

TEST(SlurmE2E, JobArrayEqualsSingleProcessRun) {
  std::string why;
  if (::geteuid() != 0) why = "not root";
  else if (run_command("command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged").exit_code != 0)
    why = "slurmctld/slurmd/slurm-client/munge not installed (scripts/install-deps.sh)";
  else if (!std::filesystem::exists(idsynth_binary())) why = idsynth_binary() + " not built";
  if (!why.empty()) {
    if (goldens_required()) FAIL() << "Slurm test cannot run: " << why << " (IDSYNTH_REQUIRE_GOLDENS=1)";
    GTEST_SKIP() << "Slurm test skipped: " << why;
  }
  const std::string dir = temp_dir("slurm_e2e");
  const std::string config = write_config(tiny_config(dir + "/unused"), dir + "/config.yaml");
  const auto r = run_command(std::string(IDSYNTH_SOURCE_DIR) + "/scripts/slurm/local-cluster.sh " + idsynth_binary() + " " +
                             config + " " + dir + "/work 4 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("identical to the single-process run (8 shards)"), std::string::npos) << r.out;
  expect_same_dataset(dir + "/work/single", dir + "/work/array");
}

}  // namespace
}  // namespace idsynth::test
