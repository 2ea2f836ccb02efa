// ID similarity of generated faces (`idsynth eval idsim`): the cosine between each target identity
// vector and the ArcFace embedding of each face drawn for it, as in the Arc2Face paper's
// ID-consistency table (mean cosine), plus its distribution and per-identity statistics.
//
// Faces come from an `idsynth sample` folder ({identity:05d}_{image:03d}.png) or an idsynth dataset
// (HDF5 shards). Alignment: "fixed" embeds the image as an aligned crop (resized to the recogniser's
// input, as Arc2Face's 512x512 outputs are framed; a dataset's stored 112x112 aligned crop when it
// has one), "detect" runs SCRFD on the full image and aligns the largest face. The embedding is
// recognition::FaceEmbedder's, the one `idsynth embed` uses. A dataset stores JPEGs, so its cosines
// differ slightly from those the generator's ID filter computed on the lossless images.
// Ref: Arc2Face (Papantoniou et al., 2024) sec. 4 "ID similarity": cosine of ArcFace features;
//      numpy.median / numpy.std (population) / numpy.histogram (last bin closed) for the statistics.
#pragma once

#include <ATen/Tensor.h>
#include <opencv2/core.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/json_fields.h"
#include "formats/identity_file.h"
#include "recognition/face_embedder.h"

namespace idsynth::eval {

// The target identities: the same reader as `idsynth sample` (generator/identity_file.h).
using formats::read_identity_vectors;

struct SampleImage {
  int64_t identity = 0;
  int64_t image = 0;
  std::string path;
};
// The `{identity:05d}_{image:03d}.png` files of an `idsynth sample` folder, sorted by identity then
// image; other files (sample.json, ...) are ignored. Throws when there is none.
std::vector<SampleImage> list_sample_images(const std::string& dir);

struct IdSimOptions {
  std::string align = "fixed";  // fixed | detect (detect needs a FaceEmbedder with a detector)
  // SCRFD letterbox edge for detect, read by the command that builds the detector. insightface's
  // 640 often misses Arc2Face's tight 512x512 faces; smaller sizes find them (Arc2Face issue #17).
  int64_t det_size = 640;
  int64_t batch_size = 32;
  int64_t bins = 40;             // histogram bins over [-1, 1]
  int64_t grid_identities = 6;   // face grid kept for the report: the first identities...
  int64_t grid_images = 6;       // ...and their first images
  int64_t thumb = 64;            // thumbnail edge in pixels (JPEG, base64 in metrics.json)
  void check() const;
};

struct IdentitySimilarity {
  int64_t identity = 0;
  int64_t count = 0;
  double mean = 0.0, min = 0.0, max = 0.0;

  template <class Self, class F>
  static void fields(Self& m, F& f) {
    f("identity", m.identity);
    f("count", m.count);
    f("mean", m.mean);
    f("min", m.min);
    f("max", m.max);
  }
};

struct IdSimStats {
  int64_t count = 0;
  double mean = 0.0, std = 0.0, median = 0.0, min = 0.0, max = 0.0;
  double identity_mean = 0.0;  // mean of the per-identity means
  std::vector<IdentitySimilarity> per_identity;  // identity order
  std::vector<double> hist_edges;                // bins + 1 edges from -1 to 1
  std::vector<int64_t> hist_counts;              // bins
};

// Statistics of the cosines (identity[i] is the identity of cosine[i]). Throws when empty.
IdSimStats summarize_id_similarity(const std::vector<int64_t>& identity, const std::vector<double>& cosine,
                                   int64_t bins = 40);

struct FaceThumb {
  int64_t identity = 0, image = 0;
  double cosine = 0.0;
  std::string jpeg_base64;

