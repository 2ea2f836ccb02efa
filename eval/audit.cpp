// Ref: VIGFace sec. 4 (identity-leak criterion), numpy.percentile (see audit.h).
#include "eval/audit.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <queue>
#include <set>

#include "core/check.h"
#include "core/device.h"
#include "core/log.h"
#include "eval/id_similarity.h"
#include "eval/report.h"
#include "formats/dataset_folder.h"
#include "formats/identity_file.h"
#include "formats/image.h"
#include "formats/shard_file.h"
#include "recognition/train_data.h"

namespace idsynth::eval {

namespace {

namespace fs = std::filesystem;

constexpr const char* kImageExtensions[] = {".jpg", ".jpeg", ".png", ".bmp", ".webp"};

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* e : kImageExtensions)
    if (ext == e) return true;
  return false;
}

cv::Mat rgb_to_bgr(const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  return bgr;
}

// Images -> unit embeddings, batched through the embedder; an image without an embedding (unreadable,
// no face with --align detect) is listed in `failed` and left out.
class EmbedBatches {
 public:
  EmbedBatches(const recognition::FaceEmbedder& embedder, const AuditOptions& options)
      : embedder_(embedder), options_(options) {}

  // `encoded` image bytes (or an empty string and a file in `ref`).
  void add(const std::string& encoded, const FaceRef& ref, const std::string& name, int64_t label, int64_t image) {
    try {
      cv::Mat rgb = encoded.empty() ? formats::read_image_rgb(ref.file)
                                    : formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(encoded.data()),
                                                                encoded.size(), name);
      pending_.push_back({rgb_to_bgr(rgb), ref, name, label, image});
    } catch (const Error& e) {
      failed.push_back(name + ": " + e.what());
      LOG_WRN(name, ": ", e.what(), "; skipped");
    }
    if (static_cast<int64_t>(pending_.size()) >= options_.batch_size) flush();
  }

  void flush() {
    if (pending_.empty()) return;
    std::vector<cv::Mat> bgr;
    for (const auto& p : pending_) bgr.push_back(p.bgr);
    const std::vector<recognition::EmbedResult> res =
        options_.align == "detect" ? embedder_.embed_photos(bgr) : embedder_.embed_aligned(bgr);
    for (size_t i = 0; i < pending_.size(); ++i) {
      if (!res[i].ok) {
        failed.push_back(pending_[i].name + ": " + res[i].error);
        LOG_WRN(pending_[i].name, ": ", res[i].error, "; skipped");
        continue;
      }
      rows.push_back(res[i].embedding.to(at::kFloat).reshape({1, -1}));
      label.push_back(pending_[i].label);
      image.push_back(pending_[i].image);
      face.push_back(pending_[i].ref);
    }
    pending_.clear();
  }

  at::Tensor embeddings() const { return rows.empty() ? at::Tensor() : recognition::l2_normalize(at::cat(rows, 0)); }

  std::vector<at::Tensor> rows;
  std::vector<int64_t> label, image;
  std::vector<FaceRef> face;
  std::vector<std::string> failed;

 private:
  struct Pending {
    cv::Mat bgr;
    FaceRef ref;
    std::string name;
    int64_t label, image;
  };
  const recognition::FaceEmbedder& embedder_;
  const AuditOptions& options_;
  std::vector<Pending> pending_;
};

// Reads face thumbnails, keeping each shard or RecordIO file open for the next one.
class ThumbnailReader {
 public:
  std::string thumbnail(const FaceRef& face, int64_t edge) {
    if (face.file.empty()) return "";
    try {
      cv::Mat rgb;
      if (face.index < 0) {
        rgb = formats::read_image_rgb(face.file);
      } else {
        auto& source = sources_[face.file];
        if (!source) {
          const fs::path p(face.file);
          source = p.extension() == ".rec"
                       ? recognition::open_recordio(face.file, (p.parent_path() / (p.stem().string() + ".idx")).string())
                       : recognition::open_shard(face.file, "auto");
        }
        const std::string bytes = source->read(face.index);
        rgb = formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), face.file);
      }
      cv::Mat small;
      cv::resize(rgb, small, cv::Size(static_cast<int>(edge), static_cast<int>(edge)), 0, 0, cv::INTER_AREA);
      return base64_encode(formats::encode_image_rgb(small, ".jpg", 80));
    } catch (const Error& e) {
      LOG_WRN(face.file, ": no thumbnail: ", e.what());
      return "";
    }
  }

 private:
  std::map<std::string, std::unique_ptr<recognition::ImageSource>> sources_;
};

