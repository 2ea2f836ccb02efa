#include "dataset/drawn_faces.h"

#include <opencv2/imgproc.hpp>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/check.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/log.h"
#include "core/splitmix.h"
#include "formats/bin_pack.h"
#include "formats/image.h"
#include "formats/recordio.h"

namespace idsynth::dataset {

namespace fs = std::filesystem;

namespace {

constexpr double kPi = 3.14159265358979323846;
// Domain tags keep the identity, image and pair streams of one seed independent.
constexpr uint64_t kIdentityStream = 0x1d, kImageStream = 0x1e, kPairStream = 0x1f;

cv::Vec3d lerp(const cv::Vec3d& a, const cv::Vec3d& b, double t) { return a + (b - a) * t; }

cv::Vec3d jitter(SplitMixRng& rng, const cv::Vec3d& c, double amount) {
  cv::Vec3d out;
  for (int k = 0; k < 3; ++k) out[k] = std::clamp(c[k] + rng.uniform(-amount, amount), 0.0, 255.0);
  return out;
}

double gaussian(SplitMixRng& rng) {  // Box-Muller
  const double u1 = std::max(rng.uniform(), 1e-300), u2 = rng.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
}

// Where an image puts the face: centre, size, in-plane rotation and a yaw that moves the inner
// features sideways (more for those nearer the camera).
struct Pose {
  double cx = 0.5, cy = 0.5, scale = 1, roll = 0, yaw = 0;
};

// Draws in face coordinates (units of the image width, origin at the face centre, y down) onto a
// supersampled canvas; OpenCV's fixed-point `shift` keeps sub-pixel positions.
class Painter {
 public:
  Painter(cv::Mat& canvas, const Pose& pose) : canvas_(canvas), pose_(pose), side_(canvas.cols) {}

  cv::Point at(double u, double v, double depth = 0) const {
    const double x = (u + pose_.yaw * depth * 0.12) * pose_.scale, y = v * pose_.scale;
    const double c = std::cos(pose_.roll), s = std::sin(pose_.roll);
    const double px = (pose_.cx + c * x - s * y) * side_, py = (pose_.cy + s * x + c * y) * side_;
    return {static_cast<int>(std::lround(px * kOne)), static_cast<int>(std::lround(py * kOne))};
  }
  cv::Size axes(double a, double b) const {
    return {std::max(1, static_cast<int>(std::lround(a * pose_.scale * side_ * kOne))),
            std::max(1, static_cast<int>(std::lround(b * pose_.scale * side_ * kOne)))};
  }
  int width(double w) const { return std::max(1, static_cast<int>(std::lround(w * pose_.scale * side_))); }
  double roll_degrees() const { return pose_.roll * 180.0 / kPi; }

  // Ellipse centred at (u, v), half axes (a, b), turned by `angle` degrees; filled when thickness < 0.
  void ellipse(double u, double v, double a, double b, double angle, double from, double to, const cv::Vec3d& colour,
               double thickness = -1, double depth = 0) {
    cv::ellipse(canvas_, at(u, v, depth), axes(a, b), roll_degrees() + angle, from, to, cv::Scalar(colour), stroke(thickness),
                cv::LINE_AA, kShift);
  }
  void line(double u0, double v0, double u1, double v1, const cv::Vec3d& colour, double thickness, double depth = 0) {
    cv::line(canvas_, at(u0, v0, depth), at(u1, v1, depth), cv::Scalar(colour), width(thickness), cv::LINE_AA, kShift);
  }

