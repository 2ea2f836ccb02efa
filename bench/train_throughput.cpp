// FR training throughput on this machine, in one run:
//   1. loader only: images/s decoded + augmented (flip, crop, colour, low-res, erasing) from a
//      RecordIO file of 112×112 JPEGs, on all cores and on one core;
//   2. model only: IResNet-50 training steps (forward, margin loss, backward, SGD) at 112×112 on
//      batches already in memory, samples/s, on --devices (data parallel when several; float16
//      autocast + loss scaling with --fp16 on CUDA);
//   3. the whole `idsynth train` loop (loader in the background + model) for a few steps, on the
//      same devices.
// The loader keeps the model fed when (1) is well above (2); (3) shows what is left of (2).
//   bench_train_throughput [--batch 32] [--steps 3] [--images 512] [--devices cpu|auto|cuda:0,cuda:1] [--fp16 1]
#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>
#include <tbb/task_arena.h>
#include <unistd.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/train_step_rate.h"
#include "core/device.h"
#include "formats/image.h"
#include "core/log.h"
#include "recognition/iresnet.h"
#include "recognition/margin_losses.h"
#include "recognition/train_data.h"
#include "formats/recordio.h"
#include "recognition/train_optim.h"
#include "recognition/train_parallel.h"
#include "recognition/trainer.h"

namespace {

using namespace idsynth;
using namespace idsynth::recognition;
namespace fs = std::filesystem;

// A RecordIO pair of random-shape 112×112 JPEGs (≈ the size of real aligned faces at quality 95).
std::string write_images(const std::string& dir, int n, int classes) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> u(0, 255), p(0, 111);
  std::vector<std::string> jpegs;
  std::vector<int64_t> labels;
  for (int i = 0; i < n; ++i) {
    cv::Mat img(112, 112, CV_8UC3, cv::Scalar(u(rng), u(rng), u(rng)));
    for (int k = 0; k < 12; ++k)
      cv::circle(img, cv::Point(p(rng), p(rng)), 4 + p(rng) / 6, cv::Scalar(u(rng), u(rng), u(rng)), cv::FILLED, cv::LINE_AA);
    cv::Mat noise(112, 112, CV_8UC3);
    cv::randu(noise, 0, 40);
    img += noise;
    jpegs.push_back(formats::encode_image_rgb(img, ".jpg", 95));
    labels.push_back(i % classes);
  }
  fs::create_directories(dir);
  formats::write_recordio(dir + "/train.rec", dir + "/train.idx", jpegs, labels);
  return dir;
}

double loader_images_per_s(const std::string& dir, int threads, int64_t batch, int batches) {
  TrainDataConfig cfg;
  cfg.paths = {dir};
  cfg.batch_size = batch;
  cfg.crop_p = cfg.color_p = cfg.low_res_p = 0.2;
  cfg.erase_p = 0.5;
  auto ds = std::make_shared<TrainDataset>(cfg);
  TrainLoader loader(ds, cfg, 1);
  tbb::task_arena arena(threads);
  double seconds = 0;
  arena.execute([&] {
    loader.make_batch(0);  // warm-up
    log::Stopwatch w;
    for (int b = 0; b < batches; ++b) loader.make_batch(b % loader.batches_per_epoch());
    seconds = w.seconds();
  });
  return static_cast<double>(batch * batches) / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 32;
  int steps = 3, images = 512;
  std::vector<std::string> device_names = {"cpu"};
  bool fp16 = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batch")) batch = std::stoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--steps")) steps = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--images")) images = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--fp16")) fp16 = std::stoi(argv[i + 1]) != 0;
    if (!std::strcmp(argv[i], "--devices")) {
      device_names.clear();
      std::stringstream list(argv[i + 1]);
      for (std::string d; std::getline(list, d, ',');) device_names.push_back(d);
    }
  }
  const std::vector<c10::Device> devices = resolve_devices(device_names, "--devices");
  const bool amp = fp16 && devices.front().is_cuda();
  std::string device_list;
  for (const auto& d : devices) device_list += (device_list.empty() ? "" : ",") + d.str();
  const int cores = configure_threads(0);
  log::set_threshold(log::Level::warn);
  const std::string dir = (fs::temp_directory_path() / ("idsynth_bench_train_" + std::to_string(::getpid()))).string();
  write_images(dir + "/rec", images, 100);

  // 1. loader only
  const double load_all = loader_images_per_s(dir + "/rec", cores, batch, 8);
  const double load_one = loader_images_per_s(dir + "/rec", 1, batch, 4);
  std::printf("loader (decode + augment, 112x112 JPEG): %.0f images/s on %d threads, %.0f images/s on 1 thread\n",
              load_all, cores, load_one);

  // 2. model only: IResNet-50 + ArcFace head over 1000 classes, SGD, the trainer's step
  const bench::TrainStepRate rate = bench::train_step_rate("r50", batch, steps, 1000, devices, amp);
  const double model = rate.samples_per_s;
  // IResNet-50 at 112×112: ≈ 6.3 GFLOP forward per image, ≈ 3× that for a training step.
  std::printf("model (IResNet-50 train step, batch %lld on %s, %s): %.2f samples/s (%.2f s/step, ~%.0f GFLOP/s)\n",
              static_cast<long long>(batch), device_list.c_str(), amp ? "fp16 autocast" : "fp32", model,
              rate.seconds_per_step, model * 3 * 6.3);

  // 3. the whole loop
  TrainConfig cfg;
  cfg.run.output = dir + "/run";
  cfg.run.devices = device_names;
  cfg.model.fp16 = fp16;
  cfg.run.log_every = 1;
  cfg.data.paths = {dir + "/rec"};
  cfg.data.batch_size = batch;
  cfg.data.num_classes = 100;
  cfg.schedule.max_steps = steps + 1;
  cfg.checkpoint.every_steps = 0;
  log::Stopwatch wl;
  const TrainResult r = train(cfg);
  const double loop = static_cast<double>(batch * r.steps) / wl.seconds();
  std::printf("idsynth train loop (r50, batch %lld, %lld steps incl. start-up and export): %.2f samples/s\n",
              static_cast<long long>(batch), static_cast<long long>(r.steps), loop);
  // One H200 trains r50 (batch 256, float16 autocast) at 2244 samples/s: bench_nn_train_step on the
  // GPU machine, 2026-11-28 (docs/training.md).
  constexpr double kH200SamplesPerS = 2244;
  std::printf("loader / model ratio: %.1fx on %d threads (> 1: the loader keeps up); an H200 training r50 at %.0f "
              "samples/s (bench_nn_train_step) needs %.2f of these cores for its loader\n",
              load_all / model, cores, kH200SamplesPerS, kH200SamplesPerS / load_one);
  fs::remove_all(dir);
  return 0;
}
