// The face-recognition training data: idsynth HDF5 shards (docs/formats.md) and insightface RecordIO
// (train.rec + train.idx), read by random access; batches decoded and augmented in parallel (TBB)
// and prepared ahead on a background thread.
//
// Order and augmentation are functions of (seed, epoch, position) only: epoch e visits the samples in
// a Fisher-Yates permutation seeded from (seed, e), and sample k of that permutation draws its
// augmentation from its own generator seeded from (seed, e, k). So batch b of epoch e is the same
// whatever the thread count, prefetch depth or restart point, which is what makes `--resume` exact.
// A sample whose image does not decode is left out of its batch and counted.
//
// Augmentations (each with its probability; AdaFace/Vec2Face style): horizontal flip; random resized
// crop (torchvision's sampling: area in [min_scale, 1], aspect in [3/4, 4/3], 10 tries, else centre)
// resized back to 112×112; colour jitter (brightness, contrast, saturation in [1 − k, 1 + k]);
// low resolution (AdaFace: side ratio in [min, 1], down and up with random OpenCV interpolations);
// random erasing (torchvision: area [0.02, max], aspect [0.3, 3.3], value 0 after normalisation).
// Tensors are RGB, (x/255 − 0.5)/0.5, as arcface_torch's ToTensor + Normalize(0.5, 0.5).
// Ref: insightface recognition/arcface_torch/dataset.py (MXFaceDataset); mxnet recordio.py, dmlc-core
//      recordio.h; mk-minchul/AdaFace dataset/augmenter.py; torchvision RandomResizedCrop, RandomErasing.
#pragma once

#include <ATen/Tensor.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "recognition/train_config.h"

namespace idsynth::recognition {

// One file (or RecordIO pair) of encoded face images with integer labels.
class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual const std::string& path() const = 0;
  virtual int64_t size() const = 0;
  virtual const std::vector<int64_t>& labels() const = 0;
  // Encoded bytes of record i (called from one thread at a time).
  virtual std::string read(int64_t i) = 0;
};

// An idsynth shard: `labels` int64 [N] and `aligned` or `images` variable-length uint8 JPEGs.
// `image`: "aligned", "images" or "auto" (aligned if the shard has it).
std::unique_ptr<ImageSource> open_shard(const std::string& path, const std::string& image);
// insightface RecordIO: `<dir>/train.rec` + `<dir>/train.idx`, with or without the header0 record.
std::unique_ptr<ImageSource> open_recordio(const std::string& rec_path, const std::string& idx_path);

// All samples of the configured paths with validated labels.
class TrainDataset {
 public:
  // Opens every path of cfg.paths: a folder holding train.rec + train.idx, a folder of *.h5 shards
  // (or a dataset folder with shards/), or an .h5 file. Throws for an empty folder, a label < 0 or
  // >= num_classes, and unreadable files, naming the file.
  explicit TrainDataset(const TrainDataConfig& cfg);

  int64_t size() const { return static_cast<int64_t>(refs_.size()); }
  int64_t num_classes() const { return num_classes_; }
  int64_t label(int64_t i) const { return labels_[static_cast<size_t>(i)]; }
  std::string read(int64_t i);  // encoded bytes of sample i
  std::string describe(int64_t i) const;  // "<file>[record]" for messages
  const std::vector<std::unique_ptr<ImageSource>>& sources() const { return sources_; }

 private:
  struct Ref {
    int32_t source;
    int64_t index;
  };
  std::vector<std::unique_ptr<ImageSource>> sources_;
  std::vector<Ref> refs_;
  std::vector<int64_t> labels_;
  int64_t num_classes_ = 0;
  std::mutex read_mutex_;
};

struct TrainBatch {
  int64_t position = 0;         // global batch number: epoch · batches_per_epoch + index
  int64_t epoch = 0;
  int64_t index = 0;            // batch within its epoch
  at::Tensor images;            // [B', 3, 112, 112] float32
  at::Tensor labels;            // [B'] int64
  std::vector<int64_t> samples; // dataset indices of the rows
  int64_t corrupt = 0;          // samples of this batch left out (image did not decode)
};

// The permutation of epoch `epoch` (Fisher-Yates on a SplitMix64 stream; portable, not std::shuffle).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

// Decodes one encoded image and applies the augmentations with a generator seeded from `sample_seed`.
// Returns false (and leaves `out` alone) when the bytes do not decode. out: [3, 112, 112] float32.
bool decode_and_augment(const std::string& bytes, const TrainDataConfig& cfg, uint64_t sample_seed, at::Tensor out);

class TrainLoader {
 public:
  TrainLoader(std::shared_ptr<TrainDataset> dataset, TrainDataConfig cfg, uint64_t seed);
  ~TrainLoader();
  TrainLoader(const TrainLoader&) = delete;
  TrainLoader& operator=(const TrainLoader&) = delete;

  int64_t batches_per_epoch() const { return batches_per_epoch_; }  // the last partial batch is dropped
  // Restarts the stream at a global batch position (0 at the start; the checkpoint's on resume).
  void start(int64_t position);
  // The next batch of the stream (blocks while the background thread prepares it).
  TrainBatch next();
  // The batch at a position, prepared on the calling thread (used by the stream and by benchmarks).
  TrainBatch make_batch(int64_t position);
  // Images skipped in the batches next() has returned (not those prefetched and not yet taken).
  int64_t corrupt_total() const { return corrupt_total_.load(); }
  const TrainDataset& dataset() const { return *dataset_; }

 private:
  void stop();
  void produce(int64_t first);

  std::shared_ptr<TrainDataset> dataset_;
  TrainDataConfig cfg_;
  uint64_t seed_;
  int64_t batches_per_epoch_ = 0;
  std::atomic<int64_t> corrupt_total_{0};

  // permutation cache (producer side)
  std::mutex perm_mutex_;
  int64_t perm_epoch_ = -1;
  std::vector<int64_t> perm_;

  // background stream
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<TrainBatch> queue_;
  std::exception_ptr error_;
  bool stopping_ = false;
  int64_t next_position_ = 0;
};

}  // namespace idsynth::recognition
