// Data-parallel training end to end with two CPU replicas (run.devices: [cpu, cpu]): two runs give
// bit-identical weights, the loss falls, and resuming at step k gives bit-identical weights to the
// uninterrupted run. (The gradient of one step against one model on the half-batches is checked in
// nn_train_step.cpp.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "core/check.h"
#include "core/safetensors.h"
#include "recognition/trainer.h"
#include "tests/recognition/train_test_data.h"
#include "tests/support/goldens.h"

namespace idsynth::recognition {
namespace {

namespace fs = std::filesystem;

// Names of the tensors that differ between two checkpoints (all must be present in both).
std::vector<std::string> differing(const std::string& a, const std::string& b, int64_t* compared) {
  const TensorDict ta = SafeTensorsFile(a).all(), tb = SafeTensorsFile(b).all();
  std::vector<std::string> out;
  if (ta.size() != tb.size()) out.push_back(cat("tensor count ", ta.size(), " vs ", tb.size()));
  for (const auto& [name, t] : ta) {
    const at::Tensor* u = tb.find(name);
    if (!u || !torch::equal(t, *u)) out.push_back(name);
    ++*compared;
  }
  return out;
}

TEST(TrainParallel, TwoCpuReplicasAreDeterministicLearnAndResumeBitIdentically) {
  at::set_num_threads(2);
  const std::string dir = test::temp_dir("train_parallel");
  test::write_identity_shard(dir + "/data.h5", 2, 0, 8, 6);
  // 48 images, batch 16 = 2 × 8 per replica, 3 steps per epoch, 9 steps; momentum, warmup, an
  // epoch boundary, PartialFC sampling (the CPU generator) and flips in play.
  TrainConfig cfg = test::tiny_train_config(dir + "/data.h5", dir + "/a");
  cfg.run.devices = {"cpu", "cpu"};
  cfg.loss.sample_rate = 0.5;
  cfg.data.crop_p = 0.3;
  cfg.schedule.epochs = 3;
  cfg.schedule.warmup_epochs = 1;
  cfg.checkpoint.every_steps = 4;
  cfg.checkpoint.keep = 5;
  const TrainResult a = train(cfg);
  ASSERT_EQ(a.steps, 9);
  EXPECT_EQ(a.replicas, 2);
  std::printf("2 CPU replicas: loss %.3f -> %.3f over 9 steps\n", a.first_loss, a.last_loss);
  EXPECT_LT(a.last_loss, 0.8 * a.first_loss);

  // (b) the same run again: bit-identical weights, centres, momentum and generator state.
  TrainConfig cfg_b = cfg;
  cfg_b.run.output = dir + "/b";
  const TrainResult b = train(cfg_b);
  int64_t compared = 0;
  EXPECT_EQ(differing(dir + "/a/checkpoint-00000009.safetensors", dir + "/b/checkpoint-00000009.safetensors", &compared),
            std::vector<std::string>{});
  EXPECT_GT(compared, 50);
  EXPECT_EQ(b.last_loss, a.last_loss);

  // (c) resumed at step 4 (without prefetch): bit-identical to the uninterrupted run.
  TrainConfig cfg_c = cfg;
  cfg_c.run.output = dir + "/c";
  cfg_c.data.prefetch = 0;
  const TrainResult c = train(cfg_c, {}, dir + "/a/checkpoint-00000004.safetensors");
  ASSERT_EQ(c.steps, 9);
  compared = 0;
  EXPECT_EQ(differing(dir + "/a/checkpoint-00000009.safetensors", dir + "/c/checkpoint-00000009.safetensors", &compared),
            std::vector<std::string>{});
  const TensorDict w4 = SafeTensorsFile(dir + "/a/checkpoint-00000004.safetensors").all();
  const TensorDict w9 = SafeTensorsFile(dir + "/a/checkpoint-00000009.safetensors").all();
  EXPECT_FALSE(torch::equal(w4.at("backbone.conv1.weight"), w9.at("backbone.conv1.weight")));
}

TEST(TrainParallel, TooSmallBatchForTheDevicesIsAnError) {
  const std::string dir = test::temp_dir("train_parallel_bad");
  test::write_identity_shard(dir + "/data.h5", 2, 0, 2, 4);
  TrainConfig cfg = test::tiny_train_config(dir + "/data.h5", dir + "/out");
  cfg.run.devices = {"cpu", "cpu", "cpu"};
  cfg.data.batch_size = 5;
  std::string msg;
  try {
    train(cfg);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("data.batch_size: expected at least 2 images per device"), std::string::npos) << msg;
  cfg.run.devices = {"gpu"};
  cfg.data.batch_size = 4;
  msg.clear();
  try {
    train(cfg);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("run.devices: expected cpu, cuda or cuda:N, found 'gpu'"), std::string::npos) << msg;
}

}  // namespace
}  // namespace idsynth::recognition
