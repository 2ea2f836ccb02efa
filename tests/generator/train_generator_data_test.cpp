// The (face image, ID vector) pairs of `idsynth train-generator`: shards with stored vectors and no
// recogniser, RecordIO and image folders through a recogniser (and SCRFD), the vector cache, the
// image transform, deterministic batches whatever the thread count, and the one-line errors.
#include "generator/train_generator_data.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>

#include "core/check.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "formats/image.h"
#include "formats/recordio.h"
#include "formats/shard_file.h"
#include "tests/recognition/train_test_data.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"

namespace idsynth::generator {
namespace {

namespace fs = std::filesystem;

using test::error_of;

// A "full image" of a generated face: the 112x112 render resized to 96x128 (w x h), so the
// shorter side is the width and the centre crop has to cut the height.
std::string full_image(const std::string& jpeg) {
  cv::Mat rgb = formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(jpeg.data()), jpeg.size(), "render");
  cv::Mat big;
  cv::resize(rgb, big, cv::Size(96, 128), 0, 0, cv::INTER_LINEAR);
  return formats::encode_image_rgb(big, ".jpg", 92);
}

// A shard of identities [first, first + count), n images each, identity vectors of width `dim`
// (row k of identity k is a fixed, non-normalised pattern), with full images and aligned crops.
void write_vector_shard(const std::string& path, int64_t first, int64_t count, int n, int64_t dim,
                        bool with_images = true) {
  formats::ShardData d;
  d.dim = dim;
  for (int64_t id = first; id < first + count; ++id) {
    d.identity_index.push_back(id);
    for (int64_t c = 0; c < dim; ++c)
      d.identity_vectors.push_back(static_cast<float>(std::sin(1.0 + id * 3.1 + c * 0.7)) * 2.0f);
    const auto jpegs = test::render_identity(5, id, n);
    for (int k = 0; k < n; ++k) {
      d.labels.push_back(id);
      d.image_index.push_back(k);
      d.attempt.push_back(0);
      d.seed.push_back(static_cast<uint64_t>(id * 100 + k));
      d.similarity.push_back(0.5f);
      d.aligned.push_back(jpegs[static_cast<size_t>(k)]);
      if (with_images) d.images.push_back(full_image(jpegs[static_cast<size_t>(k)]));
    }
  }
  d.has_images = with_images;
  formats::write_shard(path, d);
}

// The expected model image of encoded bytes: shorter side to `res`, centre crop, x/127.5 − 1.
at::Tensor expected_image(const std::string& bytes, int res, bool flip = false) {
  cv::Mat rgb = formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "expected");
  const int shorter = std::min(rgb.rows, rgb.cols);
  const int other = res * std::max(rgb.rows, rgb.cols) / shorter;
  const cv::Size size = rgb.cols <= rgb.rows ? cv::Size(res, other) : cv::Size(other, res);
  cv::Mat r;
  cv::resize(rgb, r, size, 0, 0, shorter > res ? cv::INTER_AREA : cv::INTER_LINEAR);
  const int top = static_cast<int>(std::nearbyint((r.rows - res) / 2.0));
  const int left = static_cast<int>(std::nearbyint((r.cols - res) / 2.0));
  cv::Mat crop = r(cv::Rect(left, top, res, res)).clone();
  if (flip) cv::flip(crop, crop, 1);
  at::Tensor hwc = formats::mat_to_tensor(crop).to(at::kFloat);
  return (hwc / 127.5 - 1.0).permute({2, 0, 1}).contiguous();
}

std::string shard_bytes(const std::string& path, const char* dataset, int64_t i) {
  return formats::ShardImageReader(path, dataset).read(i);
}

GeneratorDataConfig base_config(const std::vector<std::string>& paths) {
  GeneratorDataConfig c;
  c.paths = paths;
  c.batch_size = 4;
  c.threads = 2;
  return c;
}

// A RecordIO pair of `identities` x `n` rendered crops (labels = identity).
std::string write_rec(const std::string& dir, int identities, int n, uint32_t seed = 9) {
  fs::create_directories(dir);
  std::vector<std::string> bytes;
  std::vector<int64_t> labels;
  for (int id = 0; id < identities; ++id)
    for (auto& j : test::render_identity(seed, id, n)) {
      bytes.push_back(std::move(j));
      labels.push_back(id);
    }
  formats::write_recordio(dir + "/train.rec", dir + "/train.idx", bytes, labels);
  return dir;
}

