// Ref: Arc2Face paper sec. 4 (ID similarity), numpy median/std/histogram (see id_similarity.h).
#include "eval/id_similarity.h"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>

#include "core/check.h"
#include "core/file_util.h"
#include "formats/image.h"
#include "core/log.h"
#include "eval/report.h"
#include "formats/dataset_folder.h"
#include "formats/shard_file.h"

namespace idsynth::eval {

namespace {

namespace fs = std::filesystem;

cv::Mat rgb_to_bgr(const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  return bgr;
}

}  // namespace

std::vector<SampleImage> list_sample_images(const std::string& dir) {
  IDSYNTH_CHECK(fs::is_directory(dir), dir, ": --images: expected a folder of {identity:05d}_{image:03d}.png files, found ",
                fs::exists(dir) ? "a file" : "nothing");
  static const std::regex name(R"((\d+)_(\d+)\.png)");
  std::vector<SampleImage> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string file = e.path().filename().string();
    if (!e.is_regular_file() || !std::regex_match(file, m, name)) continue;
    out.push_back({std::stoll(m[1].str()), std::stoll(m[2].str()), e.path().string()});
  }
  IDSYNTH_CHECK(!out.empty(), dir, ": --images: expected {identity:05d}_{image:03d}.png files as `idsynth sample` writes, found none");
  std::sort(out.begin(), out.end(), [](const SampleImage& a, const SampleImage& b) {
    return a.identity != b.identity ? a.identity < b.identity : a.image < b.image;
  });
  return out;
}

void IdSimOptions::check() const {
  IDSYNTH_CHECK(align == "fixed" || align == "detect", "idsim: --align: expected fixed or detect, found '", align, "'");
  IDSYNTH_CHECK(det_size >= 32 && det_size <= 2048 && det_size % 32 == 0,
                "idsim: --det-size: expected a multiple of 32 in 32..2048, found ", det_size);
  IDSYNTH_CHECK(batch_size >= 1, "idsim: --batch-size: expected >= 1, found ", batch_size);
  IDSYNTH_CHECK(bins >= 1 && bins <= 1000, "idsim: --bins: expected 1..1000, found ", bins);
  // The grid lives inline in metrics.json and report.html: keep it a few hundred kB at most.
  IDSYNTH_CHECK(grid_identities >= 0 && grid_identities <= 16, "idsim: --grid-identities: expected 0..16, found ",
                grid_identities);
  IDSYNTH_CHECK(grid_images >= 0 && grid_images <= 16, "idsim: --grid-images: expected 0..16, found ", grid_images);
  IDSYNTH_CHECK(thumb >= 16 && thumb <= 128, "idsim: --thumb: expected 16..128 pixels, found ", thumb);
}

