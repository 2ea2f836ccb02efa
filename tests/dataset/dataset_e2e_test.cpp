// `idsynth generate` end to end on a tiny random model: the same bytes from one worker, two CPU
// workers, four array tasks, runs killed with SIGKILL and resumed, and a truncated shard
// regenerated; bad configs fail before any output.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "core/check.h"
#include "dataset_test_util.h"
#include "dataset/generate.h"
#include "dataset/plan.h"
#include "formats/dataset_folder.h"
#include "formats/shard_file.h"
#include "tests/support/process.h"

extern char** environ;

namespace idsynth::dataset {
namespace {

namespace fs = std::filesystem;

GenerateOptions quiet() {
  GenerateOptions o;
  o.progress = false;
  return o;
}

// The reference: one CPU worker, one task.
std::string reference_dataset() {
  static std::string dir;
  if (dir.empty()) {
    dir = test::temp_dir("dataset_reference");
    const auto s = generate_dataset(test::tiny_config(dir), quiet());
    EXPECT_TRUE(s.complete());
  }
  return dir;
}

TEST(DatasetGenerate, ReferenceRunHasEveryShardAndRecordsRedraws) {
  const std::string dir = reference_dataset();
  const auto cfg = test::tiny_config(dir);
  int64_t images = 0, redrawn = 0, short_ids = 0;
  for (int64_t k = 0; k < 8; ++k) {
    ASSERT_TRUE(formats::shard_finished(dir, k)) << k;
    const formats::ShardData d = formats::read_shard(formats::shard_h5_path(dir, k));
    EXPECT_EQ(d.identity_index, std::vector<int64_t>{k});
    images += static_cast<int64_t>(d.size());
    short_ids += static_cast<int64_t>(d.short_identities.size());
    for (size_t i = 0; i < d.size(); ++i) {
      EXPECT_GE(d.similarity[i], cfg.filter.min_similarity);
      EXPECT_EQ(d.seed[i], image_seed(11, d.labels[i], d.image_index[i], d.attempt[i]));
      redrawn += d.attempt[i] > 0;
    }
    EXPECT_EQ(d.aligned.size(), d.size());
    EXPECT_EQ(d.images.size(), d.size());
    EXPECT_EQ(static_cast<int64_t>(d.size()) < 3, !d.short_identities.empty());
  }
  // With a random recogniser, cosines straddle 0: the filter must have rejected and redrawn.
  EXPECT_GT(redrawn, 0);
  EXPECT_GT(images, 0);
  RecordProperty("images", static_cast<int>(images));
  RecordProperty("short_identities", static_cast<int>(short_ids));
  EXPECT_TRUE(fs::exists(dir + "/manifest.json"));
  EXPECT_TRUE(fs::exists(dir + "/identities.safetensors"));
}

TEST(DatasetGenerate, TwoWorkersAndFourTasksGiveTheSameBytes) {
  const std::string ref = reference_dataset();
  const std::string two = test::temp_dir("dataset_two_workers");
  auto cfg = test::tiny_config(two);
  cfg.generation.devices = {"cpu", "cpu"};
  const auto s = generate_dataset(cfg, quiet());
  ASSERT_EQ(s.workers.size(), 2u);
  EXPECT_GT(s.workers[0].shards, 0);
  EXPECT_GT(s.workers[1].shards, 0);
  test::expect_same_dataset(ref, two);

  const std::string tasks = test::temp_dir("dataset_four_tasks");
  for (int64_t t : {2, 0, 3, 1}) {
    GenerateOptions o = quiet();
    o.task_index = t;
    o.task_count = 4;
    const auto st = generate_dataset(test::tiny_config(tasks), o);
    EXPECT_EQ(st.shards_generated, 2);
    EXPECT_EQ(st.complete(), t == 1);
  }
  test::expect_same_dataset(ref, tasks);
}

pid_t spawn_generate(const std::string& config) {
  const std::string bin = test::idsynth_binary();
  std::vector<std::string> args = {bin, "--threads", "2", "--log-level", "warn", "generate", "--config", config, "--no-progress"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, bin.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

int count_records(const std::string& dir) {
  int n = 0;
  if (!fs::exists(dir + "/shards")) return 0;
  for (const auto& e : fs::directory_iterator(dir + "/shards")) n += e.path().extension() == ".json";
  return n;
}

TEST(DatasetGenerate, KilledRunsResumeToTheSameBytes) {
  const std::string bin = test::idsynth_binary();
  if (!fs::exists(bin)) {
    if (test::goldens_required()) FAIL() << bin << " not built";
    GTEST_SKIP() << bin << " not built (ninja idsynth)";
  }
  const std::string ref = reference_dataset();
  const std::string dir = test::temp_dir("dataset_killed");
  const std::string config = test::write_config(test::tiny_config(dir + "/out"), dir + "/config.yaml");
  const std::string out = dir + "/out";
  // Kill after 0 (while loading or in the first shard), 2 and 5 finished shards, in the middle of
  // whatever the process is doing then: a batch, a filter task, an HDF5 write or a rename.
  int kills = 0;
  for (int target : {0, 2, 5}) {
    const pid_t pid = spawn_generate(config);
    ASSERT_GT(pid, 0);
    const auto t0 = std::chrono::steady_clock::now();
    int status = 0;
    bool exited = false;
    while (count_records(out) < target + 1 || target == 0) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      if (target == 0 && std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(1500)) break;
      ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(120));
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
    if (!exited) {
      ::kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ASSERT_TRUE(WIFSIGNALED(status));
      ++kills;
    }
  }
  EXPECT_GE(kills, 2) << "the runs finished before they could be killed";
  const auto r = test::run_command(bin + " --threads 2 --log-level warn generate --config " + config + " --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Temporaries of killed writers are replaced when their shard is written again; the final
  // folder equals the reference once they are gone.
  const auto report = formats::verify_dataset(out, 8, /*repair=*/true);
  EXPECT_TRUE(report.complete()) << describe(report);
  test::expect_same_dataset(ref, out);
}

TEST(DatasetGenerate, TruncatedShardIsReportedAndRegenerated) {
  const std::string ref = reference_dataset();
  const std::string dir = test::temp_dir("dataset_truncated");
  fs::copy(ref, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  const std::string h5 = formats::shard_h5_path(dir, 3);
  const auto size = fs::file_size(h5);
  fs::resize_file(h5, size / 2);
  // A flipped byte keeps the size: only the checksum sees it.
  const std::string h5b = formats::shard_h5_path(dir, 5);
  std::string bytes = test::read_bytes(h5b);
  bytes[bytes.size() - 10] ^= 0x55;
  write_file_atomic(h5b, bytes);

  auto report = formats::verify_dataset(dir, 8, /*repair=*/false);
  EXPECT_FALSE(report.complete());
  EXPECT_EQ(report.damaged_index, (std::vector<int64_t>{3, 5})) << describe(report);
  EXPECT_FALSE(formats::shard_finished(dir, 3));
  report = formats::verify_dataset(dir, 8, /*repair=*/true);
  EXPECT_EQ(report.damaged_index.size(), 2u);
  EXPECT_FALSE(formats::shard_finished(dir, 5));

  const auto s = generate_dataset(test::tiny_config(dir), quiet());
  EXPECT_EQ(s.shards_generated, 2);
  EXPECT_EQ(s.shards_skipped, 6);
  EXPECT_TRUE(formats::verify_dataset(dir, 8, false).complete());
  test::expect_same_dataset(ref, dir);
}

TEST(DatasetGenerate, BadConfigsFailBeforeAnyOutput) {
  const std::string dir = test::temp_dir("dataset_bad");
  const std::string out = dir + "/out";
  auto expect_error = [&](const dataset::GenerateConfig& cfg, const std::string& needle) {
    try {
      generate_dataset(cfg, quiet());
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(out)) << "output written before the error '" << needle << "'";
  };
  auto cfg = test::tiny_config(out);
  cfg.model.dir = dir + "/no-such-model";
  expect_error(cfg, "no-such-model");
  cfg = test::tiny_config(out);
  cfg.model.recognizer = dir + "/missing.onnx";
  expect_error(cfg, "model.recognizer");
  cfg = test::tiny_config(out);
  cfg.identities.dim = 48;  // the tiny text encoder is 32 wide
  expect_error(cfg, "identities.dim");
  cfg = test::tiny_config(out);
  cfg.generation.height = 33;
  expect_error(cfg, "generation.height");
  cfg = test::tiny_config(out);
  cfg.generation.devices = {"tpu"};
  expect_error(cfg, "generation.devices");

  // Reading the YAML: unknown keys and negative counts name the key and the file.
  const std::string yaml = dir + "/bad.yaml";
  write_file_atomic(yaml, "identities:\n  count: -4\n");
  try {
    config::load<dataset::GenerateConfig>(yaml);
    ADD_FAILURE() << "negative count accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("identities.count"), std::string::npos) << e.what();
  }
  write_file_atomic(yaml, "generation:\n  stepz: 4\n");
  EXPECT_THROW(config::load<dataset::GenerateConfig>(yaml), Error);

  // A different config cannot resume into an existing dataset.
  const std::string ref = reference_dataset();
  auto other = test::tiny_config(ref);
  other.generation.steps = 3;
  try {
    generate_dataset(other, quiet());
    ADD_FAILURE() << "a different config resumed into " << ref;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different config"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace idsynth::dataset
