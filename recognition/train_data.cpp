// Ref: insightface recognition/arcface_torch/dataset.py; mxnet python/mxnet/recordio.py; dmlc-core
//      include/dmlc/recordio.h; mk-minchul/AdaFace dataset/augmenter.py; torchvision transforms.
#include "recognition/train_data.h"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/check.h"
#include "core/splitmix.h"
#include "core/file_util.h"
#include "core/log.h"
#include "formats/image.h"
#include "formats/recordio.h"
#include "formats/shard_file.h"

namespace idsynth::recognition {

namespace {

namespace fs = std::filesystem;

constexpr int kSize = 112;                   // training crop side

using Rng = SplitMixRng;
uint64_t mix(uint64_t a, uint64_t b) { return mix_seeds(a, b); }

// ---------------------------------------------------------------------------------------------
// Sources: the readers of formats/ behind the ImageSource interface

class ShardSource : public ImageSource {
 public:
  ShardSource(const std::string& path, const std::string& image) : reader_(path, image) {}
  const std::string& path() const override { return reader_.path(); }
  int64_t size() const override { return static_cast<int64_t>(reader_.labels().size()); }
  const std::vector<int64_t>& labels() const override { return reader_.labels(); }
  std::string read(int64_t i) override { return reader_.read(i); }

 private:
  formats::ShardImageReader reader_;
};

// insightface's MXFaceDataset: when record 0 is a header (flag > 0), its label holds the end of the
// image keys 1 .. label − 1; otherwise every record is an image.
class RecordIOSource : public ImageSource {
 public:
  RecordIOSource(const std::string& rec, const std::string& idx) : reader_(rec, idx) {
    std::vector<uint64_t> keys;
    bool header0 = false;
    if (reader_.contains(0)) {
      const formats::IRHeader h = formats::unpack_irheader(reader_.read(0), nullptr, cat(rec, ": record 0"));
      if (h.flag > 0) {
        header0 = true;
        const double end = h.labels[0];
        IDSYNTH_CHECK(std::isfinite(end) && end >= 1 && end < 4294967296.0, rec,
                      ": record 0: header label: expected the end of the image keys, found ", end);
        for (uint64_t k = 1; k < static_cast<uint64_t>(end); ++k) {
          IDSYNTH_CHECK(reader_.contains(k), idx, ": key ", k, ": expected by the header record (images 1..",
                        static_cast<uint64_t>(end) - 1, "), not in the index");
          keys.push_back(k);
        }
      }
    }
    if (!header0) keys = reader_.keys();
    keys_.reserve(keys.size());
    labels_.reserve(keys.size());
    for (uint64_t k : keys) {
      const formats::IRHeader h = formats::unpack_irheader(reader_.read(k), nullptr, cat(rec, ": record ", k));
      const double label = h.flag > 0 ? h.labels[0] : h.label;
      IDSYNTH_CHECK(std::isfinite(label) && label == std::floor(label), rec, ": record ", k,
                    ": label: expected a whole number, found ", label);
      keys_.push_back(k);
      labels_.push_back(static_cast<int64_t>(label));
    }
  }
  const std::string& path() const override { return reader_.path(); }
  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  const std::vector<int64_t>& labels() const override { return labels_; }
  std::string read(int64_t i) override {
    std::string image;
    formats::unpack_irheader(reader_.read(keys_[static_cast<size_t>(i)]), &image, cat(reader_.path(), ": record ", i));
    return image;
  }

