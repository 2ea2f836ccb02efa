// The idsynth run config: every section a YAML file under configs/ may hold, with its defaults.
// This is the one place the defaults live; `idsynth config --defaults` prints them with their docs.
#pragma once

#include <string>
#include <vector>

#include "core/check.h"
#include "core/config.h"
#include "generator/schedulers.h"

namespace idsynth::dataset {

struct ModelConfig {
  std::string dir = "models/tiny";
  std::string base_dir;
  std::string recognizer;
  std::string detector;
  std::string variant;
  std::vector<std::string> loras;
  void visit(config::Visitor& v) {
    v.field("dir", dir, "Arc2Face model folder: diffusers layout (unet/ text_encoder/ vae/ scheduler/) or an Arc2Face download (arc2face/ encoder/)");
    v.field("base_dir", base_dir, "Stable Diffusion 1.5 folder (or single-file checkpoint) giving vae/ and scheduler/ to an Arc2Face download (empty: dir has them)");
    v.field("recognizer", recognizer, "ArcFace recogniser for the ID filter: ONNX file or IResNet safetensors (empty: no filter)");
    v.field("detector", detector, "SCRFD detector ONNX for the ID filter (empty: fixed-crop alignment)");
    v.field("variant", variant, "weight-file variant to prefer, e.g. fp16 (diffusion_pytorch_model.fp16.safetensors); empty: the plain files");
    v.path_scale_list("loras", loras,
                      "LoRA files fused into the UNet / text encoder at load, in order: {path: FILE, scale: S} maps or FILE[:SCALE] "
                      "strings (e.g. [{path: lcm-lora-sdv1-5.safetensors, scale: 1.0}] with scheduler lcm)");
  }
};

struct GenerationConfig {
  int64_t steps = 25;
  double guidance = 3.0;
  std::string scheduler = "dpmsolver++";
  std::string timestep_spacing;
  int64_t height = 512;
  int64_t width = 512;
  int64_t batch_size = 8;
  std::vector<std::string> devices = {"auto"};
  std::string dtype = "float32";
  int64_t seed = 0;
  int64_t threads = 0;
  void visit(config::Visitor& v) {
    v.field("steps", steps, "denoising steps", {1, 1000});
    v.field("guidance", guidance, "classifier-free guidance scale", {0.0, 100.0});
    v.field("scheduler", scheduler, "sampler", generator::scheduler_kinds());
    v.field("timestep_spacing", timestep_spacing, "override the scheduler config's timestep_spacing (empty: the config's; trailing for step-distilled LoRAs)", {"", "linspace", "leading", "trailing"});
    v.field("height", height, "image height in pixels (a multiple of the VAE factor)", {8, 4096});
    v.field("width", width, "image width in pixels (a multiple of the VAE factor)", {8, 4096});
    v.field("batch_size", batch_size, "images per UNet call (guidance doubles it); in float32 on the CPU the images do not depend on it", {1, 4096});
    v.field("devices", devices, "[auto], [cpu] or a list like [cuda:0, cuda:1]: one worker per device");
    v.field("dtype", dtype, "model precision; scheduler math is always float32", {"float32", "bfloat16", "float16"});
    v.field("seed", seed, "run seed: every image is seeded from (seed, identity, image, attempt)", {0, (int64_t{1} << 53)});
    v.field("threads", threads, "CPU threads per process (0: all cores)", {0, 1024});
  }
};

struct IdentitiesConfig {
  int64_t count = 100;
  int64_t dim = 512;
  double max_similarity = 0.3;
  std::string gallery;
  double max_gallery_similarity = 1.0;
  std::string like;
  std::string from_file;
  int64_t seed = 0;
  void visit(config::Visitor& v) {
    v.field("count", count, "number of synthetic identities", {1, int64_t{1} << 31});
    v.field("dim", dim, "identity vector width (ArcFace: 512)", {1, 65536});
    v.field("max_similarity", max_similarity, "accept a new identity only if its cosine to every accepted one is below this", {-1.0, 1.0});
    v.field("gallery", gallery, "safetensors/.npy of real people's embeddings to stay away from (empty: none)");
    v.field("max_gallery_similarity", max_gallery_similarity, "maximum cosine to any gallery vector", {-1.0, 1.0});
    v.field("like", like, "safetensors/.npy of embeddings whose distribution (mean, covariance) new identities are drawn from (empty: isotropic, as Arc2Face)");
    v.field("from_file", from_file, "use these identity vectors (safetensors/.npy) instead of sampling");
    v.field("seed", seed, "seed of the identity sampler (separate from generation.seed)", {0, (int64_t{1} << 53)});
  }
};

struct FilterConfig {
  double min_similarity = 0.0;
  int64_t max_attempts = 1;
  std::string alignment = "fixed";
  int64_t det_size = 640;
  void visit(config::Visitor& v) {
    v.field("min_similarity", min_similarity, "keep a face only if the cosine of its embedding to its identity is at least this", {-1.0, 1.0});
    v.field("max_attempts", max_attempts, "redraws per image before the identity is recorded as short", {1, 1000});
    v.field("alignment", alignment, "how faces are cropped for the recogniser", {"fixed", "detect"});
    v.field("det_size", det_size,
            "SCRFD letterbox size for alignment: detect, a multiple of 32 (insightface: 640; Arc2Face issue #17: "
            "tight 512x512 face crops are often missed at 640 and found at smaller sizes such as 320 or 256; "
            "compare with `idsynth eval idsim --align detect --det-size N`)",
            {32, 2048});
  }
};

struct OutputConfig {
  std::string dir = "out";
  int64_t images_per_identity = 50;
  int64_t identities_per_shard = 100;
  int64_t jpeg_quality = 95;
  bool store_full_image = true;
  bool store_aligned_crop = true;
  void visit(config::Visitor& v) {
    v.field("dir", dir, "output folder (shards, manifest.json, resolved config)");
    v.field("images_per_identity", images_per_identity, "faces kept per identity", {1, 100000});
    v.field("identities_per_shard", identities_per_shard, "identities per HDF5 shard", {1, 1000000});
    v.field("jpeg_quality", jpeg_quality, "JPEG quality of stored images", {1, 100});
    v.field("store_full_image", store_full_image, "store the full generated image");
    v.field("store_aligned_crop", store_aligned_crop, "store the 112x112 aligned crop");
  }
};

struct GenerateConfig {
  ModelConfig model;
  GenerationConfig generation;
  IdentitiesConfig identities;
  FilterConfig filter;
  OutputConfig output;
  void visit(config::Visitor& v) {
    v.section("model", model, "model files");
    v.section("generation", generation, "sampling");
    v.section("identities", identities, "identity sampling");
    v.section("filter", filter, "ID-consistency filter");
    v.section("output", output, "dataset output");
  }
  // Cross-field rules; single fields are checked by their ranges while reading.
  void check() const {
    IDSYNTH_CHECK(filter.alignment != "detect" || !model.detector.empty(),
                  "filter.alignment: 'detect' needs model.detector (an SCRFD ONNX file), found none");
    // SCRFD's coarsest stride is 32: other sizes leave a partial anchor row (ScrfdConfig::check).
    IDSYNTH_CHECK(filter.det_size % 32 == 0, "filter.det_size: expected a multiple of 32, found ", filter.det_size);
    IDSYNTH_CHECK(!generation.devices.empty(), "generation.devices: expected [auto], [cpu] or a list of devices, found []");
  }
};

}  // namespace idsynth::dataset
