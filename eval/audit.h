// The audit of a finished synthetic dataset (`idsynth eval audit`): how close its identities come to
// real people, and how varied it is.
//
// 1. Closeness to real people. Both sides are reduced to identity centres, the mean of an identity's
//    L2-normalised embeddings, normalised again. Each synthetic centre gets its nearest real centre
//    (cosine); the real gallery gets its own nearest-negative-centre cosines (each real centre against
//    every other). A synthetic identity is flagged when its nearest real cosine exceeds the threshold:
//    by default the gallery's 99th percentile of nearest-negative cosines (VIGFace's criterion: a
//    synthetic identity must lie farther from every real one than real identities lie from each
//    other), or a fixed cosine. For a flagged identity each image's nearest real centre is listed too.
// 2. Quality of the synthetic set itself: intra-class spread (each image's cosine to its own centre),
//    inter-class separation (each synthetic centre's nearest other synthetic centre) and near-duplicate
//    images within an identity (cosine above 0.95).
//
// The search is exact: the query centres are multiplied with the gallery centres in blocks on the
// chosen device, keeping the top-1 of each row, so memory stays bounded for 10K × 200K centres.
//
// The real gallery is a folder with one subfolder of images per identity, insightface RecordIO
// (train.rec + train.idx), an idsynth dataset, or precomputed centres ([N, D] in a safetensors, .npy
// or torch file, one row per identity). The synthetic dataset is an idsynth dataset: its stored
// images (the aligned crop when there is one) embedded by the recogniser, or, without stored images or
// with `synthetic = "vectors"`, the identity vectors stored in its shards as the centres (meaningful
// only when the gallery was embedded by the generator's recogniser).
// Ref: VIGFace (Kim et al., 2024) sec. 4, the identity-leak criterion; Vec2Face issue #16 (per-image
//      comparison with class centres); numpy.percentile (linear interpolation).
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/json.h"
#include "core/json_fields.h"
#include "recognition/face_embedder.h"

namespace idsynth::eval {

// ---- centres and the exact search --------------------------------------------------------------

struct Centres {
  at::Tensor vectors;          // [N, D] float32, unit rows
  std::vector<int64_t> label;  // [N] identity label of each row, ascending
  std::vector<int64_t> count;  // [N] embeddings averaged (0: given as a centre)
};

// The mean of the L2-normalised rows of `embeddings` [M, D] per label, normalised again.
Centres identity_centres(const at::Tensor& embeddings, const std::vector<int64_t>& labels);

struct NearestRows {
  std::vector<int64_t> index;  // [Q] row of `keys`
  std::vector<double> cosine;  // [Q] its dot product with the query
};

// For each row of `queries` [Q, D], the row of `keys` [K, D] with the largest dot product (for unit
// rows, the cosine); ties go to the lower index. Exact: queries × keysᵀ in blocks of block_rows ×
// block_cols on `device`, keeping each row's top-1. exclude_self: queries and keys are the same set,
// and row i does not match key i (its nearest negative). Needs K >= 1 (K >= 2 with exclude_self).
NearestRows nearest_rows(const at::Tensor& queries, const at::Tensor& keys, c10::Device device, bool exclude_self = false,
                         int64_t block_rows = 2048, int64_t block_cols = 16384);

// numpy.percentile(values, p) with its default linear interpolation. Throws when empty.
double percentile(std::vector<double> values, double p);

// ---- the two sides -----------------------------------------------------------------------------

struct AuditOptions {
  std::optional<double> threshold;  // a fixed cosine; default: the gallery's `percentile` of nearest negatives
  double percentile = 99.0;
  std::string synthetic = "auto";   // auto | images | vectors
  std::string align = "fixed";      // fixed: images are aligned crops; detect: SCRFD + alignment (needs a detector)
  int64_t batch_size = 64;
  int64_t bins = 50;                // histogram bins over [-1, 1]
  double duplicate_cosine = 0.95;   // two images of one identity above this are near-duplicates
  int64_t list_duplicates = 20;     // near-duplicate pairs listed in metrics.json
  int64_t show_flagged = 20;        // flagged identities shown with faces in the report
  int64_t thumb = 64;               // thumbnail edge in pixels
  c10::Device device = c10::kCPU;   // where the search runs
  void check() const;
};

// Where one face image is: an image file (index < 0), or record `index` of a shard (.h5) or of a
// RecordIO file (.rec, in the reader's order), for the report's thumbnails.
struct FaceRef {
  std::string file;
  int64_t index = -1;
};

enum class GalleryKind { centres, folders, recordio, dataset };
// A file: centres; a folder with train.rec: recordio; a folder with manifest.json or shards/: dataset;
// another folder: one subfolder per identity.
GalleryKind gallery_kind(const std::string& path);
const char* gallery_kind_name(GalleryKind kind);

struct Gallery {
  std::string source;
  GalleryKind kind = GalleryKind::centres;
  Centres centres;
  std::vector<std::string> names;  // per centre: subfolder name, "label N" or "row N"
  std::vector<FaceRef> face;       // per centre: its first image (file empty for precomputed centres)
  int64_t images = 0;              // images embedded
  std::vector<std::string> failed; // "name: why" of images without an embedding
};

// The real gallery at `path`; `n_shards` is the shard count when it is an idsynth dataset
// (dataset::dataset_shard_count), otherwise unused. Errors name the path, the field and what was found.
Gallery read_gallery(const recognition::FaceEmbedder& embedder, const std::string& path, int64_t n_shards,
                     const AuditOptions& options);

struct SyntheticSet {
  std::string source;
  std::string mode;                  // "images" or "vectors"
  Centres centres;
  at::Tensor embeddings;             // [M, D] unit rows ("images" only)
  std::vector<int64_t> label, image; // [M] identity and image index of each row
  std::vector<FaceRef> face;         // [M] ("images"); per centre its first image ("vectors": none)
  int64_t shards = 0;
  std::vector<std::string> failed;
};

// The synthetic dataset in `dir` of `n_shards` shards.
SyntheticSet read_synthetic(const recognition::FaceEmbedder& embedder, const std::string& dir, int64_t n_shards,
                            const AuditOptions& options);

// ---- the result: the "audit" entry of metrics.json ---------------------------------------------

struct AuditMetrics {
  static constexpr const char* kEntry = "audit";

