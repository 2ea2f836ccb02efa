#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"

namespace idsynth {
namespace {

namespace fs = std::filesystem;

void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::string bytes;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) bytes += static_cast<char>((n >> (8 * i)) & 0xFF);
  bytes += header + data;
  std::ofstream(path, std::ios::binary) << bytes;
}

using test::error_of;

TEST(SafeTensors, EveryDtypeRoundTrips) {
  const std::string dir = test::temp_dir("st");
  at::manual_seed(3);
  TensorDict in;
  in.insert("f32", at::randn({3, 4}));
  in.insert("f16", at::randn({5}).to(at::kHalf));
  in.insert("bf16", at::randn({2, 2, 2}).to(at::kBFloat16));
  in.insert("f64", at::randn({7}, at::kDouble));
  in.insert("i64", at::arange(-5, 5, at::kLong));
  in.insert("i32", at::arange(-3, 9, at::kInt).reshape({3, 4}));
  in.insert("u8", at::arange(0, 250, at::kByte));
  in.insert("bool", at::tensor({1, 0, 1}).to(at::kBool));
  in.insert("scalar", at::scalar_tensor(2.5));
  in.insert("empty", at::empty({0, 3}));
  in.insert("noncontig", at::randn({4, 3}).t());
  save_safetensors(dir + "/t.safetensors", in, {{"format", "pt"}});

  SafeTensorsFile f(dir + "/t.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.infos().size(), in.size());
  for (const auto& [name, t] : in) {
    at::Tensor got = f.tensor(name);
    EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(got, t.contiguous())) << name;
  }
  // Tensors alias a copy-on-write map: writing to one must not change the file.
  f.tensor("f32").fill_(0);
  EXPECT_TRUE(at::equal(SafeTensorsFile(dir + "/t.safetensors").tensor("f32"), in.at("f32")));
}

TEST(SafeTensors, HostileHeadersFailClearly) {
  const std::string dir = test::temp_dir("st-bad");
  const std::string p = dir + "/bad.safetensors";

  std::ofstream(p, std::ios::binary) << "abc";
  EXPECT_NE(error_of([&] { SafeTensorsFile f(p); }).find("expected 8 bytes"), std::string::npos);

  // Header length larger than the file.
  {
    std::string bytes(8, '\0');
    bytes[0] = static_cast<char>(0xff);
    bytes[1] = static_cast<char>(0xff);
    std::ofstream(p, std::ios::binary) << bytes << "{}";
  }
  EXPECT_NE(error_of([&] { SafeTensorsFile f(p); }).find("truncated"), std::string::npos);

  // Oversized header length (2^40).
  {
    std::string bytes(8, '\0');
    bytes[5] = 1;
    std::ofstream(p, std::ios::binary) << bytes;
  }
  EXPECT_NE(error_of([&] { SafeTensorsFile f(p); }).find("at most"), std::string::npos);

  write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(4, '\0'));
  EXPECT_NE(error_of([&] { SafeTensorsFile f(p); }).find("past the 4 data bytes"), std::string::npos);

  write_raw(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'));
  EXPECT_NE(error_of([&] { SafeTensorsFile f(p); }).find("expected 12 bytes"), std::string::npos);

  write_raw(p, R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  EXPECT_NE(error_of([&] { SafeTensorsFile f(p); }).find("found Q7"), std::string::npos);

  write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::string(12, '\0'));
  EXPECT_NE(error_of([&] { SafeTensorsFile f(p); }).find("overlapping"), std::string::npos);

  write_raw(p, R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  EXPECT_NE(error_of([&] { SafeTensorsFile f(p); }).find("non-negative"), std::string::npos);

  write_raw(p, R"({"a":)", "");
  EXPECT_NE(error_of([&] { SafeTensorsFile f(p); }).find("JSON error"), std::string::npos);

  // Shape whose element count overflows 64 bits.
  write_raw(p, R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", std::string(8, '\0'));
  EXPECT_FALSE(error_of([&] { SafeTensorsFile f(p); }).empty());
}

TEST(SafeTensors, TruncatedFileFailsWithFileName) {
  const std::string dir = test::temp_dir("st-trunc");
  TensorDict in;
  in.insert("w", at::randn({64, 64}));
  save_safetensors(dir + "/full.safetensors", in);
  const std::string bytes = read_text_file(dir + "/full.safetensors");
  std::ofstream(dir + "/cut.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() - 100);
  const std::string err = error_of([&] { SafeTensorsFile f(dir + "/cut.safetensors"); });
  EXPECT_NE(err.find(dir + "/cut.safetensors"), std::string::npos) << err;
  EXPECT_NE(err.find("'w'"), std::string::npos) << err;
}

// Every weight file the goldens ship reads completely: each tensor's bytes lie inside the file, the
// data section is exactly covered, and float values are finite.
TEST(SafeTensors, EveryGoldenWeightFileLoads) {
  IDSYNTH_REQUIRE_GOLDEN(root, "");
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.path().extension() != ".safetensors") continue;
    const std::string path = entry.path().string();
    SCOPED_TRACE(path);
    ASSERT_EQ(detect_weight_format(path), WeightFormat::safetensors);
    TensorDict all = read_weights(path);
    SafeTensorsFile f(path);
    ASSERT_EQ(all.size(), f.infos().size());
    uint64_t covered = 0;
    for (const auto& info : f.infos()) {
      const at::Tensor& t = all.at(info.name);
      EXPECT_EQ(std::vector<int64_t>(t.sizes().begin(), t.sizes().end()), info.shape);
      covered += info.end - info.begin;
      if (at::isFloatingType(t.scalar_type()) && t.numel() > 0) {
        EXPECT_TRUE(t.isfinite().all().item<bool>()) << info.name;
      }
    }
    uint64_t header = 0;
    const std::string head = read_text_file(path).substr(0, 8);
    for (int i = 0; i < 8; ++i) header |= static_cast<uint64_t>(static_cast<unsigned char>(head[i])) << (8 * i);
    EXPECT_EQ(8 + header + covered, file_size(path));
    ++files;
  }
  EXPECT_GE(files, 20);
  // Spot-check names and shapes the models rely on.
  SafeTensorsFile unet(root + "/unet_tiny/unet/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(unet.tensor("conv_in.weight").sizes(), (std::vector<int64_t>{32, 4, 3, 3}));
  EXPECT_EQ(unet.tensor("conv_in.weight").scalar_type(), at::kHalf);
}

}  // namespace
}  // namespace idsynth
