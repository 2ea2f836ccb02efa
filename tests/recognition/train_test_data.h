// Test data for the FR training tests: procedurally drawn identities (each identity = a fixed random
// layout of coloured shapes; each image = that layout shifted, re-lit, with a random distractor shape
// and noise) rendered to 112×112 JPEGs, and a minimal writer of idsynth HDF5 shards (docs/formats.md,
// version 2: `format`, `format_version`, `labels` int64 [N], `aligned`/`images` uint8 JPEG bytes
// with their `_offsets`). Independent of the dataset generator's own shard writer on purpose.
#pragma once

#include <hdf5.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/image.h"
#include "recognition/train_config.h"

namespace idsynth::test {

inline void write_test_shard(const std::string& path, const std::vector<int64_t>& labels,
                             const std::vector<std::string>& jpegs, const char* image_name = "aligned") {
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) throw std::runtime_error("cannot create " + path);
  // Root attributes: format (fixed-length string) and format_version 2.
  const hid_t scalar = H5Screate(H5S_SCALAR);
  const std::string format = "idsynth-shard";
  const hid_t stype = H5Tcopy(H5T_C_S1);
  H5Tset_size(stype, format.size());
  const hid_t af = H5Acreate2(f, "format", stype, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(af, stype, format.data());
  H5Aclose(af);
  H5Tclose(stype);
  const int64_t version = 2;
  const hid_t av = H5Acreate2(f, "format_version", H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(av, H5T_NATIVE_INT64, &version);
  H5Aclose(av);
  H5Sclose(scalar);
  auto write_1d = [f](const char* name, hid_t file_type, hid_t mem_type, hsize_t n, const void* data) {
    const hid_t space = H5Screate_simple(1, &n, nullptr);
    const hid_t d = H5Dcreate2(f, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (n) H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(d);
    H5Sclose(space);
  };
  write_1d("labels", H5T_STD_I64LE, H5T_NATIVE_INT64, labels.size(), labels.data());
  // The images: their JPEG bytes one after another, and N + 1 offsets.
  std::string bytes;
  std::vector<int64_t> offsets = {0};
  for (const auto& j : jpegs) {
    bytes += j;
    offsets.push_back(static_cast<int64_t>(bytes.size()));
  }
  write_1d(image_name, H5T_STD_U8LE, H5T_NATIVE_UINT8, bytes.size(), bytes.data());
  write_1d((std::string(image_name) + "_offsets").c_str(), H5T_STD_I64LE, H5T_NATIVE_INT64, offsets.size(),
           offsets.data());
  H5Fclose(f);
}

struct Shape {
  int kind;  // 0 circle, 1 rectangle, 2 triangle
  cv::Point2f centre;
  float size;
  cv::Scalar colour;
};

inline Shape random_shape(std::mt19937& rng) {
  std::uniform_real_distribution<float> pos(25, 87), size(10, 22), col(0, 255);
  std::uniform_int_distribution<int> kind(0, 2);
  return {kind(rng), {pos(rng), pos(rng)}, size(rng), cv::Scalar(col(rng), col(rng), col(rng))};
}

inline void draw(cv::Mat& img, const Shape& s, cv::Point2f shift) {
  const cv::Point2f c = s.centre + shift;
  if (s.kind == 0) {
    cv::circle(img, c, static_cast<int>(s.size), s.colour, cv::FILLED, cv::LINE_AA);
  } else if (s.kind == 1) {
    cv::rectangle(img, cv::Rect(cv::Point(static_cast<int>(c.x - s.size), static_cast<int>(c.y - s.size * 0.6f)),
                                cv::Point(static_cast<int>(c.x + s.size), static_cast<int>(c.y + s.size * 0.6f))),
                  s.colour, cv::FILLED, cv::LINE_AA);
  } else {
    std::vector<cv::Point> tri = {cv::Point(static_cast<int>(c.x), static_cast<int>(c.y - s.size)),
                                  cv::Point(static_cast<int>(c.x - s.size), static_cast<int>(c.y + s.size)),
                                  cv::Point(static_cast<int>(c.x + s.size), static_cast<int>(c.y + s.size))};
    cv::fillConvexPoly(img, tri, s.colour, cv::LINE_AA);
  }
}

// `n_images` JPEGs of identity `identity` (deterministic in (seed, identity, image)). An identity is
// a schematic face with its own parameters (skin, hair, eye and mouth colours and sizes, nose shape);
// an image adds a shift, lighting, background, a small distractor and noise. New identities are new
// parameter draws, so what is learnt on some identities carries over to held-out ones.
inline std::vector<std::string> render_identity(uint32_t seed, int64_t identity, int n_images) {
  std::mt19937 id_rng(seed * 7919u + static_cast<uint32_t>(identity) * 104729u + 1u);
  std::uniform_real_distribution<float> col(0, 255), u01(0, 1);
  auto colour = [&] { return cv::Scalar(col(id_rng), col(id_rng), col(id_rng)); };
  const cv::Scalar skin = colour(), hair = colour(), eyes = colour(), mouth = colour(), nose = colour();
  const float face_w = 28 + 12 * u01(id_rng), face_h = 36 + 12 * u01(id_rng), eye_r = 5 + 7 * u01(id_rng),
              eye_dx = 14 + 8 * u01(id_rng), mouth_w = 10 + 16 * u01(id_rng), mouth_h = 3 + 6 * u01(id_rng),
              hair_h = 8 + 18 * u01(id_rng);
  const int nose_kind = static_cast<int>(id_rng() % 3);
  std::vector<std::string> out;
  for (int i = 0; i < n_images; ++i) {
    std::mt19937 rng(seed * 31u + static_cast<uint32_t>(identity) * 1009u + static_cast<uint32_t>(i) * 17u + 5u);
    std::uniform_real_distribution<float> shift(-5, 5), light(0.75f, 1.25f), bg(40, 220);
    const float b = bg(rng);
    cv::Mat img(112, 112, CV_8UC3, cv::Scalar(b, b, b));
    const cv::Point2f c(56 + shift(rng), 60 + shift(rng));
    cv::ellipse(img, cv::Point(static_cast<int>(c.x), static_cast<int>(c.y)),
                cv::Size(static_cast<int>(face_w), static_cast<int>(face_h)), 0, 0, 360, skin, cv::FILLED, cv::LINE_AA);
    cv::rectangle(img, cv::Point(static_cast<int>(c.x - face_w), static_cast<int>(c.y - face_h)),
                  cv::Point(static_cast<int>(c.x + face_w), static_cast<int>(c.y - face_h + hair_h)), hair, cv::FILLED);
    for (int side : {-1, 1})
      cv::circle(img, cv::Point(static_cast<int>(c.x + side * eye_dx), static_cast<int>(c.y - 8)), static_cast<int>(eye_r),
                 eyes, cv::FILLED, cv::LINE_AA);
    draw(img, Shape{nose_kind, {c.x, c.y + 6}, 5, nose}, {0, 0});
    cv::rectangle(img, cv::Point(static_cast<int>(c.x - mouth_w), static_cast<int>(c.y + 20)),
                  cv::Point(static_cast<int>(c.x + mouth_w), static_cast<int>(c.y + 20 + mouth_h)), mouth, cv::FILLED);
    Shape distractor = random_shape(rng);
    distractor.size *= 0.4f;
    draw(img, distractor, {0, 0});
    cv::Mat f;
    img.convertTo(f, CV_32FC3, light(rng));
    cv::Mat noise(112, 112, CV_32FC3);
    // Its own generator: cv::randn's default (cv::theRNG()) would make the image depend on what the
    // thread drew before.
    cv::RNG noise_rng(rng());
    noise_rng.fill(noise, cv::RNG::NORMAL, 0, 10);
    f += noise;
    f.convertTo(img, CV_8UC3);
    out.push_back(formats::encode_image_rgb(img, ".jpg", 90));
  }
  return out;
}

// A shard of identities [first, first + count) with n_images each (labels = identity index).
inline void write_identity_shard(const std::string& path, uint32_t seed, int64_t first, int64_t count, int n_images) {
  std::vector<int64_t> labels;
  std::vector<std::string> jpegs;
  for (int64_t id = first; id < first + count; ++id)
    for (auto& j : render_identity(seed, id, n_images)) {
      labels.push_back(id);
      jpegs.push_back(std::move(j));
    }
  write_test_shard(path, labels, jpegs);
}

// A small, fast training config: r18 at narrow widths, 32-d embedding, no checkpoints or logs to speak of.
inline recognition::TrainConfig tiny_train_config(const std::string& data_dir, const std::string& out_dir) {
  recognition::TrainConfig c;
  c.run.output = out_dir;
  c.run.seed = 7;
  c.run.devices = {"cpu"};
  c.run.log_every = 2;
  c.data.paths = {data_dir};
  c.data.batch_size = 16;
  c.data.threads = 2;
  c.model.network = "r18";
  c.model.widths = {"8", "16", "32", "32"};
  c.model.embedding_size = 32;
  c.loss.type = "cosface";
  c.loss.s = 32;
  c.loss.m3 = 0.35;
  c.optim.lr = 0.1;
  c.schedule.epochs = 1;
  c.checkpoint.every_steps = 0;
  c.validation.every_steps = 0;
  return c;
}

}  // namespace idsynth::test
