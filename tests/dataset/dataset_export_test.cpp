// Exports of a generated dataset read back: insightface RecordIO through a reader written from the
// format description (and scripts/read_recordio.py where numpy is installed), the folder layout,
// and `inspect`.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <sstream>

#include "core/hashing.h"
#include "formats/image.h"
#include "dataset_test_util.h"
#include "dataset/export.h"
#include "dataset/generate.h"
#include "formats/dataset_folder.h"
#include "formats/recordio.h"
#include "formats/shard_file.h"
#include "tests/support/process.h"

namespace idsynth::dataset {
namespace {

namespace fs = std::filesystem;

std::string small_dataset() {
  static std::string dir;
  if (dir.empty()) {
    dir = test::temp_dir("export_dataset");
    auto cfg = test::tiny_config(dir);
    cfg.identities.count = 5;
    cfg.output.identities_per_shard = 2;
    GenerateOptions o;
    o.progress = false;
    generate_dataset(cfg, o);
  }
  return dir;
}

struct Image {
  int64_t identity;
  std::string jpeg;
};

std::vector<Image> all_images(const std::string& dir, bool aligned) {
  std::vector<Image> v;
  for_each_shard(dir, [&](const formats::ShardData& d) {
    for (size_t i = 0; i < d.size(); ++i) v.push_back({d.labels[i], aligned ? d.aligned[i] : d.images[i]});
  });
  return v;
}

TEST(DatasetExport, RecordIOReadsBackWithInsightfaceLayout) {
  const std::string dir = small_dataset();
  const std::string out = test::temp_dir("export_recordio");
  const auto summary = export_dataset(dir, out, {});
  const auto images = all_images(dir, true);
  ASSERT_FALSE(images.empty());
  EXPECT_EQ(summary.images, static_cast<int64_t>(images.size()));

  formats::RecordIOReader reader(out + "/train.rec", out + "/train.idx");
  std::string payload;
  const formats::IRHeader h0 = formats::unpack_irheader(reader.read(0), &payload, "record 0");
  ASSERT_EQ(h0.flag, 2u);
  const auto n = static_cast<uint64_t>(images.size());
  EXPECT_EQ(h0.labels[0], static_cast<float>(n + 1));
  EXPECT_EQ(h0.labels[1], static_cast<float>(n + 1 + summary.classes));
  EXPECT_EQ(reader.keys().size(), n + 1 + static_cast<uint64_t>(summary.classes));

  std::map<int64_t, int64_t> dense;
  for (uint64_t key = 1; key <= n; ++key) {
    const formats::IRHeader h = formats::unpack_irheader(reader.read(key), &payload, "image record");
    const Image& expected = images[key - 1];
    const auto label = dense.emplace(expected.identity, static_cast<int64_t>(dense.size())).first->second;
    EXPECT_EQ(h.flag, 0u);
    EXPECT_EQ(h.label, static_cast<float>(label)) << key;
    EXPECT_EQ(h.id, key);
    ASSERT_TRUE(payload == expected.jpeg) << "record " << key << ": JPEG bytes differ";
    const cv::Mat m = formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(payload.data()), payload.size(), "record");
    EXPECT_EQ(m.rows, 112);
    EXPECT_EQ(m.cols, 112);
  }
  // One record per class with its [first, end) image records, as MXFaceDataset's writers lay out.
  for (int64_t c = 0; c < summary.classes; ++c) {
    const formats::IRHeader h = formats::unpack_irheader(reader.read(n + 1 + static_cast<uint64_t>(c)), &payload, "class record");
    ASSERT_EQ(h.flag, 2u);
    for (auto k = static_cast<uint64_t>(h.labels[0]); k < static_cast<uint64_t>(h.labels[1]); ++k)
      EXPECT_EQ(formats::unpack_irheader(reader.read(k), nullptr, "image").label, static_cast<float>(c));
  }
  EXPECT_EQ(read_text_file(out + "/property"), cat(summary.classes, ",112,112\n"));

  // The 20-line Python reader (standard library + numpy).
  if (test::run_command(test::system_python() + " -c 'import numpy' 2>/dev/null").exit_code == 0) {
    const auto r = test::run_command(test::system_python() + " " + IDSYNTH_SOURCE_DIR + "/scripts/read_recordio.py " + out);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::istringstream lines(r.out);
    std::string line;
    std::map<int64_t, int64_t> dense2;
    for (uint64_t key = 1; key <= n; ++key) {
      ASSERT_TRUE(std::getline(lines, line));
      const Image& e = images[key - 1];
      const auto label = dense2.emplace(e.identity, static_cast<int64_t>(dense2.size())).first->second;
      EXPECT_EQ(line, cat(key, " ", label, " ", e.jpeg.size(), " ", sha256_hex(e.jpeg)));
    }
    EXPECT_FALSE(std::getline(lines, line));
  } else if (test::goldens_required()) {
    FAIL() << "python3 with numpy not found and IDSYNTH_REQUIRE_GOLDENS=1";
  }
}

TEST(DatasetExport, FolderHoldsOneFolderPerIdentity) {
  const std::string dir = small_dataset();
  const std::string out = test::temp_dir("export_folder");
  ExportOptions o;
  o.format = "folder";
  o.image = "full";
  const auto summary = export_dataset(dir, out, o);
  int64_t files = 0, folders = 0;
  for (const auto& e : fs::recursive_directory_iterator(out)) {
    if (e.is_directory()) ++folders;
    if (e.is_regular_file()) {
      ++files;
      EXPECT_EQ(e.path().extension(), ".jpg");
    }
  }
  EXPECT_EQ(files, summary.images);
  EXPECT_EQ(folders, summary.classes);
  const auto images = all_images(dir, false);
  EXPECT_TRUE(read_text_file(out + "/0000000/0000.jpg") == images[0].jpeg || images[0].identity != 0);
}

TEST(DatasetExport, InspectCountsAndContactSheet) {
  const std::string dir = small_dataset();
  InspectOptions o;
  o.sheet = test::temp_dir("inspect") + "/sheet.png";
  o.sheet_identities = 3;
  o.sheet_images = 3;
  o.tile = 32;
  const std::string text = inspect_dataset(dir, o);
  EXPECT_NE(text.find("3 of 3 shards, 5 identities"), std::string::npos) << text;
  EXPECT_NE(text.find("per identity mean"), std::string::npos) << text;
  const cv::Mat sheet = formats::read_image_rgb(o.sheet);
  EXPECT_EQ(sheet.cols, 96);
  EXPECT_EQ(sheet.rows, 96);
}

TEST(DatasetExport, IncompleteDatasetIsRefused) {
  const std::string dir = test::temp_dir("export_incomplete");
  fs::copy(small_dataset(), dir, fs::copy_options::recursive);
  fs::remove(formats::shard_record_path(dir, 1));
  try {
    export_dataset(dir, dir + "/rec", {});
    FAIL() << "exported an incomplete dataset";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1 of 3 shards missing"), std::string::npos) << e.what();
  }
  ExportOptions o;
  o.allow_incomplete = true;
  EXPECT_GT(export_dataset(dir, dir + "/rec", o).images, 0);
}

}  // namespace
}  // namespace idsynth::dataset
