// idsynth eval verify|fid|lpips: the evaluation numbers of the paper's tables, each written to
// <out>/metrics.json.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/check.h"
#include "core/device.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/log.h"
#include "eval/bin_dataset.h"
#include "eval/fid.h"
#include "eval/inception_fid.h"
#include "eval/lpips.h"
#include "eval/recognizer.h"
#include "eval/report.h"
#include "eval/verification.h"

namespace idsynth::cli {

namespace {

namespace fs = std::filesystem;

json::Value numbers(const std::vector<double>& v) {
  json::Value a = json::Value::array();
  for (double x : v) a.push_back(x);
  return a;
}

std::string far_key(double far) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0e", far);  // "1e-03"
  return buf;
}

// metrics.json plus report.html and summary.md in the --out folder.
void write_metrics(const std::string& out_dir, const json::Value& metrics, const std::string& title) {
  if (out_dir.empty()) return;
  eval::write_reports(out_dir, metrics, title);
  LOG_INF("wrote ", (fs::path(out_dir) / "metrics.json").string(), ", report.html, summary.md");
}

json::Value verification_json(const eval::VerificationResult& r, bool flip, int64_t pairs) {
  json::Value m = json::Value::object();
  m.set("accuracy", r.accuracy);
  m.set("std", r.std);
  m.set("best_thresholds", numbers(r.best_thresholds()));
  m.set("fold_accuracies", numbers(r.fold_accuracies));
  json::Value tar = json::Value::object();
  for (const auto& t : r.tar_at_far) {
    json::Value e = json::Value::object();
    e.set("tar", t.tar);
    e.set("far", t.far);
    e.set("threshold", t.threshold);
    tar.set(far_key(t.far_target), e);
  }
  m.set("tar_at_far", tar);
  m.set("xnorm", r.xnorm);
  m.set("flip", flip);
  m.set("pairs", pairs);
  json::Value roc = json::Value::object();
  roc.set("thresholds", numbers(r.thresholds));
  roc.set("tpr", numbers(r.tpr));
  roc.set("fpr", numbers(r.fpr));
  m.set("roc", roc);
  return m;
}

int eval_verify(const std::vector<std::string>& args) {
  po::options_description opts("options");
  opts.add_options()("model", po::value<std::string>()->required(), "recogniser: ONNX file or IResNet checkpoint")(
      "bin", po::value<std::vector<std::string>>()->multitoken()->required(), "insightface .bin packs")(
      "no-flip", po::bool_switch(), "embed the images only (default: image + mirror image, summed)")(
      "batch-size", po::value<int64_t>()->default_value(64), "images per recogniser call")(
      "device", po::value<std::string>()->default_value("cpu"), "cpu, cuda, cuda:N")(
      "out", po::value<std::string>()->default_value(""), "folder for metrics.json (keyed by pack file stem)");
  auto parsed = parse_args("eval verify", "--model M --bin a.bin [b.bin ...] [--no-flip] [--out DIR]",
                           "insightface 10-fold verification (arcface_torch eval/verification.py) on .bin packs:\n"
                           "accuracy mean and population std, per-fold thresholds, TAR at FAR 1e-3/1e-4, XNorm.",
                           opts, args);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  auto recognizer = eval::load_recognizer(v["model"].as<std::string>(), v["device"].as<std::string>());
  eval::EmbedOptions eo;
  eo.batch_size = v["batch-size"].as<int64_t>();
  eo.flip = !v["no-flip"].as<bool>();
  json::Value metrics = json::Value::object();
  for (const auto& path : v["bin"].as<std::vector<std::string>>()) {
    const eval::BinPack pack = eval::read_bin(path);
    const eval::PackEmbeddings emb = eval::embed_pack(*recognizer, pack, eo);
    const eval::VerificationResult r = eval::evaluate_embeddings(emb.raw, emb.raw_flip, pack.issame);
    const std::string stem = fs::path(path).stem().string();
    std::printf("[%s] XNorm: %f\n[%s] Accuracy-%s: %1.5f+-%1.5f\n", stem.c_str(), r.xnorm, stem.c_str(),
                eo.flip ? "Flip" : "NoFlip", r.accuracy, r.std);
    for (const auto& t : r.tar_at_far)
      std::printf("[%s] TAR@FAR=%s: %1.5f (threshold %.4f, achieved FAR %.2e)\n", stem.c_str(),
                  far_key(t.far_target).c_str(), t.tar, t.threshold, t.far);
    std::string th;
    for (double t : r.best_thresholds()) th += cat(th.empty() ? "" : " ", t);
    std::printf("[%s] best thresholds per fold: %s\n", stem.c_str(), th.c_str());
    metrics.set(stem, verification_json(r, eo.flip, pack.num_pairs()));
  }
  write_metrics(v["out"].as<std::string>(), metrics, "idsynth eval verify");
  return kExitOk;
}

int eval_fid(const std::vector<std::string>& args) {
  po::options_description opts("options");
  opts.add_options()("images", po::value<std::string>()->required(), "folder of generated images")(
      "ref-stats", po::value<std::string>(), "pytorch-fid .npz statistics of the reference set")(
      "ref-images", po::value<std::string>(), "or: folder of reference images")(
      "inception", po::value<std::string>()->required(), "pt_inception-2015-12-05-6726825d.pth (or safetensors copy)")(
      "batch-size", po::value<int64_t>()->default_value(50), "images per Inception call")(
      "device", po::value<std::string>()->default_value("cpu"), "cpu, cuda, cuda:N")(
      "save-stats", po::value<std::string>()->default_value(""), "also write the images' statistics to this .npz")(
      "out", po::value<std::string>()->default_value(""), "folder for metrics.json");
  auto parsed = parse_args("eval fid", "--images DIR (--ref-stats ref.npz | --ref-images DIR) --inception FILE",
                           "FID exactly as pytorch-fid computes it (pool3, bilinear resize to 299, float64 statistics).",
                           opts, args);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  IDSYNTH_CHECK(v.count("ref-stats") + v.count("ref-images") == 1,
                "eval fid: expected exactly one of --ref-stats and --ref-images");
  eval::InceptionV3FID model = eval::load_inception_fid(v["inception"].as<std::string>());
  eval::FidFeatureOptions fo;
  fo.batch_size = v["batch-size"].as<int64_t>();
  fo.device = v["device"].as<std::string>();
  const eval::FidStats gen = eval::fid_stats_of_folder(model, v["images"].as<std::string>(), fo);
  if (!v["save-stats"].as<std::string>().empty()) eval::write_fid_stats(v["save-stats"].as<std::string>(), gen);
  const eval::FidStats ref = v.count("ref-stats") ? eval::read_fid_stats(v["ref-stats"].as<std::string>(), gen.dim())
                                                  : eval::fid_stats_of_folder(model, v["ref-images"].as<std::string>(), fo);
  const double fid = eval::frechet_distance(gen, ref);
  std::printf("FID: %.6f (%lld images vs %s)\n", fid, static_cast<long long>(gen.count), ref.source.c_str());
  json::Value m = json::Value::object();
  m.set("fid", fid);
  m.set("images", gen.count);
  m.set("reference", ref.source);
  json::Value metrics = json::Value::object();
  metrics.set("fid", m);
  write_metrics(v["out"].as<std::string>(), metrics, "idsynth eval fid");
  return kExitOk;
}

// RGB images of one folder (sorted) as (K, 3, H, W) in [-1, 1], lpips' im2tensor.
at::Tensor load_lpips_images(const std::vector<std::string>& paths) {
  std::vector<at::Tensor> images;
  for (const auto& p : paths) {
    const cv::Mat bgr = cv::imread(p, cv::IMREAD_COLOR);
    IDSYNTH_CHECK(!bgr.empty(), p, ": could not decode the image");
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    const at::Tensor t = at::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, at::kByte).permute({2, 0, 1}).to(at::kFloat);
    if (!images.empty())
      IDSYNTH_CHECK(t.sizes() == images.front().sizes(), p, ": expected ", images.front().size(2), "x",
                    images.front().size(1), " like the other images, found ", rgb.cols, "x", rgb.rows);
    images.push_back(t / 127.5 - 1);
  }
  return at::stack(images);
}

