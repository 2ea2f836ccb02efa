// `idsynth eval audit`: the exact blocked search, the centres, the "audit" entry of metrics.json and
// its report section; on real photos (goldens/realfaces embedded by the real recogniser fr_feature.onnx)
// a "synthetic" dataset holding photos of two gallery identities is flagged for exactly those two, and
// random identity vectors far from the gallery are not; one-line errors for bad input.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <set>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "eval/audit.h"
#include "eval/metrics_file.h"
#include "eval/report.h"
#include "formats/dataset_folder.h"
#include "formats/image.h"
#include "formats/shard_file.h"
#include "recognition/iresnet.h"
#include "recognition/recognizer.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"

namespace idsynth::eval {
namespace {

namespace fs = std::filesystem;

// ---- helpers ----------------------------------------------------------------------------------

struct SynthIdentity {
  int64_t id = 0;
  std::vector<std::string> images;  // encoded image bytes (stored as the aligned crops)
  std::vector<float> vector;        // the stored identity vector
};

// A one-shard idsynth dataset in `dir` (shard file + record), with aligned crops when the identities
// have images. `dim` is the stored vector width (0 with no vectors stored).
void write_dataset(const std::string& dir, const std::vector<SynthIdentity>& ids, int64_t dim, bool store_vectors = true) {
  fs::create_directories(formats::shards_dir(dir));
  formats::ShardData d;
  d.model_files = "{}";
  d.dim = dim;
  d.has_images = false;
  d.has_aligned = !ids.empty() && !ids.front().images.empty();
  for (const auto& s : ids) {
    if (store_vectors) {
      d.identity_index.push_back(s.id);
      d.identity_vectors.insert(d.identity_vectors.end(), s.vector.begin(), s.vector.end());
    }
    const size_t n = d.has_aligned ? s.images.size() : 2;
    for (size_t i = 0; i < n; ++i) {
      d.labels.push_back(s.id);
      d.image_index.push_back(static_cast<int32_t>(i));
      d.attempt.push_back(0);
      d.seed.push_back(0);
      d.similarity.push_back(0.f);
      if (d.has_aligned) d.aligned.push_back(s.images[i]);
    }
  }
  const std::string h5 = formats::shard_h5_path(dir, 0);
  formats::write_shard(h5, d);
  formats::ShardRecord r;
  r.file = fs::path(h5).filename().string();
  r.size = fs::file_size(h5);
  r.identities = static_cast<int64_t>(ids.size());
  r.images = static_cast<int64_t>(d.labels.size());
  r.draws = r.images;
  formats::write_record(dir, r);
}

std::vector<float> to_vector(const at::Tensor& row) {
  const at::Tensor c = row.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

std::string tiny_recognizer(const std::string& dir) {
  const std::string path = dir + "/tiny_iresnet.safetensors";
  recognition::write_random_iresnet(path, 512, 7);
  return path;
}

// realfaces identities, from the same-person rows of master.csv (connected photos).
const std::map<std::string, std::vector<int>> kRealIdentities = {
    {"a", {1, 2, 4, 5, 6, 7, 10, 11}}, {"b", {3, 12}},  {"c", {13, 14, 15}}, {"d", {16, 17}}, {"e", {18, 19}},
    {"f", {20, 21}},                   {"g", {22, 23}}, {"h", {24, 25}},     {"i", {8, 9}}};

std::string aligned_png(const std::string& realfaces, int photo) {
  return realfaces + "/aligned/img" + std::to_string(photo) + ".png";
}

// A gallery folder of the realfaces identities (one subfolder each), without the photos in `held_out`
// and without the identities in `absent`.
std::string realfaces_gallery(const std::string& realfaces, const std::string& dir, const std::set<int>& held_out,
                              const std::set<std::string>& absent) {
  for (const auto& [name, photos] : kRealIdentities) {
    if (absent.count(name)) continue;
    fs::create_directories(dir + "/" + name);
    for (int p : photos)
      if (!held_out.count(p)) fs::copy_file(aligned_png(realfaces, p), dir + "/" + name + "/img" + std::to_string(p) + ".png");
  }
  return dir;
}

// ---- the search, the centres, the percentile -----------------------------------------------------

TEST(AuditSearch, BlockedTop1MatchesFullProduct) {
  at::manual_seed(3);
  const at::Tensor q = recognition::l2_normalize(at::randn({37, 16}));
  const at::Tensor k = recognition::l2_normalize(at::randn({101, 16}));
  const at::Tensor full = at::matmul(q, k.t());
  const auto [v, i] = full.max(1);
  for (const auto& [br, bc] : std::vector<std::pair<int64_t, int64_t>>{{5, 7}, {64, 1000}, {1, 1}}) {
    const NearestRows r = nearest_rows(q, k, c10::kCPU, false, br, bc);
    for (int64_t j = 0; j < q.size(0); ++j) {
      EXPECT_EQ(r.index[static_cast<size_t>(j)], i[j].item<int64_t>()) << "row " << j << " blocks " << br << "x" << bc;
      EXPECT_NEAR(r.cosine[static_cast<size_t>(j)], v[j].item<double>(), 1e-6);
    }
  }
  // nearest negatives: the same set, the diagonal left out
  const at::Tensor self = at::matmul(k, k.t()) - 10.0 * at::eye(k.size(0));
  const auto [sv, si] = self.max(1);
  const NearestRows n = nearest_rows(k, k, c10::kCPU, true, 6, 9);
  for (int64_t j = 0; j < k.size(0); ++j) {
    EXPECT_EQ(n.index[static_cast<size_t>(j)], si[j].item<int64_t>());
    EXPECT_NEAR(n.cosine[static_cast<size_t>(j)], sv[j].item<double>(), 1e-6);
  }
}

TEST(AuditSearch, PercentileAsNumpy) {
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 50), 2.5);
  std::vector<double> v;
  for (int i = 0; i <= 100; ++i) v.push_back(i);
  EXPECT_DOUBLE_EQ(percentile(v, 99), 99.0);
  EXPECT_NEAR(percentile({0.1, 0.3, 0.2}, 99), 0.298, 1e-12);  // numpy.percentile([.1,.3,.2], 99)
  EXPECT_DOUBLE_EQ(percentile({7}, 99), 7.0);
}

TEST(AuditCentres, MeanOfNormalisedEmbeddingsRenormalised) {
  const at::Tensor e = at::tensor({2.f, 0.f, 0.f, 3.f, 0.f, -5.f}).reshape({3, 2});
  const Centres c = identity_centres(e, {9, 9, 4});
  ASSERT_EQ(c.label, (std::vector<int64_t>{4, 9}));
  EXPECT_EQ(c.count, (std::vector<int64_t>{1, 2}));
  EXPECT_NEAR(c.vectors[0][1].item<double>(), -1.0, 1e-6);
  EXPECT_NEAR(c.vectors[1][0].item<double>(), std::sqrt(0.5), 1e-6);  // (1,0) and (0,1) averaged
  EXPECT_NEAR(c.vectors[1][1].item<double>(), std::sqrt(0.5), 1e-6);
}

// ---- metrics.json and the report ----------------------------------------------------------------

AuditMetrics example_metrics() {
  AuditMetrics m;
  m.gallery = "realfaces";
  m.gallery_kind = "folders";
  m.gallery_identities = 7;
  m.gallery_images = 20;
  m.synthetic = "images";
  m.identities = 4;
  m.images = 7;
  m.threshold = 0.31;
  m.threshold_rule = "gallery p99 nearest negative";
  m.flagged_count = 1;
  m.flagged_fraction = 0.25;
  AuditMetrics::Distribution d;
  d.count = 4;
  d.mean = 0.3;
  for (int b = 0; b <= 4; ++b) d.edges.push_back(-1.0 + 0.5 * b);
  d.counts = {0, 1, 2, 1};
  m.nearest_real = m.gallery_nearest_negative = d;
  m.inter_class = m.intra_class = d;
  m.flagged.push_back({2, "a", 0.8, {{0, "a", 0.82}}, std::string("QUJD"), std::nullopt});
  m.duplicate_threshold = 0.95;
  m.duplicate_pairs = 0;
  m.duplicate_identities = 0;
  return m;
}

TEST(AuditReport, EntryRoundTripsAndHasItsSection) {
  const AuditMetrics m = example_metrics();
  json::Value metrics = json::Value::object();
  metrics.set(AuditMetrics::kEntry, m.to_json());
  EXPECT_EQ(metric_kind("audit", metrics.at("audit")), MetricKind::audit);
  const EvalMetrics back = EvalMetrics::from_json(metrics, "metrics.json");
  ASSERT_TRUE(back.audit.has_value());
  EXPECT_EQ(back.audit->to_json().dump(), m.to_json().dump());
  const std::string html = report_html(metrics, "audit");
  EXPECT_NE(html.find("class=\"audit-histogram\""), std::string::npos);
  EXPECT_NE(html.find("threshold 0.310"), std::string::npos);
  EXPECT_NE(html.find("data:image/jpeg;base64,QUJD"), std::string::npos);
  EXPECT_NE(report_markdown(metrics, "audit").find("1 of 4 synthetic identities flagged"), std::string::npos);
  // eval report: a column that compares runs
  const std::string table = compare_markdown({{"run1", metrics}}, "runs");
  EXPECT_NE(table.find("flagged ↓"), std::string::npos) << table;
  EXPECT_NE(table.find("1/4 (25.00%)"), std::string::npos) << table;
  // a histogram that does not fit its edges is an error naming the entry and field
  json::Value bad = m.to_json();
  json::Value hist = bad.at("nearest_real");
  hist.set("counts", json::Value::array());
  bad.set("nearest_real", hist);
  EXPECT_NE(test::error_of([&] { AuditMetrics::from_json(bad, "m.json: audit"); }).find("m.json: audit: nearest_real: expected one more"),
            std::string::npos);
}

// ---- bad input ---------------------------------------------------------------------------------------

TEST(AuditErrors, EmptyGalleryWrongWidthNoStoredVectors) {
  const std::string dir = test::temp_dir("audit_errors");
  const recognition::FaceEmbedder embedder(recognition::load_recognizer(tiny_recognizer(dir), c10::kCPU));
  AuditOptions o;
  // 1. an empty gallery folder, and an empty centres file
  fs::create_directories(dir + "/empty/person");
  const std::string empty = test::error_of([&] { read_gallery(embedder, dir + "/empty", 0, o); });
  EXPECT_NE(empty.find(dir + "/empty: --gallery: expected one subfolder of face images"), std::string::npos) << empty;
  EXPECT_NE(empty.find("found none"), std::string::npos) << empty;
  EXPECT_EQ(empty.find('\n'), std::string::npos);
  save_safetensors(dir + "/none.safetensors", {{"centres", at::zeros({0, 512})}});
  const std::string none = test::error_of([&] { read_gallery(embedder, dir + "/none.safetensors", 0, o); });
  EXPECT_NE(none.find(dir + "/none.safetensors: --gallery"), std::string::npos) << none;
  // 2. a gallery of another width than the dataset's vectors
  at::manual_seed(1);
  std::vector<SynthIdentity> ids;
  for (int64_t i = 0; i < 3; ++i) ids.push_back({i, {}, to_vector(recognition::l2_normalize(at::randn({1, 512}))[0])});
  write_dataset(dir + "/vectors", ids, 512);
  save_safetensors(dir + "/narrow.safetensors", {{"centres", at::randn({5, 128})}});
  const Gallery narrow = read_gallery(embedder, dir + "/narrow.safetensors", 0, o);
  const SyntheticSet synth = read_synthetic(embedder, dir + "/vectors", 1, o);
  EXPECT_EQ(synth.mode, "vectors");
  const std::string width = test::error_of([&] { audit(narrow, synth, o); });
  EXPECT_EQ(width, dir + "/narrow.safetensors: --gallery: width: expected 512 (the identity vectors stored in the dataset), found 128");
  // 3. a dataset with neither stored images nor stored identity vectors
  write_dataset(dir + "/bare", ids, 512, /*store_vectors=*/false);
  const std::string bare = test::error_of([&] { read_synthetic(embedder, dir + "/bare", 1, o); });
  EXPECT_NE(bare.find(formats::shard_h5_path(dir + "/bare", 0) + ": identity_vectors: expected a stored [K, D] vector per identity"),
            std::string::npos)
      << bare;
  EXPECT_NE(bare.find("found 0 values"), std::string::npos) << bare;
  // ... and asking for images where the shards store none
  AuditOptions images = o;
  images.synthetic = "images";
  EXPECT_NE(test::error_of([&] { read_synthetic(embedder, dir + "/vectors", 1, images); })
                .find(": images: expected stored images or aligned crops for --synthetic images, found neither"),
            std::string::npos);
}

TEST(AuditImages, TinyRecognizerEndToEnd) {
  // The images path without goldens: noise crops embedded by a random IResNet; the audit runs, the
  // quality numbers are there, and a fixed threshold of 1 flags nothing.
  const std::string dir = test::temp_dir("audit_tiny");
  const recognition::FaceEmbedder embedder(recognition::load_recognizer(tiny_recognizer(dir), c10::kCPU));
  at::manual_seed(5);
  std::vector<SynthIdentity> ids;
  for (int64_t i = 0; i < 3; ++i) {
    SynthIdentity s{i, {}, std::vector<float>(512, 0.f)};
    s.vector[static_cast<size_t>(i)] = 1.f;
    for (int j = 0; j < 3; ++j) {
      const at::Tensor img = at::randint(0, 256, {112, 112, 3}, at::kByte);
      s.images.push_back(formats::encode_image_rgb(formats::tensor_to_mat(img), ".png"));
    }
    s.images.push_back(s.images.back());  // an exact duplicate
    ids.push_back(s);
  }
  write_dataset(dir + "/ds", ids, 512);
  for (int p = 0; p < 2; ++p) {
    fs::create_directories(dir + "/gallery/p" + std::to_string(p));
    formats::write_image_rgb(dir + "/gallery/p" + std::to_string(p) + "/x.png",
                             formats::tensor_to_mat(at::randint(0, 256, {112, 112, 3}, at::kByte)));
  }
  AuditOptions o;
  o.threshold = 1.0;
  const Gallery g = read_gallery(embedder, dir + "/gallery", 0, o);
  const SyntheticSet s = read_synthetic(embedder, dir + "/ds", 1, o);
  EXPECT_EQ(s.mode, "images");
  EXPECT_EQ(s.label.size(), 12u);
  const AuditMetrics m = audit(g, s, o, "noise");
  EXPECT_EQ(m.flagged_count, 0);
  EXPECT_EQ(m.threshold_rule, "fixed");
  EXPECT_EQ(m.identities, 3);
  ASSERT_TRUE(m.intra_class && m.inter_class && m.duplicate_pairs);
  EXPECT_EQ(m.intra_class->count, 12);
  EXPECT_GE(*m.duplicate_pairs, 3);  // each identity's last two images are the same bytes
  EXPECT_GE(*m.duplicate_identities, 3);
}

// ---- on real photos ---------------------------------------------------------------------------------

TEST(AuditRealFaces, TwoRealIdentitiesFlaggedExactly) {
  IDSYNTH_REQUIRE_GOLDEN(realfaces, "realfaces");
  IDSYNTH_REQUIRE_TEST_RECOGNIZER(model);
  at::set_num_threads(1);
  const std::string dir = test::temp_dir("audit_realfaces");
  // Gallery: seven identities; photos 10, 11 (identity a) and 15 (identity c) held out. The "synthetic"
  // set: those held-out photos as two identities, plus identities d and f, which the gallery lacks
  // (new people, as a synthetic identity should be).
  const std::string gallery_dir = realfaces_gallery(realfaces, dir + "/gallery", {10, 11, 15}, {"d", "f"});
  const auto read = [](const std::string& path) { return read_text_file(path); };
  std::vector<SynthIdentity> ids = {
      {0, {read(aligned_png(realfaces, 10)), read(aligned_png(realfaces, 11))}, std::vector<float>(512, 0.f)},
      {1, {read(aligned_png(realfaces, 16)), read(aligned_png(realfaces, 17))}, std::vector<float>(512, 0.f)},
      {2, {read(aligned_png(realfaces, 15))}, std::vector<float>(512, 0.f)},
      {3, {read(aligned_png(realfaces, 20)), read(aligned_png(realfaces, 21))}, std::vector<float>(512, 0.f)}};
  for (auto& s : ids) s.vector[static_cast<size_t>(s.id)] = 1.f;
  write_dataset(dir + "/ds", ids, 512);

  const recognition::FaceEmbedder embedder(recognition::load_recognizer(model, c10::kCPU));
  AuditOptions o;
  const Gallery g = read_gallery(embedder, gallery_dir, 0, o);
  EXPECT_EQ(g.centres.label.size(), 7u);
  EXPECT_EQ(g.images, 18);  // 25 photos less 3 held out and identities d, f (2 each)
  const SyntheticSet s = read_synthetic(embedder, dir + "/ds", 1, o);
  const AuditMetrics m = audit(g, s, o, "realfaces");
  std::cout << "threshold " << m.threshold << " (" << m.threshold_rule << "), gallery nearest negative max "
            << m.gallery_nearest_negative.max << "\n";
  for (const auto& f : m.flagged) std::cout << "flagged identity " << f.identity << " ~ " << f.nearest << " " << f.cosine << "\n";
  EXPECT_EQ(m.threshold_rule, "gallery p99 nearest negative");
  EXPECT_NEAR(m.threshold, percentile(nearest_rows(g.centres.vectors, g.centres.vectors, c10::kCPU, true).cosine, 99), 1e-12);
  ASSERT_EQ(m.flagged.size(), 2u);
  std::map<int64_t, std::string> flagged;
  for (const auto& f : m.flagged) flagged[f.identity] = f.nearest;
  EXPECT_EQ(flagged, (std::map<int64_t, std::string>{{0, "a"}, {2, "c"}}));
  for (const auto& f : m.flagged) {
    EXPECT_TRUE(f.face.has_value() && f.nearest_face.has_value());  // both faces for the report
    for (const auto& im : f.images) EXPECT_EQ(im.nearest, f.nearest);
  }
  EXPECT_EQ(m.flagged[0].images.size() + m.flagged[1].images.size(), 3u);
  EXPECT_EQ(m.nearest_real.count, 4);
  // the whole report writes and reads back
  json::Value metrics = json::Value::object();
  metrics.set(AuditMetrics::kEntry, m.to_json());
  write_reports(dir + "/out", metrics, "audit");
  EXPECT_TRUE(EvalMetrics::from_json(read_run_metrics(dir + "/out"), "metrics.json").audit.has_value());
}

TEST(AuditRealFaces, RandomVectorsFarFromGalleryNotFlagged) {
  IDSYNTH_REQUIRE_GOLDEN(realfaces, "realfaces");
  IDSYNTH_REQUIRE_TEST_RECOGNIZER(model);
  at::set_num_threads(1);
  const std::string dir = test::temp_dir("audit_random");
  const std::string gallery_dir = realfaces_gallery(realfaces, dir + "/gallery", {}, {});
  const recognition::FaceEmbedder embedder(recognition::load_recognizer(model, c10::kCPU));
  AuditOptions o;
  const Gallery g = read_gallery(embedder, gallery_dir, 0, o);
  ASSERT_EQ(g.centres.label.size(), 9u);
  // 200 random unit vectors with the gallery's span projected out: far from every real identity
  at::manual_seed(11);
  at::Tensor r = at::randn({200, 512});
  const at::Tensor basis = std::get<0>(at::linalg_qr(g.centres.vectors.t()));  // [512, 9]
  r = recognition::l2_normalize(r - at::matmul(at::matmul(r, basis), basis.t()));
  std::vector<SynthIdentity> ids;
  for (int64_t i = 0; i < r.size(0); ++i) ids.push_back({i, {}, to_vector(r[i])});
  write_dataset(dir + "/ds", ids, 512);
  const SyntheticSet s = read_synthetic(embedder, dir + "/ds", 1, o);
  EXPECT_EQ(s.mode, "vectors");
  const AuditMetrics m = audit(g, s, o, "realfaces");
  std::cout << "threshold " << m.threshold << ", nearest real max " << m.nearest_real.max << "\n";
  EXPECT_EQ(m.flagged_count, 0);
  EXPECT_EQ(m.identities, 200);
  EXPECT_LT(m.nearest_real.max, 1e-4);
  EXPECT_GT(m.threshold, 0.05);
  EXPECT_FALSE(m.intra_class.has_value());
  ASSERT_TRUE(m.inter_class.has_value());
}

}  // namespace
}  // namespace idsynth::eval