IdSimStats summarize_id_similarity(const std::vector<int64_t>& identity, const std::vector<double>& cosine, int64_t bins) {
  IDSYNTH_CHECK(identity.size() == cosine.size(), "idsim: expected one identity per cosine, found ", identity.size(), " and ",
                cosine.size());
  IDSYNTH_CHECK(!cosine.empty(), "idsim: no cosine to summarise (no image gave an embedding)");
  IDSYNTH_CHECK(bins >= 1, "idsim: bins: expected >= 1, found ", bins);
  IdSimStats s;
  const size_t n = cosine.size();
  s.count = static_cast<int64_t>(n);
  // 1. mean and population std (two passes, as numpy)
  double sum = 0.0;
  for (double c : cosine) sum += c;
  s.mean = sum / static_cast<double>(n);
  double sq = 0.0;
  for (double c : cosine) sq += (c - s.mean) * (c - s.mean);
  s.std = std::sqrt(sq / static_cast<double>(n));
  // 2. median: the middle value, or the mean of the two middle values
  std::vector<double> sorted = cosine;
  std::sort(sorted.begin(), sorted.end());
  s.median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  s.min = sorted.front();
  s.max = sorted.back();
  // 3. per identity
  std::map<int64_t, IdentitySimilarity> per;
  std::map<int64_t, double> sums;
  for (size_t i = 0; i < n; ++i) {
    auto [it, fresh] = per.try_emplace(identity[i]);
    IdentitySimilarity& p = it->second;
    if (fresh) p.identity = identity[i], p.min = p.max = cosine[i];
    ++p.count;
    sums[identity[i]] += cosine[i];
    p.min = std::min(p.min, cosine[i]);
    p.max = std::max(p.max, cosine[i]);
  }
  double means = 0.0;
  for (auto& [id, p] : per) {
    p.mean = sums[id] / static_cast<double>(p.count);
    means += p.mean;
    s.per_identity.push_back(p);
  }
  s.identity_mean = means / static_cast<double>(per.size());
  // 4. histogram over [-1, 1]: half-open bins, the last one closed (numpy.histogram)
  s.hist_counts.assign(static_cast<size_t>(bins), 0);
  for (int64_t b = 0; b <= bins; ++b) s.hist_edges.push_back(-1.0 + 2.0 * static_cast<double>(b) / static_cast<double>(bins));
  for (double c : cosine) {
    int64_t b = static_cast<int64_t>(std::floor((c + 1.0) / 2.0 * static_cast<double>(bins)));
    b = std::clamp<int64_t>(b, 0, bins - 1);
    ++s.hist_counts[static_cast<size_t>(b)];
  }
  return s;
}

IdSimilarityRun::IdSimilarityRun(const recognition::FaceEmbedder& embedder, IdSimOptions options, std::string ids_source)
    : embedder_(embedder), options_(std::move(options)), ids_source_(std::move(ids_source)) {
  options_.check();
  IDSYNTH_CHECK(options_.align != "detect" || embedder_.has_detector(),
                "idsim: --align detect: expected a face detector (--detector scrfd_10g_bnkps.onnx)");
}

void IdSimilarityRun::add(const std::vector<cv::Mat>& bgr, const std::vector<std::string>& names,
                          const std::vector<int64_t>& identity, const std::vector<int64_t>& image, const at::Tensor& targets) {
  const size_t b = bgr.size();
  IDSYNTH_CHECK(names.size() == b && identity.size() == b && image.size() == b && targets.dim() == 2 &&
                    targets.size(0) == static_cast<int64_t>(b),
                "idsim: a batch of ", b, " images needs as many names, indices and target rows, found target ", targets.sizes());
  if (b == 0) return;
  const std::vector<recognition::EmbedResult> res =
      options_.align == "detect" ? embedder_.embed_photos(bgr) : embedder_.embed_aligned(bgr);
  const at::Tensor t = targets.to(at::kFloat);
  const at::Tensor tn = t / t.norm(2, 1, true);
  for (size_t i = 0; i < b; ++i) {
    if (!res[i].ok) {
      result_.failed.push_back(names[i] + ": " + res[i].error);
      LOG_WRN(names[i], ": ", res[i].error, "; skipped");
      continue;
    }
    const at::Tensor e = res[i].embedding.to(at::kFloat);
    IDSYNTH_CHECK(e.numel() == tn.size(1), ids_source_, ": ids: width: expected the recogniser's embedding size ", e.numel(),
                  ", found ", tn.size(1));
    const double cosine = at::dot(e / e.norm(), tn[static_cast<int64_t>(i)]).item<double>();
    result_.identity.push_back(identity[i]);
    result_.image.push_back(image[i]);
    result_.cosine.push_back(cosine);
    // 2. the report's face grid: the first grid_identities identities seen, their first images
    if (image[i] >= options_.grid_images) continue;
    auto it = std::find(grid_ids_.begin(), grid_ids_.end(), identity[i]);
    if (it == grid_ids_.end()) {
      if (static_cast<int64_t>(grid_ids_.size()) >= options_.grid_identities) continue;
      grid_ids_.push_back(identity[i]);
    }
    cv::Mat thumb, rgb;
    const int edge = static_cast<int>(options_.thumb);
    cv::resize(bgr[i], thumb, cv::Size(edge, edge), 0, 0, cv::INTER_AREA);
    cv::cvtColor(thumb, rgb, cv::COLOR_BGR2RGB);
    result_.faces.push_back({identity[i], image[i], cosine, base64_encode(formats::encode_image_rgb(rgb, ".jpg", 80))});
  }
}

