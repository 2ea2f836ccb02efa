// Single-file LDM / CompVis checkpoints: written here from the golden tiny UNet and VAE with the
// inverse renaming (diffusers' own index arithmetic, independent of the converter's per-block walk),
// read back as .safetensors and .ckpt, converted, and run against the goldens' outputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <string>

#include "core/check.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"
#include "core/weights.h"
#include "generator/arc2face_pipeline.h"
#include "generator/autoencoder_kl.h"
#include "generator/single_file.h"
#include "generator/unet_2d_condition.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"
#include "tests/support/process.h"
#include "tests/support/tensor_compare.h"

using namespace idsynth;
using namespace idsynth::generator;
namespace fs = std::filesystem;

namespace {
constexpr double kParityTol = 1e-4;  // as nn_unet_parity / nn_vae_parity

using test::error_of;

// ---------------------------------------------------------------------------------------------
// diffusers -> LDM names (the inverse of convert_ldm_*_checkpoint), with the constant-stride index
// arithmetic of diffusers 0.29.2 (layers_per_block L: input block 1 + b*(L+1) + k).
// ---------------------------------------------------------------------------------------------
std::string ldm_resnet_inner(const std::string& rest) {
  static const std::vector<std::pair<std::string, std::string>> renames = {
      {"norm1.", "in_layers.0."},  {"conv1.", "in_layers.2."},  {"time_emb_proj.", "emb_layers.1."},
      {"norm2.", "out_layers.0."}, {"conv2.", "out_layers.3."}, {"conv_shortcut.", "skip_connection."}};
  for (const auto& [from, to] : renames) {
    if (rest.compare(0, from.size(), from) == 0) return to + rest.substr(from.size());
  }
  ADD_FAILURE() << "unknown resnet tensor " << rest;
  return rest;
}

std::string ldm_unet_name(const std::string& name, int64_t L, const std::function<bool(int64_t)>& up_has_attention) {
  std::smatch m;
  auto num = [&](int i) { return std::stoll(m[i].str()); };
  static const std::regex down_res(R"(^down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$)");
  static const std::regex down_attn(R"(^down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$)");
  static const std::regex down_op(R"(^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$)");
  static const std::regex mid_res(R"(^mid_block\.resnets\.(\d+)\.(.*)$)");
  static const std::regex mid_attn(R"(^mid_block\.attentions\.0\.(.*)$)");
  static const std::regex up_res(R"(^up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$)");
  static const std::regex up_attn(R"(^up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$)");
  static const std::regex up_conv(R"(^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$)");
  static const std::vector<std::pair<std::string, std::string>> fixed = {
      {"time_embedding.linear_1.", "time_embed.0."}, {"time_embedding.linear_2.", "time_embed.2."},
      {"conv_in.", "input_blocks.0.0."},             {"conv_norm_out.", "out.0."},
      {"conv_out.", "out.2."}};
  for (const auto& [from, to] : fixed) {
    if (name.compare(0, from.size(), from) == 0) return to + name.substr(from.size());
  }
  if (std::regex_match(name, m, down_res)) return cat("input_blocks.", 1 + num(1) * (L + 1) + num(2), ".0.", ldm_resnet_inner(m[3]));
  if (std::regex_match(name, m, down_attn)) return cat("input_blocks.", 1 + num(1) * (L + 1) + num(2), ".1.", m[3].str());
  if (std::regex_match(name, m, down_op)) return cat("input_blocks.", 1 + num(1) * (L + 1) + L, ".0.op.", m[2].str());
  if (std::regex_match(name, m, mid_res)) return cat("middle_block.", 2 * num(1), ".", ldm_resnet_inner(m[2]));
  if (std::regex_match(name, m, mid_attn)) return cat("middle_block.1.", m[1].str());
  if (std::regex_match(name, m, up_res)) return cat("output_blocks.", num(1) * (L + 1) + num(2), ".0.", ldm_resnet_inner(m[3]));
  if (std::regex_match(name, m, up_attn)) return cat("output_blocks.", num(1) * (L + 1) + num(2), ".1.", m[3].str());
  if (std::regex_match(name, m, up_conv)) {
    return cat("output_blocks.", num(1) * (L + 1) + L, ".", up_has_attention(num(1)) ? 2 : 1, ".conv.", m[2].str());
  }
  ADD_FAILURE() << "unknown UNet tensor " << name;
  return name;
}

// Returns the LDM name; `t` becomes a 1x1 conv weight where LDM's AttnBlock has one.
std::string ldm_vae_name(const std::string& name, int64_t levels, at::Tensor& t) {
  std::smatch m;
  auto num = [&](int i) { return std::stoll(m[i].str()); };
  auto shortcut = [](std::string rest) {
    return rest.compare(0, 14, "conv_shortcut.") == 0 ? "nin_shortcut." + rest.substr(14) : rest;
  };
  static const std::regex enc_res(R"(^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$)");
  static const std::regex enc_down(R"(^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$)");
  static const std::regex dec_res(R"(^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$)");
  static const std::regex dec_up(R"(^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$)");
  static const std::regex mid_res(R"(^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)$)");
  static const std::regex mid_attn(R"(^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$)");
  static const std::regex norm_out(R"(^(encoder|decoder)\.conv_norm_out\.(.*)$)");
  if (std::regex_match(name, m, enc_res)) return cat("encoder.down.", num(1), ".block.", num(2), ".", shortcut(m[3]));
  if (std::regex_match(name, m, enc_down)) return cat("encoder.down.", num(1), ".downsample.conv.", m[2].str());
  if (std::regex_match(name, m, dec_res)) {
    return cat("decoder.up.", levels - 1 - num(1), ".block.", num(2), ".", shortcut(m[3]));
  }
  if (std::regex_match(name, m, dec_up)) return cat("decoder.up.", levels - 1 - num(1), ".upsample.conv.", m[2].str());
  if (std::regex_match(name, m, mid_res)) return cat(m[1].str(), ".mid.block_", num(2) + 1, ".", m[3].str());
  if (std::regex_match(name, m, mid_attn)) {
    const std::string part = m[2].str();
    const std::string ldm = part == "group_norm" ? "norm" : part == "to_out.0" ? "proj_out" : part.substr(3);
    if (part != "group_norm" && m[3].str() == "weight") t = t.reshape({t.size(0), t.size(1), 1, 1});
    return cat(m[1].str(), ".mid.attn_1.", ldm, ".", m[3].str());
  }
  if (std::regex_match(name, m, norm_out)) return cat(m[1].str(), ".norm_out.", m[2].str());
  return name;  // conv_in, conv_out, quant_conv, post_quant_conv keep their names
}

bool tiny_up_has_attention(int64_t block) { return block > 0; }  // ("UpBlock2D", "CrossAttnUpBlock2D" x2)

// The whole LDM checkpoint of the golden tiny UNet + VAE, with LitEma and text-encoder leftovers.
TensorDict ldm_checkpoint(const TensorDict& unet, const TensorDict& vae, int64_t unet_layers, int64_t vae_levels) {
  TensorDict out;
  for (const auto& [name, t] : unet) {
    out.insert("model.diffusion_model." + ldm_unet_name(name, unet_layers, tiny_up_has_attention), t);
  }
  for (const auto& [name, t] : vae) {
    at::Tensor v = t;
    const std::string ldm = ldm_vae_name(name, vae_levels, v);
    out.insert("first_stage_model." + ldm, v);
  }
  out.insert("model_ema.decay", torch::tensor(0.9999));
  out.insert("model_ema.num_updates", torch::tensor(int64_t{470000}));
  out.insert("model_ema.diffusion_modelinput_blocks00weight", torch::zeros({32, 4, 3, 3}));
  out.insert("cond_stage_model.transformer.text_model.embeddings.position_ids", torch::arange(77).unsqueeze(0));
  return out;
}

struct Goldens {
  std::string unet_dir, vae_dir;
  UNet2DConditionConfig unet_config;
  AutoencoderKLConfig vae_config;
  TensorDict unet, vae, checkpoint;
};

Goldens read_goldens(const std::string& unet_dir, const std::string& vae_dir) {
  Goldens g;
  g.unet_dir = unet_dir;
  g.vae_dir = vae_dir;
  g.unet_config = UNet2DConditionConfig::from_file(unet_dir + "/config.json");
  g.vae_config = AutoencoderKLConfig::from_file(vae_dir + "/config.json");
  g.unet = SafeTensorsFile(unet_dir + "/diffusion_pytorch_model.safetensors").all();
  g.vae = SafeTensorsFile(vae_dir + "/diffusion_pytorch_model.safetensors").all();
  g.checkpoint = ldm_checkpoint(g.unet, g.vae, g.unet_config.layers_per_block[0],
                                static_cast<int64_t>(g.vae_config.block_out_channels.size()));
  return g;
}

// The converted tensors are the golden ones under the same names, and the models reproduce the
// goldens' outputs.
void expect_matches_goldens(const Goldens& g, const TensorDict& file, const std::string& source) {
  EXPECT_TRUE(looks_like_ldm_checkpoint(file));
  EXPECT_EQ(detect_single_file_kind(file), SingleFileKind::sd1);
  EXPECT_EQ(count_ema_tensors(file), 3);

  const TensorDict unet_weights = ldm_unet_to_diffusers(file, g.unet_config, source);
  ASSERT_EQ(unet_weights.size(), g.unet.size());
  for (const auto& [name, t] : g.unet) {
    const at::Tensor* mine = unet_weights.find(name);
    ASSERT_NE(mine, nullptr) << name;
    EXPECT_TRUE(at::equal(*mine, t)) << name;
  }
  const TensorDict vae_weights = ldm_vae_to_diffusers(file, g.vae_config, source);
  ASSERT_EQ(vae_weights.size(), g.vae.size());
  for (const auto& [name, t] : g.vae) {
    const at::Tensor* mine = vae_weights.find(name);
    ASSERT_NE(mine, nullptr) << name;
    EXPECT_EQ(mine->sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(*mine, t)) << name;
  }

  at::set_num_threads(1);  // tiny models: one thread is as fast and immune to a busy machine
  const c10::Device dev = test::test_device();
  {
    UNet2DCondition unet(g.unet_config);
    load_state_dict(*unet, unet_weights);
    unet->to(dev);
    const auto inputs = SafeTensorsFile(g.unet_dir + "/../inputs.safetensors").all();
    const auto expected = SafeTensorsFile(g.unet_dir + "/../expected.safetensors").all();
    auto in = [&](const char* name) { return inputs.at(name).to(dev); };
    EXPECT_ALL_CLOSE(unet->forward(in("sample"), in("timesteps"), in("encoder_hidden_states")), expected.at("out_sample"),
                     kParityTol);
    EXPECT_ALL_CLOSE(unet->forward(in("sample"), in("timestep_scalar"), in("encoder_hidden_states")),
                     expected.at("out_sample_t500"), kParityTol);
  }
  {
    AutoencoderKL vae(g.vae_config);
    load_state_dict(*vae, vae_weights);
    vae->to(dev);
    const auto inputs = SafeTensorsFile(g.vae_dir + "/../inputs.safetensors").all();
    const auto expected = SafeTensorsFile(g.vae_dir + "/../expected.safetensors").all();
    EXPECT_ALL_CLOSE(vae->decode(inputs.at("latents").to(dev)), expected.at("decoded"), kParityTol);
    const auto dist = vae->encode(inputs.at("image").to(dev));
    EXPECT_ALL_CLOSE(dist.mean, expected.at("enc_mean"), kParityTol);
    EXPECT_ALL_CLOSE(dist.logvar, expected.at("enc_logvar"), kParityTol);
  }
}

#define REQUIRE_TINY_GOLDENS(g)                               \
  IDSYNTH_REQUIRE_GOLDEN(unet_dir_, "unet_tiny/unet");        \
  IDSYNTH_REQUIRE_GOLDEN(vae_dir_, "vae_tiny/vae");           \
  const Goldens g = read_goldens(unet_dir_, vae_dir_)

// Re-saves a flat torch.save file as Lightning does: {"state_dict": ..., "global_step": N, "epoch": E}.
bool wrap_with_python(const std::string& flat, const std::string& out) {
  const std::string dir = fs::path(out).parent_path().string();
  const std::string script = dir + "/wrap.py";
  std::ofstream(script) << "import sys, torch\n"
                           "sd = torch.load(sys.argv[1])\n"
                           "torch.save({'state_dict': sd, 'global_step': 470000, 'epoch': 5}, sys.argv[2])\n";
  const std::string cmd = test::python_with_torch() + " " + script + " " + flat + " " + out;
  return std::system(cmd.c_str()) == 0;
}

}  // namespace

