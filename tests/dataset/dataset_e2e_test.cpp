// `idsynth generate` end to end on a tiny random model: the same bytes from one worker, two CPU
// workers, four array tasks, runs killed with SIGKILL and resumed, and a truncated shard
// regenerated; bad configs fail before any output.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>
#include <thread>

#include "core/check.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "generator/model_files.h"
#include "dataset_test_util.h"
#include "dataset/export.h"
#include "dataset/generate.h"
#include "dataset/id_filter.h"
#include "dataset/plan.h"
#include "formats/dataset_folder.h"
#include "formats/shard_file.h"
#include "tests/support/errors.h"
#include "tests/support/process.h"

extern char** environ;

namespace idsynth::dataset {
namespace {

namespace fs = std::filesystem;

using test::quiet;
using test::reference_dataset;

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

// LCM draws noise between steps from each image's own generator, after its latent: an image's
// numbers depend only on its seed, so one worker and two give the same bytes.
TEST(DatasetGenerate, LcmSchedulerGivesTheSameBytesForAnyWorkerSplit) {
  const std::string one = test::temp_dir("dataset_lcm_one"), two = test::temp_dir("dataset_lcm_two");
  auto cfg = test::tiny_config(one);
  cfg.generation.scheduler = "lcm";
  ASSERT_TRUE(generate_dataset(cfg, quiet()).complete());
  cfg = test::tiny_config(two);
  cfg.generation.scheduler = "lcm";
  cfg.generation.devices = {"cpu", "cpu"};
  ASSERT_TRUE(generate_dataset(cfg, quiet()).complete());
  test::expect_same_dataset(one, two);
  // Not the DPM-Solver++ dataset: the scheduler was really used.
  EXPECT_NE(test::read_bytes(formats::shard_h5_path(one, 0)), test::read_bytes(formats::shard_h5_path(reference_dataset(), 0)));
}

// A face's bytes depend on its seed alone, not on the batch it is drawn in: batches of 1 and of 8
// (the UNet, VAE and recogniser see 2, 16 or fewer images per call) give the reference dataset's
// bytes (batches of 2), for DPM-Solver++ and for LCM with its per-step noise. float32 on the CPU,
// where every batched kernel computes a sample as it would alone (core/invariant_kernels.h).
TEST(DatasetGenerate, BatchSizeDoesNotChangeTheBytes) {
  for (const int64_t batch : {1, 8}) {
    SCOPED_TRACE(batch);
    const std::string dir = test::temp_dir("dataset_batch_" + std::to_string(batch));
    auto cfg = test::tiny_config(dir);
    cfg.generation.batch_size = batch;
    ASSERT_TRUE(generate_dataset(cfg, quiet()).complete());
    test::expect_same_dataset(reference_dataset(), dir);
  }
  std::string lcm[2];
  for (int i = 0; i < 2; ++i) {
    lcm[i] = test::temp_dir(i == 0 ? "dataset_lcm_batch_1" : "dataset_lcm_batch_8");
    auto cfg = test::tiny_config(lcm[i]);
    cfg.generation.scheduler = "lcm";
    cfg.generation.batch_size = i == 0 ? 1 : 8;
    ASSERT_TRUE(generate_dataset(cfg, quiet()).complete());
  }
  test::expect_same_dataset(lcm[0], lcm[1]);
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
  IDSYNTH_REQUIRE_PROGRAM();
  const std::string bin = test::idsynth_binary();
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
  cfg = test::tiny_config(out);
  cfg.generation.scheduler = "lcm";
  cfg.generation.steps = 51;  // LCM's schedule is a subset of its 50-step distillation grid
  expect_error(cfg, "generation.steps: LCMScheduler: num_inference_steps: expected 1..50");

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


TEST(DatasetGenerate, RecordsCountEveryRejectedDrawByReason) {
  const std::string dir = reference_dataset();
  int64_t draws = 0, kept = 0, wrong_identity = 0;
  for (int64_t k = 0; k < 8; ++k) {
    formats::ShardRecord r;
    ASSERT_TRUE(formats::read_record(dir, k, &r)) << k;
    ASSERT_TRUE(r.rejected_no_face.has_value()) << k;
    ASSERT_TRUE(r.rejected_identity.has_value()) << k;
    // Fixed alignment never runs the detector, so every rejection is a cosine below the threshold.
    EXPECT_EQ(*r.rejected_no_face, 0) << k;
    EXPECT_EQ(r.images + *r.rejected_no_face + *r.rejected_identity, r.draws) << k;
    draws += r.draws;
    kept += r.images;
    wrong_identity += *r.rejected_identity;
  }
  EXPECT_GT(wrong_identity, 0) << "min_similarity 0 with a random recogniser rejects about half the draws";
  const json::Value manifest = json::parse_file(dir + "/manifest.json");
  EXPECT_EQ(manifest.find("rejected_no_face")->as_int("manifest"), 0);
  EXPECT_EQ(manifest.find("rejected_identity")->as_int("manifest"), wrong_identity);
  const std::string text = inspect_dataset(dir, {});
  EXPECT_NE(text.find(cat("draws: ", draws, ", ", kept, " kept (accepted ")), std::string::npos) << text;
  EXPECT_NE(text.find(cat("rejected: 0 no face, ", wrong_identity, " wrong identity")), std::string::npos) << text;
  const auto report = formats::verify_dataset(dir, 8, /*repair=*/false);
  EXPECT_EQ(report.rejected_identity, std::optional<int64_t>(wrong_identity));
  EXPECT_NE(describe(report).find(cat("rejected draws: 0 no face, ", wrong_identity, " wrong identity")), std::string::npos);
}

TEST(DatasetGenerate, RecordsWithoutTheRejectionCountsStillReadAndResume) {
  const std::string ref = reference_dataset();
  const std::string dir = test::temp_dir("dataset_old_records");
  fs::copy(ref, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  // Records as written before the counters existed: the same keys, without the two new ones.
  for (int64_t k = 0; k < 8; ++k) {
    formats::ShardRecord r;
    ASSERT_TRUE(formats::read_record(dir, k, &r));
    r.rejected_no_face.reset();
    r.rejected_identity.reset();
    formats::write_record(dir, r);
    ASSERT_EQ(test::read_bytes(formats::shard_record_path(dir, k)).find("rejected"), std::string::npos);
  }
  fs::remove(formats::shard_record_path(dir, 6));
  fs::remove(formats::shard_h5_path(dir, 6));

  const auto s = generate_dataset(test::tiny_config(dir), quiet());
  EXPECT_EQ(s.shards_skipped, 7);
  EXPECT_EQ(s.shards_generated, 1);
  EXPECT_EQ(s.images + s.rejected_no_face + s.rejected_identity, s.draws);
  for (int64_t k = 0; k < 8; ++k)
    EXPECT_TRUE(test::read_bytes(formats::shard_h5_path(dir, k)) == test::read_bytes(formats::shard_h5_path(ref, k))) << k;
  formats::ShardRecord fresh;
  ASSERT_TRUE(formats::read_record(dir, 6, &fresh));
  EXPECT_TRUE(fresh.rejected_identity.has_value());
  // One record without counters makes the totals unknown rather than wrong.
  const json::Value manifest = json::parse_file(dir + "/manifest.json");
  EXPECT_EQ(manifest.find("rejected_identity"), nullptr);
  const std::string text = inspect_dataset(dir, {});
  EXPECT_NE(text.find("rejections by reason not recorded"), std::string::npos) << text;
  EXPECT_TRUE(formats::verify_dataset(dir, 8, false).complete());
}

// The configs shards were made with before filter.det_size must keep storing the same text.
TEST(DatasetGenerate, NewKeysEnterTheShardConfigOnlyWhenTheyChangeSomething) {
  auto cfg = test::tiny_config("x");
  EXPECT_EQ(dataset_config_yaml(cfg).find("det_size"), std::string::npos);
  cfg.filter.det_size = 320;  // fixed alignment: no detector runs
  EXPECT_EQ(dataset_config_yaml(cfg).find("det_size"), std::string::npos);
  cfg.filter.alignment = "detect";
  cfg.model.detector = "scrfd_10g_bnkps.onnx";
  cfg.filter.det_size = 640;
  EXPECT_EQ(dataset_config_yaml(cfg).find("det_size"), std::string::npos);
  cfg.filter.det_size = 256;
  const std::string yaml = dataset_config_yaml(cfg);
  EXPECT_NE(yaml.find("  det_size: 256\n"), std::string::npos) << yaml;
  // model.variant likewise: absent while empty (the plain files), present when set.
  EXPECT_EQ(yaml.find("variant"), std::string::npos) << yaml;
  cfg.model.variant = "fp16";
  EXPECT_NE(dataset_config_yaml(cfg).find("  variant: \"fp16\"\n"), std::string::npos);
  cfg.model.variant = "";
  // model.loras and generation.timestep_spacing likewise.
  EXPECT_EQ(yaml.find("loras"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("timestep_spacing"), std::string::npos) << yaml;
  cfg.model.loras = {"lcm.safetensors:0.5"};
  cfg.generation.timestep_spacing = "trailing";
  EXPECT_NE(dataset_config_yaml(cfg).find("  loras: ["), std::string::npos) << dataset_config_yaml(cfg);
  EXPECT_NE(dataset_config_yaml(cfg).find("lcm.safetensors:0.5"), std::string::npos) << dataset_config_yaml(cfg);
  EXPECT_NE(dataset_config_yaml(cfg).find("  timestep_spacing: \"trailing\"\n"), std::string::npos) << dataset_config_yaml(cfg);
  cfg.model.loras = {};
  cfg.generation.timestep_spacing = "";
  // Only those lines go: everything around them stays as the emitter wrote it.
  cfg.filter.det_size = 640;
  GenerateConfig cleared = cfg;
  cleared.output.dir = "";
  cleared.generation.devices = {};
  cleared.generation.threads = 0;
  cleared.generation.batch_size = 0;
  std::string full = config::to_yaml(cleared);
  for (const std::string line : {"  det_size: 640\n", "  variant: \"\"\n", "  loras: []\n", "  timestep_spacing: \"\"\n"}) {
    const size_t at = full.find(line);
    ASSERT_NE(at, std::string::npos) << full;
    full.erase(at, line.size());
  }
  EXPECT_EQ(dataset_config_yaml(cfg), full);
}

TEST(IdFilter, AnImageWithoutAFaceIsRejectedAsNoFace) {
  IDSYNTH_REQUIRE_GOLDEN(onnx_dir, "onnx");
  IdFilterOptions o;
  o.recognizer = test::tiny_model_dir() + "/recognizer.safetensors";
  o.detector = onnx_dir + "/scrfd_decode.onnx";
  o.alignment = "detect";
  o.det_size = 64;
  o.identity_dim = 32;
  o.min_similarity = -1.0;
  const IdFilter filter(o);
  // The golden SCRFD-structured detector finds nothing on a flat image (tests/recognition).
  const at::Tensor images = at::full({2, 48, 48, 3}, 128, at::kByte);
  const at::Tensor ids = at::ones({2, 32}) / std::sqrt(32.0);
  const auto out = filter.process(images, ids);
  ASSERT_EQ(out.size(), 2u);
  for (const auto& f : out) {
    EXPECT_FALSE(f.accepted);
    EXPECT_FALSE(f.face_found);
  }
  o.det_size = 48;
  EXPECT_NE(test::error_of([&] { IdFilter{o}; }).find("multiples of 32"), std::string::npos);
}

// Arc2Face's fast mode in a dataset: LCM with a LoRA (kohya form, rank 2, on attention and resnet
// convolutions of this model). Two workers and one, and a run killed with SIGKILL then resumed, all
// give the same bytes; the LoRA really changes them.
TEST(DatasetGenerate, LcmWithLoraGivesTheSameBytesAcrossWorkersAndAfterAKill) {
  IDSYNTH_REQUIRE_PROGRAM();
  const std::string bin = test::idsynth_binary();
  const std::string dir = test::temp_dir("dataset_lora");
  const TensorDict unet = read_weights(generator::locate_component(test::tiny_model_dir() + "/unet",
                                                                   generator::Component::kUNet).weights);
  std::vector<std::pair<std::string, at::Tensor>> lora;
  at::Generator g = at::detail::createCPUGenerator(5);
  for (const auto& [name, w] : unet) {
    const bool attn = name.find("attn1.to_q.weight") != std::string::npos || name.find("attn2.to_v.weight") != std::string::npos;
    const bool conv = name.find("resnets.0.conv1.weight") != std::string::npos;
    if (!attn && !conv) continue;
    std::string kohya = "lora_unet_" + name.substr(0, name.size() - 7);
    std::replace(kohya.begin(), kohya.end(), '.', '_');
    std::vector<int64_t> down = {2, w.size(1)}, up = {w.size(0), 2};
    if (conv) {
      down = {2, w.size(1), w.size(2), w.size(3)};
      up = {w.size(0), 2, 1, 1};
    }
    lora.emplace_back(kohya + ".lora_down.weight", at::randn(down, g) * 0.3);
    lora.emplace_back(kohya + ".lora_up.weight", at::randn(up, g) * 0.3);
    lora.emplace_back(kohya + ".alpha", at::full({}, 2.0));
  }
  ASSERT_GE(lora.size(), 12u);
  save_safetensors(dir + "/lora.safetensors", lora);

  auto cfg = [&](const std::string& out) {
    auto c = test::tiny_config(out);
    c.generation.scheduler = "lcm";
    c.generation.guidance = 1.0;
    c.generation.steps = 2;
    c.model.loras = {dir + "/lora.safetensors:0.8"};
    return c;
  };
  const std::string one = dir + "/one", two = dir + "/two", killed = dir + "/killed";
  ASSERT_TRUE(generate_dataset(cfg(one), quiet()).complete());
  auto c2 = cfg(two);
  c2.generation.devices = {"cpu", "cpu"};
  ASSERT_TRUE(generate_dataset(c2, quiet()).complete());
  test::expect_same_dataset(one, two);

  const std::string config = test::write_config(cfg(killed), dir + "/config.yaml");
  const pid_t pid = spawn_generate(config);
  ASSERT_GT(pid, 0);
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  bool exited = false;
  while (count_records(killed) < 3) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(120));
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  const auto r = test::run_command(bin + " --threads 2 --log-level warn generate --config " + config + " --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  formats::verify_dataset(killed, 8, /*repair=*/true);
  test::expect_same_dataset(one, killed);

  // Without the LoRA the same LCM run draws other faces.
  auto plain = cfg(dir + "/plain");
  plain.model.loras.clear();
  plain.output.dir = dir + "/plain";
  ASSERT_TRUE(generate_dataset(plain, quiet()).complete());
  EXPECT_NE(test::read_bytes(formats::shard_h5_path(one, 0)), test::read_bytes(formats::shard_h5_path(dir + "/plain", 0)));
}

}  // namespace
}  // namespace idsynth::dataset
