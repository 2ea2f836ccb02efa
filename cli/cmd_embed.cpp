// idsynth embed: photos -> L2-normalised identity vectors (ids.safetensors), with insightface's
// front end (SCRFD detection or given landmarks, ArcFace alignment, ArcFace/IResNet recogniser).
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/check.h"
#include "core/device.h"
#include "core/json.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "formats/image.h"
#include "recognition/face_embedder.h"

namespace idsynth::cli {

namespace {

namespace fs = std::filesystem;
using recognition::Landmarks5;

struct EmbedOptions {
  std::string recognizer, detector, landmarks, out;
  bool aligned = false;
  bool per_image = false;
  int det_size = 640;
  int batch = 64;
  std::vector<std::string> inputs;
};

// One output row: a single image, or the images of one folder (one person), averaged.
struct Identity {
  std::string name;
  std::vector<std::string> images;
};

bool is_image(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  static const std::vector<std::string> exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"};
  return std::find(exts.begin(), exts.end(), ext) != exts.end();
}

std::vector<Identity> collect(const EmbedOptions& o) {
  std::vector<Identity> ids;
  for (const auto& in : o.inputs) {
    if (fs::is_directory(in)) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(in))
        if (e.is_regular_file() && is_image(e.path())) files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      IDSYNTH_CHECK(!files.empty(), in, ": folder: expected image files (jpg, png, ...), found none");
      if (o.per_image) {
        for (const auto& f : files) ids.push_back({f, {f}});
      } else {
        ids.push_back({fs::path(in).lexically_normal().filename().string().empty()
                           ? fs::path(in).lexically_normal().parent_path().filename().string()
                           : fs::path(in).lexically_normal().filename().string(),
                       files});
      }
    } else {
      ids.push_back({in, {in}});
    }
  }
  return ids;
}

// Landmarks file: {"<image path or file name>": [[x, y] × 5] or {"five": [[x, y] × 5]}}, or
// goldens/realfaces' layout with the entries under "photos".
std::map<std::string, Landmarks5> read_landmarks(const std::string& path) {
  const json::Value root = json::parse_file(path);
  const json::Value* table = root.find("photos") ? root.find("photos") : &root;
  std::map<std::string, Landmarks5> out;
  for (const auto& [name, entry] : table->as_object(path)) {
    const json::Value& pts = entry.is_object() ? entry.at("five") : entry;
    const auto& arr = pts.as_array(cat(path, ": ", name));
    IDSYNTH_CHECK(arr.size() == 5, path, ": ", name, ": expected 5 [x, y] points, found ", arr.size());
    Landmarks5 l;
    for (size_t k = 0; k < 5; ++k) {
      const auto& xy = arr[k].as_array(cat(path, ": ", name, "[", k, "]"));
      IDSYNTH_CHECK(xy.size() == 2, path, ": ", name, "[", k, "]: expected [x, y], found ", xy.size(), " values");
      l[k] = cv::Point2f(static_cast<float>(xy[0].as_double()), static_cast<float>(xy[1].as_double()));
    }
    out[name] = l;
  }
  return out;
}

}  // namespace

