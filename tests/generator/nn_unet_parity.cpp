// UNet2DConditionModel vs diffusers 0.29.2 (goldens/unet_tiny), config handling and strict loading.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <iostream>

#include "core/check.h"
#include "core/device.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "generator/nn_blocks.h"
#include "generator/unet_2d_condition.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

using namespace idsynth;
using namespace idsynth::generator;
namespace fs = std::filesystem;

namespace {
constexpr double kParityTol = 1e-4;  // issue requirement (README: threads=2 reruns differ by ~2e-6)
constexpr double kBatchTol = 1e-5;

using test::error_of;

// The golden's config with some keys replaced, written to a fresh folder next to (a link to) its weights.
std::string folder_with_config(const std::string& golden_unet, const std::function<void(json::Value&)>& edit,
                               const std::string& tag) {
  const std::string dir = test::temp_dir(tag);
  json::Value config = json::parse_file(golden_unet + "/config.json");
  edit(config);
  json::write_file(dir + "/config.json", config);
  fs::create_symlink(fs::absolute(golden_unet + "/diffusion_pytorch_model.safetensors"),
                     dir + "/diffusion_pytorch_model.safetensors");
  return dir;
}
}  // namespace

TEST(UNetParity, MatchesDiffusersTiny) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "unet_tiny/unet");
  at::set_num_threads(1);  // tiny model: one thread is as fast and immune to a busy machine
  const auto inputs = SafeTensorsFile(dir + "/../inputs.safetensors").all();
  const auto expected = SafeTensorsFile(dir + "/../expected.safetensors").all();
  const c10::Device dev = test::test_device();
  auto in = [&](const char* name) { return inputs.at(name).to(dev); };
  auto unet = load_unet(dir, dev, torch::kFloat);

  const auto out = unet->forward(in("sample"), in("timesteps"), in("encoder_hidden_states"));
  EXPECT_ALL_CLOSE(out, expected.at("out_sample"), kParityTol);
  // 0-d int64 timestep, broadcast to the batch as the pipeline passes it.
  const auto out_t500 =
      unet->forward(in("sample"), in("timestep_scalar"), in("encoder_hidden_states"));
  EXPECT_ALL_CLOSE(out_t500, expected.at("out_sample_t500"), kParityTol);
  std::cout << "[ measured ] out_sample max|diff| = " << test::max_abs_diff(out, expected.at("out_sample"))
            << ", out_sample_t500 max|diff| = " << test::max_abs_diff(out_t500, expected.at("out_sample_t500")) << "\n";

  // The threading idsynth runs with (core/device.h configure_threads: OpenBLAS single-threaded,
  // attention in cache tiles over 2 threads) is the same computation.
  if (dev.is_cpu()) {
    configure_threads(2);
    EXPECT_NE(blas_threading(), BlasThreading::kOwnPool);
    EXPECT_ALL_CLOSE(unet->forward(in("sample"), in("timesteps"), in("encoder_hidden_states")), expected.at("out_sample"),
                     kParityTol);
    at::set_num_threads(1);
  }

  // The NCHW path (no channels-last) is the same computation.
  unet->set_channels_last(false);
  const auto nchw = unet->forward(in("sample"), in("timesteps"), in("encoder_hidden_states"));
  EXPECT_ALL_CLOSE(nchw, expected.at("out_sample"), kParityTol);
}

TEST(UNetParity, BatchOfTwoEqualsTwoBatchesOfOne) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "unet_tiny/unet");
  at::set_num_threads(1);  // tiny model: one thread is as fast and immune to a busy machine
  const auto inputs = SafeTensorsFile(dir + "/../inputs.safetensors").all();
  auto unet = load_unet(dir, torch::kCPU, torch::kFloat);
  const auto& sample = inputs.at("sample");
  const auto& t = inputs.at("timesteps");
  const auto& ehs = inputs.at("encoder_hidden_states");
  const auto both = unet->forward(sample, t, ehs);
  for (int64_t i = 0; i < 2; ++i) {
    const auto one = unet->forward(sample.narrow(0, i, 1), t.narrow(0, i, 1), ehs.narrow(0, i, 1));
    EXPECT_ALL_CLOSE(one, both.narrow(0, i, 1), kBatchTol);
  }
}