TEST(SingleFile, SafetensorsLoadsAsTheGoldens) {
  REQUIRE_TINY_GOLDENS(g);
  const std::string path = test::temp_dir("single-file") + "/v1-tiny.safetensors";
  save_safetensors(path, g.checkpoint);
  const TensorDict file = read_single_file(path);
  EXPECT_EQ(file.source(), path);
  EXPECT_EQ(file.at("first_stage_model.encoder.mid.attn_1.proj_out.weight").dim(), 4);
  EXPECT_EQ(file.size(), g.checkpoint.size());
  expect_matches_goldens(g, file, path);
}

// The whole pipeline with its UNet and VAE taken from one LDM single file (the tiny configs given
// beside it, as a real SD-1.5 file would use the built-in ones) draws the golden images.
TEST(SingleFile, PipelineFromASingleFileDrawsTheGoldenImages) {
  IDSYNTH_REQUIRE_GOLDEN(golden, "pipeline_tiny");
  at::set_num_threads(2);
  const std::string model = golden + "/pipeline";
  const Goldens g = read_goldens(model + "/unet", model + "/vae");
  const std::string dir = test::temp_dir("single-file-pipeline");
  const std::string file = dir + "/v1-tiny.safetensors";
  save_safetensors(file, g.checkpoint);
  // resolve(): a model folder without unet/ and vae/ takes both from a single-file base
  fs::create_directories(dir + "/model");
  fs::copy(model + "/text_encoder", dir + "/model/text_encoder", fs::copy_options::recursive);
  fs::copy(model + "/scheduler", dir + "/model/scheduler", fs::copy_options::recursive);
  Arc2FaceModelPaths paths = Arc2FaceModelPaths::resolve(dir + "/model", file);
  EXPECT_TRUE(paths.unet.single_file && paths.vae.single_file);
  EXPECT_EQ(paths.unet.weights, file);
  EXPECT_TRUE(paths.unet.config.empty());  // Stable Diffusion 1.5's config for a real file
  EXPECT_EQ(paths.scheduler_config, dir + "/model/scheduler/scheduler_config.json");
  paths.unet.config = model + "/unet/config.json";
  paths.vae.config = model + "/vae/config.json";
  auto inputs = SafeTensorsFile(golden + "/inputs.safetensors").all();
  auto expected = SafeTensorsFile(golden + "/expected.safetensors").all();
  auto pipe = Arc2FacePipeline::load(paths, {});
  torch::NoGradGuard no_grad;
  const auto& ids = inputs.at("id_embeds");
  auto latents = pipe.draw_latents(static_cast<uint64_t>(inputs.at("seed").item<int64_t>()),
                                   ids.size(0) * inputs.at("num_images_per_prompt").item<int64_t>(),
                                   inputs.at("height").item<int64_t>(), inputs.at("width").item<int64_t>());
  SampleOptions options;
  options.num_inference_steps = inputs.at("num_inference_steps").item<int64_t>();
  options.guidance_scale = inputs.at("guidance_scale").item<double>();
  EXPECT_ALL_CLOSE(pipe.sample(ids, latents, options), expected.at("images"), 1.0 / 255 + 2e-3);
}

