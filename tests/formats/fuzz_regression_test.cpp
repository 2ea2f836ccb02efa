// Inputs found by the fuzz targets (tests/fuzz, scripts/fuzz.sh), each kept as a regression test:
// the reader must answer with one idsynth::Error line, not a crash, a sanitizer report or a huge
// allocation.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <opencv2/core.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/check.h"
#include "core/config.h"
#include "core/file_util.h"
#include "formats/image.h"
#include "formats/npy.h"
#include "formats/shard_file.h"
#include "core/torch_checkpoint.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"

namespace idsynth::formats {
namespace {

using test::error_of;

void put_u32(std::string& bytes, size_t at, uint32_t v) { std::memcpy(&bytes[at], &v, 4); }

// A string literal's bytes, NULs included, without its terminator.
template <size_t N>
std::string literal_bytes(const char (&literal)[N]) {
  return std::string(literal, N - 1);
}

// fuzz_npz (out-of-memory): a 400-byte .npz whose zip headers claim a 4 GiB member. read_npz
// allocated the claimed size up front (malloc of 4294967160 bytes); it now reads in chunks, so the
// buffer follows the bytes that really inflate and the short member is a clean error.
TEST(FuzzRegression, NpzMemberClaimingFourGibIsReadInChunks) {
  const std::string dir = test::temp_dir("fuzz-npz");
  write_npz(dir + "/a.npz", {{"x", at::arange(6, at::kFloat)}}, /*compress=*/true);
  std::string bytes = read_text_file(dir + "/a.npz");
  const uint32_t claimed = 0xFFFFFF00u;  // below read_npz's 4 GiB member limit
  int patched = 0;
  for (size_t i = 0; i + 30 <= bytes.size(); ++i) {
    if (bytes.compare(i, 4, "PK\x03\x04") == 0) put_u32(bytes, i + 22, claimed), ++patched;  // local header
    if (bytes.compare(i, 4, "PK\x01\x02") == 0) put_u32(bytes, i + 24, claimed), ++patched;  // central directory
  }
  ASSERT_EQ(patched, 2);
  std::ofstream(dir + "/big.npz", std::ios::binary) << bytes;
  const std::string err = error_of([&] { read_npz(dir + "/big.npz"); });
  EXPECT_NE(err.find(dir + "/big.npz: x.npy: expected 4294967040 bytes, read"), std::string::npos) << err;
}

// fuzz_image (out-of-memory): a 50-byte BMP header claiming 1010 x 457473 pixels makes OpenCV
// allocate 1.4 GB before reading any pixel (its cap is 2^30 pixels). check_image_header refuses more
// than kMaxDecodedPixels (2^26) before OpenCV sees the bytes: one clean error naming the claimed size,
// and (checked here) the process did not grow by it.
TEST(FuzzRegression, ImageHeaderClaimingHugeSizeIsRefused) {
  const std::string bmp("\x42\x4d\x4e\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x28\x00\x00\x00\xf2\x03\x00\x00\x01\xfb\x06\x00\x01\x00\x18\x00\x00\x00\x00\x00\x20\x20\x20\x20\xff\xff\xff\x3e\x94\x28\x02\x00\xd0\x00\x00\x00", 50);
  const std::string err = error_of([&] {
    decode_image_rgb(reinterpret_cast<const uint8_t*>(bmp.data()), bmp.size(), "huge.bmp");
  });
  EXPECT_EQ(err.rfind("huge.bmp: image: ", 0), 0u) << err;
  EXPECT_NE(err.find("1010 x 457473"), std::string::npos) << err;
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  EXPECT_LT(ru.ru_maxrss, 1000L * 1024L) << "peak RSS (KiB): the 1.4 GB buffer was allocated";
}

// fuzz_image (UBSan, signed overflow): a PNG header claiming 3556823287 x 3657392194 pixels made the
// pixel count overflow int64 in the header check itself; each side is now bounded before the product.
TEST(FuzzRegression, PngHeaderWithTwoHugeSidesIsRefusedWithoutOverflow) {
  const std::string png("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\xd4\x00\xd0\xf7\xd9\xff\x60\x42\x60\x01\x00\x00\x00\x04\x00\x00\x01\x80", 34);
  const std::string err = error_of([&] {
    decode_image_rgb(reinterpret_cast<const uint8_t*>(png.data()), png.size(), "huge.png");
  });
  EXPECT_EQ(err, "huge.png: image: expected at most 67108864 pixels (8192 x 8192), found a png header claiming 3556823287 x 3657392194");
}

// fuzz_image (ASan, heap-buffer-overflow): a 30-byte WebP VP8X header: the canvas height was read
// as 32 bits at byte 27, one byte past the end; it is read as the 24 bits it is.
TEST(FuzzRegression, WebpVp8xHeaderIsReadWithinItsThirtyBytes) {
  const std::string webp("\x52\x49\x46\x46\xd8\xff\xe0\x4e\x57\x45\x42\x50\x56\x50\x38\x58\x6f\x67\x61\x2c\xff\xff\x00\x00\x61\x00\x00\x29\xff\x37", 30);
  const std::string err = error_of([&] {
    decode_image_rgb(reinterpret_cast<const uint8_t*>(webp.data()), webp.size(), "x.webp");
  });
  EXPECT_EQ(err.rfind("x.webp: image: ", 0), 0u) << err;
}

// The header check reads the size each codec OpenCV writes, without decoding, and refuses other
// formats and cut headers with one line.
TEST(ImageHeader, ReadsTheSizeOfEveryAcceptedFormatAndRefusesTheRest) {
  cv::Mat img(37, 53, CV_8UC3, cv::Scalar(10, 200, 30));
  for (const std::string ext : {".png", ".jpg", ".bmp", ".webp"}) {
    const std::string bytes = encode_image_rgb(img, ext);
    const ImageHeader h = check_image_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x" + ext);
    EXPECT_EQ(h.width, 53) << ext;
    EXPECT_EQ(h.height, 37) << ext;
    const std::string cut = error_of([&] {
      check_image_header(reinterpret_cast<const uint8_t*>(bytes.data()), std::min<size_t>(bytes.size(), 20), "cut" + ext);
    });
    EXPECT_EQ(cut.rfind("cut" + ext + ": image: expected", 0), 0u) << cut;
  }
  const std::string tiff = encode_image_rgb(img, ".tiff");
  const std::string err = error_of([&] { decode_image_rgb(reinterpret_cast<const uint8_t*>(tiff.data()), tiff.size(), "a.tiff"); });
  EXPECT_EQ(err, "a.tiff: image: expected JPEG, PNG, BMP or WebP data, found another format (" + std::to_string(tiff.size()) + " bytes)");
}

struct KeyConfig {
  int64_t steps = 1;
  void visit(config::Visitor& v) { v.field("steps", steps, "steps"); }
  void check() const {}
};

// fuzz_yaml_config (abort): a mapping key that is itself a list or mapping (`? [a, b]`) reached
// yaml-cpp's as<std::string>() in the include merge and the unknown-key check, whose
// TypedBadConversion is not an idsynth::Error: the program ended in std::terminate.
TEST(FuzzRegression, ConfigWithNonScalarKeyIsAnError) {
  const std::string dir = test::temp_dir("fuzz-yaml");
  for (const char* text : {"? [a, b]\n: 1\n", "steps: 2\n? {x: 1}\n: 3\n"}) {
    std::ofstream(dir + "/c.yaml") << text;
    EXPECT_EQ(error_of([&] { config::load<KeyConfig>(dir + "/c.yaml"); }),
              dir + "/c.yaml: expected a plain key (a name), found " +
                  (text[0] == '?' ? "a list" : "a mapping") + " as a key")
        << text;
  }
}

// fuzz_yaml_config (abort): `include: [!!str]` names an empty path, so the including file's folder;
// yaml-cpp read the directory as a stream and std::ios_base::failure escaped (std::terminate).
TEST(FuzzRegression, ConfigIncludingADirectoryIsAnError) {
  const std::string dir = test::temp_dir("fuzz-yaml-dir");
  std::ofstream(dir + "/c.yaml") << "include: [!!str]\nsteps: 3\n";
  EXPECT_EQ(error_of([&] { config::load<KeyConfig>(dir + "/c.yaml"); }),
            dir + "/: expected a config file, found a directory");
}

// fuzz_hdf5_shard (timeout): a shard whose global heap holds a free-space object of size 0.
// libhdf5 1.10's heap walk then never advances: reading any variable-length value (the `format`
// attribute, a JPEG) hung forever. check_hdf5_global_heaps refuses the file first. Only version-1
// shards hold variable-length data (global heaps), so the damage is made the way the fuzzer made it
// on a version-1 shard written by idsynth's version-1 writer (tests/formats/data/make-shard-v1.sh)
// with one heap's free-space size zeroed. (Without the check the read hangs; the alarm turns that
// into a failure in 60 s.)
TEST(FuzzRegression, ShardWithAHangingGlobalHeapIsRefused) {
  const std::string dir = test::temp_dir("fuzz-hdf5");
  std::filesystem::copy_file(IDSYNTH_SOURCE_DIR "/tests/formats/data/shard-v1.h5", dir + "/good.h5");
  std::string bytes = read_text_file(dir + "/good.h5");
  // The first collection: "GCOL", version 1, 3 reserved, size (8 bytes); objects of 16-byte headers
  // (index 2, refcount 2, reserved 4, size 8), data padded to 8; index 0 is the free space.
  const size_t heap = bytes.find(std::string("GCOL\x01", 5));
  ASSERT_NE(heap, std::string::npos);
  uint64_t heap_size = 0;
  std::memcpy(&heap_size, &bytes[heap + 8], 8);
  size_t p = 16, free_space = 0;
  while (p + 16 <= heap_size) {
    uint16_t index = 0;
    uint64_t size = 0;
    std::memcpy(&index, &bytes[heap + p], 2);
    std::memcpy(&size, &bytes[heap + p + 8], 8);
    if (index == 0) {
      free_space = p;
      break;
    }
    p += 16 + ((size + 7) & ~uint64_t{7});
  }
  ASSERT_GT(free_space, 0u) << "the collection has no free-space object to damage";
  std::string hang = bytes;
  std::memset(&hang[heap + free_space + 8], 0, 8);
  std::ofstream(dir + "/hang.h5", std::ios::binary) << hang;
  // fuzz_hdf5_shard (heap-buffer-overflow), the second finding: the first object claiming more bytes
  // than the collection holds; H5HG_read copied them from past the heap's buffer.
  std::string over = bytes;
  const uint64_t too_big = heap_size;
  std::memcpy(&over[heap + 16 + 8], &too_big, 8);
  std::ofstream(dir + "/over.h5", std::ios::binary) << over;

  EXPECT_NO_THROW(check_hdf5_global_heaps(dir + "/good.h5"));
  alarm(60);
  const std::string err = error_of([&] { read_shard(dir + "/hang.h5"); });
  const std::string reader_err = error_of([&] { ShardImageReader(dir + "/hang.h5", "images"); });
  const std::string over_err = error_of([&] { read_shard(dir + "/over.h5"); });
  alarm(0);
  EXPECT_EQ(err.rfind(dir + "/hang.h5: damaged HDF5 file: the global heap collection at byte " + std::to_string(heap), 0), 0u) << err;
  EXPECT_NE(err.find("would stop libhdf5 from advancing"), std::string::npos) << err;
  EXPECT_EQ(reader_err, err);
  EXPECT_EQ(over_err, dir + "/over.h5: damaged HDF5 file: the global heap collection at byte " + std::to_string(heap) +
                          " has an object at byte " + std::to_string(heap + 16) +
                          " whose size runs past the end of the collection (libhdf5 would read beyond its buffer); regenerate the file");
}

// fuzz_torch_checkpoint (timeout, after 638 s of campaign): the pickle memo lets one container be
// named twice by the next, so 40 small pickle instructions per level describe 2^depth paths. The
// storage walk of a legacy checkpoint followed every path (lists), and so did the tensor collection
// (dictionaries). Each container is now visited once, and the dictionary walk stops at 2^22 entries.
// (Without the fixes both inputs run for hours; the alarm fails the test in 60 s.)
TEST(FuzzRegression, CheckpointWithSharedContainersIsWalkedOnce) {
  // A legacy torch.save file: magic number, protocol 1001, sys info, the object, no storages.
  auto legacy = [](const std::string& object_pickle) {
    return literal_bytes("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.") + literal_bytes("\x80\x02M\xe9\x03.") +
           literal_bytes("\x80\x02}X\x0d\x00\x00\x00little_endian\x88s.") + object_pickle + literal_bytes("\x80\x02].");
  };
  const int depth = 48;
  // lists: L0 = [], L(k) = [L(k-1), L(k-1)], each memoised at k and popped; the object is L(depth)
  std::string lists = literal_bytes("\x80\x02]q\x00" "0");
  // dictionaries: D0 = {}, D(k) = {"a": D(k-1), "b": D(k-1)}
  std::string dicts = literal_bytes("\x80\x02}q\x00" "0");
  for (int k = 1; k <= depth; ++k) {
    const char prev = static_cast<char>(k - 1), cur = static_cast<char>(k);
    lists += std::string("]h") + prev + "ah" + prev + "aq" + cur + "0";
    dicts += literal_bytes("}X\x01\x00\x00\x00" "ah") + prev + "s" + literal_bytes("X\x01\x00\x00\x00" "bh") + prev + "sq" + cur + "0";
  }
  lists += std::string("h") + static_cast<char>(depth) + ".";
  dicts += std::string("h") + static_cast<char>(depth) + ".";
  const std::string list_file = legacy(lists), dict_file = legacy(dicts);

  alarm(60);
  TensorDict none;
  EXPECT_NO_THROW(none = read_torch_checkpoint_bytes(reinterpret_cast<const uint8_t*>(list_file.data()), list_file.size(), "lists.pt"));
  const std::string err = error_of([&] {
    read_torch_checkpoint_bytes(reinterpret_cast<const uint8_t*>(dict_file.data()), dict_file.size(), "dicts.pt");
  });
  alarm(0);
  EXPECT_EQ(none.size(), 0u) << "the list holds no tensor";
  EXPECT_EQ(err, "dicts.pt: more than 4194304 entries in the checkpoint's dictionaries (one dictionary shared under many keys?)");
}

}  // namespace
}  // namespace idsynth::formats
