// metrics.json entries owned by their metrics: each to_json / from_json round trip is exact, the bytes
// are those the eval commands wrote before the metrics owned their JSON, the kind of an entry comes
// from one rule, hand-written entries need only their headline number, and errors are one line
// naming the file, the entry and the field.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/file_util.h"
#include "core/json.h"
#include "eval/fid.h"
#include "eval/id_similarity.h"
#include "eval/lpips.h"
#include "eval/metrics_file.h"
#include "eval/report.h"
#include "eval/verification.h"
#include "tests/support/goldens.h"
#include "tests/support/process.h"

namespace idsynth::eval {
namespace {

// ---- inputs -----------------------------------------------------------------------------------

// 300 pairs with distances from a fixed integer recurrence (no generator whose stream could change
// between libtorch versions): same-identity pairs near 0.9, others near 1.5, overlapping.
VerificationResult sample_verification() {
  std::vector<double> dist;
  std::vector<bool> same;
  uint32_t state = 12345;
  for (int p = 0; p < 300; ++p) {
    state = state * 1103515245u + 12345u;
    const double u = static_cast<double>((state >> 8) % 10000) / 10000.0;
    same.push_back(p % 3 != 0);
    dist.push_back((same.back() ? 0.9 : 1.5) + 0.8 * (u - 0.5));
  }
  VerificationResult r = evaluate_distances(dist, same);
  r.xnorm = 21.734512;  // as evaluate_embeddings would add it
  return r;
}

IdSimResult sample_idsim() {
  IdSimResult r;
  for (int64_t i = 0; i < 24; ++i) {
    r.identity.push_back(i % 4);
    r.image.push_back(i / 4);
    r.cosine.push_back(0.55 + 0.013 * static_cast<double>((i * 7) % 19) - 0.1 * static_cast<double>(i % 4));
  }
  r.stats = summarize_id_similarity(r.identity, r.cosine, 20);
  r.failed = {"00003_009.png: no face detected"};
  for (int64_t id = 0; id < 2; ++id)
    for (int64_t k = 0; k < 2; ++k)
      r.faces.push_back({id, k, r.cosine[static_cast<size_t>(k * 4 + id)], base64_encode(cat("jpeg bytes ", id, k))});
  return r;
}

// ---- the entries as the eval commands built them before, one json::Value::set at a time --------

json::Value number_array(const std::vector<double>& v) {
  json::Value a = json::Value::array();
  for (double x : v) a.push_back(x);
  return a;
}

json::Value earlier_verification_entry(const VerificationResult& r, bool flip, int64_t pairs) {
  json::Value m = json::Value::object();
  m.set("accuracy", r.accuracy);
  m.set("std", r.std);
  m.set("best_thresholds", number_array(r.best_thresholds()));
  m.set("fold_accuracies", number_array(r.fold_accuracies));
  json::Value tar = json::Value::object();
  for (const auto& t : r.tar_at_far) {
    json::Value e = json::Value::object();
    e.set("tar", t.tar);
    e.set("far", t.far);
    e.set("threshold", t.threshold);
    e.set("impostors", t.impostors);  // the one key added since (2026-12-07); files without it still read
    char key[32];
    std::snprintf(key, sizeof key, "%.0e", t.far_target);
    tar.set(key, e);
  }
  m.set("tar_at_far", tar);
  m.set("xnorm", r.xnorm);
  m.set("flip", flip);
  m.set("pairs", pairs);
  json::Value roc = json::Value::object();
  roc.set("thresholds", number_array(r.thresholds));
  roc.set("tpr", number_array(r.tpr));
  roc.set("fpr", number_array(r.fpr));
  m.set("roc", roc);
  return m;
}

json::Value earlier_idsim_entry(const IdSimResult& r) {
  const IdSimStats& s = r.stats;
  json::Value m = json::Value::object();
  m.set("count", s.count);
  m.set("identities", static_cast<int64_t>(s.per_identity.size()));
  m.set("mean", s.mean);
  m.set("std", s.std);
  m.set("median", s.median);
  m.set("min", s.min);
  m.set("max", s.max);
  m.set("identity_mean", s.identity_mean);
  m.set("failed", static_cast<int64_t>(r.failed.size()));
  json::Value per = json::Value::array();
  for (const auto& p : s.per_identity) {
    json::Value e = json::Value::object();
    e.set("identity", p.identity);
    e.set("count", p.count);
    e.set("mean", p.mean);
    e.set("min", p.min);
    e.set("max", p.max);
    per.push_back(e);
  }
  m.set("per_identity", per);
  json::Value hist = json::Value::object(), counts = json::Value::array();
  for (int64_t c : s.hist_counts) counts.push_back(c);
  hist.set("edges", number_array(s.hist_edges));
  hist.set("counts", counts);
  m.set("histogram", hist);
  json::Value faces = json::Value::array();
  for (const auto& f : r.faces) {
    json::Value e = json::Value::object();
    e.set("identity", f.identity);
    e.set("image", f.image);
    e.set("cosine", f.cosine);
    e.set("jpeg", f.jpeg_base64);
    faces.push_back(e);
  }
  m.set("faces", faces);
  m.set("align", "fixed");
  m.set("model", "model/recognizer.safetensors");
  m.set("ids", "ids.npy");
  m.set("source", "samples");
  return m;
}

// The text json::write_file puts in metrics.json.
std::string file_text(const json::Value& v) { return v.dump(2) + "\n"; }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- tests ------------------------------------------------------------------------------------

TEST(MetricsJson, VerificationBytesAsEvalVerifyWroteThem) {
  const VerificationResult r = sample_verification();
  ASSERT_EQ(r.tar_at_far.size(), 2u);
  const json::Value now = verification_metrics(r, true, 300).to_json();
  EXPECT_EQ(file_text(now), file_text(earlier_verification_entry(r, true, 300)));
  EXPECT_NE(now.dump(2).find("\"1e-04\": {"), std::string::npos);
}

TEST(MetricsJson, VerificationRoundTripIsExact) {
  const VerificationResult r = sample_verification();
  const VerificationMetrics m = verification_metrics(r, false, 300);
  const VerificationMetrics back = VerificationMetrics::from_json(json::parse(m.to_json().dump(2)), "test");
  EXPECT_EQ(back.to_json().dump(2), m.to_json().dump(2));
  EXPECT_EQ(back.accuracy, r.accuracy);
  EXPECT_EQ(back.std, r.std);
  ASSERT_TRUE(back.roc && back.best_thresholds && back.flip && back.pairs && back.xnorm);
  EXPECT_EQ(back.roc->tpr, r.tpr);
  EXPECT_EQ(back.roc->fpr, r.fpr);
  EXPECT_EQ(*back.best_thresholds, r.best_thresholds());
  EXPECT_FALSE(*back.flip);
  EXPECT_EQ(*back.pairs, 300);
  ASSERT_NE(back.tar_at(1e-4), nullptr);
  EXPECT_EQ(back.tar_at(1e-4)->threshold, r.tar_at_far[1].threshold);
  EXPECT_EQ(back.tar_at(1e-2), nullptr);
}

TEST(MetricsJson, IdSimBytesAndRoundTrip) {
  const IdSimResult r = sample_idsim();
  IdSimMetrics m = id_similarity_metrics(r);
  m.align = "fixed";
  m.model = "model/recognizer.safetensors";
  m.ids = "ids.npy";
  m.source = "samples";
  EXPECT_EQ(file_text(m.to_json()), file_text(earlier_idsim_entry(r)));
  const IdSimMetrics back = IdSimMetrics::from_json(json::parse(m.to_json().dump()), "test");
  EXPECT_EQ(file_text(back.to_json()), file_text(m.to_json()));
  EXPECT_EQ(back.failed, 1);
  EXPECT_EQ(back.histogram.counts, r.stats.hist_counts);
  ASSERT_EQ(back.faces.size(), 4u);
  EXPECT_EQ(back.faces[3].jpeg_base64, r.faces[3].jpeg_base64);
  EXPECT_EQ(back.per_identity[2].mean, r.stats.per_identity[2].mean);
  // the provenance fields are the command's: an entry of the library alone has none
  const json::Value bare = id_similarity_metrics(r).to_json();
  EXPECT_FALSE(bare.contains("align"));
  EXPECT_FALSE(IdSimMetrics::from_json(bare, "test").source.has_value());
}

TEST(MetricsJson, FidAndLpipsBytesAndRoundTrip) {
  const FidMetrics fid{12.345678901234, 50, "ref.npz"};
  EXPECT_EQ(fid.to_json().dump(), R"({"fid":12.345678901234,"images":50,"reference":"ref.npz"})");
  const FidMetrics fid_back = FidMetrics::from_json(json::parse(fid.to_json().dump(2)), "test");
  EXPECT_EQ(fid_back.fid, fid.fid);
  EXPECT_EQ(fid_back.images, fid.images);
  EXPECT_EQ(fid_back.reference, fid.reference);

  LpipsDiversity d;
  d.mean = 0.5;
  d.per_identity = {0.25, 0.75};
  d.pairs = 12;
  const LpipsMetrics lp = lpips_metrics(d, "vgg16");
  EXPECT_EQ(lp.to_json().dump(), R"({"diversity":0.5,"net":"vgg16","identities":2,"pairs":12,"per_identity":[0.25,0.75]})");
  EXPECT_EQ(LpipsMetrics::from_json(json::parse(lp.to_json().dump()), "test").to_json().dump(), lp.to_json().dump());
}

TEST(MetricsJson, KindComesFromTheEntryName) {
  const json::Value object = json::Value::object();
  EXPECT_EQ(metric_kind("fid", object), MetricKind::fid);
  EXPECT_EQ(metric_kind("lpips", object), MetricKind::lpips);
  EXPECT_EQ(metric_kind("idsim", object), MetricKind::idsim);
  EXPECT_EQ(metric_kind("lfw", object), MetricKind::verification);
  EXPECT_EQ(metric_kind("my_pack", object), MetricKind::verification);
  EXPECT_EQ(metric_kind("note", json::Value("written by hand")), MetricKind::other);
  // the reserved names decide even when the value is wrong, so the error names the right field
  const std::string msg = error_of([] { EvalMetrics::from_json(json::parse(R"({"fid": 3.5})"), "m.json"); });
  EXPECT_NE(msg.find("m.json: fid: expected an object, found number"), std::string::npos) << msg;
}

TEST(MetricsJson, HandWrittenEntriesNeedOnlyTheHeadlineNumber) {
  // A paper's published numbers, typed in to sit beside a run in `eval report`.
  const json::Value paper = json::parse(R"({"lfw": {"accuracy": 0.9983, "std": 0.0023},
    "agedb_30": {"accuracy": 0.9801, "std": 0.007}, "fid": {"fid": 8.3}, "lpips": {"diversity": 0.41},
    "note": "numbers from the paper"})");
  const EvalMetrics m = EvalMetrics::from_json(paper, "paper");
  ASSERT_EQ(m.verification.size(), 2u);
  EXPECT_FALSE(m.verification[0].second.roc.has_value());
  EXPECT_EQ(m.verification[0].second.tar_at(1e-3), nullptr);
  ASSERT_TRUE(m.fid && m.lpips);
  EXPECT_FALSE(m.fid->images.has_value());
  ASSERT_EQ(m.other.size(), 1u);
  // written back, such an entry stays as it was typed
  EXPECT_EQ(m.verification[0].second.to_json().dump(), R"({"accuracy":0.9983,"std":0.0023})");
  const std::string md = report_markdown(paper, "paper");
  EXPECT_NE(md.find("| lfw | 99.83 | 0.23 | - | - | - |"), std::string::npos) << md;
  EXPECT_NE(md.find("- **fid**: 8.3000\n"), std::string::npos) << md;
  EXPECT_NE(md.find("- **note**: \"numbers from the paper\""), std::string::npos) << md;
  const std::string html = report_html(paper, "paper");
  EXPECT_EQ(html.find("<svg class=\"roc\""), std::string::npos) << "no entry has a ROC curve";
  const std::string cmp = compare_markdown({{"paper", paper}}, "cmp");
  EXPECT_NE(cmp.find("| paper | 99.83 | 98.01 | 98.92 | 8.300 | 0.410 |"), std::string::npos) << cmp;
}

TEST(MetricsJson, ErrorsNameFileEntryAndField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"lfw": {"std": 0.1}})", "m.json: lfw: accuracy: expected a number, found nothing"},
      {R"({"lfw": {"accuracy": 0.9, "std": 0.1, "pairs": 1.5}})", "m.json: lfw: pairs: expected an integer, found 1.5"},
      {R"({"lfw": {"accuracy": 0.9, "std": 0.1, "tar_at_far": {"1e-03": {"tar": 1}}}})",
       "m.json: lfw: tar_at_far: 1e-03: far: expected a number, found nothing"},
      {R"({"lfw": {"accuracy": 0.9, "std": 0.1, "roc": {"thresholds": [1], "tpr": [1, 1], "fpr": [0, 1]}}})",
       "m.json: lfw: roc: expected thresholds, tpr and fpr of one length, found 1, 2 and 2"},
      {R"({"lpips": {"diversity": 0.4, "per_identity": {"a": 1}}})",
       "m.json: lpips: per_identity: expected an array, found object"},
      {R"({"fid": {"fid": "low"}})", "m.json: fid: fid: expected a number, found string"},
  };
  for (const auto& [text, want] : cases) {
    const std::string msg = error_of([&] { EvalMetrics::from_json(json::parse(text), "m.json"); });
    EXPECT_NE(msg.find(want), std::string::npos) << text << "\n" << msg;
    EXPECT_EQ(test::count_lines(msg), 0) << msg;
  }
  // an idsim entry: histogram shape and thumbnail text are checked where the file can still be named
  IdSimMetrics m = id_similarity_metrics(sample_idsim());
  m.histogram.counts.pop_back();
  std::string msg = error_of([&] { IdSimMetrics::from_json(m.to_json(), "m.json: idsim"); });
  EXPECT_NE(msg.find("m.json: idsim: histogram: expected one more edge than counts, found 21 edges and 19 counts"),
            std::string::npos)
      << msg;
  m = id_similarity_metrics(sample_idsim());
  m.faces[1].jpeg_base64 = "\"><script>";
  msg = error_of([&] { IdSimMetrics::from_json(m.to_json(), "m.json: idsim"); });
  EXPECT_NE(msg.find("m.json: idsim: faces[1]: jpeg: expected base64 text"), std::string::npos) << msg;
}

