// The `idsynth train` config: every key a training YAML may hold, with its default, in one place.
// Defaults follow insightface arcface_torch configs/base.py (r50, ArcFace (1, 0.5, 0), SGD lr 0.1,
// momentum 0.9, wd 5e-4, batch 128 per GPU, polynomial decay, gradient clipping at 5, seed 2048);
// configs/train-ir50.yaml sets the single-GPU recipe (ms1mv3_r50_onegpu.py: lr 0.02, 20 epochs, fp16).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/config.h"

namespace idsynth::recognition {

struct TrainDataConfig {
  std::vector<std::string> paths;
  std::string image = "auto";
  int64_t num_classes = 0;
  bool relabel = false;
  int64_t batch_size = 128;
  int64_t threads = 0;
  int64_t prefetch = 2;
  double flip_p = 0.5;
  double crop_p = 0.0;
  double crop_min_scale = 0.2;
  double color_p = 0.0;
  double color_strength = 0.5;
  double low_res_p = 0.0;
  double low_res_min_scale = 0.2;
  double erase_p = 0.0;
  double erase_max_area = 0.33;
  void visit(config::Visitor& v) {
    v.field("paths", paths, "idsynth dataset/shard folders (or .h5 files) and insightface RecordIO folders (train.rec + train.idx)");
    v.field("image", image, "shard image to train on: aligned 112x112 crops, full images resized to 112x112, or auto (aligned if present)",
            {"auto", "aligned", "images"});
    v.field("num_classes", num_classes, "class count (0: largest label + 1, or the number of distinct labels with relabel)", {0, int64_t{1} << 31});
    v.field("relabel", relabel, "map the distinct labels to 0..K-1 (training on a subset of shards)");
    v.field("batch_size", batch_size, "images per step, over all devices (arcface_torch's batch_size is per GPU)", {1, 1 << 20});
    v.field("threads", threads, "JPEG decode and augmentation threads (0: all cores)", {0, 1024});
    v.field("prefetch", prefetch, "batches prepared ahead in the background", {0, 64});
    v.field("flip_p", flip_p, "probability of a horizontal flip", {0.0, 1.0});
    v.field("crop_p", crop_p, "probability of a random resized crop (aspect 3/4..4/3), resized back to 112x112", {0.0, 1.0});
    v.field("crop_min_scale", crop_min_scale, "smallest crop area as a fraction of the image", {0.01, 1.0});
    v.field("color_p", color_p, "probability of colour jitter (brightness, contrast, saturation)", {0.0, 1.0});
    v.field("color_strength", color_strength, "jitter factors drawn from [1 - strength, 1 + strength]", {0.0, 1.0});
    v.field("low_res_p", low_res_p, "probability of down- and up-sampling with a random interpolation", {0.0, 1.0});
    v.field("low_res_min_scale", low_res_min_scale, "smallest side ratio of the low-resolution copy", {0.05, 1.0});
    v.field("erase_p", erase_p, "probability of random erasing (a rectangle set to 0 after normalisation)", {0.0, 1.0});
    v.field("erase_max_area", erase_max_area, "largest erased area as a fraction (smallest: 0.02)", {0.02, 1.0});
  }
};

struct TrainModelConfig {
  std::string network = "r50";
  std::vector<std::string> widths;
  int64_t embedding_size = 512;
  double dropout = 0.0;
  bool fp16 = false;
  void visit(config::Visitor& v) {
    v.field("network", network, "IResNet depth", {"r18", "r34", "r50", "r100", "r200"});
    v.field("widths", widths, "four stage widths (empty: 64, 128, 256, 512); narrow ones make small test models");
    v.field("embedding_size", embedding_size, "embedding width", {1, 65536});
    v.field("dropout", dropout, "dropout before fc", {0.0, 0.99});
    v.field("fp16", fp16, "mixed precision with dynamic loss scaling (CUDA only; ignored on the CPU)");
  }
};

struct TrainLossConfig {
  std::string type = "arcface";
  double s = 64.0;
  double m1 = 1.0;
  double m2 = 0.5;
  double m3 = 0.0;
  double interclass_filtering_threshold = 0.0;
  double adaface_m = 0.4;
  double adaface_h = 0.333;
  double adaface_t_alpha = 0.01;
  double sample_rate = 1.0;
  bool fp16_logits = false;
  void visit(config::Visitor& v) {
    v.field("type", type, "arcface (1, m2, 0), cosface (1, 0, m3), combined (m1, m2, m3) or adaface", {"arcface", "cosface", "combined", "adaface"});
    v.field("s", s, "logit scale", {0.0, 1000.0});
    v.field("m1", m1, "combined: multiplicative angular margin (only 1.0)", {1.0, 1.0});
    v.field("m2", m2, "additive angular margin (ArcFace)", {0.0, 3.0});
    v.field("m3", m3, "additive cosine margin (CosFace)", {0.0, 2.0});
    v.field("interclass_filtering_threshold", interclass_filtering_threshold, "zero negative logits above this (0: off)", {0.0, 1.0});
    v.field("adaface_m", adaface_m, "AdaFace margin", {0.0, 1.0});
    v.field("adaface_h", adaface_h, "AdaFace norm concentration h", {0.0, 10.0});
    v.field("adaface_t_alpha", adaface_t_alpha, "AdaFace EMA rate of the norm statistics", {0.0, 1.0});
    v.field("sample_rate", sample_rate, "PartialFC: fraction of class centres per step (1: all)", {0.0, 1.0});
    v.field("fp16_logits", fp16_logits, "class-centre product in half precision (CUDA; weights stay float32)");
  }
};

struct TrainOptimConfig {
  double lr = 0.1;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  std::vector<std::string> no_decay = {"bn", "prelu"};
  double clip_grad_norm = 5.0;
  double loss_scale = 65536.0;
  int64_t loss_scale_growth_interval = 100;
  void visit(config::Visitor& v) {
    v.field("lr", lr, "base learning rate (SGD)", {0.0, 100.0});
    v.field("momentum", momentum, "SGD momentum", {0.0, 1.0});
    v.field("weight_decay", weight_decay, "L2 weight decay", {0.0, 1.0});
    v.field("no_decay", no_decay, "parameter kinds without weight decay: bn (BatchNorm weight/bias), prelu, bias");
    v.field("clip_grad_norm", clip_grad_norm, "clip the backbone's gradient norm (0: off)", {0.0, 1e9});
    v.field("loss_scale", loss_scale, "initial loss scale of mixed precision", {1.0, 1e10});
    v.field("loss_scale_growth_interval", loss_scale_growth_interval, "steps without overflow before the scale doubles", {1, 1 << 30});
  }
};

struct TrainScheduleConfig {
  std::string type = "polynomial";
  int64_t epochs = 20;
  int64_t max_steps = 0;
  double warmup_epochs = 0.0;
  double power = 1.0;
  std::vector<std::string> milestones = {"12", "20", "24"};
  double gamma = 0.1;
  double min_lr = 0.0;
  void visit(config::Visitor& v) {
    v.field("type", type, "learning-rate schedule after the warmup", {"polynomial", "step", "cosine", "constant"});
    v.field("epochs", epochs, "passes over the data", {1, 100000});
    v.field("max_steps", max_steps, "stop after this many steps (0: epochs · steps per epoch); the schedule spans the shorter", {0, int64_t{1} << 40});
    v.field("warmup_epochs", warmup_epochs, "linear warmup from 0, in epochs", {0.0, 100000.0});
    v.field("power", power, "polynomial decay power (1: linear to 0, as arcface_torch)", {0.0, 100.0});
    v.field("milestones", milestones, "step schedule: epochs at which lr is multiplied by gamma");
    v.field("gamma", gamma, "step schedule factor", {0.0, 1.0});
    v.field("min_lr", min_lr, "cosine schedule floor", {0.0, 100.0});
  }
};

struct TrainCheckpointConfig {
  int64_t every_steps = 1000;
  int64_t keep = 2;
  void visit(config::Visitor& v) {
    v.field("every_steps", every_steps, "write a checkpoint every N steps (0: only at the end)", {0, int64_t{1} << 40});
    v.field("keep", keep, "checkpoints kept (older ones are deleted)", {1, 100000});
  }
};

struct TrainValidationConfig {
  std::vector<std::string> bins;
  int64_t every_steps = 2000;
  int64_t batch_size = 64;
  bool flip = true;
  void visit(config::Visitor& v) {
    v.field("bins", bins, "insightface .bin verification packs (lfw.bin, cfp_fp.bin, agedb_30.bin, ...)");
    v.field("every_steps", every_steps, "verify every N steps and at the end (0: only at the end)", {0, int64_t{1} << 40});
    v.field("batch_size", batch_size, "images per forward pass", {1, 1 << 20});
    v.field("flip", flip, "add the mirror image's embedding (insightface Accuracy-Flip)");
  }
};

struct TrainRunConfig {
  std::string output = "work_dirs/train";
  int64_t seed = 2048;
  std::vector<std::string> devices = {"auto"};
  int64_t threads = 0;
  int64_t log_every = 10;
  void visit(config::Visitor& v) {
    v.field("output", output, "folder for checkpoints, logs, the loss curve and the exported model");
    v.field("seed", seed, "seed of the initial weights, the sample order and the augmentation", {0, int64_t{1} << 53});
    v.field("devices", devices,
            "auto (every CUDA device, else the CPU), or a list (cpu; cuda:0; [cuda:0, cuda:1]): data parallel, one "
            "backbone replica per entry, data.batch_size split across them; [cpu, cpu] runs two CPU replicas");
    v.field("threads", threads, "CPU threads for libtorch (0: all cores)", {0, 1024});
    v.field("log_every", log_every, "log a line every N steps", {1, 1 << 30});
  }
};

struct TrainConfig {
  TrainRunConfig run;
  TrainDataConfig data;
  TrainModelConfig model;
  TrainLossConfig loss;
  TrainOptimConfig optim;
  TrainScheduleConfig schedule;
  TrainCheckpointConfig checkpoint;
  TrainValidationConfig validation;
  void visit(config::Visitor& v) {
    v.section("run", run, "output, seed, devices");
    v.section("data", data, "training images and augmentation");
    v.section("model", model, "IResNet backbone");
    v.section("loss", loss, "margin softmax loss and class centres");
    v.section("optim", optim, "SGD");
    v.section("schedule", schedule, "epochs and learning-rate schedule");
    v.section("checkpoint", checkpoint, "checkpoints");
    v.section("validation", validation, "verification on .bin packs during training");
  }
  void check() const {
    IDSYNTH_CHECK(!run.devices.empty(), "train config: run.devices: expected 'auto' or a list of devices, found an empty list");
    IDSYNTH_CHECK(model.widths.empty() || model.widths.size() == 4,
                  "train config: model.widths: expected 4 stage widths or none, found ", model.widths.size());
    for (const auto& k : optim.no_decay)
      IDSYNTH_CHECK(k == "bn" || k == "prelu" || k == "bias",
                    "train config: optim.no_decay: expected bn, prelu or bias, found '", k, "'");
    for (const auto& m : schedule.milestones)
      IDSYNTH_CHECK(!m.empty() && m.find_first_not_of("0123456789") == std::string::npos,
                    "train config: schedule.milestones: expected whole epochs, found '", m, "'");
  }
};

}  // namespace idsynth::recognition