 private:
  static constexpr int kShift = 4, kOne = 1 << kShift;
  int stroke(double thickness) const { return thickness < 0 ? cv::FILLED : width(thickness); }
  cv::Mat& canvas_;
  Pose pose_;
  int side_;
};

cv::Vec3d darker(const cv::Vec3d& c, double f) { return c * f; }

}  // namespace

DrawnIdentity drawn_identity(uint64_t seed, int64_t index) {
  IDSYNTH_CHECK(index >= 0, "draw-faces: identity index: expected >= 0, found ", index);
  SplitMixRng rng(mix_seeds(mix_seeds(seed, kIdentityStream), static_cast<uint64_t>(index)));
  DrawnIdentity d;
  // Skin from light to dark along a natural tone line, with a little hue of its own.
  d.skin = jitter(rng, lerp({255, 224, 196}, {92, 58, 38}, rng.uniform()), 14);
  static const cv::Vec3d kHair[] = {{25, 20, 18}, {70, 45, 30}, {120, 80, 45}, {215, 180, 110},
                                    {165, 70, 35}, {150, 150, 150}, {235, 235, 230}, {60, 60, 110}};
  d.hair = jitter(rng, kHair[rng.randint(0, 7)], 18);
  static const cv::Vec3d kIris[] = {{90, 55, 30}, {70, 120, 190}, {80, 140, 80}, {120, 130, 140}, {140, 110, 50}};
  d.iris = jitter(rng, kIris[rng.randint(0, 4)], 20);
  d.lips = jitter(rng, lerp(d.skin, {190, 60, 70}, rng.uniform(0.3, 0.8)), 10);
  d.face_w = rng.uniform(0.25, 0.34);
  d.face_h = rng.uniform(0.32, 0.41);
  d.hair_style = static_cast<int>(rng.randint(0, 4));
  d.hair_volume = rng.uniform(0.02, 0.07);
  d.eye_gap = rng.uniform(0.09, 0.15);
  d.eye_y = rng.uniform(-0.09, -0.02);
  d.eye_size = rng.uniform(0.03, 0.05);
  d.brow_thickness = rng.uniform(0.008, 0.028);
  d.brow_tilt = rng.uniform(-0.35, 0.35);
  d.nose_length = rng.uniform(0.06, 0.13);
  d.nose_width = rng.uniform(0.02, 0.045);
  d.mouth_width = rng.uniform(0.06, 0.13);
  d.mouth_y = rng.uniform(0.16, 0.24);
  d.beard = rng.chance(0.3) ? static_cast<int>(rng.randint(1, 2)) : 0;
  d.glasses = rng.chance(0.25);
  d.glasses_colour = jitter(rng, rng.chance(0.5) ? cv::Vec3d{20, 20, 20} : cv::Vec3d{170, 120, 40}, 30);
  d.ear_size = rng.uniform(0.035, 0.06);
  return d;
}

cv::Mat draw_face(uint64_t seed, int64_t index, int64_t image, int size) {
  IDSYNTH_CHECK(size >= 8 && size <= 1024, "draw-faces: --size: expected 8..1024, found ", size);
  const DrawnIdentity d = drawn_identity(seed, index);
  SplitMixRng rng(mix_seeds(mix_seeds(mix_seeds(seed, kImageStream), static_cast<uint64_t>(index)), static_cast<uint64_t>(image)));

  Pose pose;
  pose.scale = rng.uniform(0.85, 1.08);
  pose.cx = 0.5 + rng.uniform(-0.04, 0.04);
  pose.cy = 0.52 + rng.uniform(-0.04, 0.04);
  pose.roll = rng.uniform(-0.2, 0.2);
  pose.yaw = rng.uniform(-0.45, 0.45);
  const double smile = rng.uniform(-0.4, 1.0), mouth_open = rng.chance(0.3) ? rng.uniform(0.2, 0.6) : 0.0;
  const bool blink = rng.chance(0.08);
  const cv::Vec3d background = jitter(rng, {128, 128, 128}, 110);  // the person's, not the place's: random per image

  const int side = std::clamp(size * 4, 128, 1024);  // supersampled, then area-averaged down
  cv::Mat canvas(side, side, CV_8UC3, cv::Scalar(background));
  Painter p(canvas, pose);
  const double fw = d.face_w, fh = d.face_h, hv = d.hair_volume;

  // Behind the face: long hair, the top of the hair, neck and ears.
  if (d.hair_style == 2) p.ellipse(0, 0.08, fw + hv + 0.03, fh + 0.12, 0, 0, 360, d.hair);
  if (d.hair_style != 0) p.ellipse(0, -0.06, fw + hv, fh * 0.75 + hv, 0, 180, 360, d.hair);
  if (d.hair_style == 4) p.ellipse(0, -fh - 0.04, 0.06 + hv, 0.05 + hv * 0.5, 0, 0, 360, d.hair);
  p.ellipse(0, fh * 0.9, fw * 0.45, 0.2, 0, 0, 360, darker(d.skin, 0.85));
  for (double side_sign : {-1.0, 1.0}) p.ellipse(side_sign * fw, 0.0, d.ear_size * 0.7, d.ear_size, 0, 0, 360, darker(d.skin, 0.93));
  p.ellipse(0, 0, fw, fh, 0, 0, 360, d.skin);
  if (d.hair_style == 3) p.ellipse(0, -fh * 0.62, fw * 0.95, fh * 0.4, 0, 180, 360, d.hair);
  if (d.hair_style == 1 || d.hair_style == 2 || d.hair_style == 4) p.ellipse(0, -fh * 0.72, fw * 0.9, fh * 0.3, 0, 180, 360, d.hair);
  if (d.beard == 2) {
    p.ellipse(0, fh * 0.35, fw * 0.92, fh * 0.62, 0, 0, 180, darker(d.hair, 0.95));
    p.ellipse(0, d.mouth_y, d.mouth_width * 1.1, 0.04, 0, 0, 360, d.skin, -1, 0.6);  // the mouth area stays clear
  }

  // Eyes, brows, nose, mouth: nearer the camera than the outline, so the yaw moves them.
  for (double s : {-1.0, 1.0}) {
    const double ex = s * d.eye_gap, es = d.eye_size;
    if (blink) {
      p.line(ex - es, d.eye_y, ex + es, d.eye_y, darker(d.skin, 0.5), 0.008, 0.8);
    } else {
      p.ellipse(ex, d.eye_y, es, es * 0.6, 0, 0, 360, {245, 245, 240}, -1, 0.8);
      p.ellipse(ex, d.eye_y, es * 0.5, es * 0.5, 0, 0, 360, d.iris, -1, 0.85);
      p.ellipse(ex, d.eye_y, es * 0.22, es * 0.22, 0, 0, 360, {15, 15, 15}, -1, 0.85);
    }
    const double by = d.eye_y - es - 0.025, tilt = d.brow_tilt * s * 0.04;
    p.line(ex - es * 1.2, by + tilt, ex + es * 1.2, by - tilt, darker(d.hair, 0.8), d.brow_thickness, 0.8);
    if (d.glasses) p.ellipse(ex, d.eye_y, es * 1.6, es * 1.35, 0, 0, 360, d.glasses_colour, 0.008, 0.9);
  }
  if (d.glasses) p.line(-d.eye_gap + d.eye_size * 1.6, d.eye_y, d.eye_gap - d.eye_size * 1.6, d.eye_y, d.glasses_colour, 0.008, 0.9);
  const double nose_top = d.eye_y + 0.02, nose_tip = nose_top + d.nose_length;
  p.line(0, nose_top, 0.01, nose_tip, darker(d.skin, 0.75), 0.01, 1.0);
  p.ellipse(0, nose_tip, d.nose_width, d.nose_width * 0.45, 0, 0, 180, darker(d.skin, 0.7), 0.01, 1.0);
  if (d.beard == 1) p.ellipse(0, d.mouth_y - 0.035, d.mouth_width * 0.95, 0.03, 0, 180, 360, d.hair, 0.022, 0.9);
  if (mouth_open > 0) {
    p.ellipse(0, d.mouth_y, d.mouth_width * 0.8, d.mouth_width * mouth_open * 0.5, 0, 0, 360, {60, 20, 25}, -1, 0.9);
    p.ellipse(0, d.mouth_y, d.mouth_width * 0.8, d.mouth_width * mouth_open * 0.5, 0, 0, 360, d.lips, 0.012, 0.9);
  } else {
    // The smile bends the lips: an arc below the mouth line for a smile, above it for a frown.
    const double bend = std::max(0.005, std::abs(smile) * 0.035);
    p.ellipse(0, d.mouth_y - (smile >= 0 ? bend : -bend), d.mouth_width, bend, 0, smile >= 0 ? 0 : 180, smile >= 0 ? 180 : 360,
              d.lips, 0.016, 0.9);
  }

  // Light: a brightness and contrast change and a gradient from a random side.
  cv::Mat img;
  canvas.convertTo(img, CV_32FC3);
  const double contrast = rng.uniform(0.75, 1.2), brightness = rng.uniform(-30, 30), shade = rng.uniform(0.0, 0.4);
  const double light = rng.uniform(0, 2 * kPi), lx = std::cos(light), ly = std::sin(light);
  for (int y = 0; y < side; ++y) {
    auto* row = img.ptr<cv::Vec3f>(y);
    for (int x = 0; x < side; ++x) {
      const double g = 1.0 + shade * ((x / double(side) - 0.5) * lx + (y / double(side) - 0.5) * ly);
      for (int k = 0; k < 3; ++k) row[x][k] = static_cast<float>(((row[x][k] - 128.0) * contrast + 128.0 + brightness) * g);
    }
  }
  cv::Mat small;
  cv::resize(img, small, cv::Size(size, size), 0, 0, cv::INTER_AREA);
  const double blur = rng.chance(0.5) ? rng.uniform(0.3, 1.0) * size / 40.0 : 0.0;
  if (blur > 0.25) cv::GaussianBlur(small, small, cv::Size(0, 0), blur);
  const double noise = rng.uniform(0, 6);
  cv::Mat out(size, size, CV_8UC3);
  for (int y = 0; y < size; ++y) {
    const auto* src = small.ptr<cv::Vec3f>(y);
    auto* dst = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < size; ++x)
      for (int k = 0; k < 3; ++k) dst[x][k] = cv::saturate_cast<uint8_t>(src[x][k] + noise * gaussian(rng));
  }
  return out;
}

