// One dataset shard as an HDF5 file (docs/formats.md, "Shard"): JPEG bytes of the generated faces
// and their aligned crops, labels, identity vectors, per-image metadata, and the resolved config and
// model hashes as attributes. Written byte-deterministically (no timestamps, fixed format version)
// and atomically (temporary name, fsync, rename), so reruns and array tasks produce the same bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace idsynth::generator {

constexpr int64_t kShardFormatVersion = 1;

struct ShardData {
  int64_t shard_index = 0;
  std::string config;       // resolved config YAML (placement fields cleared, see dataset_generator.h)
  std::string model_files;  // JSON object: model file name -> sha256

  std::vector<int64_t> identity_index;   // [K]
  std::vector<float> identity_vectors;   // [K * D], row-major
  int64_t dim = 0;                       // D
  std::vector<int64_t> short_identities; // [M]

  std::vector<int64_t> labels;        // [N]
  std::vector<int32_t> image_index;   // [N]
  std::vector<int32_t> attempt;       // [N]
  std::vector<uint64_t> seed;         // [N]
  std::vector<float> similarity;      // [N]
  bool has_images = true;             // the `images` dataset exists (output.store_full_image)
  bool has_aligned = true;            // the `aligned` dataset exists (output.store_aligned_crop)
  std::vector<std::string> images;    // [N] JPEG of the full image (when has_images)
  std::vector<std::string> aligned;   // [N] JPEG of the 112x112 aligned crop (when has_aligned)

  size_t size() const { return labels.size(); }
};

// Writes `path` + ".tmp.<pid>", fsyncs it and renames it over `path`. Throws idsynth::Error.
void write_shard(const std::string& path, const ShardData& data);
// Reads a shard written by write_shard (any error names the file and the dataset).
ShardData read_shard(const std::string& path);

}  // namespace idsynth::generator