  struct Distribution {
    int64_t count = 0;
    double mean = 0.0, std = 0.0, min = 0.0, median = 0.0, p99 = 0.0, max = 0.0;
    std::vector<double> edges;    // bins + 1, from -1 to 1
    std::vector<int64_t> counts;  // per bin
    template <class Self, class F>
    static void fields(Self& m, F& f) {
      f("count", m.count);
      f("mean", m.mean);
      f("std", m.std);
      f("min", m.min);
      f("median", m.median);
      f("p99", m.p99);
      f("max", m.max);
      f("edges", m.edges);
      f("counts", m.counts);
    }
  };
  struct FlaggedImage {
    int64_t image = 0;
    std::string nearest;  // the real identity's name
    double cosine = 0.0;
    template <class Self, class F>
    static void fields(Self& m, F& f) {
      f("image", m.image);
      f("nearest", m.nearest);
      f("cosine", m.cosine);
    }
  };
  struct Flagged {
    int64_t identity = 0;
    std::string nearest;  // the real identity's name
    double cosine = 0.0;
    std::vector<FlaggedImage> images;               // synthetic "images" only
    std::optional<std::string> face, nearest_face;  // base64 JPEG thumbnails, when images are available
    template <class Self, class F>
    static void fields(Self& m, F& f) {
      f("identity", m.identity);
      f("nearest", m.nearest);
      f("cosine", m.cosine);
      f("images", m.images);
      f("face", m.face);
      f("nearest_face", m.nearest_face);
    }
  };
  struct Duplicate {
    int64_t identity = 0, image_a = 0, image_b = 0;
    double cosine = 0.0;
    template <class Self, class F>
    static void fields(Self& m, F& f) {
      f("identity", m.identity);
      f("image_a", m.image_a);
      f("image_b", m.image_b);
      f("cosine", m.cosine);
    }
  };

  std::string gallery, gallery_kind;
  int64_t gallery_identities = 0, gallery_images = 0;
  std::string synthetic;  // "images" or "vectors": what the synthetic centres are made of
  int64_t identities = 0, images = 0;
  double threshold = 0.0;
  std::string threshold_rule;  // "gallery p99 nearest negative" or "fixed"
  int64_t flagged_count = 0;
  double flagged_fraction = 0.0;
  Distribution nearest_real;               // per synthetic identity: its nearest real centre
  Distribution gallery_nearest_negative;   // per real identity: its nearest other real centre
  std::vector<Flagged> flagged;            // by cosine, highest first
  std::optional<Distribution> inter_class; // per synthetic identity: its nearest other synthetic centre
  std::optional<Distribution> intra_class; // per synthetic image: cosine to its own centre
  std::optional<double> duplicate_threshold;
  std::optional<int64_t> duplicate_pairs, duplicate_identities;
  std::vector<Duplicate> duplicates;       // the first list_duplicates pairs, highest cosine first
  std::optional<std::string> model, dataset;  // set by `idsynth eval audit`

  template <class Self, class F>
  static void fields(Self& m, F& f) {
    f("gallery", m.gallery);
    f("gallery_kind", m.gallery_kind);
    f("gallery_identities", m.gallery_identities);
    f("gallery_images", m.gallery_images);
    f("synthetic", m.synthetic);
    f("identities", m.identities);
    f("images", m.images);
    f("threshold", m.threshold);
    f("threshold_rule", m.threshold_rule);
    f("flagged_count", m.flagged_count);
    f("flagged_fraction", m.flagged_fraction);
    f("nearest_real", m.nearest_real);
    f("gallery_nearest_negative", m.gallery_nearest_negative);
    f("flagged", m.flagged);
    f("inter_class", m.inter_class);
    f("intra_class", m.intra_class);
    f("duplicate_threshold", m.duplicate_threshold);
    f("duplicate_pairs", m.duplicate_pairs);
    f("duplicate_identities", m.duplicate_identities);
    f("duplicates", m.duplicates);
    f("model", m.model);
    f("dataset", m.dataset);
  }
  json::Value to_json() const { return json_fields::write(*this); }
  static AuditMetrics from_json(const json::Value& entry, const std::string& where);
};

// Everything above for one gallery and one synthetic set. `gallery_name` names the gallery in the
// report (default: its path). Throws when the widths of the two sides differ.
AuditMetrics audit(const Gallery& gallery, const SyntheticSet& synthetic, const AuditOptions& options,
                   const std::string& gallery_name = "");

// A thumbnail of a face (base64 JPEG of `edge` pixels), or empty when it cannot be read.
std::string face_thumbnail(const FaceRef& face, int64_t edge);

}  // namespace idsynth::eval