TEST(UNetParity, OddLatentSizeUsesSkipSizes) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "unet_tiny/unet");
  at::set_num_threads(1);  // tiny model: one thread is as fast and immune to a busy machine
  auto unet = load_unet(dir, torch::kCPU, torch::kFloat);
  torch::manual_seed(0);
  // 10 is not a multiple of 2^2: the upsamplers must resize to the skip connections' 5x5 and 10x10.
  const auto out = unet->forward(torch::randn({1, 4, 10, 10}), torch::tensor(3), torch::randn({1, 77, 32}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{1, 4, 10, 10}));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
}

TEST(UNetConfig, ReadsGoldenConfigAndWritesItBack) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "unet_tiny/unet");
  const json::Value golden = json::parse_file(dir + "/config.json");
  const auto config = UNet2DConditionConfig::from_json(golden, dir + "/config.json");
  EXPECT_EQ(config.heads(0), 8);
  EXPECT_EQ(config.block_out_channels, (std::vector<int64_t>{32, 64, 64}));
  EXPECT_EQ(config.cross_attention_dim, (std::vector<int64_t>{32}));
  const json::Value written = config.to_json();
  // Every key of the diffusers file comes back with the same value, and nothing else.
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
  const auto again = UNet2DConditionConfig::from_json(written, "written");
  EXPECT_EQ(again.to_json().dump(), written.dump());
}

TEST(UNetConfig, UnknownBlockTypeIsNamed) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "unet_tiny/unet");
  json::Value config = json::parse_file(dir + "/config.json");
  json::Value::Array down = config.at("down_block_types").as_array();
  down[1] = json::Value("AttnDownBlock2D");
  config.set("down_block_types", json::Value(down));
  const std::string msg = error_of([&] { UNet2DConditionConfig::from_json(config, "unet/config.json"); });
  EXPECT_NE(msg.find("unet/config.json: down_block_types[1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'AttnDownBlock2D'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CrossAttnDownBlock2D, DownBlock2D"), std::string::npos) << msg;
}

TEST(UNetConfig, UnsupportedSettingsAreRejectedByName) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "unet_tiny/unet");
  const std::string path = dir + "/config.json";
  const std::vector<std::pair<std::string, json::Value>> cases = {
      {"addition_embed_type", json::Value("text_time")},
      {"class_embed_type", json::Value("timestep")},
      {"time_embedding_type", json::Value("fourier")},
      {"num_attention_heads", json::Value(8)},
      {"resnet_time_scale_shift", json::Value("scale_shift")},
      {"time_cond_proj_dim", json::Value(256)},
      {"only_cross_attention", json::Value(true)},
      {"act_fn", json::Value("tanh")},
  };
  for (const auto& [key, value] : cases) {
    json::Value config = json::parse_file(path);  // Value copies share their object: parse afresh
    config.set(key, value);
    const std::string msg = error_of([&] { UNet2DConditionConfig::from_json(config, "cfg.json"); });
    EXPECT_NE(msg.find("cfg.json: " + key + ":"), std::string::npos) << key << ": " << msg;
  }
  json::Value short_list = json::parse_file(path);
  short_list.set("block_out_channels", json::Value(json::Value::Array{json::Value(32), json::Value(64)}));
  const std::string msg = error_of([&] { UNet2DConditionConfig::from_json(short_list, "cfg.json"); });
  EXPECT_NE(msg.find("block_out_channels"), std::string::npos) << msg;
}

TEST(UNetLoad, SD2StyleConfigFailsStrictLoadingOfSD15Weights) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "unet_tiny/unet");
  // SD-2 style: per-block head counts, 1024-d text states, linear proj_in/proj_out.
  const std::string folder = folder_with_config(
      dir,
      [](json::Value& c) {
        c.set("attention_head_dim", json::Value(json::Value::Array{json::Value(2), json::Value(4), json::Value(4)}));
        c.set("cross_attention_dim", json::Value(1024));
        c.set("use_linear_projection", json::Value(true));
      },
      "unet-sd2");
  const std::string msg = error_of([&] { load_unet(folder, torch::kCPU, torch::kFloat); });
  EXPECT_NE(msg.find("weights do not match the model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight: expected [32, 1024], found [32, 32]"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("down_blocks.0.attentions.0.proj_in.weight: expected [32, 32], found [32, 32, 1, 1]"),
            std::string::npos)
      << msg;
}

TEST(UNetLoad, MissingConfigIsNamed) {
  const std::string folder = test::temp_dir("unet-empty");
  const std::string msg = error_of([&] { load_unet(folder, torch::kCPU, torch::kFloat); });
  EXPECT_NE(msg.find(folder + "/config.json: not found"), std::string::npos) << msg;
}

