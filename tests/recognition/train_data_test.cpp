// The training data loader: shards and RecordIO, deterministic order and augmentation whatever the
// prefetch depth and thread count, and bad inputs (empty folder, label beyond the class count,
// corrupt JPEG skipped and counted).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "core/check.h"
#include "core/file_util.h"
#include "recognition/train_data.h"
#include "formats/recordio.h"
#include "tests/recognition/train_test_data.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"

namespace idsynth::recognition {
namespace {

namespace fs = std::filesystem;

using test::error_of;

TEST(TrainData, ShardsAndRecordIoGiveTheSameSamples) {
  const std::string dir = test::temp_dir("train_data_rec");
  fs::create_directories(dir + "/shards");
  test::write_identity_shard(dir + "/shards/shard-00000.h5", 1, 0, 3, 4);
  test::write_identity_shard(dir + "/shards/shard-00001.h5", 1, 3, 2, 4);
  TrainDataConfig cfg;
  cfg.paths = {dir};
  TrainDataset shards(cfg);
  ASSERT_EQ(shards.size(), 20);
  EXPECT_EQ(shards.num_classes(), 5);
  EXPECT_EQ(shards.label(19), 4);
  // The same images as a plain insightface RecordIO pair.
  std::vector<std::string> bytes;
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < shards.size(); ++i) {
    bytes.push_back(shards.read(i));
    labels.push_back(shards.label(i));
  }
  fs::create_directories(dir + "/rec");
  formats::write_recordio(dir + "/rec/train.rec", dir + "/rec/train.idx", bytes, labels);
  cfg.paths = {dir + "/rec"};
  TrainDataset rec(cfg);
  ASSERT_EQ(rec.size(), 20);
  for (int64_t i = 0; i < rec.size(); ++i) {
    EXPECT_EQ(rec.label(i), labels[static_cast<size_t>(i)]);
    EXPECT_EQ(rec.read(i), bytes[static_cast<size_t>(i)]) << i;
  }
  // Both folders at once: 40 samples.
  cfg.paths = {dir, dir + "/rec"};
  EXPECT_EQ(TrainDataset(cfg).size(), 40);
}

// One RecordIO record: IRHeader(flag, label, id, 0), `flag` float labels, then the image bytes.
std::string rec_record(uint32_t flag, float label, const std::vector<float>& labels, const std::string& image) {
  std::string payload(24, '\0');
  const uint64_t id = 0;
  std::memcpy(&payload[0], &flag, 4);
  std::memcpy(&payload[4], &label, 4);
  std::memcpy(&payload[8], &id, 8);
  for (float l : labels) payload.append(reinterpret_cast<const char*>(&l), 4);
  payload += image;
  const uint32_t magic = 0xced7230a, lrec = static_cast<uint32_t>(payload.size());
  std::string r(reinterpret_cast<const char*>(&magic), 4);
  r.append(reinterpret_cast<const char*>(&lrec), 4);
  r += payload;
  r.append((4 - payload.size() % 4) % 4, '\0');
  return r;
}

TEST(TrainData, RecordIoWithHeaderRecordAndArrayLabels) {
  // Classic MS1M/CASIA layout: key 0 = header0 (flag 2, label [A, B]), images at keys 1..A-1 (one with
  // an array label), identity records after them, which are not images.
  const std::string dir = test::temp_dir("train_data_rec0");
  const std::vector<std::string> imgs = test::render_identity(5, 0, 3);
  std::string rec, idx;
  auto add = [&](int key, const std::string& r) {
    idx += std::to_string(key) + "\t" + std::to_string(rec.size()) + "\n";
    rec += r;
  };
  add(0, rec_record(2, 4.0f, {4.0f, 6.0f}, ""));
  add(1, rec_record(0, 0.0f, {}, imgs[0]));
  add(2, rec_record(1, 0.0f, {1.0f}, imgs[1]));
  add(3, rec_record(0, 1.0f, {}, imgs[2]));
  add(4, rec_record(2, 0.0f, {1.0f, 2.0f}, ""));
  add(5, rec_record(2, 0.0f, {2.0f, 4.0f}, ""));
  write_file_atomic(dir + "/train.rec", rec);
  write_file_atomic(dir + "/train.idx", idx);
  TrainDataConfig cfg;
  cfg.paths = {dir};
  TrainDataset ds(cfg);
  ASSERT_EQ(ds.size(), 3);
  EXPECT_EQ(ds.num_classes(), 2);
  EXPECT_EQ(ds.label(1), 1);
  EXPECT_EQ(ds.read(1), imgs[1]);
  EXPECT_EQ(ds.read(2), imgs[2]);
  // A broken index names the file and line.
  write_file_atomic(dir + "/train.idx", "0\t0\nnot a line\n");
  const std::string msg = error_of([&] { TrainDataset d(cfg); });
  EXPECT_NE(msg.find("train.idx: line 2"), std::string::npos) << msg;
}

TEST(TrainData, OrderAndAugmentationDependOnlyOnSeedAndPosition) {
  const std::string dir = test::temp_dir("train_data_order");
  test::write_identity_shard(dir + "/s.h5", 2, 0, 4, 5);
  TrainDataConfig cfg;
  cfg.paths = {dir};
  cfg.batch_size = 6;
  cfg.crop_p = cfg.color_p = cfg.low_res_p = cfg.erase_p = 0.5;
  auto ds = std::make_shared<TrainDataset>(cfg);
  cfg.prefetch = 3;
  cfg.threads = 2;
  TrainLoader streamed(ds, cfg, 11);
  cfg.prefetch = 0;
  TrainLoader direct(ds, cfg, 11);
  EXPECT_EQ(streamed.batches_per_epoch(), 3);
  // Positions 2..6 cross two epoch boundaries.
  streamed.start(2);
  for (int64_t pos = 2; pos < 7; ++pos) {
    const TrainBatch a = streamed.next();
    const TrainBatch b = direct.make_batch(pos);
    EXPECT_EQ(a.position, pos);
    EXPECT_EQ(a.samples, b.samples);
    EXPECT_TRUE(torch::equal(a.images, b.images)) << pos;
    EXPECT_TRUE(torch::equal(a.labels, b.labels));
  }
  // Each epoch is a permutation; different epochs differ.
  const auto p0 = epoch_permutation(20, 11, 0), p1 = epoch_permutation(20, 11, 1);
  EXPECT_EQ(std::set<int64_t>(p0.begin(), p0.end()).size(), 20u);
  EXPECT_NE(p0, p1);
  // Normalised range and augmentation actually changes images vs. the plain decode.
  const TrainBatch b = direct.make_batch(0);
  EXPECT_LE(b.images.max().item<float>(), 1.0f);
  EXPECT_GE(b.images.min().item<float>(), -1.0f);
  TrainDataConfig plain;
  plain.flip_p = 0;
  at::Tensor x = at::empty({3, 112, 112});
  ASSERT_TRUE(decode_and_augment(ds->read(b.samples[0]), plain, 0, x));
  at::Tensor y = at::empty({3, 112, 112});
  TrainDataConfig all_on = cfg;
  all_on.flip_p = all_on.crop_p = all_on.color_p = all_on.low_res_p = all_on.erase_p = 1.0;
  ASSERT_TRUE(decode_and_augment(ds->read(b.samples[0]), all_on, 0, y));
  EXPECT_GT((x - y).abs().mean().item<float>(), 0.05f);
}

TEST(TrainData, EmptyFolderIsAClearError) {
  const std::string dir = test::temp_dir("train_data_empty");
  TrainDataConfig cfg;
  cfg.paths = {dir};
  const std::string msg = error_of([&] { TrainDataset ds(cfg); });
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  EXPECT_NE(msg.find("found none"), std::string::npos) << msg;
  // A shard without images is also an error.
  test::write_test_shard(dir + "/empty.h5", {}, {});
  const std::string msg2 = error_of([&] { TrainDataset ds(cfg); });
  EXPECT_NE(msg2.find("no images"), std::string::npos) << msg2;
}

TEST(TrainData, LabelBeyondClassCountIsAClearError) {
  const std::string dir = test::temp_dir("train_data_label");
  test::write_identity_shard(dir + "/s.h5", 3, 0, 6, 2);
  TrainDataConfig cfg;
  cfg.paths = {dir};
  cfg.num_classes = 4;
  const std::string msg = error_of([&] { TrainDataset ds(cfg); });
  EXPECT_NE(msg.find("s.h5: labels[8]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("num_classes = 4, found 4"), std::string::npos) << msg;
  // relabel maps sparse labels densely.
  test::write_test_shard(dir + "/s.h5", {100, 7, 100}, test::render_identity(3, 0, 3));
  cfg.num_classes = 0;
  cfg.relabel = true;
  TrainDataset ds(cfg);
  EXPECT_EQ(ds.num_classes(), 2);
  EXPECT_EQ(ds.label(0), 1);
  EXPECT_EQ(ds.label(1), 0);
}

TEST(TrainData, CorruptJpegIsSkippedAndCounted) {
  const std::string dir = test::temp_dir("train_data_corrupt");
  std::vector<std::string> jpegs = test::render_identity(4, 0, 8);
  jpegs[3] = "this is not a JPEG";
  jpegs[5] = jpegs[5].substr(0, 20);  // truncated
  test::write_test_shard(dir + "/s.h5", std::vector<int64_t>(8, 0), jpegs);
  TrainDataConfig cfg;
  cfg.paths = {dir};
  cfg.batch_size = 8;
  auto ds = std::make_shared<TrainDataset>(cfg);
  TrainLoader loader(ds, cfg, 1);
  loader.start(0);
  const TrainBatch b = loader.next();
  EXPECT_EQ(b.corrupt, 2);
  EXPECT_EQ(b.images.size(0), 6);
  EXPECT_EQ(b.labels.size(0), 6);
  EXPECT_EQ(loader.corrupt_total(), 2);
  for (int64_t s : b.samples) EXPECT_TRUE(s != 3 && s != 5);
}

TEST(TrainData, FullImagesAreResizedAndMissingDatasetsNamed) {
  const std::string dir = test::temp_dir("train_data_full");
  cv::Mat big(512, 512, CV_8UC3, cv::Scalar(10, 200, 30));
  test::write_test_shard(dir + "/s.h5", {0, 1}, {formats::encode_image_rgb(big, ".jpg"), formats::encode_image_rgb(big, ".jpg")}, "images");
  TrainDataConfig cfg;
  cfg.paths = {dir};
  cfg.batch_size = 2;
  auto ds = std::make_shared<TrainDataset>(cfg);  // auto: no `aligned`, uses `images`
  TrainLoader loader(ds, cfg, 1);
  const TrainBatch b = loader.make_batch(0);
  ASSERT_EQ(b.images.sizes(), (std::vector<int64_t>{2, 3, 112, 112}));
  EXPECT_NEAR(b.images[0][1].mean().item<float>(), 200.0f / 127.5f - 1.0f, 0.03f);
  cfg.image = "aligned";
  const std::string msg = error_of([&] { TrainDataset d(cfg); });
  EXPECT_NE(msg.find("dataset 'aligned'"), std::string::npos) << msg;
}

}  // namespace
}  // namespace idsynth::recognition
