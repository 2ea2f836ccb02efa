// idsynth eval verify|idsim|fid|lpips: the evaluation numbers of the paper's tables, each written to
// <out>/metrics.json with report.html and summary.md; idsynth eval audit: a dataset's closeness to real
// people and its quality; idsynth eval report: several runs side by side.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/check.h"
#include "core/device.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "formats/bin_pack.h"
#include "eval/audit.h"
#include "eval/fid.h"
#include "eval/id_similarity.h"
#include "eval/inception_fid.h"
#include "eval/lpips.h"
#include "eval/lpips_folder.h"
#include "eval/metrics_file.h"
#include "eval/pack_embeddings.h"
#include "recognition/recognizer.h"
#include "eval/report.h"
#include "dataset/export.h"
#include "eval/verification.h"
#include "recognition/face_embedder.h"

namespace idsynth::cli {

namespace {

namespace fs = std::filesystem;

// metrics.json plus report.html and summary.md in the --out folder.
void write_metrics(const std::string& out_dir, const json::Value& metrics, const std::string& title) {
  if (out_dir.empty()) return;
  eval::write_reports(out_dir, metrics, title);
  LOG_INF("wrote ", (fs::path(out_dir) / "metrics.json").string(), ", report.html, summary.md");
}

int eval_verify(const std::vector<std::string>& args) {
  po::options_description opts("options");
  SharedOptions shared;
  shared.recognizer(/*required=*/true).device("the recogniser");
  opts.add_options()(
      "bin", po::value<std::vector<std::string>>()->multitoken()->required(), "insightface .bin packs")(
      "no-flip", po::bool_switch(), "embed the images only (default: image + mirror image, summed)")(
      "batch-size", po::value<int64_t>()->default_value(64), "images per recogniser call")(
      "out", po::value<std::string>()->default_value(""), "folder for metrics.json (keyed by pack file stem)");
  auto parsed = parse_args("eval verify", "--recognizer M --bin a.bin [b.bin ...] [--no-flip] [--out DIR]",
                           "insightface 10-fold verification (arcface_torch eval/verification.py) on .bin packs:\n"
                           "accuracy mean and population std, per-fold thresholds, TAR at FAR 1e-3/1e-4 (n/a where\n"
                           "the pack has fewer than 1/FAR impostor pairs), XNorm.\n"
                           "A pack that cannot be read or evaluated is named on stderr and skipped; the others are\n"
                           "still evaluated and written (exit code 3).",
                           opts, args, nullptr, &shared);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  const auto bins = v["bin"].as<std::vector<std::string>>();
  // A pack is stored under its file stem; a stem that names another metric would be misread later.
  for (const auto& path : bins)
    IDSYNTH_CHECK(eval::metric_kind(fs::path(path).stem().string(), json::Value::object()) == eval::MetricKind::verification,
                  path, ": file name: expected a stem other than the metrics.json entries idsim, fid, lpips and audit, found '",
                  fs::path(path).stem().string(), "'");
  const auto recognizer = recognition::load_recognizer(shared.recognizer_path(), shared.device_value());
  eval::EmbedOptions eo;
  eo.batch_size = v["batch-size"].as<int64_t>();
  eo.flip = !v["no-flip"].as<bool>();
  json::Value metrics = json::Value::object();
  // A broken pack is named and skipped: the others are still evaluated and written (exit code 3).
  std::vector<std::string> broken;  // one line each: the error, naming the pack
  for (const auto& path : bins) {
    formats::BinPack pack;
    eval::VerificationResult r;
    try {
      pack = formats::read_bin(path);
      const eval::PackEmbeddings emb = eval::embed_pack(*recognizer, pack, eo);
      r = eval::evaluate_embeddings(emb.raw, emb.raw_flip, pack.issame);
    } catch (const std::exception& e) {
      const std::string what = e.what();
      const std::string line = what.substr(0, what.find('\n'));
      broken.push_back(line.find(path) == std::string::npos ? path + ": " + line : line);
      continue;
    }
    const std::string stem = fs::path(path).stem().string();
    std::printf("[%s] XNorm: %f\n[%s] Accuracy-%s: %1.5f+-%1.5f\n", stem.c_str(), r.xnorm, stem.c_str(),
                eo.flip ? "Flip" : "NoFlip", r.accuracy, r.std);
    for (const auto& t : r.tar_at_far) {
      if (t.resolved())
        std::printf("[%s] TAR@FAR=%s: %1.5f (threshold %.4f, achieved FAR %.2e)\n", stem.c_str(),
                    eval::far_label(t.far_target).c_str(), t.tar, t.threshold, t.far);
      else
        std::printf("[%s] TAR@FAR=%s: n/a (%ld impostor pairs resolve FARs down to %.1e only)\n", stem.c_str(),
                    eval::far_label(t.far_target).c_str(), static_cast<long>(t.impostors),
                    t.impostors > 0 ? 1.0 / static_cast<double>(t.impostors) : 1.0);
    }
    std::string th;
    for (double t : r.best_thresholds()) th += cat(th.empty() ? "" : " ", t);
    std::printf("[%s] best thresholds per fold: %s\n", stem.c_str(), th.c_str());
    metrics.set(stem, eval::verification_metrics(r, eo.flip, pack.num_pairs()).to_json());
  }
  if (broken.size() == bins.size()) fail(broken.front());
  write_metrics(v["out"].as<std::string>(), metrics, "idsynth eval verify");
  for (const auto& line : broken) std::cerr << "idsynth eval verify: error: " << line << "\n";
  return broken.empty() ? kExitOk : kExitPartial;
}

int eval_fid(const std::vector<std::string>& args) {
  po::options_description opts("options");
  opts.add_options()("images", po::value<std::string>()->required(), "folder of generated images")(
      "ref-stats", po::value<std::string>(), "pytorch-fid .npz statistics of the reference set")(
      "ref-images", po::value<std::string>(), "or: folder of reference images")(
      "inception", po::value<std::string>()->required(), "pt_inception-2015-12-05-6726825d.pth (or safetensors copy)")(
      "batch-size", po::value<int64_t>()->default_value(50), "images per Inception call")(
      "save-stats", po::value<std::string>()->default_value(""), "also write the images' statistics to this .npz")(
      "out", po::value<std::string>()->default_value(""), "folder for metrics.json");
  SharedOptions shared;
  shared.device("the Inception network");
  auto parsed = parse_args("eval fid", "--images DIR (--ref-stats ref.npz | --ref-images DIR) --inception FILE",
                           "FID exactly as pytorch-fid computes it (pool3, bilinear resize to 299, float64 statistics).",
                           opts, args, nullptr, &shared);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  IDSYNTH_CHECK(v.count("ref-stats") + v.count("ref-images") == 1,
                "eval fid: expected exactly one of --ref-stats and --ref-images");
  eval::InceptionV3FID model = eval::load_inception_fid(v["inception"].as<std::string>());
  eval::FidFeatureOptions fo;
  fo.batch_size = v["batch-size"].as<int64_t>();
  fo.device = shared.device_text();
  const eval::FidStats gen = eval::fid_stats_of_folder(model, v["images"].as<std::string>(), fo);
  if (!v["save-stats"].as<std::string>().empty()) eval::write_fid_stats(v["save-stats"].as<std::string>(), gen);
  const eval::FidStats ref = v.count("ref-stats") ? eval::read_fid_stats(v["ref-stats"].as<std::string>(), gen.dim())
                                                  : eval::fid_stats_of_folder(model, v["ref-images"].as<std::string>(), fo);
  const double fid = eval::frechet_distance(gen, ref);
  std::printf("FID: %.6f (%lld images vs %s)\n", fid, static_cast<long long>(gen.count), ref.source.c_str());
  json::Value metrics = json::Value::object();
  metrics.set(eval::FidMetrics::kEntry, eval::FidMetrics{fid, gen.count, ref.source}.to_json());
  write_metrics(v["out"].as<std::string>(), metrics, "idsynth eval fid");
  return kExitOk;
}

int eval_lpips(const std::vector<std::string>& args) {
  po::options_description opts("options");
  opts.add_options()("images", po::value<std::string>()->required(),
                     "folder with one subfolder of images per identity (or images of a single identity)")(
      "net", po::value<std::string>()->default_value("alex"), "alex | vgg")(
      "trunk", po::value<std::string>()->required(), "torchvision alexnet-owt-7be5be79.pth / vgg16-397923af.pth")(
      "lin", po::value<std::string>()->required(), "lpips v0.1 linear layers (alex.pth / vgg.pth)")(
      "batch-size", po::value<int64_t>()->default_value(16), "pairs per call")(
      "out", po::value<std::string>()->default_value(""), "folder for metrics.json");
  SharedOptions shared;
  shared.device("the LPIPS network");
  auto parsed = parse_args("eval lpips", "--images DIR --trunk FILE --lin FILE [--net alex|vgg]",
                           "LPIPS diversity: mean LPIPS over all pairs of images of one identity, averaged over identities.",
                           opts, args, nullptr, &shared);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  const at::Device device = shared.device_value();
  std::vector<at::Tensor> identities = eval::read_lpips_identities(v["images"].as<std::string>());
  for (auto& images : identities) images = images.to(device);
  eval::Lpips model = eval::load_lpips(eval::parse_lpips_net(v["net"].as<std::string>()), v["trunk"].as<std::string>(),
                                       v["lin"].as<std::string>());
  model->to(device);
  log::Stopwatch sw;
  const eval::LpipsDiversity div = eval::lpips_diversity(model, identities, v["batch-size"].as<int64_t>());
  LOG_INF("lpips over ", div.pairs, " pairs completed, taking ", sw.seconds(), " s (",
          static_cast<double>(div.pairs) / std::max(sw.seconds(), 1e-9), " pairs/s)");
  std::printf("LPIPS diversity (%s): %.6f over %zu identities, %lld pairs\n", v["net"].as<std::string>().c_str(),
              div.mean, div.per_identity.size(), static_cast<long long>(div.pairs));
  json::Value metrics = json::Value::object();
  metrics.set(eval::LpipsMetrics::kEntry, eval::lpips_metrics(div, v["net"].as<std::string>()).to_json());
  write_metrics(v["out"].as<std::string>(), metrics, "idsynth eval lpips");
  return kExitOk;
}


int eval_idsim(const std::vector<std::string>& args) {
  eval::IdSimOptions o;
  po::options_description opts("options");
  SharedOptions shared;
  shared.recognizer(/*required=*/true).device("the detector and the recogniser");
  opts.add_options()(
      "ids", po::value<std::string>(), "target identity vectors [N, D] (.npy or safetensors; row k = identity k); "
                                       "optional with --dataset (default: the vectors stored in the shards)")(
      "images", po::value<std::string>(), "folder of {identity:05d}_{image:03d}.png files as `idsynth sample` writes")(
      "dataset", po::value<std::string>(), "or: an idsynth dataset folder (HDF5 shards)")(
      "align", po::value<std::string>(&o.align)->default_value(o.align),
      "fixed: the image is an aligned crop, resized to the recogniser input (a dataset's stored aligned crop when "
      "there is one); detect: SCRFD (--detector), largest face, ArcFace alignment")(
      "detector", po::value<std::string>()->default_value(""), "SCRFD ONNX detector for --align detect")(
      "det-size", po::value<int64_t>(&o.det_size)->default_value(o.det_size),
      "SCRFD letterbox size for --align detect (multiple of 32; insightface: 640; tight 512x512 faces are often found "
      "only at smaller sizes such as 320 or 256, Arc2Face issue #17)")(
      "batch-size", po::value<int64_t>(&o.batch_size)->default_value(o.batch_size), "images per recogniser call")(
      "bins", po::value<int64_t>(&o.bins)->default_value(o.bins), "histogram bins over [-1, 1]")(
      "grid-identities", po::value<int64_t>(&o.grid_identities)->default_value(o.grid_identities),
      "identities in the report's face grid (0..16)")(
      "grid-images", po::value<int64_t>(&o.grid_images)->default_value(o.grid_images), "images per identity in the grid (0..16)")(
      "thumb", po::value<int64_t>(&o.thumb)->default_value(o.thumb), "grid thumbnail size in pixels (16..128)")(
      "out", po::value<std::string>()->default_value(""), "folder for metrics.json (entry \"idsim\"), report.html, summary.md");
  auto parsed = parse_args("eval idsim", "--recognizer M (--images DIR --ids ids.npy | --dataset DIR [--ids F]) [--align fixed|detect] [--out DIR]",
                           "ID similarity: cosine between each target identity vector and the recogniser's embedding of each\n"
                           "generated face (the Arc2Face paper's ID-consistency number is the mean). Writes mean, std, median,\n"
                           "min/max, per-identity mean/min/max/count, a histogram and a grid of sample faces. Images without a\n"
                           "face (--align detect) are listed and skipped; the exit code is then 3.",
                           opts, args, nullptr, &shared);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  IDSYNTH_CHECK(v.count("images") + v.count("dataset") == 1, "eval idsim: expected exactly one of --images and --dataset");
  IDSYNTH_CHECK(v.count("dataset") || v.count("ids"), "eval idsim: --images needs --ids (the identity vectors the faces were drawn for)");
  o.check();
  // 1. targets first, so a bad ID file fails before the models load
  const std::string ids_path = v.count("ids") ? v["ids"].as<std::string>() : "";
  const at::Tensor ids = ids_path.empty() ? at::Tensor() : formats::read_identity_vectors(ids_path);
  if (v.count("images")) eval::list_sample_images(v["images"].as<std::string>());  // an empty folder fails here
  // 2. models: the front end of `idsynth embed`
  const c10::Device device = shared.device_value();
  std::shared_ptr<const recognition::Recognizer> recognizer = recognition::load_recognizer(shared.recognizer_path(), device);
  std::shared_ptr<const recognition::ScrfdDetector> detector;
  const std::string det = v["detector"].as<std::string>();
  IDSYNTH_CHECK(o.align == "detect" || det.empty(), "eval idsim: --detector is only used with --align detect");
  IDSYNTH_CHECK(o.align == "detect" || v["det-size"].defaulted(), "eval idsim: --det-size is only used with --align detect");
  if (!det.empty()) {
    recognition::ScrfdConfig dc;
    dc.det_width = dc.det_height = static_cast<int>(o.det_size);
    detector = std::make_shared<const recognition::ScrfdDetector>(det, device, dc);
  }
  const recognition::FaceEmbedder embedder(recognizer, detector);
  // 3. cosines
  const eval::IdSimResult r = v.count("images")
                                  ? eval::id_similarity_of_folder(embedder, ids, ids_path, v["images"].as<std::string>(), o)
                                  : eval::id_similarity_of_dataset(embedder, ids, ids_path, v["dataset"].as<std::string>(),
                                                                  dataset::dataset_shard_count(v["dataset"].as<std::string>()), o);
  const eval::IdSimStats& s = r.stats;
  std::printf("ID similarity: mean %.6f std %.6f median %.6f min %.6f max %.6f over %lld images of %zu identities\n", s.mean,
              s.std, s.median, s.min, s.max, static_cast<long long>(s.count), s.per_identity.size());
  if (!r.failed.empty()) std::printf("%zu images gave no embedding (first: %s)\n", r.failed.size(), r.failed.front().c_str());
  eval::IdSimMetrics m = eval::id_similarity_metrics(r);
  m.align = o.align;
  if (o.align == "detect") m.det_size = o.det_size;
  m.model = shared.recognizer_path();
  m.ids = ids_path.empty() ? std::string("dataset shards") : ids_path;
  m.source = v.count("images") ? v["images"].as<std::string>() : v["dataset"].as<std::string>();
  json::Value metrics = json::Value::object();
  metrics.set(eval::IdSimMetrics::kEntry, m.to_json());
  write_metrics(v["out"].as<std::string>(), metrics, "idsynth eval idsim");
  return r.failed.empty() ? kExitOk : kExitPartial;
}

int eval_audit(const std::vector<std::string>& args) {
  eval::AuditOptions o;
  po::options_description opts("options");
  SharedOptions shared;
  shared.recognizer(/*required=*/true).device("the recogniser and the nearest-centre search");
  opts.add_options()("dataset", po::value<std::string>()->required(), "the idsynth dataset folder to audit (HDF5 shards)")(
      "gallery", po::value<std::string>()->required(),
      "real people: a folder with one subfolder of face images per identity, an insightface RecordIO folder "
      "(train.rec + train.idx), an idsynth dataset, or precomputed identity centres [N, D] (safetensors, .npy, torch)")(
      "gallery-name", po::value<std::string>()->default_value(""), "name of the gallery in the report (default: its path)")(
      "threshold", po::value<double>(),
      "flag a synthetic identity whose nearest real centre is above this cosine (default: the gallery's --percentile "
      "of nearest-negative cosines, VIGFace's criterion)")(
      "percentile", po::value<double>(&o.percentile)->default_value(o.percentile),
      "percentile of the gallery's nearest-negative cosines used as the default threshold")(
      "synthetic", po::value<std::string>(&o.synthetic)->default_value(o.synthetic),
      "synthetic centres from: images (the stored images embedded by the recogniser), vectors (the identity vectors "
      "stored in the shards; only meaningful with a gallery embedded by the generator's recogniser) or auto (images "
      "when the shards store them)")(
      "align", po::value<std::string>(&o.align)->default_value(o.align),
      "fixed: images are aligned crops (a dataset's stored aligned crop when there is one); detect: SCRFD (--detector), "
      "largest face, ArcFace alignment")(
      "detector", po::value<std::string>()->default_value(""), "SCRFD ONNX detector for --align detect")(
      "batch-size", po::value<int64_t>(&o.batch_size)->default_value(o.batch_size), "images per recogniser call")(
      "bins", po::value<int64_t>(&o.bins)->default_value(o.bins), "histogram bins over [-1, 1]")(
      "duplicate-cosine", po::value<double>(&o.duplicate_cosine)->default_value(o.duplicate_cosine),
      "two images of one identity above this cosine are near-duplicates")(
      "show-flagged", po::value<int64_t>(&o.show_flagged)->default_value(o.show_flagged),
      "flagged identities shown with their faces in the report (0..200)")(
      "save-gallery", po::value<std::string>()->default_value(""),
      "also write the gallery's identity centres to this safetensors file (tensor \"centres\"), to pass as --gallery later")(
      "out", po::value<std::string>()->default_value(""), "folder for metrics.json (entry \"audit\"), report.html, summary.md");
  auto parsed = parse_args("eval audit", "--dataset DIR --recognizer M --gallery G [--gallery-name NAME] [--threshold X] [--out DIR]",
                           "Audit of a synthetic dataset against real people: identity centres (mean of L2-normalised\n"
                           "embeddings) on both sides, each synthetic identity's nearest real identity, the gallery's own\n"
                           "nearest-negative cosines, the identities above the threshold (with each of their images' nearest\n"
                           "real identity); and the dataset's intra-class spread, inter-class separation and near-duplicates.\n"
                           "The search is exact, in blocks on --device.",
                           opts, args, nullptr, &shared);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  if (v.count("threshold")) o.threshold = v["threshold"].as<double>();
  o.device = shared.device_value();
  o.check();
  const std::string dir = v["dataset"].as<std::string>(), gallery_path = v["gallery"].as<std::string>();
  const std::string det = v["detector"].as<std::string>();
  IDSYNTH_CHECK(o.align == "detect" || det.empty(), "eval audit: --detector is only used with --align detect");
  IDSYNTH_CHECK(o.align != "detect" || !det.empty(), "eval audit: --align detect: expected --detector (SCRFD ONNX file)");
  // 1. models: the front end of `idsynth embed`
  const c10::Device device = shared.device_value();
  std::shared_ptr<const recognition::Recognizer> recognizer = recognition::load_recognizer(shared.recognizer_path(), device);
  std::shared_ptr<const recognition::ScrfdDetector> detector;
  if (!det.empty()) detector = std::make_shared<const recognition::ScrfdDetector>(det, device, recognition::ScrfdConfig{});
  const recognition::FaceEmbedder embedder(recognizer, detector);
  // 2. both sides (a gallery that is an idsynth dataset needs its shard count, which the dataset room knows)
  const int64_t n_shards = dataset::dataset_shard_count(dir);
  const eval::GalleryKind kind = eval::gallery_kind(gallery_path);
  const eval::Gallery gallery = eval::read_gallery(
      embedder, gallery_path, kind == eval::GalleryKind::dataset ? dataset::dataset_shard_count(gallery_path) : 0, o);
  if (!v["save-gallery"].as<std::string>().empty()) {
    save_safetensors(v["save-gallery"].as<std::string>(), {{"centres", gallery.centres.vectors}},
                     {{"source", gallery_path}, {"recognizer", shared.recognizer_path()}});
    LOG_INF("wrote ", v["save-gallery"].as<std::string>(), " (", gallery.centres.label.size(), " identity centres)");
  }
  const eval::SyntheticSet synthetic = eval::read_synthetic(embedder, dir, n_shards, o);
  // 3. the audit
  eval::AuditMetrics m = eval::audit(gallery, synthetic, o, v["gallery-name"].as<std::string>());
  m.model = shared.recognizer_path();
  m.dataset = dir;
  std::printf("audit: %lld of %lld synthetic identities flagged (nearest real cosine above %.4f, %s); nearest real: mean "
              "%.4f max %.4f; gallery %lld identities, nearest negative p99 %.4f\n",
              static_cast<long long>(m.flagged_count), static_cast<long long>(m.identities), m.threshold,
              m.threshold_rule.c_str(), m.nearest_real.mean, m.nearest_real.max, static_cast<long long>(m.gallery_identities),
              m.gallery_nearest_negative.p99);
  for (const auto& f : m.flagged)
    std::printf("flagged: identity %lld ~ %s (cosine %.4f)\n", static_cast<long long>(f.identity), f.nearest.c_str(), f.cosine);
  if (m.inter_class)
    std::printf("quality: inter-class nearest synthetic centre mean %.4f max %.4f\n", m.inter_class->mean, m.inter_class->max);
  if (m.intra_class)
    std::printf("quality: intra-class cosine to centre mean %.4f std %.4f min %.4f; near-duplicate pairs (cosine > %.2f): "
                "%lld in %lld identities\n",
                m.intra_class->mean, m.intra_class->std, m.intra_class->min, o.duplicate_cosine,
                static_cast<long long>(m.duplicate_pairs.value_or(0)), static_cast<long long>(m.duplicate_identities.value_or(0)));
  json::Value metrics = json::Value::object();
  metrics.set(eval::AuditMetrics::kEntry, m.to_json());
  write_metrics(v["out"].as<std::string>(), metrics, "idsynth eval audit");
  return kExitOk;
}

int eval_report(const std::vector<std::string>& args) {
  po::options_description opts("options");
  opts.add_options()("run", po::value<std::vector<std::string>>()->multitoken()->required(),
                     "NAME=DIR (or DIR, named after the folder): a folder with an eval metrics.json; the same NAME given "
                     "again adds another folder's metrics to that run (e.g. its verify, idsim, fid and lpips outputs)")(
      "title", po::value<std::string>()->default_value("idsynth evaluation"), "report title")(
      "out", po::value<std::string>()->required(), "folder for report.html, summary.md, comparison.json");
  auto parsed = parse_args("eval report", "--run NAME=DIR [--run NAME=DIR ...] --out DIR",
                           "Side-by-side comparison of eval runs: one table like the paper's (rows = runs; columns = verification\n"
                           "benchmarks, their average, ID similarity, FID, LPIPS), ROC curves per benchmark and ID-similarity\n"
                           "histograms overlaid, and each run's sample faces.",
                           opts, args);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  std::vector<eval::RunMetrics> runs;
  for (const auto& spec : v["run"].as<std::vector<std::string>>()) {
    const size_t eq = spec.find('=');
    std::string name = eq == std::string::npos ? "" : spec.substr(0, eq);
    const std::string dir = eq == std::string::npos ? spec : spec.substr(eq + 1);
    IDSYNTH_CHECK(!dir.empty() && (eq == std::string::npos || !name.empty()),
                  "eval report: --run: expected NAME=DIR or DIR, found '", spec, "'");
    if (name.empty()) name = fs::path(dir).lexically_normal().filename().string();
    if (name.empty()) name = fs::path(dir).lexically_normal().parent_path().filename().string();
    eval::add_run_metrics(runs, name, dir);
  }
  const std::string out = v["out"].as<std::string>();
  eval::write_compare_reports(out, runs, v["title"].as<std::string>());
  std::cout << eval::compare_markdown(runs, v["title"].as<std::string>());
  LOG_INF("wrote ", (fs::path(out) / "report.html").string(), ", summary.md, comparison.json (", runs.size(), " runs)");
  return kExitOk;
}

}  // namespace

int cmd_eval(const std::vector<std::string>& args) {
  const std::string usage =
      "usage: idsynth eval <verify|idsim|fid|lpips|audit|report> [options]   ('idsynth eval <sub> --help' for each)\n";
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << usage;
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "verify") return eval_verify(rest);
  if (args[0] == "fid") return eval_fid(rest);
  if (args[0] == "lpips") return eval_lpips(rest);
  if (args[0] == "idsim") return eval_idsim(rest);
  if (args[0] == "audit") return eval_audit(rest);
  if (args[0] == "report") return eval_report(rest);
  std::cerr << "idsynth eval: unknown subcommand '" << args[0] << "': expected one of verify, idsim, fid, lpips, audit, report\n"
            << usage;
  return kExitUsage;
}

}  // namespace idsynth::cli