int eval_lpips(const std::vector<std::string>& args) {
  po::options_description opts("options");
  opts.add_options()("images", po::value<std::string>()->required(),
                     "folder with one subfolder of images per identity (or images of a single identity)")(
      "net", po::value<std::string>()->default_value("alex"), "alex | vgg")(
      "trunk", po::value<std::string>()->required(), "torchvision alexnet-owt-7be5be79.pth / vgg16-397923af.pth")(
      "lin", po::value<std::string>()->required(), "lpips v0.1 linear layers (alex.pth / vgg.pth)")(
      "batch-size", po::value<int64_t>()->default_value(16), "pairs per call")(
      "device", po::value<std::string>()->default_value("cpu"), "cpu, cuda, cuda:N")(
      "out", po::value<std::string>()->default_value(""), "folder for metrics.json");
  auto parsed = parse_args("eval lpips", "--images DIR --trunk FILE --lin FILE [--net alex|vgg]",
                           "LPIPS diversity: mean LPIPS over all pairs of images of one identity, averaged over identities.",
                           opts, args);
  if (parsed.help) return kExitOk;
  const auto& v = parsed.vars;
  const std::string root = v["images"].as<std::string>();
  const at::Device device = parse_device(v["device"].as<std::string>());
  std::vector<std::string> folders;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) folders.push_back(e.path().string());
  std::sort(folders.begin(), folders.end());
  if (folders.empty()) folders.push_back(root);
  std::vector<at::Tensor> identities;
  for (const auto& f : folders) identities.push_back(load_lpips_images(eval::list_fid_images(f)).to(device));
  eval::Lpips model = eval::load_lpips(eval::parse_lpips_net(v["net"].as<std::string>()), v["trunk"].as<std::string>(),
                                       v["lin"].as<std::string>());
  model->to(device);
  log::Stopwatch sw;
  const eval::LpipsDiversity div = eval::lpips_diversity(model, identities, v["batch-size"].as<int64_t>());
  LOG_INF("lpips over ", div.pairs, " pairs completed, taking ", sw.seconds(), " s (",
          static_cast<double>(div.pairs) / std::max(sw.seconds(), 1e-9), " pairs/s)");
  std::printf("LPIPS diversity (%s): %.6f over %zu identities, %lld pairs\n", v["net"].as<std::string>().c_str(),
              div.mean, div.per_identity.size(), static_cast<long long>(div.pairs));
  json::Value m = json::Value::object();
  m.set("diversity", div.mean);
  m.set("net", v["net"].as<std::string>());
  m.set("identities", static_cast<int64_t>(div.per_identity.size()));
  m.set("pairs", div.pairs);
  m.set("per_identity", numbers(div.per_identity));
  json::Value metrics = json::Value::object();
  metrics.set("lpips", m);
  write_metrics(v["out"].as<std::string>(), metrics, "idsynth eval lpips");
  return kExitOk;
}

}  // namespace

int cmd_eval(const std::vector<std::string>& args) {
  const std::string usage =
      "usage: idsynth eval <verify|fid|lpips> [options]   ('idsynth eval <sub> --help' for each)\n";
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << usage;
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "verify") return eval_verify(rest);
  if (args[0] == "fid") return eval_fid(rest);
  if (args[0] == "lpips") return eval_lpips(rest);
  std::cerr << "idsynth eval: unknown subcommand '" << args[0] << "': expected one of verify, fid, lpips\n" << usage;
  return kExitUsage;
}

}  // namespace idsynth::cli