  template <class Self, class F>
  static void fields(Self& m, F& f) {
    f("identity", m.identity);
    f("image", m.image);
    f("cosine", m.cosine);
    f("jpeg", m.jpeg_base64);
  }
};

struct IdSimResult {
  std::vector<int64_t> identity, image;
  std::vector<double> cosine;
  std::vector<std::string> failed;  // "name: why" of images without an embedding
  std::vector<FaceThumb> faces;
  IdSimStats stats;
};

// Streams batches of faces through the embedder and keeps cosines and the report's thumbnails.
class IdSimilarityRun {
 public:
  // `ids_source` names the identity vectors in errors (the file, or the dataset's shards).
  IdSimilarityRun(const recognition::FaceEmbedder& embedder, IdSimOptions options, std::string ids_source);
  // One batch: BGR images (full images or aligned crops, by options.align), their names, identity and
  // image indices, and the target vector of each image [B, D].
  void add(const std::vector<cv::Mat>& bgr, const std::vector<std::string>& names, const std::vector<int64_t>& identity,
           const std::vector<int64_t>& image, const at::Tensor& targets);
  // Statistics over everything added; throws when no image gave an embedding.
  IdSimResult finish();

 private:
  const recognition::FaceEmbedder& embedder_;
  IdSimOptions options_;
  std::string ids_source_;
  IdSimResult result_;
  std::vector<int64_t> grid_ids_;  // identities chosen for the face grid, in order seen
};

// An `idsynth sample` folder against the identity vectors of `ids` (row k = identity k).
IdSimResult id_similarity_of_folder(const recognition::FaceEmbedder& embedder, const at::Tensor& ids,
                                    const std::string& ids_source, const std::string& dir, const IdSimOptions& options);
// An idsynth dataset folder of `n_shards` shards (dataset::dataset_shard_count); `ids` undefined
// uses the identity vectors stored in the shards.
IdSimResult id_similarity_of_dataset(const recognition::FaceEmbedder& embedder, const at::Tensor& ids,
                                     const std::string& ids_source, const std::string& dir, int64_t n_shards,
                                     const IdSimOptions& options);

// The "idsim" entry of metrics.json: the statistics, the histogram and the report's face thumbnails
// (base64 JPEGs), then where the numbers come from, which only the command knows.
struct IdSimMetrics {
  static constexpr const char* kEntry = "idsim";
  struct Histogram {
    std::vector<double> edges;    // bins + 1, from -1 to 1
    std::vector<int64_t> counts;  // images per bin
    template <class Self, class F>
    static void fields(Self& m, F& f) {
      f("edges", m.edges);
      f("counts", m.counts);
    }
  };

  int64_t count = 0;       // images with an embedding
  int64_t identities = 0;
  double mean = 0.0, std = 0.0, median = 0.0, min = 0.0, max = 0.0;
  double identity_mean = 0.0;
  int64_t failed = 0;      // images without an embedding, not counted
  std::vector<IdentitySimilarity> per_identity;
  Histogram histogram;
  std::vector<FaceThumb> faces;
  std::optional<std::string> align, model, ids, source;  // set by `idsynth eval idsim`
  std::optional<int64_t> det_size;                       // set with align "detect"

  template <class Self, class F>
  static void fields(Self& m, F& f) {
    f("count", m.count);
    f("identities", m.identities);
    f("mean", m.mean);
    f("std", m.std);
    f("median", m.median);
    f("min", m.min);
    f("max", m.max);
    f("identity_mean", m.identity_mean);
    f("failed", m.failed);
    f("per_identity", m.per_identity);
    f("histogram", m.histogram);
    f("faces", m.faces);
    f("align", m.align);
    f("det_size", m.det_size);
    f("model", m.model);
    f("ids", m.ids);
    f("source", m.source);
  }
  json::Value to_json() const { return json_fields::write(*this); }
  static IdSimMetrics from_json(const json::Value& entry, const std::string& where);
};

// The entry for a run's result, without the provenance fields.
IdSimMetrics id_similarity_metrics(const IdSimResult& result);

}  // namespace idsynth::eval
