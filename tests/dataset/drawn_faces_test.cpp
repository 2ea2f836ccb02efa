// idsynth draw-faces: the renderer is a pure function of (seed, identity, image); other seeds are
// other people; the three output formats read back with idsynth's own readers (the .bin through the
// insightface pickle reader), holding exactly the rendered images and labels.
#include <gtest/gtest.h>

#include <opencv2/core.hpp>

#include <filesystem>
#include <set>

#include "dataset/drawn_faces.h"
#include "formats/bin_pack.h"
#include "formats/image.h"
#include "formats/recordio.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"

namespace idsynth::dataset {
namespace {

namespace fs = std::filesystem;

bool same_pixels(const cv::Mat& a, const cv::Mat& b) { return a.size() == b.size() && cv::norm(a, b, cv::NORM_INF) == 0; }

cv::Mat decode(const std::string& bytes) {
  return formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test image");
}

DrawFacesOptions options(int64_t identities, int64_t images, uint64_t seed, int size, const std::string& format,
                         const std::string& out) {
  DrawFacesOptions o;
  o.identities = identities;
  o.images_per_identity = images;
  o.seed = seed;
  o.size = size;
  o.format = format;
  o.out = out;
  return o;
}

TEST(DrawnFaces, AnImageIsAFunctionOfSeedIdentityAndImage) {
  const cv::Mat a = draw_face(3, 5, 7, 32);
  EXPECT_EQ(a.rows, 32);
  EXPECT_EQ(a.type(), CV_8UC3);
  EXPECT_TRUE(same_pixels(a, draw_face(3, 5, 7, 32)));
  EXPECT_FALSE(same_pixels(a, draw_face(3, 5, 8, 32)));  // another image of the same person
  EXPECT_FALSE(same_pixels(a, draw_face(3, 6, 7, 32)));  // another person
  EXPECT_FALSE(same_pixels(a, draw_face(4, 5, 7, 32)));  // another seed
}

TEST(DrawnFaces, OtherSeedsAreOtherPeople) {
  // Face proportions are continuous draws: no identity of seed 1 reappears under seed 2.
  std::set<std::pair<double, double>> seen;
  for (int64_t i = 0; i < 500; ++i) {
    const DrawnIdentity d = drawn_identity(1, i);
    seen.insert({d.face_w, d.eye_gap});
  }
  EXPECT_EQ(seen.size(), 500u);
  for (int64_t i = 0; i < 500; ++i) {
    const DrawnIdentity d = drawn_identity(2, i);
    EXPECT_EQ(seen.count({d.face_w, d.eye_gap}), 0u) << "identity " << i;
  }
  // ... and within a seed the discrete traits take all their values.
  std::set<int> styles, beards;
  for (int64_t i = 0; i < 200; ++i) {
    styles.insert(drawn_identity(1, i).hair_style);
    beards.insert(drawn_identity(1, i).beard);
  }
  EXPECT_EQ(styles.size(), 5u);
  EXPECT_EQ(beards.size(), 3u);
}

TEST(DrawnFaces, BinPackHoldsTheDrawnPairs) {
  const std::string dir = test::temp_dir("drawn_bin");
  DrawFacesOptions o = options(6, 4, 9, 24, "bin", dir + "/sub/v.bin");
  o.pairs = 11;
  EXPECT_EQ(draw_faces(o).images, 22);
  const formats::BinPack pack = formats::read_bin(o.out);
  ASSERT_EQ(pack.num_pairs(), 11);
  const auto pairs = drawn_pairs(9, 6, 4, 11);
  const at::Tensor images = formats::decode_bin_images(pack, 0, 22);
  EXPECT_EQ(images.sizes(), (at::IntArrayRef{22, 24, 24, 3}));
  for (int64_t p = 0; p < 11; ++p) {
    const DrawnPair& q = pairs[static_cast<size_t>(p)];
    EXPECT_EQ(pack.issame[static_cast<size_t>(p)], p % 2 == 0);
    EXPECT_EQ(q.same, q.identity_a == q.identity_b);
    if (q.same) {
      EXPECT_NE(q.image_a, q.image_b);
    }
    EXPECT_TRUE(same_pixels(decode(pack.images[2 * p]), draw_face(9, q.identity_a, q.image_a, 24))) << "pair " << p;
    EXPECT_TRUE(same_pixels(decode(pack.images[2 * p + 1]), draw_face(9, q.identity_b, q.image_b, 24))) << "pair " << p;
  }
}

TEST(DrawnFaces, RecordIoAndFoldersHoldEveryImageWithItsLabel) {
  const std::string dir = test::temp_dir("drawn_train");
  DrawFacesOptions o = options(3, 5, 2, 16, "recordio", dir + "/rec");
  o.sheet = dir + "/sheet.png";
  draw_faces(o);
  formats::RecordIOReader reader(o.out + "/train.rec", o.out + "/train.idx");
  const auto keys = reader.keys();
  ASSERT_EQ(keys.size(), 15u);
  for (size_t k = 0; k < keys.size(); ++k) {
    std::string payload;
    const formats::IRHeader h = formats::unpack_irheader(reader.read(keys[k]), &payload, "rec");
    EXPECT_EQ(static_cast<int64_t>(h.label), static_cast<int64_t>(k) / 5);
    EXPECT_TRUE(same_pixels(decode(payload), draw_face(2, static_cast<int64_t>(k) / 5, static_cast<int64_t>(k) % 5, 16))) << k;
  }
  EXPECT_TRUE(fs::exists(o.out + "/identities.json"));
  const cv::Mat sheet = formats::read_image_rgb(o.sheet);
  EXPECT_EQ(sheet.rows, 3 * 16);
  EXPECT_EQ(sheet.cols, 5 * 16);

  o.format = "folder";
  o.out = dir + "/folder";
  o.sheet.clear();
  draw_faces(o);
  EXPECT_TRUE(same_pixels(formats::read_image_rgb(o.out + "/00002/0004.png"), draw_face(2, 2, 4, 16)));
  EXPECT_FALSE(fs::exists(o.out + "/00003"));
}

TEST(DrawnFaces, BadOptionsGiveOneLine) {
  DrawFacesOptions o;
  o.out = test::temp_dir("drawn_bad");
  o.format = "png";
  EXPECT_NE(test::error_of([&] { draw_faces(o); }).find("--format: expected folder, recordio or bin, found 'png'"), std::string::npos);
  o.format = "bin";
  o.identities = 1;
  EXPECT_NE(test::error_of([&] { draw_faces(o); }).find("--identities: expected >= 2"), std::string::npos);
  o.identities = 4;
  o.size = 4;
  EXPECT_NE(test::error_of([&] { draw_faces(o); }).find("--size: expected 8..1024, found 4"), std::string::npos);
}

}  // namespace
}  // namespace idsynth::dataset