int cmd_embed(const std::vector<std::string>& args) {
  EmbedOptions o;
  po::options_description opts("options");
  SharedOptions shared;
  shared.recognizer(/*required=*/true).device("the detector and the recogniser").dtype("the recogniser");
  opts.add_options()(
      "detector", po::value<std::string>(&o.detector), "SCRFD ONNX detector (scrfd_10g_bnkps.onnx): detect, take the largest face")(
      "landmarks", po::value<std::string>(&o.landmarks), "JSON with 5 points per image instead of a detector")(
      "aligned", po::bool_switch(&o.aligned), "images are aligned crops (112x112; other sizes are resized, e.g. Arc2Face 512x512)")(
      "out", po::value<std::string>(&o.out)->required(), "output .safetensors: tensor 'ids' [N, dim] float32, names in metadata")(
      "per-image", po::bool_switch(&o.per_image), "one vector per image also inside folders (default: one averaged vector per folder)")(
      "det-size", po::value<int>(&o.det_size)->default_value(o.det_size), "SCRFD letterbox size (multiple of 32)")(
      "batch", po::value<int>(&o.batch)->default_value(o.batch), "images read and embedded per step")(
      "images", po::value<std::vector<std::string>>(&o.inputs)->required(), "image files, or folders (one person each)");
  po::positional_options_description pos;
  pos.add("images", -1);
  auto parsed = parse_args(
      "embed", "--recognizer FILE [--detector FILE | --landmarks FILE.json | --aligned] IMAGES... --out ids.safetensors",
      "Computes L2-normalised identity vectors the way insightface/Arc2Face do: SCRFD detection (largest face) or given\n"
      "5-point landmarks, ArcFace alignment to 112x112, the recogniser, L2 normalisation. A folder argument is one person:\n"
      "its vectors are averaged and re-normalised. Images without a face, or unreadable, are listed and skipped;\n"
      "the exit code is then 3.",
      opts, args, &pos, &shared);
  if (parsed.help) return kExitOk;
  const int modes = !o.detector.empty() + !o.landmarks.empty() + o.aligned;
  IDSYNTH_CHECK(modes == 1, "embed: expected exactly one of --detector, --landmarks, --aligned, found ", modes);
  IDSYNTH_CHECK(o.batch >= 1, "embed: --batch: expected >= 1, found ", o.batch);
  o.recognizer = shared.recognizer_path();
  const c10::Device device = shared.device_value();
  const c10::ScalarType dtype = runtime_dtype(shared.dtype_value(), device, "--dtype");

  // 1. models
  std::shared_ptr<const recognition::Recognizer> recognizer = recognition::load_recognizer(o.recognizer, device, dtype);
  std::shared_ptr<const recognition::ScrfdDetector> detector;
  if (!o.detector.empty()) {
    recognition::ScrfdConfig dc;
    dc.det_width = dc.det_height = o.det_size;
    detector = std::make_shared<const recognition::ScrfdDetector>(o.detector, device, dc);
  }
  recognition::FaceEmbedder embedder(recognizer, detector);
  std::map<std::string, Landmarks5> landmarks;
  if (!o.landmarks.empty()) landmarks = read_landmarks(o.landmarks);

  // 2. images, in batches; failures are collected, not fatal
  const std::vector<Identity> ids = collect(o);
  std::vector<std::pair<std::string, size_t>> work;  // image path, identity index
  for (size_t i = 0; i < ids.size(); ++i)
    for (const auto& img : ids[i].images) work.push_back({img, i});
  std::vector<at::Tensor> sums(ids.size());
  std::vector<int> counts(ids.size(), 0);
  std::vector<std::string> failed;
  log::Stopwatch watch;
  for (size_t begin = 0; begin < work.size(); begin += static_cast<size_t>(o.batch)) {
    const size_t end = std::min(work.size(), begin + static_cast<size_t>(o.batch));
    std::vector<cv::Mat> images;
    std::vector<Landmarks5> lms;
    std::vector<std::string> missing(end - begin);
    for (size_t k = begin; k < end; ++k) {
      const std::string& path = work[k].first;
      // An unreadable file stays an empty image, reported per file below; the header is checked
      // before decoding (formats::check_image_header).
      cv::Mat bgr;
      try {
        cv::cvtColor(formats::read_image_rgb(path), bgr, cv::COLOR_RGB2BGR);
      } catch (const Error&) {
      }
      images.push_back(bgr);
      if (!o.landmarks.empty()) {
        auto it = landmarks.find(path);
        if (it == landmarks.end()) it = landmarks.find(fs::path(path).filename().string());
        if (it == landmarks.end()) {
          if (!images.back().empty()) missing[k - begin] = "no landmarks in " + o.landmarks;
          images.back() = cv::Mat();
          lms.push_back(Landmarks5{});
        } else {
          lms.push_back(it->second);
        }
      }
    }
    std::vector<recognition::EmbedResult> res = detector ? embedder.embed_photos(images)
                                                : o.aligned ? embedder.embed_aligned(images)
                                                            : embedder.embed_with_landmarks(images, lms);
    for (size_t k = begin; k < end; ++k) {
      const auto& r = res[k - begin];
      if (!r.ok) {
        const std::string why = missing[k - begin].empty() ? r.error : missing[k - begin];
        failed.push_back(work[k].first + ": " + why);
        std::cerr << "idsynth embed: " << work[k].first << ": " << why << "\n";
        continue;
      }
      const size_t id = work[k].second;
      sums[id] = sums[id].defined() ? sums[id] + r.embedding : r.embedding.clone();
      ++counts[id];
    }
    LOG_INF("embedded ", end, "/", work.size(), " images");
  }

  // 3. one normalised row per identity that has at least one embedding
  std::vector<at::Tensor> rows;
  json::Value names = json::Value::array();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (counts[i] == 0) {
      if (ids[i].images.size() > 1) std::cerr << "idsynth embed: " << ids[i].name << ": no usable image\n";
      continue;
    }
    rows.push_back(sums[i] / sums[i].norm());
    names.mutable_array().push_back(ids[i].name);
  }
  IDSYNTH_CHECK(!rows.empty(), "embed: no image gave an embedding (", failed.size(), " failed); nothing written");
  const at::Tensor out = at::stack(rows).to(at::kFloat).contiguous();
  save_safetensors(o.out, {{"ids", out}},
                   {{"names", names.dump()}, {"recognizer", o.recognizer},
                    {"mode", detector ? "detector" : o.aligned ? "aligned" : "landmarks"}});
  LOG_INF("embed completed, taking ", watch.seconds(), " s: ", rows.size(), " vectors of dim ", out.size(1), " -> ",
          o.out, failed.empty() ? "" : cat("; ", failed.size(), " images failed"));
  return failed.empty() ? kExitOk : kExitPartial;
}

}  // namespace idsynth::cli
