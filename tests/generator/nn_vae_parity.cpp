// AutoencoderKL vs diffusers 0.29.2 (goldens/vae_tiny), config handling.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <iostream>

#include "core/check.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "generator/autoencoder_kl.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

using namespace idsynth;
using namespace idsynth::generator;

namespace {
constexpr double kParityTol = 1e-4;  // issue requirement (README: threads=2 reruns differ by ~3e-6)

using test::error_of;

}  // namespace

TEST(VaeParity, MatchesDiffusersTiny) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "vae_tiny/vae");
  at::set_num_threads(1);  // tiny model: one thread is as fast and immune to a busy machine
  const auto inputs = SafeTensorsFile(dir + "/../inputs.safetensors").all();
  const auto expected = SafeTensorsFile(dir + "/../expected.safetensors").all();
  const c10::Device dev = test::test_device();
  auto in = [&](const char* name) { return inputs.at(name).to(dev); };
  auto vae = load_vae(dir, dev, torch::kFloat);
  EXPECT_DOUBLE_EQ(vae->config().scaling_factor, 0.18215);
  EXPECT_EQ(vae->config().spatial_factor(), 2);

  const auto latents = in("latents");
  const auto decoded = vae->decode(latents);
  const auto decoded_from_scaled = vae->decode(latents / vae->config().scaling_factor);
  const auto dist = vae->encode(in("image"));
  EXPECT_ALL_CLOSE(decoded, expected.at("decoded"), kParityTol);
  EXPECT_ALL_CLOSE(decoded_from_scaled, expected.at("decoded_from_scaled"), kParityTol);
  EXPECT_ALL_CLOSE(dist.mean, expected.at("enc_mean"), kParityTol);
  EXPECT_ALL_CLOSE(dist.logvar, expected.at("enc_logvar"), kParityTol);
  EXPECT_ALL_CLOSE(dist.std(), expected.at("enc_std"), kParityTol);
  std::cout << "[ measured ] max|diff|: decoded " << test::max_abs_diff(decoded, expected.at("decoded"))
            << ", decoded_from_scaled " << test::max_abs_diff(decoded_from_scaled, expected.at("decoded_from_scaled"))
            << ", enc_mean " << test::max_abs_diff(dist.mean, expected.at("enc_mean")) << ", enc_logvar "
            << test::max_abs_diff(dist.logvar, expected.at("enc_logvar")) << ", enc_std "
            << test::max_abs_diff(dist.std(), expected.at("enc_std")) << "\n";

  vae->set_channels_last(false);
  EXPECT_ALL_CLOSE(vae->decode(latents), expected.at("decoded"), kParityTol);
}

TEST(VaeParity, BatchOfTwoEqualsTwoBatchesOfOne) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "vae_tiny/vae");
  at::set_num_threads(1);  // tiny model: one thread is as fast and immune to a busy machine
  const auto inputs = SafeTensorsFile(dir + "/../inputs.safetensors").all();
  auto vae = load_vae(dir, torch::kCPU, torch::kFloat);
  const auto& latents = inputs.at("latents");
  const auto both = vae->decode(latents);
  for (int64_t i = 0; i < 2; ++i) EXPECT_ALL_CLOSE(vae->decode(latents.narrow(0, i, 1)), both.narrow(0, i, 1), 1e-5);
}

TEST(VaeConfig, ReadsGoldenConfigAndWritesItBack) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "vae_tiny/vae");
  const json::Value golden = json::parse_file(dir + "/config.json");
  const auto config = AutoencoderKLConfig::from_json(golden, dir + "/config.json");
  const json::Value written = config.to_json();
  EXPECT_EQ(written.as_object().size(), golden.as_object().size());
  for (const auto& [key, value] : golden.as_object()) {
    const json::Value* mine = written.find(key);
    ASSERT_NE(mine, nullptr) << key;
    if (value.is_number()) {
      EXPECT_DOUBLE_EQ(mine->as_double(), value.as_double()) << key;
    } else {
      EXPECT_EQ(mine->dump(), value.dump()) << key;
    }
  }
}

TEST(VaeConfig, UnknownBlockTypeIsNamed) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "vae_tiny/vae");
  json::Value config = json::parse_file(dir + "/config.json");
  config.set("up_block_types", json::Value(json::Value::Array{json::Value("UpDecoderBlock2D"), json::Value("AttnUpDecoderBlock2D")}));
  const std::string msg = error_of([&] { AutoencoderKLConfig::from_json(config, "vae/config.json"); });
  EXPECT_NE(msg.find("vae/config.json: up_block_types[1]: expected one of UpDecoderBlock2D, found 'AttnUpDecoderBlock2D'"),
            std::string::npos)
      << msg;
}

TEST(VaeLoad, MissingConfigIsNamed) {
  const std::string folder = test::temp_dir("vae-empty");
  const std::string msg = error_of([&] { load_vae(folder, torch::kCPU, torch::kFloat); });
  EXPECT_NE(msg.find(folder + "/config.json: not found"), std::string::npos) << msg;
}
