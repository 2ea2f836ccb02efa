// The fault matrix of docs/reliability.md beyond SIGKILL (dataset_e2e_test.cpp has the SIGKILL
// resumes): a full disk while a shard, a record or a training checkpoint is written, SIGTERM and
// SIGINT, a second run on the same task, a deleted / truncated / bit-flipped shard, a read-only
// output folder. Each ends with one clear line, nothing finished lost, no partial file taken for a
// finished one, and a rerun that gives the bytes of an uninterrupted run.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <thread>

#include "core/check.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "dataset/generate.h"
#include "dataset_test_util.h"
#include "formats/dataset_folder.h"
#include "formats/shard_file.h"
#include "recognition/trainer.h"
#include "tests/recognition/train_test_data.h"
#include "tests/support/errors.h"
#include "tests/support/process.h"

namespace idsynth::dataset {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---- injecting faults ---------------------------------------------------------------------

// RLIMIT_FSIZE for this process while in scope, SIGXFSZ ignored: a write past `bytes` fails with
// EFBIG, as on a full disk or over a quota.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &old_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit r = old_;
    r.rlim_cur = bytes;
    EXPECT_EQ(setrlimit(RLIMIT_FSIZE, &r), 0);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_{};
  void (*old_handler_)(int) = nullptr;
};

// Starts the idsynth binary with `args`; stdout to /dev/null, stderr to `err_file`. With
// `fsize_limit` > 0 the child gets RLIMIT_FSIZE (set before exec) and ignores SIGXFSZ.
pid_t spawn_idsynth(const std::vector<std::string>& args, const std::string& err_file, rlim_t fsize_limit = 0) {
  const std::string bin = test::idsynth_binary();
  std::vector<std::string> all = {bin};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    if (fsize_limit > 0) {
      rlimit r;
      getrlimit(RLIMIT_FSIZE, &r);
      r.rlim_cur = fsize_limit;
      setrlimit(RLIMIT_FSIZE, &r);
      signal(SIGXFSZ, SIG_IGN);
    }
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    const int out = open("/dev/null", O_WRONLY);
    const int err = open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out >= 0) dup2(out, 1);
    if (err >= 0) dup2(err, 2);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

