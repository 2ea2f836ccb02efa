// One dataset shard as an HDF5 file (docs/formats.md, "Shard"): JPEG bytes of the generated faces
// and their aligned crops, labels, identity vectors, per-image metadata, and the resolved config and
// model hashes as attributes. Written byte-deterministically (no timestamps, fixed format version)
// and atomically (temporary name, fsync, rename), so reruns and array tasks produce the same bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace idsynth::formats {

constexpr int64_t kShardFormatVersion = 1;

struct ShardData {
  int64_t shard_index = 0;
  std::string config;       // resolved config YAML (placement fields cleared, see dataset/generate.h)
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

// Refuses (throws, naming the file and offset) an HDF5 file holding a global heap collection that
// libhdf5 1.10 (Debian 12's) mishandles: one it would walk forever (a free-space object of size 0,
// or an object size that wraps the walk backwards: H5HG__cache_heap_deserialize has no progress
// check) or an object whose size runs past the collection (H5HG_read copies it unchecked). Variable-length data, such as a shard's JPEG bytes and string attributes,
// lives in these heaps, so read_shard and ShardImageReader run this first. Found by fuzzing
// (tests/fuzz, hdf5_shard). Reads the file once (memory-mapped); a "GCOL" signature inside other
// data is checked too, which can only refuse a file whose bytes there spell a hanging heap.
void check_hdf5_global_heaps(const std::string& path);

// Random access to the labels and one image dataset of a shard (the training loader's view).
class ShardImageReader {
 public:
  // image: "aligned", "images" or "auto" (aligned when the shard has it).
  ShardImageReader(const std::string& path, const std::string& image);
  ~ShardImageReader();
  ShardImageReader(const ShardImageReader&) = delete;
  ShardImageReader& operator=(const ShardImageReader&) = delete;
  const std::string& path() const { return path_; }
  const std::vector<int64_t>& labels() const { return labels_; }
  // The encoded bytes of image i (thread-safe).
  std::string read(int64_t i) const;

 private:
  int64_t extent(int64_t dataset, const char* name) const;
  std::string path_;
  std::string image_name_;
  int64_t file_ = -1;  // hid_t
  int64_t images_ = -1;
  int64_t memtype_ = -1;
  std::vector<int64_t> labels_;
};

}  // namespace idsynth::formats
