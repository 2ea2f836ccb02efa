// insightface .bin packs: the three pickle flavours decode to the golden images; hostile or
// malformed files fail with one clear error and execute nothing.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>

#include "core/check.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "formats/bin_pack.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::formats {
namespace {

std::string write_bytes(const std::string& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

using test::error_of;

// PROTO 2, two lists built with SHORT_BINBYTES and NEWTRUE/NEWFALSE, TUPLE2, STOP.
std::string tiny_pickle(const std::vector<std::string>& images, const std::vector<bool>& same) {
  std::string p = "\x80\x02](";
  for (const auto& im : images) p += "C" + std::string(1, static_cast<char>(im.size())) + im;
  p += "e](";
  for (bool s : same) p += s ? "\x88" : "\x89";
  p += "e\x86.";
  return p;
}

void expect_pack_matches(const std::string& file, const char* expected_name, const std::string& lengths_name) {
  IDSYNTH_REQUIRE_GOLDEN(path, "verification/" + file);
  IDSYNTH_REQUIRE_GOLDEN(expected_path, "verification/bins_expected.safetensors");
  SafeTensorsFile expected(expected_path);
  const BinPack pack = read_bin(path);
  ASSERT_EQ(pack.num_images(), 12);
  ASSERT_EQ(pack.num_pairs(), 6);
  const at::Tensor lengths = expected.tensor(lengths_name);
  for (int64_t i = 0; i < 12; ++i)
    EXPECT_EQ(static_cast<int64_t>(pack.images[static_cast<size_t>(i)].size()), lengths[i].item<int64_t>()) << i;
  const at::Tensor issame = expected.tensor("issame");
  for (int64_t p = 0; p < 6; ++p) EXPECT_EQ(pack.issame[static_cast<size_t>(p)], issame[p].item<int64_t>() != 0);
  const at::Tensor images = decode_bin_images(pack, 0, 12);
  const at::Tensor want = expected.tensor(expected_name);
  ASSERT_EQ(images.sizes(), want.sizes());
  const int64_t differing = images.ne(want).sum().item<int64_t>();
  EXPECT_EQ(differing, 0) << file << ": max|diff| "
                          << test::max_abs_diff(images.to(at::kInt), want.to(at::kInt));
  // Ranges decode to the same pixels as the whole pack.
  EXPECT_TRUE(decode_bin_images(pack, 3, 5).equal(images.slice(0, 3, 5)));
}

TEST(BinDataset, Py3Protocol2MatchesGolden) { expect_pack_matches("tiny_py3_proto2.bin", "decoded_jpg_rgb", "jpg_lengths"); }
TEST(BinDataset, Py3Protocol4MatchesGolden) { expect_pack_matches("tiny_py3_proto4.bin", "decoded_jpg_rgb", "jpg_lengths"); }
TEST(BinDataset, Py2Protocol2MatchesGolden) { expect_pack_matches("tiny_py2_proto2.bin", "decoded_jpg_rgb", "jpg_lengths"); }
TEST(BinDataset, Py2PngMatchesGolden) { expect_pack_matches("tiny_py2_proto2_png.bin", "decoded_png_rgb", "png_lengths"); }

TEST(BinDataset, RefusesGlobalAndExecutesNothing) {
  const std::string dir = test::temp_dir("bin_hostile");
  const std::string marker = dir + "/pwned";
  // Protocol 0: GLOBAL os.system, MARK, STRING 'touch <marker>', TUPLE, REDUCE, STOP.
  const std::string p = "cos\nsystem\n(S'touch " + marker + "'\ntR.";
  const std::string path = write_bytes(dir, "evil.bin", p);
  const std::string msg = error_of([&] { read_bin(path); });
  EXPECT_NE(msg.find("evil.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("os.system"), std::string::npos) << msg;
  EXPECT_FALSE(file_exists(marker));
  // The same through posix.system and builtins.eval.
  for (const std::string g : {"posix\nsystem\n", "builtins\neval\n", "__builtin__\neval\n"}) {
    const std::string q = write_bytes(dir, "evil2.bin", "c" + g + "(S'touch " + marker + "'\ntR.");
    EXPECT_THROW(read_bin(q), Error);
  }
  EXPECT_FALSE(file_exists(marker));
}

TEST(BinDataset, TruncatedAndUnknownOpcodeFail) {
  const std::string dir = test::temp_dir("bin_bad");
  const std::string good = tiny_pickle({"ab", "cd"}, {true});
  ASSERT_NO_THROW(read_bin(write_bytes(dir, "good.bin", good)));
  for (size_t cut : {size_t{1}, size_t{5}, good.size() / 2, good.size() - 1}) {
    const std::string msg = error_of([&] { read_bin(write_bytes(dir, "cut.bin", good.substr(0, cut))); });
    EXPECT_NE(msg.find("cut.bin"), std::string::npos) << cut << ": " << msg;
  }
  const std::string unknown = std::string("\x80\x02") + "\xff" + good.substr(2);
  const std::string msg = error_of([&] { read_bin(write_bytes(dir, "op.bin", unknown)); });
  EXPECT_NE(msg.find("op.bin"), std::string::npos) << msg;
  EXPECT_THROW(read_bin(write_bytes(dir, "empty.bin", "")), Error);
  EXPECT_THROW(read_bin(dir + "/absent.bin"), Error);
}

TEST(BinDataset, CountsAndTypesAreChecked) {
  const std::string dir = test::temp_dir("bin_counts");
  std::string msg = error_of([&] { read_bin(write_bytes(dir, "pairs.bin", tiny_pickle({"ab", "cd"}, {true, false}))); });
  EXPECT_NE(msg.find("pairs.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 1 entries"), std::string::npos) << msg;
  EXPECT_NE(msg.find("found 2"), std::string::npos) << msg;
  msg = error_of([&] { read_bin(write_bytes(dir, "odd.bin", tiny_pickle({"ab", "cd", "ef"}, {true}))); });
  EXPECT_NE(msg.find("even number of images"), std::string::npos) << msg;
  // A list of text instead of bytes.
  const char text_pickle[] = "\x80\x02](X\x01\x00\x00\x00" "aX\x01\x00\x00\x00" "be](\x88" "e\x86.";
  msg = error_of([&] { read_bin(write_bytes(dir, "text.bin", std::string(text_pickle, sizeof(text_pickle) - 1))); });
  EXPECT_NE(msg.find("bins[0]"), std::string::npos) << msg;
  // Not a 2-tuple.
  msg = error_of([&] { read_bin(write_bytes(dir, "list.bin", "\x80\x02](\x88" "e.")); });
  EXPECT_NE(msg.find("2-tuple"), std::string::npos) << msg;
}

TEST(BinDataset, CorruptImageNamesIndex) {
  const std::string dir = test::temp_dir("bin_corrupt");
  const BinPack pack = read_bin(write_bytes(dir, "corrupt.bin", tiny_pickle({"not an image", "nope"}, {false})));
  const std::string msg = error_of([&] { decode_bin_images(pack, 1, 2); });
  EXPECT_NE(msg.find("corrupt.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bins[1]"), std::string::npos) << msg;
  EXPECT_THROW(decode_bin_images(pack, 0, 3), Error);
}

}  // namespace
}  // namespace idsynth::formats

namespace idsynth::formats {
namespace {

// The real-photo pack (protocol 4, 600 separate bytes objects): structure and one decoded range.
TEST(BinDataset, RealFacesPairsBin) {
  IDSYNTH_REQUIRE_GOLDEN(path, "realfaces/pairs.bin");
  const BinPack pack = read_bin(path);
  EXPECT_EQ(pack.num_pairs(), 300);
  int64_t same = 0;
  for (bool s : pack.issame) same += s;
  EXPECT_EQ(same, 38);
  EXPECT_TRUE(pack.issame[37] && !pack.issame[38]);  // the same-person rows come first
  const at::Tensor first = decode_bin_images(pack, 0, 4);
  EXPECT_EQ(first.sizes(), at::IntArrayRef({4, 112, 112, 3}));
}

}  // namespace
}  // namespace idsynth::formats
