// Ref: diffusers examples/text_to_image/train_text_to_image.py (train_transforms: Resize(bilinear),
//      CenterCrop/RandomCrop, RandomHorizontalFlip, ToTensor, Normalize([0.5], [0.5]));
//      torchvision transforms (Resize of the shorter side, CenterCrop rounding, RandomCrop.get_params);
//      insightface arcface_torch/dataset.py (MXFaceDataset) through recognition/train_data.h.
#include "generator/train_generator_data.h"

#include <ATen/ATen.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <opencv2/imgproc.hpp>

#include "core/check.h"
#include "core/splitmix.h"
#include "core/file_util.h"
#include "core/hashing.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "formats/image.h"
#include "formats/shard_file.h"
#include "recognition/face_embedder.h"
#include "recognition/recognizer.h"
#include "recognition/scrfd.h"
#include "recognition/train_data.h"

namespace idsynth::generator {

namespace {

namespace fs = std::filesystem;

constexpr int64_t kEmbedBatch = 32;  // images decoded and embedded per recogniser call
// Changing what the cache holds or how it is keyed changes this, so old caches read as stale.
constexpr const char* kCacheFormat = "idsynth-train-generator-vectors-1";
constexpr const char* kCacheKey = "idsynth_vector_cache_key";

// Per-sample generators are seeded from (seed, epoch, position) (core/splitmix.h) so a batch does not
// depend on threads or restarts.
using Rng = SplitMixRng;
uint64_t mix(uint64_t a, uint64_t b) { return mix_seeds(a, b); }

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // The formats formats/image.h decodes for untrusted files.
  static const char* const kExts[] = {".jpg", ".jpeg", ".png", ".bmp", ".webp"};
  return std::find(std::begin(kExts), std::end(kExts), ext) != std::end(kExts);
}

// "<path>\t<size>\t<mtime>": what the cache key knows of a file. A changed file changes its size or
// its modification time; the content is not hashed, as folders of photos can be large.
std::string file_stamp(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  IDSYNTH_CHECK(!ec, path, ": expected a readable file, cannot stat it (", ec.message(), ")");
  const auto mtime = fs::last_write_time(path, ec).time_since_epoch().count();
  IDSYNTH_CHECK(!ec, path, ": expected a readable file, cannot stat it (", ec.message(), ")");
  return cat(path, "\t", size, "\t", mtime, "\n");
}

// A folder of photos, one sub-folder per person, as an ImageSource: record i is a file.
class FolderSource : public recognition::ImageSource {
 public:
  explicit FolderSource(const std::string& root) : root_(root) {
    std::vector<fs::path> persons;
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_directory()) persons.push_back(e.path());
    std::sort(persons.begin(), persons.end());
    int64_t label = 0;
    for (const auto& person : persons) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(person))
        if (e.is_regular_file() && is_image_file(e.path())) files.push_back(e.path().string());
      if (files.empty()) continue;  // not a person: nothing to learn from it
      std::sort(files.begin(), files.end());
      for (auto& f : files) {
        files_.push_back(std::move(f));
        labels_.push_back(label);
      }
      ++label;
    }
  }
  const std::string& path() const override { return root_; }
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  const std::vector<int64_t>& labels() const override { return labels_; }
  std::string read(int64_t i) override { return read_text_file(files_[static_cast<size_t>(i)]); }
  const std::vector<std::string>& files() const { return files_; }

 private:
  std::string root_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
};

// Where a pair's vector comes from.
enum class VectorFrom {
  kStored,   // the shard's identity_vectors row of the image's label
  kAligned,  // the recogniser on the image as an aligned crop
  kPhoto,    // SCRFD detection, alignment, then the recogniser
};

struct Source {
  std::string kind;                                  // "shard", "RecordIO", "folder"
  int group = 0;                                     // index in data.paths: labels name identities within one path
  std::unique_ptr<recognition::ImageSource> images;  // what the model trains on
  std::unique_ptr<recognition::ImageSource> embed;   // what the recogniser sees, when not `images`
  FolderSource* folder = nullptr;                    // `images` when kind is "folder"
  VectorFrom from = VectorFrom::kAligned;
  std::vector<std::string> stamped_files;  // the files the cache key covers
  // kStored: the shard's identity vectors by label
  std::map<int64_t, int64_t> row_of_label;
  std::vector<float> stored;
  int64_t stored_dim = 0;

