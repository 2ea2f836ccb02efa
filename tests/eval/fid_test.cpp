// Fréchet distance and pytorch-fid statistics files against goldens/fid (numpy/scipy values).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>

#include "core/check.h"
#include "core/safetensors.h"
#include "eval/fid.h"
#include "formats/npy.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::eval {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(FidParity, StatisticsAndFrechetDistanceMatchScipy) {
  IDSYNTH_REQUIRE_GOLDEN(inputs_path, "fid/frechet_inputs.safetensors");
  IDSYNTH_REQUIRE_GOLDEN(expected_path, "fid/frechet_expected.safetensors");
  SafeTensorsFile inputs(inputs_path), expected(expected_path);
  for (const std::string name : {"wellcond", "n40_d64", "nearsingular"}) {
    const FidStats a = compute_stats(inputs.tensor(name + "_act1"), name + "_act1");
    const FidStats b = compute_stats(inputs.tensor(name + "_act2"), name + "_act2");
    EXPECT_ALL_CLOSE(a.mu, expected.tensor(name + "_mu1"), 1e-12);
    EXPECT_ALL_CLOSE(b.mu, expected.tensor(name + "_mu2"), 1e-12);
    EXPECT_ALL_CLOSE(a.sigma, expected.tensor(name + "_sigma1"), 1e-12);
    EXPECT_ALL_CLOSE(b.sigma, expected.tensor(name + "_sigma2"), 1e-12);
    const double want = expected.tensor(name + "_fid").item<double>();
    // From our statistics and from the golden's own statistics.
    const double got = frechet_distance(a, b);
    FidStats ga{expected.tensor(name + "_mu1"), expected.tensor(name + "_sigma1"), 0, "golden1"};
    FidStats gb{expected.tensor(name + "_mu2"), expected.tensor(name + "_sigma2"), 0, "golden2"};
    const double got_golden_stats = frechet_distance(ga, gb);
    const double rel = std::abs(got - want) / std::abs(want);
    std::cout << name << ": fid " << got << " scipy " << want << " rel " << rel << " (golden stats rel "
              << std::abs(got_golden_stats - want) / std::abs(want) << ")\n";
    EXPECT_LT(rel, 1e-3) << name;
    EXPECT_LT(std::abs(got_golden_stats - want) / std::abs(want), 1e-3) << name;
  }
}

TEST(Fid, IdenticalStatisticsGiveZero) {
  const at::Tensor act = at::randn({50, 8}, at::kDouble);
  const FidStats s = compute_stats(act);
  EXPECT_NEAR(frechet_distance(s, s), 0.0, 1e-10);
  EXPECT_THROW(compute_stats(act.slice(0, 0, 1)), Error);
}

TEST(FidStatsFile, RoundTripAndWrongDimension) {
  const std::string dir = test::temp_dir("fid_npz");
  const FidStats s = compute_stats(at::randn({20, 64}, at::kDouble), "random");
  write_fid_stats(dir + "/ref.npz", s);
  const FidStats r = read_fid_stats(dir + "/ref.npz");
  EXPECT_TRUE(r.mu.equal(s.mu));
  EXPECT_TRUE(r.sigma.equal(s.sigma));
  const std::string msg = error_of([&] { read_fid_stats(dir + "/ref.npz", 2048); });
  EXPECT_NE(msg.find("ref.npz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2048"), std::string::npos) << msg;
  EXPECT_NE(msg.find("64-d"), std::string::npos) << msg;
  // Two files of different dimensions cannot be compared.
  const FidStats other = compute_stats(at::randn({20, 32}, at::kDouble), "other");
  EXPECT_THROW(frechet_distance(r, other), Error);
  // Uncompressed archives (np.savez) read the same; float32 arrays are widened.
  formats::write_npz(dir + "/plain.npz", {{"mu", s.mu.to(at::kFloat)}, {"sigma", s.sigma.to(at::kFloat)}}, false);
  EXPECT_ALL_CLOSE(read_fid_stats(dir + "/plain.npz").sigma, s.sigma, 1e-5);
  // Missing arrays, a file that is not a zip.
  formats::write_npz(dir + "/mu_only.npz", {{"mu", s.mu}});
  EXPECT_NE(error_of([&] { read_fid_stats(dir + "/mu_only.npz"); }).find("'sigma'"), std::string::npos);
  std::ofstream(dir + "/junk.npz") << "not a zip";
  EXPECT_NE(error_of([&] { read_fid_stats(dir + "/junk.npz"); }).find("junk.npz"), std::string::npos);
}

TEST(Npy, ParsesHeadersAndRejectsBadData) {
  const at::Tensor t = at::arange(6, at::kDouble).reshape({2, 3});
  const std::string blob = formats::serialize_npy(t);
  EXPECT_EQ(blob.find("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"), 10u);
  EXPECT_EQ((blob.size() - 6 * 8) % 64, 0u);
  EXPECT_TRUE(formats::parse_npy(blob, "t").equal(t));
  EXPECT_TRUE(formats::parse_npy(formats::serialize_npy(at::arange(5, at::kLong)), "v").equal(at::arange(5, at::kLong)));
  // Fortran order: the data of t.T in C order, read back as t.
  std::string fortran = blob;
  fortran.replace(fortran.find("False"), 5, "True ");
  const at::Tensor tt = t.t().contiguous();
  fortran.replace(fortran.size() - 48, 48, std::string(static_cast<const char*>(tt.data_ptr()), 48));
  EXPECT_TRUE(formats::parse_npy(fortran, "f").equal(t));
  // Truncated data, header length past the end, big-endian, object arrays, bad magic.
  EXPECT_NE(error_of([&] { formats::parse_npy(blob.substr(0, blob.size() - 1), "cut"); }).find("expected 48 data bytes"),
            std::string::npos);
  std::string long_header = blob;
  long_header[8] = '\xff';
  long_header[9] = '\x7f';
  EXPECT_THROW(formats::parse_npy(long_header, "hdr"), Error);
  std::string big_endian = blob;
  big_endian.replace(big_endian.find("<f8"), 3, ">f8");
  EXPECT_THROW(formats::parse_npy(big_endian, "be"), Error);
  std::string object = blob;
  object.replace(object.find("<f8"), 3, "|O8");
  EXPECT_THROW(formats::parse_npy(object, "obj"), Error);
  std::string huge = blob;
  huge.replace(huge.find("(2, 3)"), 6, "(9999999999, 9999999999)");
  EXPECT_THROW(formats::parse_npy(huge, "huge"), Error);
  EXPECT_THROW(formats::parse_npy("PK\x03\x04", "magic"), Error);
}

TEST(FidImages, EmptyFolderIsAnError) {
  const std::string dir = test::temp_dir("fid_empty");
  std::ofstream(dir + "/notes.txt") << "no images here";
  const std::string msg = error_of([&] { list_fid_images(dir); });
  EXPECT_NE(msg.find("found none"), std::string::npos) << msg;
  EXPECT_THROW(list_fid_images(dir + "/absent"), Error);
}

}  // namespace
}  // namespace idsynth::eval