// metrics.json files as `idsynth eval verify|idsim|fid|lpips` wrote them before their metrics owned
// their JSON (tests/eval/data/metrics_before/<command>/metrics.json): read through the metrics, every
// entry writes back to the same bytes, and the reports and the comparison take their numbers.
TEST(MetricsJson, EarlierFilesReadBackIdentically) {
  const std::string root = std::string(IDSYNTH_SOURCE_DIR) + "/tests/eval/data/metrics_before";
  std::vector<RunMetrics> runs;
  for (const char* command : {"verify", "idsim", "fid", "lpips"}) {
    const std::string path = root + "/" + command + "/metrics.json";
    ASSERT_TRUE(file_exists(path)) << path;
    const std::string text = read_text_file(path);
    const json::Value file = read_run_metrics(root + "/" + command);
    const EvalMetrics m = EvalMetrics::from_json(file, path);
    json::Value again = json::Value::object();
    for (const auto& [name, v] : m.verification) again.set(name, v.to_json());
    if (m.idsim) again.set(IdSimMetrics::kEntry, m.idsim->to_json());
    if (m.fid) again.set(FidMetrics::kEntry, m.fid->to_json());
    if (m.lpips) again.set(LpipsMetrics::kEntry, m.lpips->to_json());
    EXPECT_TRUE(m.other.empty()) << command;
    EXPECT_EQ(file_text(again), text) << command;
    add_run_metrics(runs, "before", root + "/" + command);
  }
  ASSERT_EQ(runs.size(), 1u);
  const EvalMetrics all = EvalMetrics::from_json(runs[0].metrics, "merged");
  ASSERT_FALSE(all.verification.empty());
  ASSERT_TRUE(all.idsim && all.fid && all.lpips);
  const std::string md = compare_markdown(runs, "before");
  EXPECT_NE(md.find(format_number("%.2f", 100 * all.verification[0].second.accuracy)), std::string::npos) << md;
  EXPECT_NE(md.find(format_number("%.3f", all.idsim->mean) + " ± " + format_number("%.3f", all.idsim->std)), std::string::npos)
      << md;
  EXPECT_NE(md.find(format_number("%.3f", all.fid->fid)), std::string::npos) << md;
  EXPECT_NE(md.find(format_number("%.3f", all.lpips->diversity)), std::string::npos) << md;
  const std::string html = report_html(runs[0].metrics, "before");
  EXPECT_NE(html.find("<svg class=\"roc\""), std::string::npos);
  EXPECT_EQ(html.find("<svg class=\"roc\""), html.rfind("<svg class=\"roc\""));
  EXPECT_NE(html.find("<svg class=\"histogram\""), std::string::npos);
  EXPECT_NE(html.find("<td>" + format_number("%.4f", all.idsim->mean) + "</td>"), std::string::npos);
  EXPECT_NE(html.find("<td>" + format_number("%.4f", all.fid->fid) + "</td>"), std::string::npos);
}

TEST(MetricsJson, ARunGivesEachEntryOnce) {
  const std::string dir = test::temp_dir("metrics-merge");
  for (const char* sub : {"a", "b"}) {
    std::filesystem::create_directories(dir + "/" + sub);
    write_file_atomic(dir + "/" + sub + "/metrics.json", R"({"fid": {"fid": 3.0}})");
  }
  std::vector<RunMetrics> runs;
  add_run_metrics(runs, "x", dir + "/a");
  add_run_metrics(runs, "y", dir + "/b");
  EXPECT_EQ(runs.size(), 2u);
  const std::string msg = error_of([&] { add_run_metrics(runs, "x", dir + "/b"); });
  EXPECT_NE(msg.find(dir + "/b/metrics.json: fid: expected once per run, found it already in an earlier folder of run x"),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace idsynth::eval