  recognition::ImageSource& embed_source() { return embed ? *embed : *images; }
  const recognition::ImageSource& embed_source() const { return embed ? *embed : *images; }
  std::string describe(int64_t i) const {
    if (folder) return folder->files()[static_cast<size_t>(i)];
    return cat(images->path(), "[", i, "]");
  }
};

// Resize (shorter side to `res`), crop, optionally flip, and scale to [-1, 1] CHW float.
// Shrinking uses INTER_AREA (the anti-aliased counterpart of PIL's bilinear reduction that
// torchvision's Resize applies to images), growing INTER_LINEAR (bilinear, diffusers' choice).
// rng == nullptr: centre crop, flipped when `flip`. Returns whether the image was flipped.
bool to_model_image(cv::Mat rgb, int64_t res, bool random_crop, double flip_p, Rng* rng, float* dst, bool flip = false) {
  // The flip is drawn first and always, so it depends neither on the image size nor on the crop mode.
  if (rng != nullptr) flip = rng->uniform() < flip_p;
  const int R = static_cast<int>(res);
  const int h = rgb.rows, w = rgb.cols;
  const int shorter = std::min(h, w);
  if (shorter != R) {
    // torchvision Resize(int): the longer side is int(size · long / short), truncated.
    const int long_side = static_cast<int>(static_cast<int64_t>(R) * std::max(h, w) / shorter);
    const cv::Size size = w <= h ? cv::Size(R, long_side) : cv::Size(long_side, R);
    cv::Mat resized;
    cv::resize(rgb, resized, size, 0, 0, shorter > R ? cv::INTER_AREA : cv::INTER_LINEAR);
    rgb = resized;
  }
  int top = 0, left = 0;
  if (rng != nullptr && random_crop) {
    top = static_cast<int>(rng->randint(0, rgb.rows - R));
    left = static_cast<int>(rng->randint(0, rgb.cols - R));
  } else {
    // torchvision CenterCrop: int(round((size − crop) / 2)), Python's round (half to even).
    top = static_cast<int>(std::nearbyint((rgb.rows - R) / 2.0));
    left = static_cast<int>(std::nearbyint((rgb.cols - R) / 2.0));
  }
  cv::Mat crop = rgb(cv::Rect(left, top, R, R));
  if (flip) {
    cv::Mat flipped;
    cv::flip(crop, flipped, 1);
    crop = flipped;
  }
  if (!crop.isContinuous()) crop = crop.clone();
  const uint8_t* src = crop.ptr<uint8_t>();
  const int64_t plane = res * res;
  for (int64_t i = 0; i < plane; ++i)
    for (int c = 0; c < 3; ++c) dst[c * plane + i] = static_cast<float>(src[i * 3 + c]) / 127.5f - 1.0f;
  return flip;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct GeneratorTrainData::Impl {
  struct Ref {
    int32_t source;
    int64_t index;
  };
  GeneratorDataConfig cfg;
  int64_t resolution = 0;
  std::vector<Source> sources;
  std::vector<Ref> refs;
  std::vector<int64_t> labels;
  at::Tensor vectors;  // [N, D] float32
  bool from_cache = false;
  std::unique_ptr<tbb::task_arena> arena;

  mutable std::mutex read_mutex;  // ImageSource::read is for one thread at a time
  mutable std::mutex perm_mutex;
  mutable int64_t perm_epoch = -1;
  mutable uint64_t perm_seed = 0;
  mutable std::vector<int64_t> perm;

  void open_path(const std::string& p, int group);
  void open_shard(const std::string& path, int group);
  void compute_vectors(const std::string& cache_path);
  at::Tensor embed_all(const std::vector<int64_t>& jobs, const recognition::FaceEmbedder& embedder);

  std::string read(int64_t i) const {
    const Ref& r = refs[static_cast<size_t>(i)];
    std::lock_guard<std::mutex> lock(read_mutex);
    return sources[static_cast<size_t>(r.source)].images->read(r.index);
  }
  std::string describe(int64_t i) const {
    const Ref& r = refs[static_cast<size_t>(i)];
    return sources[static_cast<size_t>(r.source)].describe(r.index);
  }
  cv::Mat decode(const std::string& bytes, int64_t i) const {
    return formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), describe(i));
  }
};

