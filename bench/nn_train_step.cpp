// IResNet training steps per second on batches in memory (no loader), libtorch only: the rate a
// data loader must sustain to keep the device busy. bench_train_throughput measures the loader on
// this machine's cores; its images/s per core divided into this rate is the number of cores a
// training box needs per GPU.
//   bench_nn_train_step [--arch r50] [--batch 128] [--steps 5] [--classes 10000]
//                       [--devices cpu|cuda|cuda:0,cuda:1] [--fp16 1]
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "bench/train_step_rate.h"
#include "core/device.h"

int main(int argc, char** argv) {
  using namespace idsynth;
  std::string arch = "r50";
  int64_t batch = 128, classes = 10000;
  int steps = 5;
  bool fp16 = false;
  std::vector<std::string> names = {"cpu"};
  try {
    for (int i = 1; i < argc; i += 2) {
      IDSYNTH_CHECK(i + 1 < argc, "bench_nn_train_step: ", argv[i], ": expected a value");
      const std::string key = argv[i], value = argv[i + 1];
      if (key == "--arch") arch = value;
      else if (key == "--batch") batch = std::stoll(value);
      else if (key == "--steps") steps = std::stoi(value);
      else if (key == "--classes") classes = std::stoll(value);
      else if (key == "--fp16") fp16 = value != "0";
      else if (key == "--devices") {
        names.clear();
        std::stringstream list(value);
        for (std::string d; std::getline(list, d, ',');) names.push_back(d);
      } else {
        fail("bench_nn_train_step: unknown argument '", key, "'");
      }
    }
    const auto devices = resolve_devices(names, "--devices");
    const bool amp = fp16 && devices.front().is_cuda();
    const int threads = configure_threads(0);
    log::set_threshold(log::Level::warn);
    std::string list;
    for (const auto& d : devices) list += (list.empty() ? "" : ",") + d.str();
    const auto r = bench::train_step_rate(arch, batch, steps, classes, devices, amp);
    // IResNet-50 at 112x112: ~6.3 GFLOP forward per image, ~3x that per training step.
    std::printf("train step %s, batch %lld, %lld classes, on %s (%s, %d CPU threads): %.1f samples/s, %.3f s/step\n",
                arch.c_str(), static_cast<long long>(batch), static_cast<long long>(classes), list.c_str(),
                amp ? "float16 autocast + loss scaling" : "float32", threads, r.samples_per_s, r.seconds_per_step);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_nn_train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