TEST(SingleFile, CkptWithFlattenedStateDictLoadsAsTheGoldens) {
  REQUIRE_TINY_GOLDENS(g);
  // core's reader flattens {"state_dict": {...}} to "state_dict.*"; a flat file with those names is
  // what it sees, so this covers the descent without Python.
  TensorDict wrapped;
  for (const auto& [name, t] : g.checkpoint) wrapped.insert("state_dict." + name, t);
  const std::string path = test::temp_dir("single-file") + "/v1-tiny.ckpt";
  save_torch_checkpoint(path, wrapped);
  const TensorDict file = read_single_file(path);
  EXPECT_EQ(file.size(), g.checkpoint.size());
  expect_matches_goldens(g, file, path);
}

TEST(SingleFile, CkptWrittenByTorchLoadsAsTheGoldens) {
  REQUIRE_TINY_GOLDENS(g);
  if (test::python_with_torch().empty()) {
    if (test::goldens_required()) FAIL() << "python3 with torch (python3-torch) is required";
    GTEST_SKIP() << "python3-torch not installed: cannot write a real Lightning-style .ckpt";
  }
  const std::string dir = test::temp_dir("single-file");
  save_torch_checkpoint(dir + "/flat.bin", g.checkpoint);
  const std::string path = dir + "/v1-tiny.ckpt";
  ASSERT_TRUE(wrap_with_python(dir + "/flat.bin", path));
  const TensorDict file = read_single_file(path);
  EXPECT_EQ(file.size(), g.checkpoint.size());  // global_step and epoch are not tensors
  expect_matches_goldens(g, file, path);

  // A download cut short: one line naming the file.
  const auto size = fs::file_size(path);
  const std::string cut = dir + "/cut.ckpt";
  fs::copy_file(path, cut);
  fs::resize_file(cut, size / 2);
  const std::string msg = error_of([&] { read_single_file(cut); });
  EXPECT_NE(msg.find(cut), std::string::npos) << msg;
  EXPECT_EQ(test::count_lines(msg), 0) << msg;
}