TEST(GeneratorTrainData, ShardStoredVectorsNeedNoRecognizer) {
  const std::string dir = test::temp_dir("gtd_shard");
  fs::create_directories(dir + "/shards");
  write_vector_shard(dir + "/shards/shard-00000.h5", 0, 2, 3, 16);
  write_vector_shard(dir + "/shards/shard-00001.h5", 2, 1, 3, 16);
  GeneratorDataConfig cfg = base_config({dir});
  cfg.id_vector = "identity";
  const GeneratorTrainData data(cfg, 32, dir + "/cache.safetensors");
  ASSERT_EQ(data.size(), 9);
  EXPECT_EQ(data.id_width(), 16);
  EXPECT_EQ(data.resolution(), 32);
  EXPECT_EQ(data.batches_per_epoch(), 2);
  EXPECT_FALSE(fs::exists(dir + "/cache.safetensors"));  // nothing needed the recogniser
  EXPECT_EQ(data.describe(7), dir + "/shards/shard-00001.h5[1]");
  // One vector per identity: the stored row, L2-normalised.
  const formats::ShardData s1 = formats::read_shard(dir + "/shards/shard-00001.h5");
  const at::Tensor row = at::tensor(s1.identity_vectors, at::kFloat);
  EXPECT_TRUE(at::allclose(data.id_vector(7), row / row.norm(), 1e-6, 1e-6));
  EXPECT_TRUE(at::equal(data.id_vector(0), data.id_vector(2)));
  EXPECT_FALSE(at::allclose(data.id_vector(0), data.id_vector(3)));
  EXPECT_NEAR(data.id_vector(4).norm().item<float>(), 1.0f, 1e-5);
  // auto takes the full images (96x128: width to 32, height to 42, centre rows 5..36).
  const at::Tensor img = data.image(7);
  ASSERT_EQ(img.sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_GE(img.min().item<float>(), -1.0f);
  EXPECT_LE(img.max().item<float>(), 1.0f);
  EXPECT_TRUE(at::allclose(img, expected_image(shard_bytes(dir + "/shards/shard-00001.h5", "images", 1), 32), 0, 1e-5));
  // data.image: aligned takes the crops; data.resolution overrides the model's size, growing them.
  cfg.image = "aligned";
  cfg.resolution = 128;
  const GeneratorTrainData aligned(cfg, 32, "");
  EXPECT_EQ(aligned.resolution(), 128);
  EXPECT_TRUE(at::allclose(aligned.image(7),
                           expected_image(shard_bytes(dir + "/shards/shard-00001.h5", "aligned", 1), 128), 0, 1e-5));
}

TEST(GeneratorTrainData, BatchesDependOnlyOnSeedAndPosition) {
  const std::string dir = test::temp_dir("gtd_order");
  write_vector_shard(dir + "/s.h5", 0, 4, 3, 8);
  GeneratorDataConfig cfg = base_config({dir + "/s.h5"});
  cfg.id_vector = "identity";
  cfg.crop = "random";
  cfg.flip_p = 0.5;
  cfg.threads = 1;
  const GeneratorTrainData one(cfg, 24, "");
  cfg.threads = 2;
  const GeneratorTrainData two(cfg, 24, "");
  ASSERT_EQ(one.batches_per_epoch(), 3);
  for (int64_t pos : {0, 4, 2}) {  // out of order on purpose: no hidden stream state
    const GeneratorBatch a = one.batch(pos, 77), b = two.batch(pos, 77);
    EXPECT_EQ(a.samples, b.samples) << pos;
    EXPECT_TRUE(at::equal(a.images, b.images)) << pos;
    EXPECT_TRUE(at::equal(a.id_vectors, b.id_vectors)) << pos;
    EXPECT_EQ(a.epoch, pos / 3);
    ASSERT_EQ(a.images.sizes(), (std::vector<int64_t>{4, 3, 24, 24}));
    for (size_t k = 0; k < a.samples.size(); ++k)
      EXPECT_TRUE(at::equal(a.id_vectors[static_cast<int64_t>(k)], one.id_vector(a.samples[k])));
  }
  EXPECT_FALSE(at::equal(one.batch(0, 77).images, one.batch(1, 77).images));
  EXPECT_NE(one.batch(0, 77).samples, one.batch(0, 78).samples);
  // An epoch visits every pair once; the next epoch in another order.
  for (int64_t epoch : {0, 1}) {
    std::set<int64_t> seen;
    std::vector<int64_t> order;
    for (int64_t b = 0; b < one.batches_per_epoch(); ++b)
      for (int64_t s : one.batch(epoch * 3 + b, 77).samples) {
        seen.insert(s);
        order.push_back(s);
      }
    EXPECT_EQ(seen.size(), 12u) << epoch;
    if (epoch == 1) {
      std::vector<int64_t> first;
      for (int64_t b = 0; b < 3; ++b)
        for (int64_t s : one.batch(b, 77).samples) first.push_back(s);
      EXPECT_NE(order, first);
    }
  }
  // The augmentation is real: with flip_p 1 and a centre crop every row is the mirrored image(i).
  cfg.crop = "center";
  cfg.flip_p = 1.0;
  const GeneratorTrainData flipped(cfg, 24, "");
  const GeneratorBatch f = flipped.batch(1, 5);
  for (size_t k = 0; k < f.samples.size(); ++k)
    EXPECT_TRUE(at::equal(f.images[static_cast<int64_t>(k)], flipped.image(f.samples[k]).flip({2}))) << k;
  // Random crops move: some row of some batch differs from its centre crop.
  cfg.crop = "random";
  cfg.flip_p = 0.0;
  const GeneratorTrainData cropped(cfg, 24, "");
  bool moved = false;
  for (int64_t pos = 0; pos < 3 && !moved; ++pos) {
    const GeneratorBatch c = cropped.batch(pos, 5);
    for (size_t k = 0; k < c.samples.size(); ++k)
      moved = moved || !at::equal(c.images[static_cast<int64_t>(k)], cropped.image(c.samples[k]));
  }
  EXPECT_TRUE(moved);
}

TEST(GeneratorTrainData, MaxImagesAndBatchSize) {
  const std::string dir = test::temp_dir("gtd_max");
  write_vector_shard(dir + "/s.h5", 0, 3, 3, 8, /*with_images=*/false);
  GeneratorDataConfig cfg = base_config({dir + "/s.h5"});
  cfg.id_vector = "identity";
  const GeneratorTrainData all(cfg, 16, "");
  cfg.max_images = 5;
  const GeneratorTrainData some(cfg, 16, "");
  ASSERT_EQ(some.size(), 5);
  EXPECT_EQ(some.batches_per_epoch(), 1);
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(some.describe(i), all.describe(i));
    EXPECT_TRUE(at::equal(some.image(i), all.image(i)));
  }
  cfg.batch_size = 6;
  const std::string msg = error_of([&] { GeneratorTrainData d(cfg, 16, ""); });
  EXPECT_NE(msg.find("data.batch_size: expected at most the 5 training pairs, found 6"), std::string::npos) << msg;
  // A shard without full images: auto falls back to the aligned crops; asking for images names the file.
  cfg.batch_size = 4;
  cfg.image = "images";
  const std::string msg2 = error_of([&] { GeneratorTrainData d(cfg, 16, ""); });
  EXPECT_NE(msg2.find(dir + "/s.h5: dataset 'images'"), std::string::npos) << msg2;
}

