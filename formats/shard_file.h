// One dataset shard as an HDF5 file (docs/formats.md, "Shard"): JPEG bytes of the generated faces
// and their aligned crops, labels, identity vectors, per-image metadata, the resolved config and
// model hashes. Written byte-deterministically (no timestamps, fixed format version)
// and atomically (temporary name, fsync, rename), so reruns and array tasks produce the same bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace idsynth::formats {

// Version 2 holds no variable-length data (JPEG bytes are concatenated with offsets beside them),
// so its reader never reaches libhdf5's global-heap code, which crashes on crafted files
// (docs/reliability.md, finding 9). Version 1 (idsynth before 2026-12-08) is still read, by
// default, as files from one's own runs are trusted.
constexpr int64_t kShardFormatVersion = 2;

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
// Reads a shard written by write_shard (any error names the file and the dataset). Every dataset
// is checked (hard link, storage inside the file, element type, extent within the file's size)
// before its data is read. accept_version_1 = false refuses version-1 shards, whose
// variable-length data libhdf5 1.10 cannot read safely from an untrusted file.
ShardData read_shard(const std::string& path, bool accept_version_1 = true);

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
  ShardImageReader(const std::string& path, const std::string& image, bool accept_version_1 = true);
  ~ShardImageReader();
  ShardImageReader(const ShardImageReader&) = delete;
  ShardImageReader& operator=(const ShardImageReader&) = delete;
  const std::string& path() const { return path_; }
  const std::vector<int64_t>& labels() const { return labels_; }
  // The encoded bytes of image i (thread-safe).
  std::string read(int64_t i) const;

 private:
  std::string path_;
  std::string image_name_;
  int64_t file_ = -1;  // hid_t
  int64_t images_ = -1;
  int64_t memtype_ = -1;        // version 1: the variable-length uint8 type
  int64_t version_ = 0;
  std::vector<int64_t> offsets_;  // version 2: image i is bytes [offsets_[i], offsets_[i + 1])
  std::vector<int64_t> labels_;
};

}  // namespace idsynth::formats