IdSimResult IdSimilarityRun::finish() {
  IDSYNTH_CHECK(!result_.cosine.empty(), "idsim: no image gave an embedding (", result_.failed.size(), " failed",
                result_.failed.empty() ? "" : ", first: " + result_.failed.front(), ")");
  result_.stats = summarize_id_similarity(result_.identity, result_.cosine, options_.bins);
  std::stable_sort(result_.faces.begin(), result_.faces.end(), [](const FaceThumb& a, const FaceThumb& b) {
    return a.identity != b.identity ? a.identity < b.identity : a.image < b.image;
  });
  return result_;
}

IdSimResult id_similarity_of_folder(const recognition::FaceEmbedder& embedder, const at::Tensor& ids,
                                    const std::string& ids_source, const std::string& dir, const IdSimOptions& options) {
  const std::vector<SampleImage> images = list_sample_images(dir);
  IDSYNTH_CHECK(ids.defined() && ids.dim() == 2, ids_source, ": ids: expected an [N, D] matrix");
  const SampleImage& last = images.back();  // sorted: the highest identity index
  IDSYNTH_CHECK(last.identity < ids.size(0), ids_source, ": ids: expected a row for every identity of ", dir, " (",
                last.identity + 1, " rows: ", fs::path(last.path).filename().string(), " is identity ", last.identity,
                "), found ", ids.size(0), " rows");
  LOG_INF(dir, ": ", images.size(), " images of ", ids.size(0), " identity vectors, align ", options.align);
  IdSimilarityRun run(embedder, options, ids_source);
  log::Stopwatch sw;
  const size_t step = static_cast<size_t>(options.batch_size);
  for (size_t begin = 0; begin < images.size(); begin += step) {
    const size_t end = std::min(images.size(), begin + step);
    std::vector<cv::Mat> bgr;
    std::vector<std::string> names;
    std::vector<int64_t> identity, image;
    for (size_t k = begin; k < end; ++k) {
      bgr.push_back(rgb_to_bgr(formats::read_image_rgb(images[k].path)));
      names.push_back(images[k].path);
      identity.push_back(images[k].identity);
      image.push_back(images[k].image);
    }
    const at::Tensor idx = at::tensor(identity, at::kLong);
    run.add(bgr, names, identity, image, ids.index_select(0, idx));
    LOG_INF("idsim: embedded ", end, "/", images.size(), " images");
  }
  IdSimResult r = run.finish();
  LOG_INF("idsim over ", images.size(), " images completed, taking ", sw.seconds(), " s (",
          static_cast<double>(images.size()) / std::max(sw.seconds(), 1e-9), " images/s, batch ", options.batch_size, ")");
  return r;
}