TEST(GeneratorTrainData, VectorWidthsMustAgree) {
  const std::string dir = test::temp_dir("gtd_width");
  write_vector_shard(dir + "/a.h5", 0, 2, 2, 16);
  write_vector_shard(dir + "/b.h5", 2, 2, 2, 8);
  GeneratorDataConfig cfg = base_config({dir + "/a.h5", dir + "/b.h5"});
  cfg.id_vector = "identity";
  const std::string msg = error_of([&] { GeneratorTrainData d(cfg, 16, ""); });
  EXPECT_EQ(msg, dir + "/b.h5: identity_vectors: expected width 16 (as " + dir + "/a.h5), found 8");
}

TEST(GeneratorTrainData, RecordIoVectorsFromTheRecognizerAndTheirCache) {
  IDSYNTH_REQUIRE_GOLDEN(recognizer, "onnx/iresnet_tiny.onnx");
  const std::string dir = test::temp_dir("gtd_rec");
  write_rec(dir + "/rec", 3, 3);
  GeneratorDataConfig cfg = base_config({dir + "/rec"});
  cfg.recognizer = recognizer;
  const std::string cache = dir + "/run/id_vectors.safetensors";
  const GeneratorTrainData first(cfg, 32, cache);
  ASSERT_EQ(first.size(), 9);
  EXPECT_EQ(first.id_width(), 64);
  EXPECT_FALSE(first.vectors_from_cache());
  ASSERT_TRUE(fs::exists(cache));
  EXPECT_EQ(first.label(4), 1);
  EXPECT_EQ(first.describe(4), dir + "/rec/train.rec[4]");
  // Per-image vectors: normalised, different for two images of one identity.
  EXPECT_NEAR(first.id_vector(3).norm().item<float>(), 1.0f, 1e-5);
  EXPECT_LT(at::dot(first.id_vector(3), first.id_vector(4)).item<float>(), 0.99999f);
  // The aligned 112x112 crop shrinks (INTER_AREA) to 32x32.
  {
    formats::RecordIOReader rr(dir + "/rec/train.rec", dir + "/rec/train.idx");
    std::string img;
    formats::unpack_irheader(rr.read(4), &img, "test");
    EXPECT_TRUE(at::allclose(first.image(4), expected_image(img, 32), 0, 1e-5));
  }
  // A second open takes the cache; so does the other id_vector mode (the cache holds per-image vectors).
  const GeneratorTrainData second(cfg, 32, cache);
  EXPECT_TRUE(second.vectors_from_cache());
  for (int64_t i = 0; i < first.size(); ++i) EXPECT_TRUE(at::equal(first.id_vector(i), second.id_vector(i))) << i;
  cfg.id_vector = "identity";
  const GeneratorTrainData identity(cfg, 32, cache);
  EXPECT_TRUE(identity.vectors_from_cache());
  // id_vector: identity gives one vector per identity, the normalised mean of its images' vectors.
  for (int64_t id = 0; id < 3; ++id) {
    const at::Tensor mean = first.id_vector(3 * id) + first.id_vector(3 * id + 1) + first.id_vector(3 * id + 2);
    for (int64_t k = 0; k < 3; ++k)
      EXPECT_TRUE(at::allclose(identity.id_vector(3 * id + k), mean / mean.norm(), 1e-5, 1e-6)) << id << " " << k;
  }
  EXPECT_FALSE(at::allclose(identity.id_vector(0), identity.id_vector(3), 1e-3, 1e-3));
  // A changed source is recomputed, not trusted.
  write_rec(dir + "/rec", 3, 3, /*seed=*/10);
  cfg.id_vector = "image";
  const GeneratorTrainData changed(cfg, 32, cache);
  EXPECT_FALSE(changed.vectors_from_cache());
  EXPECT_FALSE(at::allclose(changed.id_vector(0), first.id_vector(0), 1e-4, 1e-4));
  EXPECT_TRUE(GeneratorTrainData(cfg, 32, cache).vectors_from_cache());
  // A damaged cache file is recomputed as well (and rewritten).
  write_file_atomic(cache, "not a safetensors file");
  const GeneratorTrainData repaired(cfg, 32, cache);
  EXPECT_FALSE(repaired.vectors_from_cache());
  EXPECT_TRUE(at::equal(repaired.id_vector(5), changed.id_vector(5)));
  EXPECT_TRUE(GeneratorTrainData(cfg, 32, cache).vectors_from_cache());
}

