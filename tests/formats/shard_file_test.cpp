// The shard format's versions and its reader's checks on hostile files (docs/formats.md, "Shard";
// docs/reliability.md, finding 9). Round trips and determinism are in tests/dataset.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "core/file_util.h"
#include "formats/shard_file.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"

namespace idsynth::formats {
namespace {

using test::error_of;

const std::string kVersion1 = IDSYNTH_SOURCE_DIR "/tests/formats/data/shard-v1.h5";

ShardData three_images() {
  ShardData d;
  d.shard_index = 1;
  d.config = "generation:\n  steps: 2\n";
  d.model_files = R"({"unet": "ab"})";
  d.identity_index = {5};
  d.dim = 2;
  d.identity_vectors = {0.6f, 0.8f};
  d.labels = {5, 5, 5};
  d.image_index = {0, 1, 2};
  d.attempt = {0, 0, 1};
  d.seed = {7, 8, 9};
  d.similarity = {0.9f, 0.8f, 0.7f};
  d.images = {std::string(70, 'x'), "", std::string("\xff\xd8\xff", 3)};
  d.aligned = {"a", "bb", "ccc"};
  return d;
}

// Replaces the only occurrence of `from` in the file's bytes by `to` (same length).
void patch_file(const std::string& path, const std::string& from, const std::string& to) {
  std::string bytes = read_text_file(path);
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos) << "pattern not in " << path;
  ASSERT_EQ(bytes.find(from, at + 1), std::string::npos) << "pattern twice in " << path;
  bytes.replace(at, from.size(), to);
  write_file_atomic(path, bytes);
}

std::string int64s(std::initializer_list<int64_t> values) {
  std::string s;
  for (int64_t v : values) s.append(reinterpret_cast<const char*>(&v), 8);  // little-endian host, as the file
  return s;
}

TEST(ShardFormat, Version2HoldsNoVariableLengthData) {
  const std::string dir = test::temp_dir("shard-v2");
  const ShardData d = three_images();
  write_shard(dir + "/s.h5", d);
  // Variable-length data lives in global heap collections ("GCOL"); version 2 has none, so
  // libhdf5's heap code (findings 7-9) is never reached by the reader.
  EXPECT_EQ(read_text_file(dir + "/s.h5").find("GCOL"), std::string::npos);
  const ShardData r = read_shard(dir + "/s.h5", /*accept_version_1=*/false);
  EXPECT_EQ(r.images, d.images);
  EXPECT_EQ(r.aligned, d.aligned);
  EXPECT_EQ(r.config, d.config);
  EXPECT_EQ(r.model_files, d.model_files);
  for (const char* which : {"images", "aligned"}) {
    const ShardImageReader reader(dir + "/s.h5", which, /*accept_version_1=*/false);
    const auto& expected = std::string(which) == "images" ? d.images : d.aligned;
    for (int64_t i = 2; i >= 0; --i) EXPECT_EQ(reader.read(i), expected[static_cast<size_t>(i)]) << which << " " << i;
  }
}

TEST(ShardFormat, Version1ShardsAreStillRead) {
  const ShardData r = read_shard(kVersion1);
  EXPECT_EQ(r.config, "test");
  EXPECT_EQ(r.model_files, "{}");
  EXPECT_EQ(r.labels, std::vector<int64_t>{0});
  EXPECT_EQ(r.identity_vectors, (std::vector<float>{0.6f, 0.8f}));
  ASSERT_EQ(r.images.size(), 1u);
  EXPECT_EQ(r.images[0], std::string(300, 'j'));
  EXPECT_FALSE(r.has_aligned);
  EXPECT_EQ(ShardImageReader(kVersion1, "auto").read(0), std::string(300, 'j'));
  // What a reader of untrusted files asks for (the fuzz target does): version 1 refused.
  const std::string expected = kVersion1 +
                               ": attribute format_version: expected 2 (version-1 shards keep variable-length data, "
                               "which is read only from trusted sources), found 1";
  EXPECT_EQ(error_of([] { read_shard(kVersion1, false); }), expected);
  EXPECT_EQ(error_of([] { ShardImageReader(kVersion1, "images", false); }), expected);
}

TEST(ShardFormat, DamagedOffsetsAreRefused) {
  const std::string dir = test::temp_dir("shard-offsets");
  write_shard(dir + "/good.h5", three_images());
  std::filesystem::copy_file(dir + "/good.h5", dir + "/down.h5");
  patch_file(dir + "/down.h5", int64s({0, 1, 3, 6}), int64s({0, 3, 1, 6}));
  const std::string down = dir + "/down.h5: dataset 'aligned_offsets'[2]: expected offsets that never decrease, found 1 after 3";
  EXPECT_EQ(error_of([&] { read_shard(dir + "/down.h5"); }), down);
  EXPECT_EQ(error_of([&] { ShardImageReader(dir + "/down.h5", "aligned"); }), down);
  // The images' offsets are intact, so that reader opens.
  EXPECT_EQ(ShardImageReader(dir + "/down.h5", "images").read(0), std::string(70, 'x'));

  std::filesystem::copy_file(dir + "/good.h5", dir + "/long.h5");
  patch_file(dir + "/long.h5", int64s({0, 70, 70, 73}), int64s({0, 70, 70, 1 << 20}));
  EXPECT_EQ(error_of([&] { ShardImageReader(dir + "/long.h5", "images"); }),
            dir + "/long.h5: dataset 'images_offsets': expected the last offset to be the length of 'images' (73), "
                  "found 1048576");
}

// Edits a good shard with the HDF5 API into shapes idsynth never writes.
class HostileShard : public ::testing::Test {
 protected:
  void SetUp() override {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    dir_ = test::temp_dir("shard-hostile");
    write_shard(dir_ + "/other.h5", three_images());
    write_shard(path_ = dir_ + "/s.h5", three_images());
  }
  template <typename Edit>
  void edit(Edit e) {
    const hid_t f = H5Fopen(path_.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    e(f);
    H5Fclose(f);
  }
  std::string dir_, path_;
};

TEST_F(HostileShard, LinkToAnotherFileIsRefused) {
  edit([&](hid_t f) {
    ASSERT_GE(H5Ldelete(f, "labels", H5P_DEFAULT), 0);
    ASSERT_GE(H5Lcreate_external((dir_ + "/other.h5").c_str(), "/labels", f, "labels", H5P_DEFAULT, H5P_DEFAULT), 0);
  });
  const std::string expected = path_ + ": 'labels': expected a dataset in this file, found a link to another file";
  EXPECT_EQ(error_of([&] { read_shard(path_); }), expected);
  EXPECT_EQ(error_of([&] { ShardImageReader(path_, "images"); }), expected);
}

TEST_F(HostileShard, ChunkedStorageIsRefused) {
  edit([&](hid_t f) {
    ASSERT_GE(H5Ldelete(f, "labels", H5P_DEFAULT), 0);
    const hsize_t n = 3, chunk = 1;
    const hid_t space = H5Screate_simple(1, &n, nullptr);
    const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    const hid_t ds = H5Dcreate2(f, "labels", H5T_STD_I64LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    H5Dclose(ds), H5Pclose(dcpl), H5Sclose(space);
  });
  EXPECT_EQ(error_of([&] { read_shard(path_); }),
            path_ + ": dataset 'labels': expected contiguous storage (as idsynth writes), found chunked storage");
}

TEST_F(HostileShard, VariableLengthDataIsNeverRead) {
  // A version-2 file carrying variable-length data where idsynth writes fixed: the reader refuses
  // it by its type, before libhdf5 would follow a heap reference.
  edit([&](hid_t f) {
    ASSERT_GE(H5Adelete(f, "format"), 0);
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate2(f, "format", type, space, H5P_DEFAULT, H5P_DEFAULT);
    const char* value = "idsynth-shard";
    ASSERT_GE(H5Awrite(attr, type, &value), 0);
    H5Aclose(attr), H5Sclose(space), H5Tclose(type);
  });
  EXPECT_EQ(error_of([&] { read_shard(path_); }),
            path_ + ": attribute 'format': expected a fixed-length string, found a variable-length one");
  write_shard(path_, three_images());
  edit([&](hid_t f) {
    ASSERT_GE(H5Ldelete(f, "images", H5P_DEFAULT), 0);
    const hsize_t n = 3;
    const hid_t type = H5Tvlen_create(H5T_STD_U8LE);
    const hid_t space = H5Screate_simple(1, &n, nullptr);
    const hid_t ds = H5Dcreate2(f, "images", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    H5Dclose(ds), H5Sclose(space), H5Tclose(type);
  });
  const std::string expected = path_ + ": dataset 'images': expected integer elements, found variable-length";
  EXPECT_EQ(error_of([&] { read_shard(path_); }), expected);
  EXPECT_EQ(error_of([&] { ShardImageReader(path_, "images"); }), expected);
}

}  // namespace
}  // namespace idsynth::formats