TEST(Attention, ChunkedEqualsFullAttention) {
  torch::manual_seed(1);
  const auto q = torch::randn({6, 37, 8}), k = torch::randn({6, 29, 8}), v = torch::randn({6, 29, 5});
  const double scale = 1.0 / std::sqrt(8.0);
  const auto full = torch::softmax(torch::bmm(q, k.transpose(1, 2)) * scale, -1).bmm(v);
  // 5 rows of one head per tile; whole heads (2 of them) once a tile holds more than Nq rows.
  EXPECT_EQ(attention_tiling(6, 37, 29, 4, 29 * 4 * 5).rows, 5);
  EXPECT_EQ(attention_tiling(6, 37, 29, 4, 29 * 4 * 5).heads, 1);
  EXPECT_EQ(attention_tiling(6, 37, 29, 4, 29 * 4 * 37 * 2 + 7).rows, 37);
  EXPECT_EQ(attention_tiling(6, 37, 29, 4, 29 * 4 * 37 * 2 + 7).heads, 2);
  const auto unchunked = chunked_attention(q, k, v, scale);
  const auto chunked = chunked_attention(q, k, v, scale, false, false, /*tile_bytes=*/29 * 4 * 5);
  const auto by_heads = chunked_attention(q, k, v, scale, false, false, /*tile_bytes=*/29 * 4 * 37 * 2);
  EXPECT_ALL_CLOSE(unchunked, full, 1e-6);
  EXPECT_ALL_CLOSE(chunked, unchunked, 1e-6);
  EXPECT_ALL_CLOSE(by_heads, unchunked, 1e-6);
  const auto one_row = chunked_attention(q, k, v, scale, true, true, /*tile_bytes=*/1);
  EXPECT_ALL_CLOSE(one_row, unchunked, 1e-6);
  // Cache tiles (one thread per head x row block; q scaled before the product), on 2 threads with a
  // ragged last block, in float32 and bfloat16 with the upcast variants.
  at::set_num_threads(2);
  for (int64_t rows : {1, 5, 16, 37, 100}) {  // tiles of `rows` query rows of 29 float32 scores
    SCOPED_TRACE(rows);
    EXPECT_ALL_CLOSE(cache_tiled_attention(q, k, v, scale, false, false, rows * 29 * 4), unchunked, 1e-6);
    EXPECT_ALL_CLOSE(cache_tiled_attention(q, k, v, scale, true, true, rows * 29 * 4), unchunked, 1e-6);
  }
  const auto qb = q.to(torch::kBFloat16), kb = k.to(torch::kBFloat16), vb = v.to(torch::kBFloat16);
  // (scores, softmax) upcast: (no, no) as SD's UNet, (no, yes) as the VAE, (yes, yes).
  for (auto [up_scores, up_softmax] : {std::pair{false, false}, std::pair{false, true}, std::pair{true, true}}) {
    SCOPED_TRACE(up_softmax);
    const auto tiled = cache_tiled_attention(qb, kb, vb, scale, up_scores, up_softmax, 8 * 29 * 4);
    EXPECT_EQ(tiled.scalar_type(), torch::kBFloat16);
    // Against float32: outputs reach ~2, where one bfloat16 ulp is 2^-6; both forms stay within 4 ulps.
    EXPECT_ALL_CLOSE(tiled, unchunked, 0.0625);
    EXPECT_ALL_CLOSE(chunked_attention(qb, kb, vb, scale, up_scores, up_softmax), unchunked, 0.0625);
  }
}

// linear(): large float32 CPU products go through oneDNN (a 1x1 convolution) or a row-split BLAS
// product; both must equal torch::nn::Linear up to float32 summation order.
TEST(Attention, FastLinearEqualsTorchLinear) {
  at::set_num_threads(2);
  torch::manual_seed(3);
  torch::NoGradGuard no_grad;
  for (bool bias : {true, false}) {
    torch::nn::Linear layer(torch::nn::LinearOptions(256, 384).bias(bias));
    const auto x = torch::randn({2, 40, 256});  // 80 rows x 256 x 384 = 7.9 MFLOP: above the split threshold
    const auto expected = layer->forward(x);
    const auto got = linear(layer, x);
    EXPECT_EQ(got.sizes(), expected.sizes());
    EXPECT_ALL_CLOSE(got, expected, 1e-5);
    EXPECT_ALL_CLOSE(linear(layer, x.slice(1, 0, 1)), layer->forward(x.slice(1, 0, 1)), 1e-5);  // small: plain layer
  }
}