AuditMetrics::Distribution distribution(const std::vector<double>& values, int64_t bins) {
  AuditMetrics::Distribution d;
  if (values.empty()) {  // an empty histogram over [-1, 1]
    for (int64_t b = 0; b <= bins; ++b) d.edges.push_back(-1.0 + 2.0 * static_cast<double>(b) / static_cast<double>(bins));
    d.counts.assign(static_cast<size_t>(bins), 0);
    return d;
  }
  const IdSimStats s = summarize_id_similarity(std::vector<int64_t>(values.size(), 0), values, bins);
  d.count = s.count;
  d.mean = s.mean;
  d.std = s.std;
  d.min = s.min;
  d.median = s.median;
  d.max = s.max;
  d.p99 = percentile(values, 99.0);
  d.edges = s.hist_edges;
  d.counts = s.hist_counts;
  return d;
}

void check_distribution(const AuditMetrics::Distribution& d, const std::string& where) {
  IDSYNTH_CHECK(d.edges.size() == d.counts.size() + 1 && !d.counts.empty(), where,
                ": expected one more histogram edge than counts, found ", d.edges.size(), " edges and ", d.counts.size(),
                " counts");
}

void check_base64(const std::optional<std::string>& text, const std::string& where) {
  IDSYNTH_CHECK(!text || text->find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") ==
                             std::string::npos,
                where, ": expected base64 text, found other characters");
}

}  // namespace

// ---- centres and search --------------------------------------------------------------------------

Centres identity_centres(const at::Tensor& embeddings, const std::vector<int64_t>& labels) {
  IDSYNTH_CHECK(embeddings.dim() == 2 && embeddings.size(0) == static_cast<int64_t>(labels.size()),
                "audit: expected one label per embedding row, found ", embeddings.sizes(), " and ", labels.size(), " labels");
  IDSYNTH_CHECK(!labels.empty(), "audit: no embeddings to average into identity centres");
  Centres c;
  c.label = labels;
  std::sort(c.label.begin(), c.label.end());
  c.label.erase(std::unique(c.label.begin(), c.label.end()), c.label.end());
  std::vector<int64_t> row(labels.size());
  c.count.assign(c.label.size(), 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    row[i] = std::lower_bound(c.label.begin(), c.label.end(), labels[i]) - c.label.begin();
    ++c.count[static_cast<size_t>(row[i])];
  }
  const at::Tensor e = recognition::l2_normalize(embeddings.to(at::kFloat));
  at::Tensor sums = at::zeros({static_cast<int64_t>(c.label.size()), e.size(1)}, e.options());
  sums.index_add_(0, at::tensor(row, at::kLong), e);
  c.vectors = sums / sums.norm(2, {1}, true).clamp_min(1e-12);
  return c;
}