IdSimResult id_similarity_of_dataset(const recognition::FaceEmbedder& embedder, const at::Tensor& ids,
                                     const std::string& ids_source, const std::string& dir, int64_t n_shards,
                                     const IdSimOptions& options) {
  IdSimilarityRun run(embedder, options, ids.defined() ? ids_source : dir + " (shard identity vectors)");
  int64_t seen = 0;
  log::Stopwatch sw;
  formats::for_each_shard(dir, n_shards, [&](const formats::ShardData& d) {
    // 1. which pictures: the stored aligned crop for fixed alignment when there is one, else the image
    const bool crops = options.align == "fixed" && d.has_aligned;
    IDSYNTH_CHECK(crops || d.has_images, dir, ": shard ", d.shard_index,
                  ": expected full images for --align detect (output.store_full_image), found only aligned crops");
    const auto& pics = crops ? d.aligned : d.images;
    // 2. target vectors: the ID file's rows, or the vectors stored in the shard
    std::map<int64_t, int64_t> row_of;
    for (size_t k = 0; k < d.identity_index.size(); ++k) row_of[d.identity_index[k]] = static_cast<int64_t>(k);
    const at::Tensor shard_vectors =
        at::from_blob(const_cast<float*>(d.identity_vectors.data()),
                      {static_cast<int64_t>(d.identity_index.size()), d.dim}, at::kFloat);
    const size_t step = static_cast<size_t>(options.batch_size);
    for (size_t begin = 0; begin < d.size(); begin += step) {
      const size_t end = std::min(d.size(), begin + step);
      std::vector<cv::Mat> bgr;
      std::vector<std::string> names;
      std::vector<int64_t> identity, image;
      std::vector<at::Tensor> targets;
      for (size_t i = begin; i < end; ++i) {
        const int64_t id = d.labels[i];
        const std::string name = cat(dir, ": shard ", d.shard_index, " identity ", id, " image ", d.image_index[i]);
        if (ids.defined()) {
          IDSYNTH_CHECK(id < ids.size(0), ids_source, ": ids: expected a row for every identity of ", dir,
                        ", found ", ids.size(0), " rows and identity ", id);
          targets.push_back(ids[id]);
        } else {
          auto it = row_of.find(id);
          IDSYNTH_CHECK(it != row_of.end(), name, ": its identity vector is not stored in the shard");
          targets.push_back(shard_vectors[it->second]);
        }
        bgr.push_back(rgb_to_bgr(formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(pics[i].data()), pics[i].size(), name)));
        names.push_back(name);
        identity.push_back(id);
        image.push_back(d.image_index[i]);
      }
      run.add(bgr, names, identity, image, at::stack(targets).clone());
      seen += static_cast<int64_t>(end - begin);
    }
    LOG_INF("idsim: shard ", d.shard_index, " done, ", seen, " images so far");
  });
  IDSYNTH_CHECK(seen > 0, dir, ": expected generated images in the shards, found none");
  IdSimResult r = run.finish();
  LOG_INF("idsim over ", seen, " images completed, taking ", sw.seconds(), " s (",
          static_cast<double>(seen) / std::max(sw.seconds(), 1e-9), " images/s, batch ", options.batch_size, ")");
  return r;
}

IdSimMetrics id_similarity_metrics(const IdSimResult& r) {
  const IdSimStats& s = r.stats;
  IdSimMetrics m;
  m.count = s.count;
  m.identities = static_cast<int64_t>(s.per_identity.size());
  m.mean = s.mean;
  m.std = s.std;
  m.median = s.median;
  m.min = s.min;
  m.max = s.max;
  m.identity_mean = s.identity_mean;
  m.failed = static_cast<int64_t>(r.failed.size());
  m.per_identity = s.per_identity;
  m.histogram = {s.hist_edges, s.hist_counts};
  m.faces = r.faces;
  return m;
}

IdSimMetrics IdSimMetrics::from_json(const json::Value& entry, const std::string& where) {
  IdSimMetrics m = json_fields::read<IdSimMetrics>(entry, where);
  // The report draws the histogram and embeds the thumbnails as data: URIs; check both here, where
  // the error can still name the file.
  IDSYNTH_CHECK(m.histogram.edges.size() == m.histogram.counts.size() + 1 && !m.histogram.counts.empty(), where,
                ": histogram: expected one more edge than counts, found ", m.histogram.edges.size(), " edges and ",
                m.histogram.counts.size(), " counts");
  for (size_t i = 0; i < m.faces.size(); ++i)
    IDSYNTH_CHECK(m.faces[i].jpeg_base64.find_first_not_of(
                      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") == std::string::npos,
                  where, ": faces[", i, "]: jpeg: expected base64 text, found other characters");
  return m;
}

}  // namespace idsynth::eval
