// The training data of `idsynth train-generator`: (face image, ID vector) pairs from
//  - idsynth shards (the full generated `images`, or `aligned` crops; the vectors are the shard's
//    `identity_vectors`, or the recogniser's embedding of each image with id_vector: image);
//  - insightface RecordIO (train.rec + train.idx; images are aligned 112x112 crops);
//  - image folders, one person per sub-folder (photos: SCRFD detection + alignment for the vectors
//    unless alignment: aligned).
// Vectors that need the recogniser are computed once, batched, and cached next to the run
// (safetensors keyed by the files and the recogniser's hash); id_vector: identity replaces each
// vector by the L2-normalised mean of its identity's. Images are resized (shorter side) and centre-
// or randomly cropped to the model resolution, optionally flipped, and scaled to [-1, 1] RGB.
// Order and augmentation are functions of (seed, epoch, position) only, as in `idsynth train`
// (recognition/train_data.h): batch b of epoch e is the same after any restart.
// Ref: diffusers examples/text_to_image/train_text_to_image.py (train_transforms, collate_fn).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"

namespace idsynth::generator {

struct GeneratorDataConfig {
  std::vector<std::string> paths;
  std::string image = "auto";
  std::string id_vector = "image";
  std::string recognizer;
  std::string detector;
  std::string alignment = "detect";
  int64_t resolution = 0;
  std::string crop = "center";
  double flip_p = 0.0;
  int64_t batch_size = 8;
  int64_t threads = 0;
  int64_t max_images = 0;
  void visit(config::Visitor& v) {
    v.field("paths", paths,
            "idsynth dataset/shard folders or .h5 files, insightface RecordIO folders (train.rec + train.idx), or image "
            "folders with one sub-folder per person");
    v.field("image", image, "shard image: full generated images, aligned crops, or auto (images if present)",
            {"auto", "images", "aligned"});
    v.field("id_vector", id_vector,
            "condition on each image's own embedding, or on its identity's mean embedding (shards: the stored identity "
            "vector)",
            {"image", "identity"});
    v.field("recognizer", recognizer, "ONNX / IResNet file that embeds RecordIO and folder images (and shard images with id_vector: image)");
    v.field("detector", detector, "SCRFD ONNX file for folder photos (alignment: detect)");
    v.field("alignment", alignment, "folder photos: detect the largest face and align it for the recogniser, or treat the images as aligned crops",
            {"detect", "aligned"});
    v.field("resolution", resolution, "training image size (0: the model's, unet.sample_size x VAE factor)", {0, 4096});
    v.field("crop", crop, "centre or random crop after resizing the shorter side", {"center", "random"});
    v.field("flip_p", flip_p, "probability of a horizontal flip", {0.0, 1.0});
    v.field("batch_size", batch_size, "pairs per optimiser step (before gradient accumulation)", {1, 1 << 20});
    v.field("threads", threads, "decode threads (0: all cores)", {0, 1024});
    v.field("max_images", max_images, "use only the first N pairs (0: all)", {0, int64_t{1} << 40});
  }
};

struct GeneratorBatch {
  int64_t position = 0;          // global batch number: epoch · batches_per_epoch + index
  int64_t epoch = 0;
  at::Tensor images;             // [B, 3, R, R] float32 in [-1, 1], RGB
  at::Tensor id_vectors;         // [B, D] float32 (L2-normalised)
  std::vector<int64_t> samples;  // pair indices
  std::vector<uint8_t> flipped;  // 1 where the row was flipped
};

class GeneratorTrainData {
 public:
  // Opens every path and computes the vectors that need the recogniser (cached in `cache_path` when
  // not empty). Throws one line naming the file for: an unreadable or empty source, a folder image
  // without a face (alignment: detect), a recogniser missing where one is needed, vectors of
  // different widths. The image size is cfg.resolution when set, else `resolution` (the model's).
  // Without `need_vectors` (training the VAE) no vector is computed and id_width() is 0.
  GeneratorTrainData(const GeneratorDataConfig& cfg, int64_t resolution, const std::string& cache_path,
                     bool need_vectors = true);
  ~GeneratorTrainData();

  int64_t size() const;
  int64_t id_width() const;
  int64_t resolution() const;
  int64_t batches_per_epoch() const;  // size / batch_size, the last partial batch dropped (>= 1)
  // The batch at a global position: epoch = position / batches_per_epoch, Fisher-Yates permutation
  // of (seed, epoch), augmentation from (seed, epoch, row). Thread-safe.
  GeneratorBatch batch(int64_t position, uint64_t seed) const;
  // Pair i as the model sees it (centre crop, flipped or not): [3, R, R] in [-1, 1], and its vector [D].
  at::Tensor image(int64_t i, bool flip = false) const;
  at::Tensor id_vector(int64_t i) const;
  std::string describe(int64_t i) const;  // "<file>[record]"
  int64_t label(int64_t i) const;         // the source's identity label (folders: the person's index)
  bool vectors_from_cache() const;        // the recogniser's vectors came from cache_path

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace idsynth::generator