void GeneratorTrainData::Impl::open_shard(const std::string& path, int group) {
  // read_shard reads the image bytes too; it is the one reader of the identity vectors.
  const formats::ShardData d = formats::read_shard(path);
  Source s;
  s.kind = "shard";
  s.group = group;
  // "auto" prefers the full images here (the generator's own output), unlike FR training.
  const std::string name = cfg.image == "auto" ? (d.has_images ? "images" : "aligned") : cfg.image;
  s.images = recognition::open_shard(path, name);
  s.stamped_files = {path};
  if (cfg.id_vector == "identity") {
    s.from = VectorFrom::kStored;
    s.stored = d.identity_vectors;
    s.stored_dim = d.dim;
    for (size_t k = 0; k < d.identity_index.size(); ++k) s.row_of_label[d.identity_index[k]] = static_cast<int64_t>(k);
    const auto& labels = s.images->labels();
    for (size_t i = 0; i < labels.size(); ++i)
      IDSYNTH_CHECK(s.row_of_label.count(labels[i]), path, ": labels[", i, "] = ", labels[i],
                    ": expected an identity listed in identity_index (data.id_vector: identity), not found");
  } else if (d.has_aligned) {
    s.from = VectorFrom::kAligned;
    if (name != "aligned") s.embed = recognition::open_shard(path, "aligned");
  } else {
    s.from = cfg.detector.empty() ? VectorFrom::kAligned : VectorFrom::kPhoto;
    if (name != "images") s.embed = recognition::open_shard(path, "images");
  }
  sources.push_back(std::move(s));
}

void GeneratorTrainData::Impl::open_path(const std::string& p, int group) {
  const fs::path path(p);
  IDSYNTH_CHECK(fs::exists(path), p,
                ": data path: expected a shard folder, an .h5 file, a RecordIO folder or an image folder, not found");
  if (fs::is_regular_file(path)) {
    open_shard(p, group);
    return;
  }
  if (fs::exists(path / "train.rec") && fs::exists(path / "train.idx")) {
    Source s;
    s.kind = "RecordIO";
    s.group = group;
    s.images = recognition::open_recordio((path / "train.rec").string(), (path / "train.idx").string());
    s.from = VectorFrom::kAligned;
    s.stamped_files = {(path / "train.rec").string(), (path / "train.idx").string()};
    sources.push_back(std::move(s));
    return;
  }
  std::vector<std::string> shards;
  for (const fs::path& dir : {path, path / "shards"}) {
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".h5") shards.push_back(e.path().string());
  }
  std::sort(shards.begin(), shards.end());
  if (!shards.empty()) {
    for (const auto& s : shards) open_shard(s, group);
    return;
  }
  auto folder = std::make_unique<FolderSource>(p);
  IDSYNTH_CHECK(folder->size() > 0, p,
                ": data path: expected HDF5 shards (*.h5 or shards/*.h5), train.rec + train.idx, or one sub-folder of "
                "images per person, found none");
  Source s;
  s.kind = "folder";
  s.group = group;
  s.folder = folder.get();
  s.stamped_files = folder->files();
  s.from = cfg.alignment == "detect" ? VectorFrom::kPhoto : VectorFrom::kAligned;
  s.images = std::move(folder);
  sources.push_back(std::move(s));
}