TEST(GeneratorTrainData, ShardImageVectorsEmbedTheAlignedCrops) {
  IDSYNTH_REQUIRE_GOLDEN(recognizer, "onnx/iresnet_tiny.onnx");
  const std::string dir = test::temp_dir("gtd_shard_image");
  write_vector_shard(dir + "/s.h5", 0, 2, 2, 16);
  // The same crops as RecordIO: the shard's vectors must be those of its aligned crops, not of the full images.
  std::vector<std::string> crops;
  for (int64_t i = 0; i < 4; ++i) crops.push_back(shard_bytes(dir + "/s.h5", "aligned", i));
  fs::create_directories(dir + "/rec");
  formats::write_recordio(dir + "/rec/train.rec", dir + "/rec/train.idx", crops, {0, 0, 1, 1});
  GeneratorDataConfig cfg = base_config({dir + "/s.h5", dir + "/rec"});
  cfg.recognizer = recognizer;
  const GeneratorTrainData data(cfg, 32, "");
  ASSERT_EQ(data.size(), 8);
  EXPECT_EQ(data.id_width(), 64);
  for (int64_t i = 0; i < 4; ++i) EXPECT_TRUE(at::allclose(data.id_vector(i), data.id_vector(i + 4), 1e-6, 1e-6)) << i;
  // Stored vectors (width 16) and recogniser vectors (width 64) do not mix.
  cfg.id_vector = "identity";
  const std::string msg = error_of([&] { GeneratorTrainData d(cfg, 32, ""); });
  EXPECT_EQ(msg, dir + "/s.h5: identity_vectors: expected width 64 (as " + recognizer + "), found 16");
}