NearestRows nearest_rows(const at::Tensor& queries, const at::Tensor& keys, c10::Device device, bool exclude_self,
                         int64_t block_rows, int64_t block_cols) {
  IDSYNTH_CHECK(queries.dim() == 2 && keys.dim() == 2 && queries.size(1) == keys.size(1),
                "audit: search: expected [Q, D] queries and [K, D] keys of one width, found ", queries.sizes(), " and ",
                keys.sizes());
  const int64_t q = queries.size(0), k = keys.size(0);
  IDSYNTH_CHECK(k >= (exclude_self ? 2 : 1), "audit: search: expected at least ", exclude_self ? 2 : 1,
                " centres to search, found ", k);
  IDSYNTH_CHECK(!exclude_self || q == k, "audit: search: nearest negatives need the same set on both sides, found ", q,
                " and ", k, " rows");
  IDSYNTH_CHECK(block_rows >= 1 && block_cols >= 1, "audit: search: blocks: expected >= 1, found ", block_rows, " x ",
                block_cols);
  NearestRows out;
  out.index.assign(static_cast<size_t>(q), -1);
  out.cosine.assign(static_cast<size_t>(q), -std::numeric_limits<double>::infinity());
  if (q == 0) return out;
  const at::Tensor kd = keys.to(device, at::kFloat).contiguous();
  const at::Tensor qd = queries.to(device, at::kFloat).contiguous();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // On a CPU with oneDNN the products run as a 1x1 convolution over a channels-last view (as
  // generator::linear does): oneDNN's kernels reach about twice OpenBLAS's rate here, on all threads.
  const bool onednn = device.is_cpu() && at::hasMKLDNN() && !at::in_parallel_region();
  const auto scores = [&](const at::Tensor& qb, int64_t c0, int64_t c1) {
    const at::Tensor kb = kd.slice(0, c0, c1);
    if (!onednn) return at::matmul(qb, kb.t());
    const int64_t rows = qb.size(0), d = qb.size(1);
    const at::Tensor x4 = qb.as_strided({1, d, 1, rows}, {rows * d, 1, rows * d, d});
    const at::Tensor w4 = kb.view({c1 - c0, d, 1, 1}).contiguous(at::MemoryFormat::ChannelsLast);
    return at::conv2d(x4, w4).permute({0, 2, 3, 1}).reshape({rows, c1 - c0});  // [rows, c1 - c0]
  };
  // Rows [r0, r1) against every key block: a running top-1 per row.
  const auto search = [&](int64_t r0, int64_t r1) {
    const at::Tensor qb = qd.slice(0, r0, r1).contiguous();
    at::Tensor best = at::full({r1 - r0}, neg_inf, qb.options());
    at::Tensor best_index = at::zeros({r1 - r0}, qb.options().dtype(at::kLong));
    for (int64_t c0 = 0; c0 < k; c0 += block_cols) {
      const int64_t c1 = std::min(k, c0 + block_cols);
      at::Tensor s = scores(qb, c0, c1);  // [r1 - r0, c1 - c0]
      if (exclude_self) {
        const int64_t lo = std::max(r0, c0), hi = std::min(r1, c1);
        if (lo < hi) {
          const at::Tensor diag = at::arange(lo, hi, qb.options().dtype(at::kLong));
          s.index_put_({diag - r0, diag - c0}, neg_inf);
        }
      }
      const auto [v, i] = s.max(1);
      const at::Tensor better = v > best;  // strictly: ties keep the lower index
      best = at::where(better, v, best);
      best_index = at::where(better, i + c0, best_index);
    }
    const at::Tensor bc = best.to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor ic = best_index.to(at::kCPU).contiguous();
    std::copy(bc.data_ptr<double>(), bc.data_ptr<double>() + (r1 - r0), out.cosine.begin() + r0);
    std::copy(ic.data_ptr<int64_t>(), ic.data_ptr<int64_t>() + (r1 - r0), out.index.begin() + r0);
  };
  const int64_t n_blocks = (q + block_rows - 1) / block_rows;
  if (device.is_cpu() && !onednn && blas_threading() != BlasThreading::kOwnPool) {
    // Row blocks spread over ATen's threads, each running single-threaded products (core/device.h).
    // As many blocks as a multiple of the thread count, so the threads finish together.
    const int64_t threads = at::get_num_threads();
    const int64_t n0 = (q + block_rows - 1) / block_rows;
    const int64_t per = std::max<int64_t>(1, (q + (n0 + threads - 1) / threads * threads - 1) / ((n0 + threads - 1) / threads * threads));
    const int64_t n = (q + per - 1) / per;
    at::parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) search(b * per, std::min(q, (b + 1) * per));
    });
  } else {
    for (int64_t b = 0; b < n_blocks; ++b) search(b * block_rows, std::min(q, (b + 1) * block_rows));
  }
  return out;
}