// The recogniser's vectors of the pairs `jobs` (L2-normalised, [J, D]), in batches: bytes read in
// order, decoded in parallel, embedded in one call per batch.
at::Tensor GeneratorTrainData::Impl::embed_all(const std::vector<int64_t>& jobs,
                                               const recognition::FaceEmbedder& embedder) {
  std::vector<at::Tensor> rows;
  rows.reserve(jobs.size());
  log::Stopwatch watch;
  for (size_t begin = 0; begin < jobs.size(); begin += static_cast<size_t>(kEmbedBatch)) {
    const size_t end = std::min(jobs.size(), begin + static_cast<size_t>(kEmbedBatch));
    const int64_t n = static_cast<int64_t>(end - begin);
    std::vector<std::string> bytes(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) {
      const Ref& r = refs[static_cast<size_t>(jobs[begin + static_cast<size_t>(k)])];
      bytes[static_cast<size_t>(k)] = sources[static_cast<size_t>(r.source)].embed_source().read(r.index);
    }
    std::vector<cv::Mat> bgr(static_cast<size_t>(n));
    arena->execute([&] {
      tbb::parallel_for(int64_t{0}, n, [&](int64_t k) {
        const cv::Mat rgb = decode(bytes[static_cast<size_t>(k)], jobs[begin + static_cast<size_t>(k)]);
        cv::cvtColor(rgb, bgr[static_cast<size_t>(k)], cv::COLOR_RGB2BGR);
      });
    });
    // One batch holds one kind of job or both; each goes through its own embedder call.
    std::vector<cv::Mat> photos, crops;
    std::vector<int64_t> photo_at, crop_at;
    for (int64_t k = 0; k < n; ++k) {
      const Ref& r = refs[static_cast<size_t>(jobs[begin + static_cast<size_t>(k)])];
      if (sources[static_cast<size_t>(r.source)].from == VectorFrom::kPhoto) {
        photos.push_back(bgr[static_cast<size_t>(k)]);
        photo_at.push_back(k);
      } else {
        crops.push_back(bgr[static_cast<size_t>(k)]);
        crop_at.push_back(k);
      }
    }
    std::vector<at::Tensor> batch(static_cast<size_t>(n));
    if (!photos.empty()) {
      const auto results = embedder.embed_photos(photos);
      for (size_t q = 0; q < results.size(); ++q) {
        const int64_t i = jobs[begin + static_cast<size_t>(photo_at[q])];
        const Ref& r = refs[static_cast<size_t>(i)];
        if (!results[q].ok && sources[static_cast<size_t>(r.source)].kind == "folder")
          fail(describe(i), ": no face found (data.alignment: detect); remove it or set data.alignment: aligned");
        IDSYNTH_CHECK(results[q].ok, describe(i), ": no face found (", results[q].error,
                      "; the shard has no aligned crops and data.detector is set); remove data.detector to embed the "
                      "whole images");
        batch[static_cast<size_t>(photo_at[q])] = results[q].embedding;
      }
    }
    if (!crops.empty()) {
      const auto results = embedder.embed_aligned(crops);
      for (size_t q = 0; q < results.size(); ++q) {
        const int64_t i = jobs[begin + static_cast<size_t>(crop_at[q])];
        IDSYNTH_CHECK(results[q].ok, describe(i), ": expected an aligned face crop the recogniser can embed, found ",
                      results[q].error);
        batch[static_cast<size_t>(crop_at[q])] = results[q].embedding;
      }
    }
    for (auto& t : batch) rows.push_back(t.to(at::kFloat));
    if ((begin / static_cast<size_t>(kEmbedBatch)) % 50 == 49)
      LOG_INF("ID vectors: ", end, " / ", jobs.size(), " images embedded, ", format_number("%.1f", watch.seconds()),
              " s");
  }
  LOG_INF("ID vectors: ", jobs.size(), " images embedded with ", embedder.recognizer().describe(), ", taking ",
          format_number("%.2f", watch.seconds()), " s");
  return at::stack(rows);
}

