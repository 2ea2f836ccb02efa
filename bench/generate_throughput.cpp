// Throughput of `idsynth generate` on a tiny random model (32x32 images): images/s with 1 and 2 CPU
// workers, and the share of each worker's time spent in the pipeline (UNet + VAE). The reference,
// measured in the same run, is the pipeline alone on the same batches (no filter, JPEG or HDF5):
// generate reaching it means filtering and writing are hidden behind the UNet.
//   bench_generate_throughput [identities=16] [images_per_identity=8] [steps=4]
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "dataset/generate_config.h"
#include "core/device.h"
#include "generator/arc2face_pipeline.h"
#include "dataset/generate.h"
#include "dataset/plan.h"
#include "generator/model_init.h"

using namespace idsynth;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  const int64_t identities = argc > 1 ? std::atoll(argv[1]) : 16;
  const int64_t per_id = argc > 2 ? std::atoll(argv[2]) : 8;
  const int64_t steps = argc > 3 ? std::atoll(argv[3]) : 4;
  const int threads = configure_threads(0);
  const fs::path root = fs::temp_directory_path() / ("idsynth-bench-generate-" + std::to_string(::getpid()));
  fs::create_directories(root);
  generator::ModelInitOptions mo;
  mo.text_hidden_size = 64;
  mo.with_recognizer = true;
  generator::write_random_model((root / "model").string(), mo);

  dataset::GenerateConfig cfg;
  cfg.model.dir = (root / "model").string();
  cfg.model.recognizer = (root / "model" / "recognizer.safetensors").string();
  cfg.generation.steps = steps;
  cfg.generation.height = cfg.generation.width = 32;
  cfg.generation.batch_size = 8;
  cfg.generation.threads = threads;
  cfg.identities.count = identities;
  cfg.identities.dim = 64;
  cfg.identities.max_similarity = 0.5;
  cfg.filter.min_similarity = -1.0;  // keep every face: the same work in every run
  cfg.output.images_per_identity = per_id;
  cfg.output.identities_per_shard = 2;
  const double images = static_cast<double>(identities * per_id);
  std::printf("generate on a tiny model: %lld identities x %lld images, 32x32, %lld steps, batch 8, %d threads\n",
              static_cast<long long>(identities), static_cast<long long>(per_id), static_cast<long long>(steps), threads);

  for (const int workers : {1, 2}) {
    cfg.output.dir = (root / ("out" + std::to_string(workers))).string();
    cfg.generation.devices = std::vector<std::string>(static_cast<size_t>(workers), "cpu");
    dataset::GenerateOptions go;
    go.progress = false;
    const auto s = dataset::generate_dataset(cfg, go);
    std::printf("  generate, %d CPU worker(s):   %7.2f images/s  (UNet busy %3.0f%% of worker time; load %.1f s)\n", workers,
                static_cast<double>(s.draws) / s.seconds, 100.0 * s.unet_busy(), s.load_seconds);
  }
  // Reference: the pipeline alone on the same batch plan, measured after the runs above (warm caches).
  {
    auto pipeline = generator::Arc2FacePipeline::load(generator::Arc2FaceModelPaths::resolve(cfg.model.dir), {});
    at::Tensor ids = torch::nn::functional::normalize(torch::randn({identities, 64}),
                                                      torch::nn::functional::NormalizeFuncOptions().dim(1));
    generator::SampleOptions so;
    so.num_inference_steps = steps;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t first = 0; first < identities; first += 2) {
      at::Tensor cond = pipeline.encode_ids(ids.narrow(0, first, std::min<int64_t>(2, identities - first)));
      const int64_t n = cond.size(0) * per_id;
      cond = cond.repeat_interleave(per_id, 0);
      for (int64_t b = 0; b < n; b += 8) {
        const int64_t m = std::min<int64_t>(8, n - b);
        pipeline.sample_embeds(cond.narrow(0, b, m), pipeline.draw_latents(static_cast<uint64_t>(b), m, 32, 32), so);
      }
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("  pipeline alone (reference):  %7.2f images/s\n", images / s);
  }
  fs::remove_all(root);
  return 0;
}