double percentile(std::vector<double> values, double p) {
  IDSYNTH_CHECK(!values.empty(), "audit: percentile of no values");
  IDSYNTH_CHECK(p >= 0 && p <= 100, "audit: percentile: expected 0..100, found ", p);
  std::sort(values.begin(), values.end());
  const double pos = p / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(values.size() - 1, lo + 1);
  return values[lo] + (pos - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

void AuditOptions::check() const {
  IDSYNTH_CHECK(!threshold || (std::isfinite(*threshold) && *threshold >= -1 && *threshold <= 1),
                "audit: --threshold: expected a cosine in -1..1, found ", threshold ? *threshold : 0.0);
  IDSYNTH_CHECK(percentile >= 0 && percentile <= 100, "audit: --percentile: expected 0..100, found ", percentile);
  IDSYNTH_CHECK(synthetic == "auto" || synthetic == "images" || synthetic == "vectors",
                "audit: --synthetic: expected auto, images or vectors, found '", synthetic, "'");
  IDSYNTH_CHECK(align == "fixed" || align == "detect", "audit: --align: expected fixed or detect, found '", align, "'");
  IDSYNTH_CHECK(batch_size >= 1, "audit: --batch-size: expected >= 1, found ", batch_size);
  IDSYNTH_CHECK(bins >= 1 && bins <= 1000, "audit: --bins: expected 1..1000, found ", bins);
  IDSYNTH_CHECK(duplicate_cosine > -1 && duplicate_cosine <= 1, "audit: --duplicate-cosine: expected a cosine in -1..1, found ",
                duplicate_cosine);
  IDSYNTH_CHECK(show_flagged >= 0 && show_flagged <= 200, "audit: --show-flagged: expected 0..200, found ", show_flagged);
  IDSYNTH_CHECK(thumb >= 16 && thumb <= 128, "audit: --thumb: expected 16..128 pixels, found ", thumb);
}

// ---- the gallery -------------------------------------------------------------------------------

GalleryKind gallery_kind(const std::string& path) {
  const fs::path p(path);
  if (!fs::is_directory(p)) return GalleryKind::centres;
  if (fs::exists(p / "train.rec")) return GalleryKind::recordio;
  if (fs::exists(p / "manifest.json") || fs::is_directory(p / "shards")) return GalleryKind::dataset;
  return GalleryKind::folders;
}

const char* gallery_kind_name(GalleryKind kind) {
  switch (kind) {
    case GalleryKind::centres: return "centres";
    case GalleryKind::folders: return "folders";
    case GalleryKind::recordio: return "recordio";
    case GalleryKind::dataset: return "dataset";
  }
  return "?";
}

Gallery read_gallery(const recognition::FaceEmbedder& embedder, const std::string& path, int64_t n_shards,
                     const AuditOptions& options) {
  options.check();
  Gallery g;
  g.source = path;
  g.kind = gallery_kind(path);
  log::Stopwatch sw;
  if (g.kind == GalleryKind::centres) {
    // 1. precomputed centres: one row per identity, normalised here
    IDSYNTH_CHECK(fs::exists(path), path, ": --gallery: expected a folder of identities, a RecordIO folder, an idsynth "
                                          "dataset or a centres file, found nothing");
    const at::Tensor rows = formats::read_vector_rows(path, "--gallery");
    const at::Tensor norms = rows.norm(2, {1});
    IDSYNTH_CHECK(norms.min().item<double>() > 0, path, ": --gallery: row ", norms.argmin().item<int64_t>(),
                  ": expected a non-zero identity centre, found all zeros");
    g.centres.vectors = rows / norms.unsqueeze(1);
    for (int64_t i = 0; i < rows.size(0); ++i) {
      g.centres.label.push_back(i);
      g.centres.count.push_back(0);
      g.names.push_back(cat("row ", i));
      g.face.push_back({});
    }
    LOG_INF(path, ": ", rows.size(0), " precomputed identity centres of width ", rows.size(1));
    return g;
  }
  EmbedBatches batches(embedder, options);
  std::vector<std::string> label_names;  // folders: the subfolder of each label
  if (g.kind == GalleryKind::folders) {
    // 2. one subfolder of images per identity, in name order
    std::vector<fs::path> dirs;
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_directory()) dirs.push_back(e.path());
    std::sort(dirs.begin(), dirs.end());
    for (const auto& d : dirs) {
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(d))
        if (e.is_regular_file() && is_image_file(e.path())) files.push_back(e.path());
      if (files.empty()) continue;
      std::sort(files.begin(), files.end());
      const int64_t label = static_cast<int64_t>(label_names.size());
      label_names.push_back(d.filename().string());
      for (size_t i = 0; i < files.size(); ++i)
        batches.add("", {files[i].string(), -1}, files[i].string(), label, static_cast<int64_t>(i));
    }
    IDSYNTH_CHECK(!label_names.empty(), path, ": --gallery: expected one subfolder of face images (",
                  "jpg, png, bmp, webp) per identity, found none");
  } else if (g.kind == GalleryKind::recordio) {
    // 3. insightface RecordIO: the training reader's view (header record handled there)
    const std::string rec = (fs::path(path) / "train.rec").string();
    auto source = recognition::open_recordio(rec, (fs::path(path) / "train.idx").string());
    IDSYNTH_CHECK(source->size() > 0, rec, ": --gallery: expected face images, found no records");
    for (int64_t i = 0; i < source->size(); ++i)
      batches.add(source->read(i), {rec, i}, cat(rec, ": record ", i), source->labels()[static_cast<size_t>(i)], i);
  } else {
    // 4. an idsynth dataset: the aligned crops (fixed) or the full images (detect)
    formats::for_each_shard(path, n_shards, [&](const formats::ShardData& d) {
      const std::string file = formats::shard_h5_path(path, d.shard_index);
      const bool crops = options.align == "fixed" && d.has_aligned;
      IDSYNTH_CHECK(crops || d.has_images, file, ": images: expected stored images for the gallery, found only aligned crops "
                                                 "(use --align fixed)");
      const auto& pics = crops ? d.aligned : d.images;
      for (size_t i = 0; i < d.size(); ++i)
        batches.add(pics[i], {file, static_cast<int64_t>(i)}, cat(file, ": image ", i), d.labels[i], d.image_index[i]);
    });
  }
  batches.flush();
  g.failed = batches.failed;
  IDSYNTH_CHECK(!batches.rows.empty(), path, ": --gallery: expected face images with an embedding, found ",
                batches.failed.empty() ? "none" : cat("none of ", batches.failed.size(), " (first: ", batches.failed.front(), ")"));
  g.images = static_cast<int64_t>(batches.rows.size());
  g.centres = identity_centres(batches.embeddings(), batches.label);
  for (int64_t label : g.centres.label) {
    g.names.push_back(g.kind == GalleryKind::folders ? label_names[static_cast<size_t>(label)] : cat("label ", label));
    const size_t first = std::find(batches.label.begin(), batches.label.end(), label) - batches.label.begin();
    g.face.push_back(batches.face[first]);
  }
  LOG_INF(path, ": gallery of ", g.centres.label.size(), " identities from ", g.images, " images (", g.failed.size(),
          " without an embedding) embedded, taking ", sw.seconds(), " s");
  return g;
}