void GeneratorTrainData::Impl::compute_vectors(const std::string& cache_path) {
  const int64_t n = static_cast<int64_t>(refs.size());
  // 1. which pairs need the recogniser, and whether everything it needs was given
  std::vector<int64_t> jobs;
  std::vector<int64_t> jobs_of_source(sources.size(), 0);
  bool photos = false;
  for (int64_t i = 0; i < n; ++i) {
    const Ref& r = refs[static_cast<size_t>(i)];
    const Source& s = sources[static_cast<size_t>(r.source)];
    if (s.from == VectorFrom::kStored) continue;
    jobs.push_back(i);
    ++jobs_of_source[static_cast<size_t>(r.source)];
    photos = photos || s.from == VectorFrom::kPhoto;
  }
  at::Tensor embedded;
  std::string recognizer_hash;
  int64_t recognizer_width = 0;
  if (!jobs.empty()) {
    const Source& first = sources[static_cast<size_t>(refs[static_cast<size_t>(jobs[0])].source)];
    const std::string why = first.kind == "shard" ? "shard images with data.id_vector: image" : first.kind + " images";
    IDSYNTH_CHECK(!cfg.recognizer.empty(), "data.recognizer: expected an ONNX / IResNet recogniser file to embed ",
                  first.images->path(), " (", why, "), found none");
    IDSYNTH_CHECK(fs::is_regular_file(cfg.recognizer), cfg.recognizer,
                  ": data.recognizer: expected a recogniser file, not found");
    for (const Source& s : sources)
      if (s.from == VectorFrom::kPhoto && s.kind == "folder")
        IDSYNTH_CHECK(!cfg.detector.empty(), "data.detector: expected an SCRFD ONNX file to find the faces in ",
                      s.images->path(), " (data.alignment: detect), found none; or set data.alignment: aligned");
    if (photos)
      IDSYNTH_CHECK(fs::is_regular_file(cfg.detector), cfg.detector,
                    ": data.detector: expected an SCRFD ONNX file, not found");

    // 2. the cache key: the recogniser's (and detector's) bytes, every source file's size and time,
    //    how each source is embedded and how many of its records
    recognizer_hash = sha256_file(cfg.recognizer);
    std::string manifest = cat(kCacheFormat, "\nrecognizer\t", recognizer_hash, "\n");
    if (photos) manifest += cat("detector\t", sha256_file(cfg.detector), "\n");
    for (size_t k = 0; k < sources.size(); ++k) {
      if (jobs_of_source[k] == 0) continue;
      const Source& s = sources[k];
      manifest += cat("source\t", s.kind, "\t", s.embed_source().path(), "\t", static_cast<int>(s.from), "\t",
                      jobs_of_source[k], "\n");
      for (const auto& f : s.stamped_files) manifest += file_stamp(f);
    }
    const std::string key = sha256_hex(manifest);

    // 3. the cache when it matches and holds what it should; any doubt recomputes
    if (!cache_path.empty() && fs::exists(cache_path)) {
      try {
        const SafeTensorsFile file(cache_path);
        const auto it = file.metadata().find(kCacheKey);
        if (it == file.metadata().end() || it->second != key) {
          LOG_INF(cache_path, ": ID vector cache is stale (sources or recogniser changed); recomputing");
        } else {
          const at::Tensor t = file.tensor("vectors");
          IDSYNTH_CHECK(t.scalar_type() == at::kFloat && t.dim() == 2 &&
                            t.size(0) == static_cast<int64_t>(jobs.size()) && t.size(1) > 0,
                        cache_path, ": vectors: expected float32 [", jobs.size(), ", D], found another shape or type");
          embedded = t.clone();
          from_cache = true;
          LOG_INF(cache_path, ": ", jobs.size(), " ID vectors from the cache");
        }
      } catch (const std::exception& e) {
        LOG_WRN(cache_path, ": ID vector cache unusable (", e.what(), "); recomputing");
      }
    }
    if (!embedded.defined()) {
      std::shared_ptr<const recognition::Recognizer> recognizer =
          recognition::load_recognizer(cfg.recognizer, c10::kCPU);
      std::shared_ptr<const recognition::ScrfdDetector> detector;
      if (photos) detector = std::make_shared<const recognition::ScrfdDetector>(cfg.detector, c10::kCPU);
      const recognition::FaceEmbedder embedder(recognizer, detector);
      embedded = embed_all(jobs, embedder).contiguous();
      if (!cache_path.empty()) {
        const fs::path parent = fs::path(cache_path).parent_path();
        if (!parent.empty()) fs::create_directories(parent);
        save_safetensors(cache_path, {{"vectors", embedded}}, {{kCacheKey, key}});
      }
    }
    recognizer_width = embedded.size(1);
  }

  // 4. one width for every vector
  int64_t width = recognizer_width;
  std::string width_from = cfg.recognizer;
  for (const Source& s : sources) {
    if (s.from != VectorFrom::kStored) continue;
    if (width == 0) {
      width = s.stored_dim;
      width_from = s.images->path();
    }
    IDSYNTH_CHECK(s.stored_dim == width, s.images->path(), ": identity_vectors: expected width ", width, " (as ",
                  width_from, "), found ", s.stored_dim);
  }
  IDSYNTH_CHECK(width > 0, sources[0].images->path(), ": ID vectors: expected a width above 0, found 0");

  // 5. per pair: the stored identity row, the image's own vector, or its identity's mean
  vectors = at::empty({n, width}, at::kFloat);
  float* out = vectors.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const Ref& r = refs[static_cast<size_t>(i)];
    const Source& s = sources[static_cast<size_t>(r.source)];
    if (s.from != VectorFrom::kStored) continue;
    const int64_t row = s.row_of_label.at(labels[static_cast<size_t>(i)]);
    std::copy_n(s.stored.data() + row * width, width, out + i * width);
  }
  if (!jobs.empty()) {
    at::Tensor own = embedded;
    if (cfg.id_vector == "identity") {
      // The mean of an identity's (normalised) vectors, within one data path.
      std::map<std::pair<int, int64_t>, int64_t> slot;
      std::vector<int64_t> slot_of_job(jobs.size());
      for (size_t j = 0; j < jobs.size(); ++j) {
        const Ref& r = refs[static_cast<size_t>(jobs[j])];
        const auto key =
            std::make_pair(sources[static_cast<size_t>(r.source)].group, labels[static_cast<size_t>(jobs[j])]);
        slot_of_job[j] = slot.emplace(key, static_cast<int64_t>(slot.size())).first->second;
      }
      const at::Tensor index = at::tensor(slot_of_job, at::kLong);
      at::Tensor sums =
          at::zeros({static_cast<int64_t>(slot.size()), width}, at::kFloat).index_add_(0, index, embedded);
      own = sums.index_select(0, index);
    }
    vectors.index_copy_(0, at::tensor(jobs, at::kLong), own);
  }
  vectors = recognition::l2_normalize(vectors).contiguous();
}

