// The one RecordIO reader/writer, the one .npy/.npz parser and the one identity-vector reader: round
// trips, the layouts other tools write, and hostile bytes answered with one clear error.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "core/check.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "formats/identity_file.h"
#include "formats/npy.h"
#include "formats/recordio.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"

namespace idsynth::formats {
namespace {

using test::error_of;

std::string bytes_of(const std::string& path) { return read_text_file(path); }

TEST(RecordIO, PlainPairRoundTripsWithLabelsAndPadding) {
  const std::string dir = test::temp_dir("rec-plain");
  const std::vector<std::string> images = {"a", "bcdef", std::string(8, 'x')};
  write_recordio(dir + "/t.rec", dir + "/t.idx", images, {3, 0, 7});
  const std::string rec = bytes_of(dir + "/t.rec");
  // 3 records: 8-byte head, 24-byte IRHeader + payload, zero padding to 4 bytes.
  EXPECT_EQ(rec.size(), (8 + 28) + (8 + 32) + (8 + 32));
  EXPECT_EQ(bytes_of(dir + "/t.idx"), "0\t0\n1\t36\n2\t76\n");
  const RecordIOReader reader(dir + "/t.rec", dir + "/t.idx");
  ASSERT_EQ(reader.keys(), (std::vector<uint64_t>{0, 1, 2}));
  for (uint64_t k = 0; k < 3; ++k) {
    std::string payload;
    const IRHeader h = unpack_irheader(reader.read(k), &payload, "test");
    EXPECT_EQ(payload, images[k]);
    EXPECT_EQ(h.flag, 0u);
    EXPECT_EQ(h.id, k);
  }
  EXPECT_EQ(unpack_irheader(reader.read(2), nullptr, "test").label, 7.0f);
}

TEST(RecordIO, WriterRewritesTheHeaderRecordAndIsAtomic) {
  const std::string dir = test::temp_dir("rec-writer");
  {
    RecordIOWriter w(dir + "/t.rec", dir + "/t.idx");
    w.write(0, pack_irheader({0, 0.0f, 0, 0, {0.0f, 0.0f}}, ""));
    w.write(1, pack_irheader({0, 5.0f, 1, 0, {}}, "img"));
    EXPECT_FALSE(file_exists(dir + "/t.rec"));  // nothing visible before finish()
    EXPECT_NE(error_of([&] { w.rewrite_first(pack_irheader({0, 0.0f, 0, 0, {1.0f}}, "")); }).find("first record"),
              std::string::npos);
    w.rewrite_first(pack_irheader({0, 0.0f, 0, 0, {2.0f, 3.0f}}, ""));
    w.finish();
  }
  const RecordIOReader reader(dir + "/t.rec", dir + "/t.idx");
  const IRHeader h0 = unpack_irheader(reader.read(0), nullptr, "test");
  ASSERT_EQ(h0.labels.size(), 2u);
  EXPECT_EQ(h0.labels[1], 3.0f);
  {
    RecordIOWriter abandoned(dir + "/u.rec", dir + "/u.idx");
    abandoned.write(0, "x");
  }  // destroyed without finish(): no file, no temporary left
  EXPECT_FALSE(file_exists(dir + "/u.rec"));
  for (const auto& e : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(RecordIO, SplitRecordsAreJoinedWithTheMagic) {
  // dmlc's writer splits a payload at an embedded magic: cflag 1 (first) and 3 (last).
  const std::string dir = test::temp_dir("rec-split");
  auto part = [](uint32_t cflag, const std::string& p) {
    std::string s(8, '\0');
    const uint32_t magic = kRecordIOMagic, lrec = (cflag << 29) | static_cast<uint32_t>(p.size());
    std::memcpy(&s[0], &magic, 4);
    std::memcpy(&s[4], &lrec, 4);
    return s + p + std::string((4 - p.size() % 4) % 4, '\0');
  };
  std::ofstream(dir + "/s.rec", std::ios::binary) << part(1, "ab") + part(3, "cd");
  std::ofstream(dir + "/s.idx") << "0\t0\n";
  const RecordIOReader reader(dir + "/s.rec", dir + "/s.idx");
  const uint32_t magic = kRecordIOMagic;
  EXPECT_EQ(reader.read(0), "ab" + std::string(reinterpret_cast<const char*>(&magic), 4) + "cd");
}

TEST(RecordIO, HostileFilesGiveOneClearError) {
  const std::string dir = test::temp_dir("rec-bad");
  write_recordio(dir + "/t.rec", dir + "/t.idx", {"abcdefgh"}, {1});
  const std::string good = bytes_of(dir + "/t.rec");
  auto with = [&](const std::string& rec, const std::string& idx) {
    std::ofstream(dir + "/b.rec", std::ios::binary) << rec;
    std::ofstream(dir + "/b.idx") << idx;
    return error_of([&] { RecordIOReader(dir + "/b.rec", dir + "/b.idx").read(0); });
  };
  EXPECT_NE(with(good, "0\t9999\n").find("beyond"), std::string::npos);
  EXPECT_NE(with(good, "zero\tone\n").find("expected '<key>\\t<offset>'"), std::string::npos);
  EXPECT_NE(with(good, "").find("found none"), std::string::npos);
  EXPECT_NE(with("XXXX" + good.substr(4), "0\t0\n").find("expected RecordIO magic"), std::string::npos);
  EXPECT_NE(with(good.substr(0, 20), "0\t0\n").find("runs past the end"), std::string::npos);
  std::string huge = good;
  const uint32_t lrec = (1u << 29) - 1;
  std::memcpy(&huge[4], &lrec, 4);
  EXPECT_NE(with(huge, "0\t0\n").find("runs past the end"), std::string::npos);
  EXPECT_NE(error_of([&] { unpack_irheader(std::string(10, '\0'), nullptr, "r"); }).find("24-byte IRHeader"),
            std::string::npos);
  std::string many_labels(24, '\0');
  const uint32_t flag = 1000;
  std::memcpy(&many_labels[0], &flag, 4);
  EXPECT_NE(error_of([&] { unpack_irheader(many_labels, nullptr, "r"); }).find("IRHeader flag 1000"), std::string::npos);
}

TEST(Npy, OneParserForMatricesArraysAndArchives) {
  const std::string dir = test::temp_dir("npy");
  const at::Tensor m = at::arange(6, at::kDouble).reshape({2, 3}) / 7.0;
  save_npy(dir + "/m.npy", m);
  EXPECT_TRUE(at::equal(read_npy(dir + "/m.npy"), m));
  const at::Tensor f = read_npy_matrix(dir + "/m.npy");
  EXPECT_EQ(f.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(f, m.to(at::kFloat)));
  save_npy(dir + "/v.npy", at::ones({4}, at::kFloat));
  EXPECT_EQ(read_npy_matrix(dir + "/v.npy").sizes(), (std::vector<int64_t>{1, 4}));  // a vector is one row
  save_npy(dir + "/i.npy", at::ones({2, 2}, at::kLong));
  EXPECT_NE(error_of([&] { read_npy_matrix(dir + "/i.npy"); }).find("expected float32 or float64"), std::string::npos);
  save_npy(dir + "/c.npy", at::ones({2, 2, 2}, at::kFloat));
  EXPECT_NE(error_of([&] { read_npy_matrix(dir + "/c.npy"); }).find("expected a 1-D or 2-D array"), std::string::npos);
  write_npz(dir + "/a.npz", {{"mu", m}, {"n", at::ones({3}, at::kInt)}});
  const TensorDict z = read_npz(dir + "/a.npz");
  EXPECT_TRUE(at::equal(z.at("mu"), m));
  // The byte layout numpy writes: header padded so the data starts on a 64-byte boundary.
  const std::string raw = bytes_of(dir + "/m.npy");
  EXPECT_EQ(raw.size(), 128u + 6 * 8);
  EXPECT_EQ(raw.find("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"), 10u);
}

TEST(IdentityFile, NpySafetensorsAndTorchFilesGiveTheSameRows) {
  const std::string dir = test::temp_dir("idfile");
  const at::Tensor ids = at::randn({3, 8}, at::TensorOptions().dtype(at::kFloat));
  save_npy(dir + "/ids.npy", ids);
  save_safetensors(dir + "/ids.safetensors", {{"ids", ids}, {"other", ids}});
  save_safetensors(dir + "/one.safetensors", {{"anything", ids}});
  const at::Tensor unit = ids / ids.norm(2, 1, true);
  for (const char* name : {"ids.npy", "ids.safetensors", "one.safetensors"}) {
    SCOPED_TRACE(name);
    bool were_unit = true;
    EXPECT_TRUE(at::allclose(read_identity_vectors(dir + "/" + name, 0, &were_unit), unit, 0, 1e-6));
    EXPECT_FALSE(were_unit);
    EXPECT_TRUE(at::equal(read_vector_rows(dir + "/" + name), ids));  // as stored
  }
  save_safetensors(dir + "/two.safetensors", {{"a", ids}, {"b", ids}});
  EXPECT_NE(error_of([&] { read_vector_rows(dir + "/two.safetensors", "identities.gallery"); })
                .find("identities.gallery: expected one tensor or a tensor named 'ids', found 2 tensors"),
            std::string::npos);
  at::Tensor bad = ids.clone();
  bad[1][2] = std::numeric_limits<float>::quiet_NaN();
  save_npy(dir + "/nan.npy", bad);
  EXPECT_NE(error_of([&] { read_identity_vectors(dir + "/nan.npy"); }).find("row 1 contains NaN or Inf"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_identity_vectors(dir + "/ids.npy", 4); }).find("expected width D <= 4"),
            std::string::npos);
}

}  // namespace
}  // namespace idsynth::formats