// ---- the synthetic dataset ---------------------------------------------------------------------

SyntheticSet read_synthetic(const recognition::FaceEmbedder& embedder, const std::string& dir, int64_t n_shards,
                            const AuditOptions& options) {
  options.check();
  SyntheticSet s;
  s.source = dir;
  EmbedBatches batches(embedder, options);
  std::map<int64_t, at::Tensor> vectors;  // "vectors": identity -> stored vector
  int64_t width = 0;
  log::Stopwatch sw;
  formats::for_each_shard(dir, n_shards, [&](const formats::ShardData& d) {
    const std::string file = formats::shard_h5_path(dir, d.shard_index);
    // 1. what the centres are made of: decided by the first shard unless asked for
    if (s.mode.empty())
      s.mode = options.synthetic != "auto" ? options.synthetic : (d.has_aligned || d.has_images) ? "images" : "vectors";
    ++s.shards;
    if (s.mode == "images") {
      const bool crops = d.has_aligned && (options.align == "fixed" || !d.has_images);
      IDSYNTH_CHECK(d.has_aligned || d.has_images, file, ": images: expected stored images or aligned crops for --synthetic images, "
                                                         "found neither (use --synthetic vectors)");
      IDSYNTH_CHECK(crops || options.align == "detect" || d.has_images, file, ": aligned: expected aligned crops, found none");
      const auto& pics = crops ? d.aligned : d.images;
      for (size_t i = 0; i < d.size(); ++i)
        batches.add(pics[i], {file, static_cast<int64_t>(i)},
                    cat(file, ": identity ", d.labels[i], " image ", d.image_index[i]), d.labels[i], d.image_index[i]);
      return;
    }
    // 2. the identity vectors stored in the shard, for every identity that has images
    const int64_t k = static_cast<int64_t>(d.identity_index.size());
    IDSYNTH_CHECK(k > 0 && d.dim > 0 && static_cast<int64_t>(d.identity_vectors.size()) == k * d.dim, file,
                  ": identity_vectors: expected a stored [K, D] vector per identity (K = ", k,
                  " identities in identity_index, D > 0), found ", d.identity_vectors.size(), " values of width ", d.dim);
    IDSYNTH_CHECK(width == 0 || width == d.dim, file, ": identity_vectors: expected width ", width,
                  " as in the earlier shards, found ", d.dim);
    width = d.dim;
    const at::Tensor rows = at::from_blob(const_cast<float*>(d.identity_vectors.data()), {k, d.dim}, at::kFloat).clone();
    std::set<int64_t> with_images(d.labels.begin(), d.labels.end());
    for (int64_t r = 0; r < k; ++r)
      if (with_images.count(d.identity_index[static_cast<size_t>(r)])) vectors[d.identity_index[static_cast<size_t>(r)]] = rows[r];
    for (int64_t id : with_images)
      IDSYNTH_CHECK(vectors.count(id), file, ": identity_vectors: expected a stored vector for identity ", id,
                    " (it has images), found none in identity_index");
  });
  IDSYNTH_CHECK(s.shards > 0, dir, ": expected finished shards, found none");
  if (s.mode == "vectors") {
    IDSYNTH_CHECK(!vectors.empty(), dir, ": identity_vectors: expected identities with images in the shards, found none");
    std::vector<at::Tensor> rows;
    for (const auto& [id, v] : vectors) {
      s.centres.label.push_back(id);
      s.centres.count.push_back(0);
      rows.push_back(v);
    }
    const at::Tensor m = at::stack(rows);
    const at::Tensor norms = m.norm(2, {1});
    IDSYNTH_CHECK(norms.min().item<double>() > 0, dir, ": identity_vectors: identity ",
                  s.centres.label[static_cast<size_t>(norms.argmin().item<int64_t>())],
                  ": expected a non-zero vector, found all zeros");
    s.centres.vectors = m / norms.unsqueeze(1);
    LOG_INF(dir, ": ", rows.size(), " stored identity vectors as the synthetic centres");
    return s;
  }
  batches.flush();
  s.failed = batches.failed;
  IDSYNTH_CHECK(!batches.rows.empty(), dir, ": expected generated images with an embedding, found ",
                batches.failed.empty() ? "none" : cat("none of ", batches.failed.size(), " (first: ", batches.failed.front(), ")"));
  s.embeddings = batches.embeddings();
  s.label = batches.label;
  s.image = batches.image;
  s.face = batches.face;
  s.centres = identity_centres(s.embeddings, s.label);
  LOG_INF(dir, ": ", s.label.size(), " images of ", s.centres.label.size(), " synthetic identities embedded, taking ",
          sw.seconds(), " s");
  return s;
}