TEST(SingleFile, TruncatedCkptIsNamed) {
  REQUIRE_TINY_GOLDENS(g);
  const std::string dir = test::temp_dir("single-file");
  save_torch_checkpoint(dir + "/full.ckpt", g.checkpoint);
  for (const double fraction : {0.5, 0.98}) {
    const std::string cut = cat(dir, "/cut-", fraction, ".ckpt");
    fs::copy_file(dir + "/full.ckpt", cut);
    fs::resize_file(cut, static_cast<uintmax_t>(fs::file_size(cut) * fraction));
    const std::string msg = error_of([&] { read_single_file(cut); });
    EXPECT_NE(msg.find(cut), std::string::npos) << msg;
    EXPECT_EQ(test::count_lines(msg), 0) << msg;
  }
}

TEST(SingleFile, Sd2FileIsRejectedByName) {
  REQUIRE_TINY_GOLDENS(g);
  TensorDict file = g.checkpoint;
  const std::string key = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
  ASSERT_TRUE(file.contains(key));
  file.insert(key, torch::zeros({32, 1024}));
  file.set_source("sd2.safetensors");
  std::string why;
  EXPECT_EQ(detect_single_file_kind(file, &why), SingleFileKind::sd2);
  EXPECT_NE(why.find(key), std::string::npos) << why;
  const std::string msg = error_of([&] { ldm_unet_to_diffusers(file, g.unet_config, "sd2.safetensors"); });
  EXPECT_NE(msg.find("sd2.safetensors: expected an SD-1.x checkpoint"), std::string::npos) << msg;
  EXPECT_NE(msg.find("found SD-2.x"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[32, 1024]"), std::string::npos) << msg;
  EXPECT_EQ(test::count_lines(msg), 0) << msg;
}

TEST(SingleFile, SdxlFileIsRejectedByName) {
  REQUIRE_TINY_GOLDENS(g);
  TensorDict file = g.checkpoint;
  file.insert("conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias", torch::zeros({1280}));
  EXPECT_EQ(detect_single_file_kind(file), SingleFileKind::sdxl);
  for (const std::string& msg : {error_of([&] { ldm_unet_to_diffusers(file, g.unet_config, "xl.safetensors"); }),
                                 error_of([&] { ldm_vae_to_diffusers(file, g.vae_config, "xl.safetensors"); })}) {
    EXPECT_NE(msg.find("xl.safetensors: expected an SD-1.x"), std::string::npos) << msg;
    EXPECT_NE(msg.find("found SDXL"), std::string::npos) << msg;
    EXPECT_NE(msg.find("conditioner.embedders.1.model"), std::string::npos) << msg;
  }
}

TEST(SingleFile, InpaintingAndOtherFamiliesAreOther) {
  TensorDict inpaint;
  inpaint.insert("model.diffusion_model.input_blocks.0.0.weight", torch::zeros({320, 9, 3, 3}));
  std::string why;
  EXPECT_EQ(detect_single_file_kind(inpaint, &why), SingleFileKind::other);
  EXPECT_NE(why.find("inpainting"), std::string::npos) << why;
  TensorDict sd3;
  sd3.insert("model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias", torch::zeros({4}));
  EXPECT_EQ(detect_single_file_kind(sd3), SingleFileKind::other);
  TensorDict vae_only;
  vae_only.insert("encoder.conv_in.weight", torch::zeros({1}));
  EXPECT_EQ(detect_single_file_kind(vae_only), SingleFileKind::sd1);
  EXPECT_FALSE(looks_like_ldm_checkpoint(vae_only));
}

TEST(SingleFile, MissingAndMisshapedTensorsAreNamed) {
  REQUIRE_TINY_GOLDENS(g);
  {
    TensorDict file;
    const std::string gone = "model.diffusion_model.output_blocks.4.1.proj_out.weight";
    for (const auto& [name, t] : g.checkpoint) {
      if (name != gone) file.insert(name, t);
    }
    const std::string msg = error_of([&] { ldm_unet_to_diffusers(file, g.unet_config, "cut.safetensors"); });
    EXPECT_NE(msg.find("cut.safetensors: UNet tensor '" + gone + "' (diffusers 'up_blocks.1.attentions.1.proj_out.weight')"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("found no such tensor"), std::string::npos) << msg;
    EXPECT_EQ(test::count_lines(msg), 0) << msg;
  }
  {
    UNet2DConditionConfig wide = g.unet_config;
    wide.cross_attention_dim = {48};
    const std::string msg = error_of([&] { ldm_unet_to_diffusers(g.checkpoint, wide, "tiny.ckpt"); });
    EXPECT_NE(msg.find("tiny.ckpt: UNet tensor 'model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight': "
                       "expected [32, 48]"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("found [32, 32]"), std::string::npos) << msg;
  }
  {
    // The VAE as a standalone file (no first_stage_model. prefix), with one resnet level more
    // than the config has.
    TensorDict file;
    for (const auto& [name, t] : g.checkpoint) {
      if (name.rfind("first_stage_model.", 0) == 0) file.insert(name.substr(18), t);
    }
    EXPECT_EQ(ldm_vae_to_diffusers(file, g.vae_config, "vae.safetensors").size(), g.vae.size());
    file.insert("encoder.down.0.block.7.conv1.weight", torch::zeros({32, 32, 3, 3}));
    const std::string msg = error_of([&] { ldm_vae_to_diffusers(file, g.vae_config, "vae.safetensors"); });
    EXPECT_NE(msg.find("vae.safetensors: VAE tensor 'encoder.down.0.block.7.conv1.weight' [32, 32, 3, 3]"), std::string::npos)
        << msg;
  }
  {
    TensorDict file;
    file.insert("first_stage_model.encoder.conv_in.weight", torch::zeros({32, 3, 3, 3}));
    const std::string msg = error_of([&] { ldm_unet_to_diffusers(file, g.unet_config, "vae-only.ckpt"); });
    EXPECT_NE(msg.find("vae-only.ckpt: expected UNet tensors named 'model.diffusion_model.*', found none"), std::string::npos)
        << msg;
  }
}

// SD-1.5's topology (4 levels, 2 layers, attention on the first 3) at small widths: the LDM
// positions of the facts' table (upsampler at .1.conv after a plain level, .2.conv after attention,
// skip connections where the width changes) land on the right diffusers names.
TEST(SingleFile, Sd15TopologyRoundTrips) {
  at::set_num_threads(1);
  json::Value uj = sd15_unet_config();
  // Widths change where SD-1.5's do (320, 640, 1280, 1280): a skip connection at input block 10
  // is diffusers' (and detect_single_file_kind's) sign of the x4 upscaler.
  uj.set("block_out_channels", json::parse("[32, 64, 96, 96]"));
  uj.set("cross_attention_dim", json::Value(16));
  const auto uc = UNet2DConditionConfig::from_json(uj, "sd15-small-unet");
  UNet2DCondition unet(uc);
  const TensorDict state = module_state(*unet);
  TensorDict ldm;
  for (const auto& [name, t] : state) {
    ldm.insert("model.diffusion_model." + ldm_unet_name(name, 2, [](int64_t b) { return b > 0; }), t);
  }
  const TensorDict back = ldm_unet_to_diffusers(ldm, uc, "sd15-small");
  ASSERT_EQ(back.size(), state.size());
  for (const auto& [name, t] : state) EXPECT_TRUE(back.find(name) && back.find(name)->is_same(t)) << name;
  auto same = [&](const std::string& ldm_name, const std::string& diffusers_name) {
    const at::Tensor* a = ldm.find("model.diffusion_model." + ldm_name);
    const at::Tensor* b = back.find(diffusers_name);
    ASSERT_TRUE(a && b) << ldm_name << " / " << diffusers_name;
    EXPECT_TRUE(a->is_same(*b)) << ldm_name << " -> " << diffusers_name;
  };
  same("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight");
  same("input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight");
  same("input_blocks.8.1.proj_in.weight", "down_blocks.2.attentions.1.proj_in.weight");
  same("input_blocks.7.0.skip_connection.weight", "down_blocks.2.resnets.0.conv_shortcut.weight");
  EXPECT_FALSE(ldm.contains("model.diffusion_model.input_blocks.10.0.skip_connection.weight"));
  same("input_blocks.11.0.emb_layers.1.weight", "down_blocks.3.resnets.1.time_emb_proj.weight");
  same("middle_block.2.out_layers.3.weight", "mid_block.resnets.1.conv2.weight");
  same("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight");
  same("output_blocks.5.2.conv.weight", "up_blocks.1.upsamplers.0.conv.weight");
  same("output_blocks.8.2.conv.weight", "up_blocks.2.upsamplers.0.conv.weight");
  same("output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight",
       "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.weight");
  EXPECT_NO_THROW(load_state_dict(*unet, back));

  json::Value vj = sd15_vae_config();
  vj.set("block_out_channels", json::parse("[32, 32, 64, 64]"));
  const auto vc = AutoencoderKLConfig::from_json(vj, "sd15-small-vae");
  AutoencoderKL vae(vc);
  const TensorDict vstate = module_state(*vae);
  TensorDict vldm;
  for (const auto& [name, t] : vstate) {
    at::Tensor v = t;
    const std::string ldm_name = ldm_vae_name(name, 4, v);  // before v is read: it may reshape v
    vldm.insert("first_stage_model." + ldm_name, v);
  }
  ASSERT_TRUE(vldm.contains("first_stage_model.decoder.up.1.block.0.nin_shortcut.weight"));
  ASSERT_TRUE(vldm.contains("first_stage_model.encoder.down.2.block.0.nin_shortcut.weight"));
  EXPECT_FALSE(vldm.contains("first_stage_model.decoder.up.0.upsample.conv.weight"));
  EXPECT_EQ(vldm.at("first_stage_model.decoder.mid.attn_1.q.weight").dim(), 4);
  const TensorDict vback = ldm_vae_to_diffusers(vldm, vc, "sd15-small-vae");
  ASSERT_EQ(vback.size(), vstate.size());
  EXPECT_TRUE(vback.at("decoder.up_blocks.2.resnets.0.conv_shortcut.weight")
                  .is_same(vldm.at("first_stage_model.decoder.up.1.block.0.nin_shortcut.weight")));
  EXPECT_TRUE(vback.at("decoder.up_blocks.0.upsamplers.0.conv.weight")
                  .is_same(vldm.at("first_stage_model.decoder.up.3.upsample.conv.weight")));
  EXPECT_EQ(vback.at("encoder.mid_block.attentions.0.to_q.weight").sizes(), (std::vector<int64_t>{64, 64}));
  EXPECT_NO_THROW(load_state_dict(*vae, vback));
}

TEST(SingleFile, Sd15ConfigsAreTheRepositorysFiles) {
  const auto uc = UNet2DConditionConfig::from_json(sd15_unet_config(), "sd15 unet");
  EXPECT_EQ(uc.block_out_channels, (std::vector<int64_t>{320, 640, 1280, 1280}));
  EXPECT_EQ(uc.cross_attention_dim, (std::vector<int64_t>{768}));
  EXPECT_EQ(uc.heads(0), 8);
  EXPECT_EQ(uc.layers_per_block, (std::vector<int64_t>{2}));
  EXPECT_EQ(uc.sample_size.value_or(0), 64);
  EXPECT_FALSE(uc.use_linear_projection);

  const json::Value vj = sd15_vae_config();
  EXPECT_EQ(vj.find("scaling_factor"), nullptr);  // written by diffusers 0.6.0, before the key existed
  const auto vc = AutoencoderKLConfig::from_json(vj, "sd15 vae");
  EXPECT_DOUBLE_EQ(vc.scaling_factor, 0.18215);
  EXPECT_EQ(vc.block_out_channels, (std::vector<int64_t>{128, 256, 512, 512}));
  EXPECT_EQ(vc.layers_per_block, 2);
  EXPECT_EQ(vc.sample_size, 512);

  const json::Value s = sd15_scheduler_config();
  EXPECT_EQ(s.at("_class_name").as_string(), "PNDMScheduler");
  EXPECT_EQ(s.at("num_train_timesteps").as_double(), 1000);
  EXPECT_DOUBLE_EQ(s.at("beta_start").as_double(), 0.00085);
  EXPECT_DOUBLE_EQ(s.at("beta_end").as_double(), 0.012);
  EXPECT_EQ(s.at("beta_schedule").as_string(), "scaled_linear");
  EXPECT_TRUE(s.at("skip_prk_steps").as_bool());
  EXPECT_EQ(s.at("steps_offset").as_double(), 1);
  EXPECT_FALSE(s.at("set_alpha_to_one").as_bool());
  EXPECT_FALSE(s.at("clip_sample").as_bool());
  EXPECT_TRUE(s.at("trained_betas").is_null());
}