// ---------------------------------------------------------------------------------------------

GeneratorTrainData::GeneratorTrainData(const GeneratorDataConfig& cfg, int64_t resolution,
                                       const std::string& cache_path, bool need_vectors)
    : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.cfg = cfg;
  d.resolution = cfg.resolution > 0 ? cfg.resolution : resolution;
  IDSYNTH_CHECK(d.resolution > 0, "data.resolution: expected a training image size above 0 (or the model's), found ",
                d.resolution);
  IDSYNTH_CHECK(!cfg.paths.empty(), "data.paths: expected at least one shard, RecordIO or image folder, found none");
  d.arena =
      std::make_unique<tbb::task_arena>(cfg.threads > 0 ? static_cast<int>(cfg.threads) : tbb::task_arena::automatic);
  for (size_t g = 0; g < cfg.paths.size(); ++g) d.open_path(cfg.paths[g], static_cast<int>(g));

  for (size_t s = 0; s < d.sources.size(); ++s) {
    const auto& labels = d.sources[s].images->labels();
    for (size_t i = 0; i < labels.size(); ++i) {
      if (cfg.max_images > 0 && static_cast<int64_t>(d.refs.size()) >= cfg.max_images) break;
      d.refs.push_back({static_cast<int32_t>(s), static_cast<int64_t>(i)});
      d.labels.push_back(labels[i]);
    }
  }
  IDSYNTH_CHECK(!d.refs.empty(), cfg.paths[0], ": data.paths: expected face images, the sources hold none");
  IDSYNTH_CHECK(size() >= cfg.batch_size, "data.batch_size: expected at most the ", size(), " training pairs, found ",
                cfg.batch_size);
  if (need_vectors) {
    d.compute_vectors(cache_path);
  } else {
    d.vectors = at::zeros({size(), 0}, at::kFloat);
    LOG_INF("generator training data: ", size(), " images from ", d.sources.size(), " source(s), images ", d.resolution, "x",
            d.resolution);
    return;
  }
  LOG_INF("generator training data: ", size(), " pairs from ", d.sources.size(), " source(s), ID vectors of width ",
          id_width(), " (", cfg.id_vector, "), images ", d.resolution, "x", d.resolution);
}

