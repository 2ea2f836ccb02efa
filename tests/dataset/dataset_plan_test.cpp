// The generation plan (seeds, shards, tasks) and the HDF5 shard file: fixed values, byte-identical
// rewrites, and a read-back (also through h5py where it is installed).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <set>

#include "dataset_test_util.h"
#include "dataset/plan.h"
#include "formats/dataset_folder.h"
#include "formats/shard_file.h"
#include "tests/support/process.h"

namespace idsynth::dataset {
namespace {

TEST(DatasetPlan, SplitMix64MatchesThePublishedSequence) {
  // SplitMix64 from state 0: the state advances by the golden gamma before each output.
  EXPECT_EQ(splitmix64(0), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(splitmix64(0x9E3779B97F4A7C15ull), 0x6E789E6AA1B965F4ull);
}

TEST(DatasetPlan, ImageSeedsAreAChainOverTheIndices) {
  const uint64_t h = splitmix64(splitmix64(splitmix64(splitmix64(5) ^ 7) ^ 2) ^ 1);
  EXPECT_EQ(image_seed(5, 7, 2, 1), h);
  std::set<uint64_t> seen;
  for (int id = 0; id < 20; ++id)
    for (int im = 0; im < 10; ++im)
      for (int a = 0; a < 3; ++a) seen.insert(image_seed(0, id, im, a));
  EXPECT_EQ(seen.size(), 600u);
}

TEST(DatasetPlan, ShardsAndTasksCoverEveryIdentityOnce) {
  const auto shards = plan_shards(10, 3);
  ASSERT_EQ(shards.size(), 4u);
  EXPECT_EQ(shards[3].first_identity, 9);
  EXPECT_EQ(shards[3].identity_count, 1);
  std::set<int64_t> covered;
  for (int64_t t = 0; t < 3; ++t)
    for (const auto& s : shards_for_task(shards, t, 3)) {
      EXPECT_EQ(s.index % 3, t);
      EXPECT_TRUE(covered.insert(s.index).second);
    }
  EXPECT_EQ(covered.size(), 4u);
  const auto slots = shard_slots(shards[1], 2);
  ASSERT_EQ(slots.size(), 6u);
  EXPECT_EQ(slots[3].identity, 4);
  EXPECT_EQ(slots[3].image, 1);
  const auto ranges = batch_ranges(7, 3);
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[2], (std::pair<size_t, size_t>(6, 7)));
  EXPECT_EQ(formats::shard_stem(42), "shard-00042");
  EXPECT_THROW(plan_shards(10, 0), Error);
  EXPECT_THROW(shards_for_task(shards, 3, 3), Error);
}

formats::ShardData sample_shard() {
  formats::ShardData d;
  d.shard_index = 4;
  d.config = "generation:\n  steps: 2\n";
  d.model_files = R"({"unet/config.json": "abc"})";
  d.identity_index = {8, 9};
  d.dim = 3;
  d.identity_vectors = {1, 0, 0, 0, 1, 0};
  d.short_identities = {9};
  d.labels = {8, 8, 9};
  d.image_index = {0, 1, 1};
  d.attempt = {0, 1, 0};
  d.seed = {1, 0xFFFFFFFFFFFFFFFFull, 3};
  d.similarity = {0.5f, 0.25f, std::nanf("")};
  d.images = {std::string("\xff\xd8jpeg0", 7), "", std::string(1000, 'x')};
  d.aligned = {"a", "bb", "ccc"};
  return d;
}

TEST(ShardFile, SameDataGivesTheSameBytesAndReadsBack) {
  const std::string dir = test::temp_dir("shard_file");
  const formats::ShardData d = sample_shard();
  formats::write_shard(dir + "/a.h5", d);
  formats::write_shard(dir + "/b.h5", d);
  const std::string a = test::read_bytes(dir + "/a.h5");
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == test::read_bytes(dir + "/b.h5")) << "HDF5 output is not byte-deterministic";
  EXPECT_FALSE(std::filesystem::exists(dir + "/a.h5.tmp." + std::to_string(::getpid())));
  const formats::ShardData r = formats::read_shard(dir + "/a.h5");
  EXPECT_EQ(r.shard_index, 4);
  EXPECT_EQ(r.config, d.config);
  EXPECT_EQ(r.model_files, d.model_files);
  EXPECT_EQ(r.identity_index, d.identity_index);
  EXPECT_EQ(r.identity_vectors, d.identity_vectors);
  EXPECT_EQ(r.dim, 3);
  EXPECT_EQ(r.short_identities, d.short_identities);
  EXPECT_EQ(r.labels, d.labels);
  EXPECT_EQ(r.image_index, d.image_index);
  EXPECT_EQ(r.attempt, d.attempt);
  EXPECT_EQ(r.seed, d.seed);
  EXPECT_EQ(r.similarity[1], 0.25f);
  EXPECT_TRUE(std::isnan(r.similarity[2]));
  EXPECT_EQ(r.images, d.images);
  EXPECT_EQ(r.aligned, d.aligned);

  // Without full images the dataset is absent, an empty shard still has every other dataset.
  formats::ShardData e = d;
  e.has_images = false;
  e.images.clear();
  e.labels.clear(), e.image_index.clear(), e.attempt.clear(), e.seed.clear(), e.similarity.clear(), e.aligned.clear();
  formats::write_shard(dir + "/e.h5", e);
  const formats::ShardData re = formats::read_shard(dir + "/e.h5");
  EXPECT_FALSE(re.has_images);
  EXPECT_TRUE(re.has_aligned);
  EXPECT_EQ(re.size(), 0u);

  // A truncated file is reported with its name.
  const std::string cut = a.substr(0, a.size() / 2);
  write_file_atomic(dir + "/cut.h5", cut);
  try {
    formats::read_shard(dir + "/cut.h5");
    FAIL() << "a truncated shard was read";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("cut.h5"), std::string::npos) << err.what();
  }
}

TEST(ShardFile, ReadableWithH5py) {
  if (test::run_command(test::system_python() + " -c 'import h5py' 2>/dev/null").exit_code != 0) {
    if (test::goldens_required()) FAIL() << "python3 with h5py not found and IDSYNTH_REQUIRE_GOLDENS=1";
    GTEST_SKIP() << "python3 with h5py not installed (python3-h5py)";
  }
  const std::string dir = test::temp_dir("shard_h5py");
  formats::write_shard(dir + "/a.h5", sample_shard());
  // Version 2: images are one uint8 dataset cut by N + 1 offsets, text is uint8 too.
  const auto r = test::run_command(
      test::system_python() + " -c \"import h5py; f = h5py.File('" + dir +
      "/a.h5', 'r'); o = f['images_offsets'][:]; a = f['aligned_offsets'][:]; "
      "print(f.attrs['format'].decode(), int(f.attrs['format_version']), int(f.attrs['shard_index']), list(f['labels'][:]), "
      "f['images'][o[0]:o[1]].tobytes()[:2].hex(), int(o[3] - o[2]), f['aligned'][a[1]:a[2]].tobytes().decode(), "
      "list(f['seed'][:])[1], f['identity_vectors'].shape, repr(f['config'][:].tobytes().decode()))\"");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "idsynth-shard 2 4 [8, 8, 9] ffd8 1000 bb 18446744073709551615 (2, 3) 'generation:\\n  steps: 2\\n'\n");
}

}  // namespace
}  // namespace idsynth::dataset