// Waits for `pid`; the exit code, 128 + signal when killed, -1 after `limit`.
int wait_exit(pid_t pid, std::chrono::seconds limit = std::chrono::seconds(120)) {
  const auto t0 = Clock::now();
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) != pid) {
    if (Clock::now() - t0 > limit) {
      ::kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs idsynth to the end: exit code and stderr.
test::CommandResult run_idsynth(const std::vector<std::string>& args, rlim_t fsize_limit = 0) {
  const std::string err = test::temp_dir("fault_cmd") + "/err";
  test::CommandResult r;
  r.exit_code = wait_exit(spawn_idsynth(args, err, fsize_limit));
  r.err = test::read_bytes(err);
  return r;
}

std::vector<std::string> generate_args(const std::string& config, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"--threads", "2", "--log-level", "error", "generate", "--config", config, "--no-progress"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

int count_records(const std::string& out) {
  int n = 0;
  if (!fs::exists(out + "/shards")) return 0;
  for (const auto& e : fs::directory_iterator(out + "/shards")) n += e.path().extension() == ".json";
  return n;
}

// Waits until `out` has `n` shard records or the process ends; false when it ended first.
bool wait_for_records(pid_t pid, const std::string& out, int n) {
  const auto t0 = Clock::now();
  while (count_records(out) < n) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    if (Clock::now() - t0 > std::chrono::seconds(120)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  return true;
}

std::vector<std::string> temporaries(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) found.push_back(e.path().string());
  return found;
}

using test::quiet;
// The uninterrupted run every faulted one must equal, byte for byte.
using test::reference_dataset;

// A config file for a fresh output folder <dir>/out.
std::string fresh_config(const std::string& dir) {
  return test::write_config(test::tiny_config(dir + "/out"), dir + "/config.yaml");
}

// ---- disk full ----------------------------------------------------------------------------

// The first shard (~20 KB in format version 2) does not fit under a 12 KB file size limit; everything
// before it does.
TEST(FaultDiskFull, GenerateStopsWithOneLineRemovesTheTemporaryAndTheRerunIsByteIdentical) {
  IDSYNTH_REQUIRE_PROGRAM();
  const std::string dir = test::temp_dir("fault_disk_full");
  const std::string config = fresh_config(dir), out = dir + "/out";
  const auto r = run_idsynth(generate_args(config), 12 * 1024);
  EXPECT_EQ(r.exit_code, 1) << "no crash (it was SIGSEGV, 139, from HDF5 closing a failed file at exit): " << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(formats::shard_h5_path(out, 0) + ": write failed (File too large)"), std::string::npos) << r.err;
  EXPECT_TRUE(temporaries(out).empty()) << temporaries(out).front();
  EXPECT_FALSE(fs::exists(formats::shard_h5_path(out, 0)));
  EXPECT_FALSE(fs::exists(formats::task_lock_path(out, 0, 1))) << "the lock file is removed on an error too";
  EXPECT_EQ(count_records(out), 0);
  // Space freed: the rerun finishes the dataset, the same bytes as an uninterrupted run.
  const auto again = run_idsynth(generate_args(config));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  test::expect_same_dataset(reference_dataset(), out);
}

// A record and a shard written under a file size limit: the error names the file, nothing partial
// stays, and a file already there keeps its bytes.
TEST(FaultDiskFull, RecordAndShardWritesFailWithoutLeavingPartialFiles) {
  const std::string ref = reference_dataset();
  const std::string dir = test::temp_dir("fault_record");
  fs::create_directories(formats::shards_dir(dir));
  formats::ShardRecord record;
  ASSERT_TRUE(formats::read_record(ref, 2, &record));
  const formats::ShardData shard = formats::read_shard(formats::shard_h5_path(ref, 2));
  {
    FileSizeLimit limit(64);
    const std::string e = test::error_of([&] { formats::write_record(dir, record); });
    EXPECT_NE(e.find(formats::shard_record_path(dir, 2) + ": write failed (File too large)"), std::string::npos) << e;
    const std::string e2 = test::error_of([&] { formats::write_shard(formats::shard_h5_path(dir, 2), shard); });
    EXPECT_NE(e2.find(formats::shard_h5_path(dir, 2) + ": write failed (File too large)"), std::string::npos) << e2;
  }
  EXPECT_TRUE(fs::is_empty(formats::shards_dir(dir)));
  EXPECT_FALSE(formats::shard_finished(dir, 2));
  // An existing record is replaced whole or not at all.
  formats::write_record(dir, record);
  const std::string before = test::read_bytes(formats::shard_record_path(dir, 2));
  formats::ShardRecord bigger = record;
  bigger.short_identities.assign(100, 7);
  {
    FileSizeLimit limit(before.size() + 8);
    EXPECT_THROW(formats::write_record(dir, bigger), Error);
  }
  EXPECT_EQ(test::read_bytes(formats::shard_record_path(dir, 2)), before);
  EXPECT_TRUE(temporaries(dir).empty());
  // Limit lifted: the shard written here is the reference's bytes.
  formats::write_shard(formats::shard_h5_path(dir, 2), shard);
  EXPECT_TRUE(test::read_bytes(formats::shard_h5_path(dir, 2)) == test::read_bytes(formats::shard_h5_path(ref, 2)));
}

// ---- SIGTERM / SIGINT ---------------------------------------------------------------------

TEST(FaultSignal, SigtermAndSigintStopWithinABatchKeepFinishedShardsAndResumeByteIdentically) {
  IDSYNTH_REQUIRE_PROGRAM();
  const std::string dir = test::temp_dir("fault_signal");
  const std::string config = fresh_config(dir), out = dir + "/out";
  int stopped_at = 0;
  for (const auto& [sig, records] : std::vector<std::pair<int, int>>{{SIGTERM, 2}, {SIGINT, 5}}) {
    SCOPED_TRACE(sig == SIGTERM ? "SIGTERM" : "SIGINT");
    const std::string err = dir + "/err";
    const pid_t pid = spawn_idsynth(generate_args(config), err);
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(wait_for_records(pid, out, records)) << "the run ended before it could be stopped: " << test::read_bytes(err);
    ::kill(pid, sig);
    const auto t0 = Clock::now();
    const int code = wait_exit(pid);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_EQ(code, 130) << test::read_bytes(err);
    // Bounded: one UNet batch of the tiny model plus one shard write (about 0.3 s here).
    EXPECT_LT(seconds, 10.0);
    EXPECT_NE(test::read_bytes(err).find(sig == SIGTERM ? "stopped by SIGTERM" : "stopped by SIGINT"), std::string::npos)
        << test::read_bytes(err);
    // Records flushed: every record's shard is whole, no temporaries, the manifest lists them.
    const auto report = formats::verify_dataset(out, 8, /*repair=*/false);
    EXPECT_TRUE(report.damaged.empty()) << describe(report);
    EXPECT_TRUE(report.stale_temporaries.empty()) << describe(report);
    EXPECT_EQ(static_cast<int>(report.ok.size()), count_records(out));
    EXPECT_EQ(json::parse_file(out + "/manifest.json").find("shards_finished")->as_int("manifest"), count_records(out));
    EXPECT_FALSE(fs::exists(formats::task_lock_path(out, 0, 1)));
    EXPECT_GE(count_records(out), stopped_at);
    stopped_at = count_records(out);
  }
  EXPECT_LT(stopped_at, 8);
  const auto r = run_idsynth(generate_args(config));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  test::expect_same_dataset(reference_dataset(), out);
}

// ---- double submit ------------------------------------------------------------------------

TEST(FaultLock, SecondRunOnTheSameTaskRefusesNamingTheHolderAndACrashLeavesNoLock) {
  IDSYNTH_REQUIRE_PROGRAM();
  const std::string dir = test::temp_dir("fault_lock");
  const std::string config = fresh_config(dir), out = dir + "/out";
  const std::string lock = formats::task_lock_path(out, 0, 1);
  const pid_t first = spawn_idsynth(generate_args(config), dir + "/err_first");
  ASSERT_GT(first, 0);
  ASSERT_TRUE(wait_for_records(first, out, 1)) << test::read_bytes(dir + "/err_first");
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  EXPECT_EQ(test::read_bytes(lock), cat("host=", host, "\npid=", first, "\n"));

  const auto second = run_idsynth(generate_args(config));
  EXPECT_EQ(second.exit_code, 1) << second.err;
  EXPECT_EQ(test::count_lines(second.err), 1) << second.err;
  EXPECT_NE(second.err.find(cat(lock, ": task 0 of 1 is being generated by another idsynth generate (host ", host,
                                ", pid ", first, ")")),
            std::string::npos)
      << second.err;
  // A crash (SIGKILL) leaves the file but no lock: the next run takes it over and says so.
  ::kill(first, SIGKILL);
  EXPECT_EQ(wait_exit(first), 128 + SIGKILL);
  ASSERT_TRUE(fs::exists(lock));
  const auto third = run_idsynth({"--threads", "2", "--log-level", "warn", "generate", "--config", config, "--no-progress"});
  EXPECT_EQ(third.exit_code, 0) << third.err;
  EXPECT_NE(third.err.find(cat(lock, ": left by a run that ended without releasing it (host ", host, ", pid ", first)),
            std::string::npos)
      << third.err;
  EXPECT_FALSE(fs::exists(lock));
  test::expect_same_dataset(reference_dataset(), out);
}

// In-process: the lock is exclusive per task and released by its destructor.
TEST(FaultLock, TaskLockIsExclusiveAndReleased) {
  const std::string dir = test::temp_dir("fault_task_lock");
  {
    const formats::TaskLock a(dir, 0, 2);
    EXPECT_TRUE(a.stale_holder().empty());
    const std::string e = test::error_of([&] { formats::TaskLock b(dir, 0, 2); });
    EXPECT_NE(e.find(cat("pid ", ::getpid())), std::string::npos) << e;
    const formats::TaskLock other(dir, 1, 2);
  }
  EXPECT_TRUE(fs::is_empty(dir));
  // A file left by a process that is gone is stale.
  write_file_atomic(formats::task_lock_path(dir, 0, 2), "host=elsewhere\npid=999999\n");
  const formats::TaskLock c(dir, 0, 2);
  EXPECT_EQ(c.stale_holder(), "host elsewhere, pid 999999");
}

// ---- damaged shards, read-only output -----------------------------------------------------

TEST(FaultShards, MergeFindsDeletedTruncatedAndFlippedShardsAndGenerateRedoesOnlyThem) {
  IDSYNTH_REQUIRE_PROGRAM();
  const std::string ref = reference_dataset();
  const std::string dir = test::temp_dir("fault_damaged");
  const std::string out = dir + "/out";
  fs::copy(ref, out, fs::copy_options::recursive);
  const std::string config = test::write_config(test::tiny_config(out), dir + "/config.yaml");
  fs::remove(formats::shard_h5_path(out, 1));
  fs::resize_file(formats::shard_h5_path(out, 3), fs::file_size(formats::shard_h5_path(out, 3)) / 2);
  std::string bytes = test::read_bytes(formats::shard_h5_path(out, 5));
  bytes[bytes.size() / 2] ^= 0x01;
  write_file_atomic(formats::shard_h5_path(out, 5), bytes);

  auto merge = test::run_command(test::idsynth_binary() + " --log-level error merge " + out);
  EXPECT_EQ(merge.exit_code, 3) << merge.out << merge.err;
  EXPECT_NE(merge.out.find("shard-00001.h5: file missing"), std::string::npos) << merge.out;
  EXPECT_NE(merge.out.find(cat("shard-00003.h5: size ", fs::file_size(formats::shard_h5_path(out, 3)))), std::string::npos)
      << merge.out;
  EXPECT_NE(merge.out.find("shard-00005.h5: sha256 differs from the record"), std::string::npos) << merge.out;
  const auto gen = test::run_command(test::idsynth_binary() + " --threads 2 --log-level error generate --config " + config +
                                     " --no-progress");
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_NE(gen.out.find("generated 3 shards"), std::string::npos) << gen.out;
  merge = test::run_command(test::idsynth_binary() + " --log-level error merge " + out);
  EXPECT_EQ(merge.exit_code, 0) << merge.out << merge.err;
  test::expect_same_dataset(ref, out);
}

// A read-only output folder: a bind mount remounted read-only in a user and mount namespace
// (`unshare -rm`), so it holds for root too; skipped where namespaces are not allowed.
TEST(FaultShards, ReadOnlyOutputFailsWithOneLineAndChangesNothing) {
  IDSYNTH_REQUIRE_PROGRAM();
  IDSYNTH_REQUIRE_ENVIRONMENT(test::run_command("unshare -rm true").exit_code == 0,
                              "unshare -rm (user and mount namespaces) is not allowed here");
  const std::string ref = reference_dataset();
  const std::string dir = test::temp_dir("fault_read_only");
  const std::string out = dir + "/out";
  fs::copy(ref, out, fs::copy_options::recursive);
  fs::remove(formats::shard_h5_path(out, 4));
  const std::string config = test::write_config(test::tiny_config(out), dir + "/config.yaml");
  const auto before = test::dataset_bytes(out);
  auto read_only = [&](const std::string& command) {
    return test::run_command("unshare -rm sh -c 'mount --bind " + out + " " + out + " && mount -o remount,bind,ro " + out +
                             " " + out + " && exec " + command + "'");
  };
  auto r = read_only(test::idsynth_binary() + " --threads 2 --log-level error generate --config " + config + " --no-progress");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(formats::task_lock_path(out, 0, 1) + ": cannot create the lock file (Read-only file system)"),
            std::string::npos)
      << r.err;
  // merge --check-only reports; merge (which repairs) names what it cannot change.
  r = read_only(test::idsynth_binary() + " --log-level error merge --check-only " + out);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.out.find("shard-00004.h5: file missing"), std::string::npos) << r.out;
  r = read_only(test::idsynth_binary() + " --log-level error merge " + out);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("Read-only file system"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(out), std::string::npos) << r.err;
  const auto after = test::dataset_bytes(out);
  EXPECT_TRUE(before == after) << "a read-only run changed the folder";
}