std::vector<DrawnPair> drawn_pairs(uint64_t seed, int64_t identities, int64_t images_per_identity, int64_t pairs) {
  IDSYNTH_CHECK(identities >= 2, "draw-faces: --identities: expected >= 2 for verification pairs, found ", identities);
  IDSYNTH_CHECK(images_per_identity >= 2, "draw-faces: --images-per-identity: expected >= 2 for same-identity pairs, found ",
                images_per_identity);
  std::vector<DrawnPair> out(static_cast<size_t>(pairs));
  for (int64_t k = 0; k < pairs; ++k) {
    SplitMixRng rng(mix_seeds(mix_seeds(seed, kPairStream), static_cast<uint64_t>(k)));
    DrawnPair& q = out[static_cast<size_t>(k)];
    q.same = k % 2 == 0;
    q.identity_a = rng.randint(0, identities - 1);
    q.image_a = rng.randint(0, images_per_identity - 1);
    if (q.same) {
      q.identity_b = q.identity_a;
      q.image_b = (q.image_a + rng.randint(1, images_per_identity - 1)) % images_per_identity;
    } else {
      q.identity_b = (q.identity_a + rng.randint(1, identities - 1)) % identities;
      q.image_b = rng.randint(0, images_per_identity - 1);
    }
  }
  return out;
}

