// SGD, the learning-rate schedules and loss scaling against values computed by hand from PyTorch's
// formulas; which IResNet parameters get weight decay.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "core/file_util.h"
#include "recognition/iresnet.h"
#include "recognition/train_optim.h"
#include "tests/support/goldens.h"

namespace idsynth::recognition {
namespace {

TEST(TrainOptim, SgdMatchesPytorchUpdate) {
  SgdParam p;
  p.name = "w";
  p.param = torch::ones({1}).requires_grad_(true);
  Sgd sgd({p}, 0.9, 0.1);
  for (int i = 0; i < 2; ++i) {
    p.param.mutable_grad() = torch::full({1}, 0.5f);
    sgd.step(0.1);
  }
  // step 1: d = 0.5 + 0.1·1 = 0.6, buf = 0.6, p = 0.94; step 2: d = 0.5 + 0.094, buf = 0.54 + 0.594, p = 0.8266
  EXPECT_NEAR(p.param.item<float>(), 0.8266f, 1e-6);
  EXPECT_NEAR(sgd.params()[0].momentum.item<float>(), 1.134f, 1e-6);
}

TEST(TrainOptim, NoWeightDecayOnBatchNormAndPrelu) {
  IResNetConfig c = IResNetConfig::from_name("r18");
  c.widths = {4, 4, 4, 4};
  c.num_features = 8;
  IResNet net(c);
  int decayed = 0, exempt = 0;
  for (const auto& p : sgd_params(*net, "backbone.", {"bn", "prelu"})) {
    const bool norm_or_prelu = p.name.find("bn") != std::string::npos || p.name.find("prelu") != std::string::npos ||
                               p.name.find("features") != std::string::npos || p.name.find("downsample.1") != std::string::npos;
    EXPECT_EQ(p.decay, !norm_or_prelu) << p.name;
    (p.decay ? decayed : exempt)++;
  }
  EXPECT_EQ(decayed, 1 + 2 * 8 + 4 + 2);  // stem conv, 2 convs per block, 4 downsample convs, fc weight + bias
  EXPECT_GT(exempt, 0);
  for (const auto& p : sgd_params(*net, "", {"bias"})) EXPECT_EQ(p.decay, p.name != "fc.bias" && p.name.find(".bias") == std::string::npos) << p.name;
}

TEST(TrainOptim, Schedules) {
  TrainScheduleConfig s;
  s.type = "polynomial";
  EXPECT_NEAR(LrSchedule(s, 0.1, 10, 1).lr(0), 0.1, 1e-12);
  EXPECT_NEAR(LrSchedule(s, 0.1, 10, 1).lr(5), 0.05, 1e-12);
  s.warmup_epochs = 2;
  const LrSchedule warm(s, 0.1, 10, 1);
  EXPECT_NEAR(warm.lr(0), 0.05, 1e-12);
  EXPECT_NEAR(warm.lr(1), 0.1, 1e-12);
  EXPECT_NEAR(warm.lr(6), 0.05, 1e-12);  // 0.1·(1 − 4/8)
  s.warmup_epochs = 0;
  s.type = "step";
  s.milestones = {"2", "4"};
  const LrSchedule step(s, 0.1, 30, 5);
  EXPECT_NEAR(step.lr(9), 0.1, 1e-12);
  EXPECT_NEAR(step.lr(10), 0.01, 1e-12);
  EXPECT_NEAR(step.lr(20), 0.001, 1e-12);
  s.type = "cosine";
  EXPECT_NEAR(LrSchedule(s, 0.1, 10, 1).lr(5), 0.05, 1e-12);
}

TEST(TrainOptim, LossScalerSkipsOverflowAndGrows) {
  SgdParam p;
  p.param = torch::zeros({2}).requires_grad_(true);
  LossScaler scaler(true, 1024, 2);
  p.param.mutable_grad() = torch::tensor({2048.0f, 512.0f});
  EXPECT_TRUE(scaler.unscale({p}));
  EXPECT_NEAR(p.param.grad()[0].item<float>(), 2.0f, 0);
  scaler.update(true);
  scaler.update(true);
  EXPECT_EQ(scaler.scale(), 2048);
  p.param.mutable_grad() = torch::tensor({std::numeric_limits<float>::infinity(), 1.0f});
  EXPECT_FALSE(scaler.unscale({p}));
  scaler.update(false);
  EXPECT_EQ(scaler.scale(), 1024);
}

TEST(TrainOptim, LogFilesAndReload) {
  const std::string dir = test::temp_dir("train_log");
  TrainLog log(dir);
  for (int64_t s = 1; s <= 4; ++s) log.add(LogRow{s, 0, 10.0 / static_cast<double>(s), 0.1 * static_cast<double>(s), 0.1, 100, 1});
  log.add(ValidationRow{4, "lfw", 0.9, 0.01, 20});
  log.write();
  TrainLog again(dir);
  again.reload(2);
  ASSERT_EQ(again.rows().size(), 2u);
  EXPECT_NEAR(again.rows()[1].loss, 5.0, 1e-9);
  EXPECT_TRUE(again.validation().empty());
  const std::string svg = read_text_file(dir + "/loss_curve.svg");
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
}

}  // namespace
}  // namespace idsynth::recognition