GeneratorTrainData::~GeneratorTrainData() = default;

int64_t GeneratorTrainData::size() const { return static_cast<int64_t>(impl_->refs.size()); }
int64_t GeneratorTrainData::id_width() const { return impl_->vectors.size(1); }
int64_t GeneratorTrainData::resolution() const { return impl_->resolution; }
int64_t GeneratorTrainData::batches_per_epoch() const { return size() / impl_->cfg.batch_size; }
int64_t GeneratorTrainData::label(int64_t i) const { return impl_->labels.at(static_cast<size_t>(i)); }
bool GeneratorTrainData::vectors_from_cache() const { return impl_->from_cache; }

GeneratorBatch GeneratorTrainData::batch(int64_t position, uint64_t seed) const {
  const Impl& d = *impl_;
  IDSYNTH_CHECK(position >= 0, "generator training data: batch position: expected >= 0, found ", position);
  const int64_t per_epoch = batches_per_epoch();
  const int64_t B = d.cfg.batch_size, R = d.resolution;
  GeneratorBatch b;
  b.position = position;
  b.epoch = position / per_epoch;
  const int64_t index = position % per_epoch;
  {
    std::lock_guard<std::mutex> lock(d.perm_mutex);
    if (d.perm_epoch != b.epoch || d.perm_seed != seed) {
      d.perm = recognition::epoch_permutation(size(), seed, b.epoch);
      d.perm_epoch = b.epoch;
      d.perm_seed = seed;
    }
    const auto first = d.perm.begin() + index * B;
    b.samples.assign(first, first + B);
  }
  // 1. bytes in order (one reader at a time), 2. decode + augment in parallel, each row with its own
  //    generator seeded from (seed, epoch, row in the epoch)
  std::vector<std::string> bytes(static_cast<size_t>(B));
  for (int64_t k = 0; k < B; ++k) bytes[static_cast<size_t>(k)] = d.read(b.samples[static_cast<size_t>(k)]);
  b.images = at::empty({B, 3, R, R}, at::kFloat);
  b.flipped.assign(static_cast<size_t>(B), 0);
  float* dst = b.images.data_ptr<float>();
  const uint64_t epoch_seed = mix(seed, static_cast<uint64_t>(b.epoch) + 0x9e6e);
  const bool random_crop = d.cfg.crop == "random";
  d.arena->execute([&] {
    tbb::parallel_for(int64_t{0}, B, [&](int64_t k) {
      Rng rng(mix(epoch_seed, static_cast<uint64_t>(index * B + k)));
      const cv::Mat rgb = d.decode(bytes[static_cast<size_t>(k)], b.samples[static_cast<size_t>(k)]);
      b.flipped[static_cast<size_t>(k)] = to_model_image(rgb, R, random_crop, d.cfg.flip_p, &rng, dst + k * 3 * R * R) ? 1 : 0;
    });
  });
  b.id_vectors = d.vectors.index_select(0, at::tensor(b.samples, at::kLong));
  return b;
}

at::Tensor GeneratorTrainData::image(int64_t i, bool flip) const {
  const Impl& d = *impl_;
  IDSYNTH_CHECK(i >= 0 && i < size(), "generator training data: pair: expected an index below ", size(), ", found ", i);
  at::Tensor out = at::empty({3, d.resolution, d.resolution}, at::kFloat);
  to_model_image(d.decode(d.read(i), i), d.resolution, false, 0.0, nullptr, out.data_ptr<float>(), flip);
  return out;
}

at::Tensor GeneratorTrainData::id_vector(int64_t i) const {
  IDSYNTH_CHECK(i >= 0 && i < size(), "generator training data: pair: expected an index below ", size(), ", found ", i);
  return impl_->vectors[i].clone();
}

std::string GeneratorTrainData::describe(int64_t i) const { return impl_->describe(i); }

}  // namespace idsynth::generator