TEST(GeneratorTrainData, MissingRecognizerAndEmptyFolders) {
  const std::string dir = test::temp_dir("gtd_errors");
  write_rec(dir + "/rec", 1, 4);
  GeneratorDataConfig cfg = base_config({dir + "/rec"});
  std::string msg = error_of([&] { GeneratorTrainData d(cfg, 32, ""); });
  EXPECT_EQ(msg, "data.recognizer: expected an ONNX / IResNet recogniser file to embed " + dir +
                     "/rec/train.rec (RecordIO images), found none");
  cfg.recognizer = dir + "/nope.onnx";
  msg = error_of([&] { GeneratorTrainData d(cfg, 32, ""); });
  EXPECT_EQ(msg, dir + "/nope.onnx: data.recognizer: expected a recogniser file, not found");
  // Shards with id_vector: image need it too.
  write_vector_shard(dir + "/s.h5", 0, 1, 4, 8);
  cfg = base_config({dir + "/s.h5"});
  msg = error_of([&] { GeneratorTrainData d(cfg, 32, ""); });
  EXPECT_NE(msg.find("data.recognizer: expected an ONNX / IResNet recogniser file to embed " + dir +
                     "/s.h5 (shard images with data.id_vector: image)"),
            std::string::npos)
      << msg;
  // An empty folder, and a folder whose person sub-folders hold no images.
  fs::create_directories(dir + "/empty");
  cfg = base_config({dir + "/empty"});
  cfg.alignment = "aligned";
  msg = error_of([&] { GeneratorTrainData d(cfg, 32, ""); });
  EXPECT_EQ(msg, dir +
                     "/empty: data path: expected HDF5 shards (*.h5 or shards/*.h5), train.rec + train.idx, or one "
                     "sub-folder of images per person, found none");
  fs::create_directories(dir + "/people/alice");
  write_file_atomic(dir + "/people/alice/notes.txt", "no images here");
  cfg.paths = {dir + "/people"};
  msg = error_of([&] { GeneratorTrainData d(cfg, 32, ""); });
  EXPECT_NE(msg.find(dir + "/people: data path: expected"), std::string::npos) << msg;
  cfg.paths = {dir + "/missing"};
  msg = error_of([&] { GeneratorTrainData d(cfg, 32, ""); });
  EXPECT_NE(msg.find(dir + "/missing: data path:"), std::string::npos) << msg;
}