 private:
  formats::RecordIOReader reader_;
  std::vector<uint64_t> keys_;
  std::vector<int64_t> labels_;
};

// ---------------------------------------------------------------------------------------------
// Augmentation

void random_resized_crop(cv::Mat& img, double min_scale, Rng& rng) {
  const int H = img.rows, W = img.cols;
  const double area = static_cast<double>(H) * W;
  cv::Rect roi;
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target = area * rng.uniform(min_scale, 1.0);
    const double ratio = std::exp(rng.uniform(std::log(3.0 / 4.0), std::log(4.0 / 3.0)));
    const int w = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int h = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (w > 0 && h > 0 && w <= W && h <= H) {
      roi = cv::Rect(static_cast<int>(rng.randint(0, W - w)), static_cast<int>(rng.randint(0, H - h)), w, h);
      found = true;
    }
  }
  if (!found) roi = cv::Rect(0, 0, W, H);
  cv::Mat out;
  cv::resize(img(roi), out, cv::Size(kSize, kSize), 0, 0, cv::INTER_LINEAR);
  img = out;
}

void color_jitter(cv::Mat& img, double strength, Rng& rng) {
  const double b = rng.uniform(1 - strength, 1 + strength);
  const double c = rng.uniform(1 - strength, 1 + strength);
  const double s = rng.uniform(1 - strength, 1 + strength);
  cv::Mat f;
  img.convertTo(f, CV_32FC3, b);
  cv::Mat gray;
  cv::cvtColor(f, gray, cv::COLOR_RGB2GRAY);
  const double mean = cv::mean(gray)[0];
  f = (f - cv::Scalar::all(mean)) * c + cv::Scalar::all(mean);
  cv::cvtColor(f, gray, cv::COLOR_RGB2GRAY);
  cv::Mat gray3;
  cv::cvtColor(gray, gray3, cv::COLOR_GRAY2RGB);
  f = gray3 + (f - gray3) * s;
  f.convertTo(img, CV_8UC3);  // saturates to [0, 255]
}

void low_resolution(cv::Mat& img, double min_scale, Rng& rng) {
  static const int kInterp[] = {cv::INTER_NEAREST, cv::INTER_LINEAR, cv::INTER_AREA, cv::INTER_CUBIC, cv::INTER_LANCZOS4};
  const int side = std::max(1, static_cast<int>(rng.uniform(min_scale, 1.0) * img.rows));
  cv::Mat small, out;
  cv::resize(img, small, cv::Size(side, side), 0, 0, kInterp[rng.randint(0, 4)]);
  cv::resize(small, out, img.size(), 0, 0, kInterp[rng.randint(0, 4)]);
  img = out;
}

void random_erase(float* chw, double max_area, Rng& rng) {
  const double area = static_cast<double>(kSize) * kSize;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(0.02, max_area);
    const double ratio = std::exp(rng.uniform(std::log(0.3), std::log(3.3)));
    const int h = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int w = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (h < 1 || w < 1 || h > kSize || w > kSize) continue;
    const int64_t i0 = rng.randint(0, kSize - h), j0 = rng.randint(0, kSize - w);
    for (int c = 0; c < 3; ++c)
      for (int64_t i = i0; i < i0 + h; ++i) std::fill_n(chw + (c * kSize + i) * kSize + j0, w, 0.0f);
    return;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::unique_ptr<ImageSource> open_shard(const std::string& path, const std::string& image) {
  return std::make_unique<ShardSource>(path, image);
}

std::unique_ptr<ImageSource> open_recordio(const std::string& rec_path, const std::string& idx_path) {
  return std::make_unique<RecordIOSource>(rec_path, idx_path);
}


// ---------------------------------------------------------------------------------------------
// TrainDataset

TrainDataset::TrainDataset(const TrainDataConfig& cfg) {
  IDSYNTH_CHECK(!cfg.paths.empty(), "train config: data.paths: expected at least one shard or RecordIO folder, found none");
  for (const std::string& p : cfg.paths) {
    const fs::path path(p);
    IDSYNTH_CHECK(fs::exists(path), p, ": data path: expected a shard folder, an .h5 file or a RecordIO folder, not found");
    if (fs::is_regular_file(path)) {
      sources_.push_back(open_shard(p, cfg.image));
      continue;
    }
    if (fs::exists(path / "train.rec") && fs::exists(path / "train.idx")) {
      sources_.push_back(open_recordio((path / "train.rec").string(), (path / "train.idx").string()));
      continue;
    }
    std::vector<std::string> shards;
    for (const fs::path& dir : {path, path / "shards"}) {
      if (!fs::is_directory(dir)) continue;
      for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file() && e.path().extension() == ".h5") shards.push_back(e.path().string());
    }
    std::sort(shards.begin(), shards.end());
    IDSYNTH_CHECK(!shards.empty(), p, ": data path: expected HDF5 shards (*.h5 or shards/*.h5) or train.rec + train.idx, found none");
    for (const auto& s : shards) sources_.push_back(open_shard(s, cfg.image));
  }
  // Labels: validated against the class count (given, or the largest + 1), or relabelled densely.
  int64_t max_label = -1;
  std::set<int64_t> distinct;
  for (size_t s = 0; s < sources_.size(); ++s) {
    const auto& labels = sources_[s]->labels();
    for (size_t i = 0; i < labels.size(); ++i) {
      IDSYNTH_CHECK(labels[i] >= 0, sources_[s]->path(), ": labels[", i, "]: expected >= 0, found ", labels[i]);
      max_label = std::max(max_label, labels[i]);
      if (cfg.relabel) distinct.insert(labels[i]);
      refs_.push_back({static_cast<int32_t>(s), static_cast<int64_t>(i)});
      labels_.push_back(labels[i]);
    }
  }
  IDSYNTH_CHECK(!refs_.empty(), "train config: data.paths: the shards hold no images");
  if (cfg.relabel) {
    std::map<int64_t, int64_t> dense;
    for (int64_t l : distinct) dense.emplace(l, static_cast<int64_t>(dense.size()));
    for (auto& l : labels_) l = dense.at(l);
    max_label = static_cast<int64_t>(dense.size()) - 1;
  }
  num_classes_ = cfg.num_classes > 0 ? cfg.num_classes : max_label + 1;
  if (max_label >= num_classes_) {
    for (size_t k = 0; k < labels_.size(); ++k)
      if (labels_[k] >= num_classes_)
        fail(sources_[refs_[k].source]->path(), ": labels[", refs_[k].index, "]: expected a class below data.num_classes = ",
             num_classes_, ", found ", labels_[k]);
  }
  LOG_INF("training data: ", refs_.size(), " images, ", num_classes_, " classes, from ", sources_.size(), " file(s)");
}

std::string TrainDataset::read(int64_t i) {
  const Ref& r = refs_[static_cast<size_t>(i)];
  std::lock_guard<std::mutex> lock(read_mutex_);
  return sources_[static_cast<size_t>(r.source)]->read(r.index);
}

std::string TrainDataset::describe(int64_t i) const {
  const Ref& r = refs_[static_cast<size_t>(i)];
  return cat(sources_[static_cast<size_t>(r.source)]->path(), "[", r.index, "]");
}

// ---------------------------------------------------------------------------------------------
// Order and augmentation

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  uint64_t state = mix(seed, static_cast<uint64_t>(epoch) + 1);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(splitmix64_next(state) % static_cast<uint64_t>(i + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

bool decode_and_augment(const std::string& bytes, const TrainDataConfig& cfg, uint64_t sample_seed, at::Tensor out) {
  cv::Mat img;
  try {
    img = formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "training image");
  } catch (const Error&) {
    return false;
  }
  if (img.empty() || img.channels() != 3) return false;
  if (img.rows != kSize || img.cols != kSize) {
    cv::Mat r;
    cv::resize(img, r, cv::Size(kSize, kSize), 0, 0, img.rows > kSize ? cv::INTER_AREA : cv::INTER_LINEAR);
    img = r;
  }
  Rng rng(sample_seed);
  // Every draw happens whether or not its augmentation is on, so turning one off leaves the others' draws alone.
  const bool flip = rng.chance(cfg.flip_p), crop = rng.chance(cfg.crop_p), color = rng.chance(cfg.color_p),
             low = rng.chance(cfg.low_res_p), erase = rng.chance(cfg.erase_p);
  if (crop) random_resized_crop(img, cfg.crop_min_scale, rng);
  if (low) low_resolution(img, cfg.low_res_min_scale, rng);
  if (color) color_jitter(img, cfg.color_strength, rng);
  if (flip) cv::flip(img, img, 1);
  if (!img.isContinuous()) img = img.clone();
  // HWC uint8 -> CHW float, (x/255 − 0.5)/0.5
  float* dst = out.data_ptr<float>();
  const uint8_t* src = img.ptr<uint8_t>();
  for (int i = 0; i < kSize * kSize; ++i)
    for (int c = 0; c < 3; ++c) dst[c * kSize * kSize + i] = (static_cast<float>(src[i * 3 + c]) / 255.0f - 0.5f) / 0.5f;
  if (erase) random_erase(dst, cfg.erase_max_area, rng);
  return true;
}

// ---------------------------------------------------------------------------------------------
// TrainLoader

TrainLoader::TrainLoader(std::shared_ptr<TrainDataset> dataset, TrainDataConfig cfg, uint64_t seed)
    : dataset_(std::move(dataset)), cfg_(std::move(cfg)), seed_(seed) {
  batches_per_epoch_ = dataset_->size() / cfg_.batch_size;
  IDSYNTH_CHECK(batches_per_epoch_ >= 1, "train config: data.batch_size: expected at most the ", dataset_->size(),
                " training images, found ", cfg_.batch_size);
}

TrainLoader::~TrainLoader() { stop(); }

TrainBatch TrainLoader::make_batch(int64_t position) {
  TrainBatch b;
  b.position = position;
  b.epoch = position / batches_per_epoch_;
  b.index = position % batches_per_epoch_;
  std::vector<int64_t> samples;
  {
    std::lock_guard<std::mutex> lock(perm_mutex_);
    if (perm_epoch_ != b.epoch) {
      perm_ = epoch_permutation(dataset_->size(), seed_, b.epoch);
      perm_epoch_ = b.epoch;
    }
    const auto first = perm_.begin() + b.index * cfg_.batch_size;
    samples.assign(first, first + cfg_.batch_size);
  }
  // 1. encoded bytes (sequential: one reader per file), 2. decode + augment in parallel
  const int64_t n = static_cast<int64_t>(samples.size());
  std::vector<std::string> bytes(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) bytes[static_cast<size_t>(k)] = dataset_->read(samples[static_cast<size_t>(k)]);
  at::Tensor images = at::empty({n, 3, kSize, kSize}, at::kFloat);
  std::vector<char> ok(static_cast<size_t>(n), 0);
  const uint64_t epoch_seed = mix(seed_, static_cast<uint64_t>(b.epoch) + 0x5eed);
  tbb::parallel_for(int64_t{0}, n, [&](int64_t k) {
    const uint64_t sample_seed = mix(epoch_seed, static_cast<uint64_t>(b.index * cfg_.batch_size + k));
    ok[static_cast<size_t>(k)] = decode_and_augment(bytes[static_cast<size_t>(k)], cfg_, sample_seed, images[k]);
  });
  // 3. corrupt images are left out and counted
  std::vector<int64_t> keep, labels;
  for (int64_t k = 0; k < n; ++k) {
    if (ok[static_cast<size_t>(k)]) {
      keep.push_back(k);
      labels.push_back(dataset_->label(samples[static_cast<size_t>(k)]));
      b.samples.push_back(samples[static_cast<size_t>(k)]);
    } else {
      ++b.corrupt;
      LOG_WRN(dataset_->describe(samples[static_cast<size_t>(k)]), ": image does not decode; skipped");
    }
  }
  b.images = static_cast<int64_t>(keep.size()) == n ? images : images.index_select(0, at::tensor(keep, at::kLong));
  b.labels = at::tensor(labels, at::kLong);
  return b;
}

void TrainLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  queue_.clear();
  error_ = nullptr;
  stopping_ = false;
}

void TrainLoader::produce(int64_t first) {
  for (int64_t pos = first;; ++pos) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || static_cast<int64_t>(queue_.size()) < cfg_.prefetch; });
      if (stopping_) return;
    }
    try {
      TrainBatch b = make_batch(pos);
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(b));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    cv_.notify_all();
  }
}

void TrainLoader::start(int64_t position) {
  stop();
  next_position_ = position;
  if (cfg_.prefetch > 0) worker_ = std::thread([this, position] { produce(position); });
}

TrainBatch TrainLoader::next() {
  if (cfg_.prefetch == 0) {
    TrainBatch b = make_batch(next_position_++);
    corrupt_total_ += b.corrupt;
    return b;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !queue_.empty() || error_ != nullptr; });
  if (queue_.empty() && error_) std::rethrow_exception(error_);
  TrainBatch b = std::move(queue_.front());
  queue_.pop_front();
  ++next_position_;
  lock.unlock();
  cv_.notify_all();
  // Counted when handed out: batches prefetched but never used do not count.
  corrupt_total_ += b.corrupt;
  return b;
}

}  // namespace idsynth::recognition