namespace {

json::Value identity_json(int64_t index, const DrawnIdentity& d) {
  auto rgb = [](const cv::Vec3d& c) {
    return json::Value(json::Value::Array{json::Value(static_cast<int64_t>(std::lround(c[0]))), json::Value(static_cast<int64_t>(std::lround(c[1]))), json::Value(static_cast<int64_t>(std::lround(c[2])))});
  };
  json::Value v = json::Value::object();
  v.set("identity", json::Value(index));
  v.set("skin", rgb(d.skin));
  v.set("hair", rgb(d.hair));
  v.set("iris", rgb(d.iris));
  v.set("hair_style", json::Value(static_cast<int64_t>(d.hair_style)));
  v.set("beard", json::Value(static_cast<int64_t>(d.beard)));
  v.set("glasses", json::Value(d.glasses));
  v.set("face_w", json::Value(d.face_w));
  v.set("face_h", json::Value(d.face_h));
  v.set("eye_gap", json::Value(d.eye_gap));
  v.set("nose_length", json::Value(d.nose_length));
  v.set("mouth_width", json::Value(d.mouth_width));
  return v;
}

}  // namespace

DrawFacesSummary draw_faces(const DrawFacesOptions& o) {
  IDSYNTH_CHECK(o.format == "folder" || o.format == "recordio" || o.format == "bin",
                "draw-faces: --format: expected folder, recordio or bin, found '", o.format, "'");
  IDSYNTH_CHECK(o.identities >= 1 && o.identities <= (int64_t{1} << 24), "draw-faces: --identities: expected 1..16777216, found ",
                o.identities);
  IDSYNTH_CHECK(o.images_per_identity >= 1 && o.images_per_identity <= 100000,
                "draw-faces: --images-per-identity: expected 1..100000, found ", o.images_per_identity);
  IDSYNTH_CHECK(o.size >= 8 && o.size <= 1024, "draw-faces: --size: expected 8..1024, found ", o.size);
  IDSYNTH_CHECK(!o.out.empty(), "draw-faces: --out: expected a folder or .bin path, found nothing");
  log::Stopwatch watch;
  tbb::task_arena arena(o.threads > 0 ? o.threads : tbb::task_arena::automatic);
  // Render jobs (identity, image) in parallel; each is a pure function of its indices.
  struct Job {
    int64_t identity, image;
  };
  std::vector<Job> jobs;
  std::vector<DrawnPair> pairs;
  if (o.format == "bin") {
    IDSYNTH_CHECK(o.pairs >= 1 && o.pairs <= 10000000, "draw-faces: --pairs: expected 1..10000000, found ", o.pairs);
    pairs = drawn_pairs(o.seed, o.identities, o.images_per_identity, o.pairs);
    for (const auto& q : pairs) {
      jobs.push_back({q.identity_a, q.image_a});
      jobs.push_back({q.identity_b, q.image_b});
    }
  } else {
    for (int64_t i = 0; i < o.identities; ++i)
      for (int64_t j = 0; j < o.images_per_identity; ++j) jobs.push_back({i, j});
  }
  std::vector<std::string> encoded(jobs.size());
  arena.execute([&] {
    tbb::parallel_for(size_t{0}, jobs.size(), [&](size_t k) {
      encoded[k] = formats::encode_image_rgb(draw_face(o.seed, jobs[k].identity, jobs[k].image, o.size), ".png");
    });
  });

  DrawFacesSummary summary;
  summary.images = static_cast<int64_t>(jobs.size());
  if (o.format == "bin") {
    std::string path = o.out;
    if (fs::path(path).extension() != ".bin") {
      fs::create_directories(path);
      path = (fs::path(path) / "pairs.bin").string();
    } else if (fs::path(path).has_parent_path()) {
      fs::create_directories(fs::path(path).parent_path());
    }
    formats::BinPack pack;
    pack.images = std::move(encoded);
    for (const auto& q : pairs) pack.issame.push_back(q.same);
    formats::write_bin(path, pack);
    summary.written = cat(path, ": ", o.pairs, " pairs (", (o.pairs + 1) / 2, " same-identity) of ", o.identities,
                          " identities, ", o.size, "x", o.size, " PNG");
  } else {
    fs::create_directories(o.out);
    json::Value ids = json::Value::array();
    for (int64_t i = 0; i < o.identities; ++i) ids.push_back(identity_json(i, drawn_identity(o.seed, i)));
    if (o.format == "folder") {
      for (size_t k = 0; k < jobs.size(); ++k) {
        const fs::path dir = fs::path(o.out) / format_number("%05.0f", static_cast<double>(jobs[k].identity));
        if (jobs[k].image == 0) fs::create_directories(dir);
        write_file_atomic((dir / (format_number("%04.0f", static_cast<double>(jobs[k].image)) + ".png")).string(), encoded[k]);
      }
      summary.written = cat(o.out, ": ", o.identities, " folders of ", o.images_per_identity, " ", o.size, "x", o.size, " PNG");
    } else {
      std::vector<int64_t> labels;
      for (const auto& j : jobs) labels.push_back(j.identity);
      formats::write_recordio((fs::path(o.out) / "train.rec").string(), (fs::path(o.out) / "train.idx").string(), encoded, labels);
      write_file_atomic((fs::path(o.out) / "property").string(), cat(o.identities, ",", o.size, ",", o.size, "\n"));
      summary.written = cat(o.out, "/train.rec: ", jobs.size(), " images of ", o.identities, " identities, ", o.size, "x", o.size, " PNG");
    }
    json::Value meta = json::Value::object();
    meta.set("seed", json::Value(static_cast<int64_t>(o.seed)));
    meta.set("size", json::Value(static_cast<int64_t>(o.size)));
    meta.set("images_per_identity", json::Value(o.images_per_identity));
    meta.set("identities", ids);
    write_file_atomic((fs::path(o.out) / "identities.json").string(), meta.dump(1) + "\n");
  }
  if (!o.sheet.empty()) {
    // A row per identity (at most 16), a column per image (at most 12).
    const int64_t rows = std::min<int64_t>(o.identities, 16), cols = std::min<int64_t>(o.images_per_identity, 12);
    cv::Mat sheet(static_cast<int>(rows * o.size), static_cast<int>(cols * o.size), CV_8UC3);
    arena.execute([&] {
      tbb::parallel_for(int64_t{0}, rows * cols, [&](int64_t k) {
        const int64_t i = k / cols, j = k % cols;
        draw_face(o.seed, i, j, o.size).copyTo(sheet(cv::Rect(static_cast<int>(j * o.size), static_cast<int>(i * o.size), o.size, o.size)));
      });
    });
    formats::write_image_rgb(o.sheet, sheet);
  }
  summary.seconds = watch.seconds();
  return summary;
}

}  // namespace idsynth::dataset