// Real faces with the test recogniser: aligned crops in person folders give the recogniser's own
// embeddings (goldens/realfaces/embeddings.safetensors, computed by OpenCV DNN).
TEST(GeneratorTrainData, AlignedFolderMatchesTheReferenceEmbeddings) {
  IDSYNTH_REQUIRE_TEST_RECOGNIZER(recognizer);
  IDSYNTH_REQUIRE_GOLDEN(realfaces, "realfaces");
  const std::string dir = test::temp_dir("gtd_folder_aligned");
  fs::create_directories(dir + "/people/a");
  fs::create_directories(dir + "/people/b");
  fs::copy_file(realfaces + "/aligned/img1.png", dir + "/people/a/1.png");
  fs::copy_file(realfaces + "/aligned/img17.png", dir + "/people/a/2.png");
  fs::copy_file(realfaces + "/aligned/img2.png", dir + "/people/b/1.png");
  fs::copy_file(realfaces + "/aligned/img5.png", dir + "/people/b/2.png");
  GeneratorDataConfig cfg = base_config({dir + "/people"});
  cfg.alignment = "aligned";
  cfg.recognizer = recognizer;
  const GeneratorTrainData data(cfg, 64, "");
  ASSERT_EQ(data.size(), 4);
  EXPECT_EQ(data.describe(2), dir + "/people/b/1.png");
  EXPECT_EQ(data.label(2), 1);
  const SafeTensorsFile ref(realfaces + "/embeddings.safetensors");
  const at::Tensor direct = ref.tensor("direct_crop");
  const int64_t rows[] = {0, 16, 1, 4};
  for (int64_t i = 0; i < 4; ++i) {
    const at::Tensor e = direct[rows[i]] / direct[rows[i]].norm();
    EXPECT_GT(at::dot(data.id_vector(i), e).item<float>(), 1.0f - 1e-5f) << i;
  }
}

// Photos: SCRFD (the goldens' tiny detector, which finds faces in img12) + alignment + recogniser;
// an image without a face stops the run with one line naming it.
TEST(GeneratorTrainData, DetectedFolderAndAnImageWithoutAFace) {
  IDSYNTH_REQUIRE_TEST_RECOGNIZER(recognizer);
  IDSYNTH_REQUIRE_GOLDEN(detector, "onnx/scrfd_decode.onnx");
  IDSYNTH_REQUIRE_GOLDEN(photo, "realfaces/photos/img12.jpg");
  const std::string dir = test::temp_dir("gtd_folder_detect");
  fs::create_directories(dir + "/people/a");
  fs::create_directories(dir + "/people/b");
  fs::copy_file(photo, dir + "/people/a/img12.jpg");
  const cv::Mat rgb = formats::read_image_rgb(photo);
  cv::Mat mirrored;
  cv::flip(rgb, mirrored, 1);
  formats::write_image_rgb(dir + "/people/b/mirrored.png", mirrored);
  GeneratorDataConfig cfg = base_config({dir + "/people"});
  cfg.batch_size = 2;
  cfg.recognizer = recognizer;
  // detect (the default) without a detector
  std::string msg = error_of([&] { GeneratorTrainData d(cfg, 64, ""); });
  EXPECT_NE(msg.find("data.detector: expected an SCRFD ONNX file to find the faces in " + dir + "/people"),
            std::string::npos)
      << msg;
  cfg.detector = detector;
  const GeneratorTrainData data(cfg, 64, "");
  ASSERT_EQ(data.size(), 2);
  EXPECT_EQ(data.id_width(), 512);
  // The training image is the whole photo (415x560: height to 64, width to 86, centre crop).
  EXPECT_TRUE(at::allclose(data.image(0), expected_image(read_text_file(photo), 64), 0, 1e-5));
  // Detected and aligned, not the whole photo squeezed into 112x112.
  cfg.alignment = "aligned";
  const GeneratorTrainData squeezed(cfg, 64, "");
  EXPECT_LT(at::dot(data.id_vector(0), squeezed.id_vector(0)).item<float>(), 0.999f);
  // A grey image has no face.
  fs::create_directories(dir + "/people/c");
  formats::write_image_rgb(dir + "/people/c/blank.png", cv::Mat(200, 160, CV_8UC3, cv::Scalar(128, 128, 128)));
  cfg.alignment = "detect";
  msg = error_of([&] { GeneratorTrainData d(cfg, 64, ""); });
  EXPECT_EQ(
      msg,
      dir + "/people/c/blank.png: no face found (data.alignment: detect); remove it or set data.alignment: aligned");
}

}  // namespace
}  // namespace idsynth::generator
