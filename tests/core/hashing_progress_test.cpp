#include <gtest/gtest.h>

#include <fstream>

#include "core/hashing.h"
#include "core/progress.h"
#include "tests/support/goldens.h"

namespace idsynth {
namespace {

TEST(Hashing, Sha256KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string path = test::temp_dir("hash") + "/f";
  std::ofstream(path) << "abc";
  EXPECT_EQ(sha256_file(path), sha256_hex("abc"));
}

TEST(Progress, DurationFormatting) {
  EXPECT_EQ(Progress::format_duration(5), "5s");
  EXPECT_EQ(Progress::format_duration(185), "3m05s");
  EXPECT_EQ(Progress::format_duration(3720), "1h02m");
  EXPECT_EQ(Progress::format_duration(-1), "--");
  Progress p(10, "test");
  p.advance(4);
  p.advance(6);
  EXPECT_EQ(p.done(), 10);
  p.finish();
}

}  // namespace
}  // namespace idsynth
