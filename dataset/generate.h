// `idsynth generate`: the dataset orchestrator. Identities are sampled once per dataset and saved;
// the shards of this task (k ≡ task (mod count)) that are not finished yet go into one queue; one
// worker per device, each with its own pipeline replica, pulls shards from it. A worker draws the
// shard's images in a fixed batch plan (dataset/plan.h), filters them by ID consistency, redraws
// rejected images with the next attempt seed, and hands the finished shard to a TBB task that
// writes it atomically; embedding, JPEG encoding and HDF5 writing overlap the next UNet batch.
// Output bytes depend only on the config and the weights (DESIGN.md, "Determinism").
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dataset/generate_config.h"

namespace idsynth::dataset {

struct GenerateOptions {
  int64_t task_index = 0;  // this task generates shards k ≡ task_index (mod task_count)
  int64_t task_count = 1;
  bool progress = true;
  // Stop taking new shards after this many were written by this process (0: no limit). Used by
  // tests and benchmarks to stop a run part-way; an interrupted run looks the same on disk.
  int64_t max_shards = 0;
  // SIGTERM / SIGINT (Slurm preemption, Ctrl-C) stop the run within one UNet batch: the shard being
  // generated is dropped (a rerun redraws the same images), a shard already being written is
  // finished with its record, the manifest is rebuilt and GenerateSummary::interrupted is set. A
  // second signal ends the process at once, as SIGKILL would (resume is safe either way). The
  // previous handlers are restored on return. The CLI sets this; library callers keep their own.
  bool handle_signals = false;
};

struct WorkerStats {
  std::string device;
  int64_t shards = 0;
  int64_t images = 0;       // kept
  int64_t draws = 0;        // generated, redraws included
  int64_t rejected_no_face = 0;   // draws == images + rejected_no_face + rejected_identity
  int64_t rejected_identity = 0;
  double seconds = 0.0;     // from the first shard taken to the last shard handed to the writer
  double unet_seconds = 0.0;  // inside the pipeline (denoising + VAE decode)
};

struct GenerateSummary {
  int64_t shards_total = 0;      // in the dataset
  int64_t shards_of_task = 0;    // owned by this task
  int64_t shards_skipped = 0;    // finished before this run
  int64_t shards_generated = 0;  // by this run
  int64_t shards_finished = 0;   // in the dataset after this run (manifest)
  int64_t images = 0;
  int64_t draws = 0;
  int64_t rejected_no_face = 0;   // by this run: the detector found no face
  int64_t rejected_identity = 0;  // by this run: cosine below filter.min_similarity
  int64_t short_identities = 0;
  double seconds = 0.0;       // generation wall time (after loading)
  double load_seconds = 0.0;  // models, identities, hashes
  std::vector<WorkerStats> workers;
  int interrupted = 0;  // the signal (SIGTERM, SIGINT) that stopped the run early; 0: not interrupted
  bool complete() const { return shards_finished == shards_total; }
  // The share of the workers' time spent in the pipeline (1 = the UNet never waited).
  double unet_busy() const;
};

// Validates the config against the files (model, recogniser, detector, identities, devices, an
// existing dataset in output.dir) before any work, then generates. Throws idsynth::Error.
GenerateSummary generate_dataset(const GenerateConfig& cfg, const GenerateOptions& options = {});
std::string describe(const GenerateSummary& summary);

// The config as stored in every shard: the resolved config with the fields that only say where and
// how the work runs cleared (output.dir, generation.devices, generation.threads), since they do
// not change a single output byte, and without filter.det_size unless it is used and not 640, so
// configs from before the key existed still give the same shard bytes.
std::string dataset_config_yaml(const GenerateConfig& cfg);

// The dataset's identity vectors [count, dim] float32 (unit rows): read from
// <output.dir>/identities.safetensors when present, otherwise sampled (or read from
// identities.from_file) and saved there with identities.json. `report` receives the sampling report.
at::Tensor load_or_make_identities(const GenerateConfig& cfg, std::string* report = nullptr);

// Shards in the dataset described by `cfg`.
int64_t dataset_shard_count(const GenerateConfig& cfg);

}  // namespace idsynth::dataset