// ---- training checkpoints -----------------------------------------------------------------

// The (final) checkpoint at step 2 does not fit: training stops naming it, the one at step 1 keeps
// its bytes and loads, and resuming from it with space gives the uninterrupted run's weights.
TEST(FaultTrain, FailedCheckpointWriteKeepsThePreviousOneLoadable) {
  at::set_num_threads(2);
  const std::string dir = test::temp_dir("fault_train");
  test::write_identity_shard(dir + "/data.h5", 2, 0, 8, 4);  // 32 images: 2 steps of 16 per epoch
  recognition::TrainConfig cfg = test::tiny_train_config(dir + "/data.h5", dir + "/a");
  cfg.schedule.epochs = 1;
  cfg.checkpoint.every_steps = 1;
  cfg.checkpoint.keep = 1;  // pruning must wait until the new checkpoint is written
  ASSERT_EQ(recognition::train(cfg).steps, 2);

  recognition::TrainConfig cfg_b = cfg;
  cfg_b.run.output = dir + "/b";
  const std::string b1 = dir + "/b/checkpoint-00000001.safetensors", b2 = dir + "/b/checkpoint-00000002.safetensors";
  std::unique_ptr<FileSizeLimit> limit;
  std::string b1_bytes;
  recognition::TrainHooks hooks;
  hooks.on_batch = [&](int64_t step, recognition::TrainBatch&) {
    if (step != 1 || limit) return;
    b1_bytes = test::read_bytes(b1);
    limit = std::make_unique<FileSizeLimit>(b1_bytes.size() / 2);
  };
  const std::string e = test::error_of([&] { recognition::train(cfg_b, hooks); });
  limit.reset();
  EXPECT_NE(e.find(b2 + ": write failed (File too large)"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(b2));
  EXPECT_TRUE(temporaries(dir + "/b").empty());
  ASSERT_FALSE(b1_bytes.empty());
  EXPECT_TRUE(test::read_bytes(b1) == b1_bytes) << "the previous checkpoint changed";
  EXPECT_GT(SafeTensorsFile(b1).all().size(), 10u);
  EXPECT_EQ(recognition::train(cfg_b, {}, "auto").steps, 2);
  const TensorDict wa = SafeTensorsFile(dir + "/a/checkpoint-00000002.safetensors").all();
  const TensorDict wb = SafeTensorsFile(dir + "/b/checkpoint-00000002.safetensors").all();
  ASSERT_EQ(wa.size(), wb.size());
  for (const auto& [name, t] : wa) {
    const at::Tensor* u = wb.find(name);
    ASSERT_NE(u, nullptr) << name;
    EXPECT_TRUE(torch::equal(t, *u)) << name << " differs after the failed checkpoint and the resume";
  }
}

}  // namespace
}  // namespace idsynth::dataset