// ---- the audit -----------------------------------------------------------------------------------

AuditMetrics audit(const Gallery& gallery, const SyntheticSet& synthetic, const AuditOptions& options,
                   const std::string& gallery_name) {
  options.check();
  const at::Tensor& g = gallery.centres.vectors;
  const at::Tensor& s = synthetic.centres.vectors;
  IDSYNTH_CHECK(g.defined() && g.size(0) > 0, gallery.source, ": --gallery: expected identity centres, found none");
  IDSYNTH_CHECK(s.defined() && s.size(0) > 0, synthetic.source, ": expected synthetic identities, found none");
  IDSYNTH_CHECK(g.size(1) == s.size(1), gallery.source, ": --gallery: width: expected ", s.size(1), " (the ",
                synthetic.mode == "vectors" ? "identity vectors stored in the dataset" : "recogniser's embeddings",
                "), found ", g.size(1));
  AuditMetrics m;
  m.gallery = gallery_name.empty() ? gallery.source : gallery_name;
  m.gallery_kind = gallery_kind_name(gallery.kind);
  m.gallery_identities = g.size(0);
  m.gallery_images = gallery.images;
  m.synthetic = synthetic.mode;
  m.identities = s.size(0);
  m.images = static_cast<int64_t>(synthetic.label.size());
  log::Stopwatch sw;
  // 1. the gallery's own nearest negatives and the threshold
  std::vector<double> negatives;
  if (g.size(0) >= 2) negatives = nearest_rows(g, g, options.device, /*exclude_self=*/true).cosine;
  IDSYNTH_CHECK(options.threshold || !negatives.empty(), gallery.source,
                ": --gallery: expected at least 2 identities for the default threshold (their nearest-negative "
                "percentile), found 1; give --threshold");
  m.gallery_nearest_negative = distribution(negatives, options.bins);
  m.threshold = options.threshold ? *options.threshold : percentile(negatives, options.percentile);
  m.threshold_rule = options.threshold ? "fixed" : cat("gallery p", format_number("%g", options.percentile), " nearest negative");
  // 2. each synthetic identity's nearest real one
  const NearestRows nearest = nearest_rows(s, g, options.device);
  m.nearest_real = distribution(nearest.cosine, options.bins);
  std::vector<size_t> flagged;
  for (size_t i = 0; i < nearest.cosine.size(); ++i)
    if (nearest.cosine[i] > m.threshold) flagged.push_back(i);
  std::stable_sort(flagged.begin(), flagged.end(),
                   [&](size_t a, size_t b) { return nearest.cosine[a] > nearest.cosine[b]; });
  m.flagged_count = static_cast<int64_t>(flagged.size());
  m.flagged_fraction = static_cast<double>(flagged.size()) / static_cast<double>(s.size(0));
  // 3. per image of the flagged identities (synthetic images only)
  std::map<int64_t, std::vector<size_t>> rows_of;  // identity -> its embedding rows
  for (size_t r = 0; r < synthetic.label.size(); ++r) rows_of[synthetic.label[r]].push_back(r);
  ThumbnailReader thumbs;
  for (size_t f = 0; f < flagged.size(); ++f) {
    const size_t i = flagged[f];
    AuditMetrics::Flagged fl;
    fl.identity = synthetic.centres.label[i];
    fl.nearest = gallery.names[static_cast<size_t>(nearest.index[i])];
    fl.cosine = nearest.cosine[i];
    const auto it = rows_of.find(fl.identity);
    if (it != rows_of.end()) {
      const at::Tensor idx = at::tensor(std::vector<int64_t>(it->second.begin(), it->second.end()), at::kLong);
      const NearestRows per = nearest_rows(synthetic.embeddings.index_select(0, idx), g, options.device);
      for (size_t j = 0; j < it->second.size(); ++j)
        fl.images.push_back({synthetic.image[it->second[j]], gallery.names[static_cast<size_t>(per.index[j])], per.cosine[j]});
      if (static_cast<int64_t>(f) < options.show_flagged) {
        const std::string face = thumbs.thumbnail(synthetic.face[it->second.front()], options.thumb);
        if (!face.empty()) fl.face = face;
      }
    }
    if (static_cast<int64_t>(f) < options.show_flagged) {
      const std::string real = thumbs.thumbnail(gallery.face[static_cast<size_t>(nearest.index[i])], options.thumb);
      if (!real.empty()) fl.nearest_face = real;
    }
    m.flagged.push_back(std::move(fl));
  }
  // 4. quality of the synthetic set: inter-class separation, intra-class spread, near-duplicates
  if (s.size(0) >= 2) m.inter_class = distribution(nearest_rows(s, s, options.device, /*exclude_self=*/true).cosine, options.bins);
  if (synthetic.mode == "images" && synthetic.embeddings.defined()) {
    const at::Tensor& e = synthetic.embeddings;
    std::vector<int64_t> centre_row(synthetic.label.size());
    for (size_t r = 0; r < synthetic.label.size(); ++r)
      centre_row[r] = std::lower_bound(synthetic.centres.label.begin(), synthetic.centres.label.end(), synthetic.label[r]) -
                      synthetic.centres.label.begin();
    const at::Tensor own = (e * s.index_select(0, at::tensor(centre_row, at::kLong))).sum(1).to(at::kDouble).contiguous();
    m.intra_class = distribution(std::vector<double>(own.data_ptr<double>(), own.data_ptr<double>() + own.numel()), options.bins);
    // near-duplicates: every pair within an identity, the highest list_duplicates kept
    using Pair = AuditMetrics::Duplicate;
    const auto lower = [](const Pair& a, const Pair& b) { return a.cosine > b.cosine; };  // min-heap on cosine
    std::priority_queue<Pair, std::vector<Pair>, decltype(lower)> top(lower);
    int64_t pairs = 0, identities = 0;
    for (const auto& [id, rows] : rows_of) {
      if (rows.size() < 2) continue;
      const at::Tensor idx = at::tensor(std::vector<int64_t>(rows.begin(), rows.end()), at::kLong);
      const at::Tensor ei = e.index_select(0, idx);
      const at::Tensor sim = at::matmul(ei, ei.t()).to(at::kDouble).contiguous();
      const double* p = sim.data_ptr<double>();
      const size_t n = rows.size();
      bool any = false;
      for (size_t a = 0; a < n; ++a)
        for (size_t b = a + 1; b < n; ++b) {
          const double c = p[a * n + b];
          if (c <= options.duplicate_cosine) continue;
          ++pairs;
          any = true;
          top.push({id, synthetic.image[rows[a]], synthetic.image[rows[b]], c});
          if (static_cast<int64_t>(top.size()) > options.list_duplicates) top.pop();
        }
      identities += any;
    }
    m.duplicate_threshold = options.duplicate_cosine;
    m.duplicate_pairs = pairs;
    m.duplicate_identities = identities;
    for (; !top.empty(); top.pop()) m.duplicates.push_back(top.top());
    std::reverse(m.duplicates.begin(), m.duplicates.end());
  }
  LOG_INF("audit of ", s.size(0), " synthetic against ", g.size(0), " real identities completed, taking ", sw.seconds(),
          " s: ", m.flagged_count, " flagged above cosine ", format_number("%.4f", m.threshold), " (", m.threshold_rule, ")");
  return m;
}

std::string face_thumbnail(const FaceRef& face, int64_t edge) { return ThumbnailReader().thumbnail(face, edge); }

AuditMetrics AuditMetrics::from_json(const json::Value& entry, const std::string& where) {
  AuditMetrics m = json_fields::read<AuditMetrics>(entry, where);
  // The report draws the histograms and embeds the thumbnails as data: URIs; check both here, where
  // the error can still name the file.
  check_distribution(m.nearest_real, where + ": nearest_real");
  check_distribution(m.gallery_nearest_negative, where + ": gallery_nearest_negative");
  if (m.inter_class) check_distribution(*m.inter_class, where + ": inter_class");
  if (m.intra_class) check_distribution(*m.intra_class, where + ": intra_class");
  for (size_t i = 0; i < m.flagged.size(); ++i) {
    check_base64(m.flagged[i].face, cat(where, ": flagged[", i, "]: face"));
    check_base64(m.flagged[i].nearest_face, cat(where, ": flagged[", i, "]: nearest_face"));
  }
  return m;
}

}  // namespace idsynth::eval
