// The checkpoint layouts users have, built from the golden tiny pipeline, all give the golden images:
// SD-1.5's legacy VAE attention names, fp16 variant files, an Arc2Face download merged into a
// diffusers folder (Arc2Face's parts win), and the bad inputs around them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "core/check.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"
#include "core/weights.h"
#include "generator/arc2face_pipeline.h"
#include "generator/model_files.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::generator {
namespace {

namespace fs = std::filesystem;
using test::error_of;

// A copy of goldens/pipeline_tiny/pipeline to change file by file.
std::string copy_pipeline(const std::string& golden, const std::string& tag) {
  const std::string dir = test::temp_dir(tag) + "/model";
  fs::copy(golden + "/pipeline", dir, fs::copy_options::recursive);
  return dir;
}

// The golden images from the model in `dir` (float32, the golden inputs): what `sample` computes.
void expect_golden_images(const std::string& golden, const Arc2FaceModelPaths& paths) {
  auto inputs = SafeTensorsFile(golden + "/inputs.safetensors").all();
  auto expected = SafeTensorsFile(golden + "/expected.safetensors").all();
  auto pipe = Arc2FacePipeline::load(paths, {});
  torch::NoGradGuard no_grad;
  const auto& ids = inputs.at("id_embeds");
  const int64_t per_id = inputs.at("num_images_per_prompt").item<int64_t>();
  auto latents = pipe.draw_latents(static_cast<uint64_t>(inputs.at("seed").item<int64_t>()), ids.size(0) * per_id,
                                   inputs.at("height").item<int64_t>(), inputs.at("width").item<int64_t>());
  SampleOptions options;
  options.num_inference_steps = inputs.at("num_inference_steps").item<int64_t>();
  options.guidance_scale = inputs.at("guidance_scale").item<double>();
  // The bound: one grey level plus the float32 parity tolerance.
  EXPECT_ALL_CLOSE(pipe.sample(ids, latents, options), expected.at("images"), 1.0 / 255 + 2e-3);
}

// The VAE's current attention names back to diffusers' legacy ones; `conv_shaped` stores the
// projections as 1x1 convolutions; `only_half` renames just query and key (a broken conversion).
void write_legacy_vae(const std::string& vae_dir, bool conv_shaped, bool only_half) {
  const std::string path = vae_dir + "/diffusion_pytorch_model.safetensors";
  const TensorDict current = read_weights(path);
  std::vector<std::pair<std::string, at::Tensor>> out;
  const std::pair<std::string, std::string> renames[] = {
      {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
  for (const auto& [name, t] : current) {
    std::string n = name;
    at::Tensor v = t;
    if (n.find("mid_block.attentions.") != std::string::npos) {
      for (size_t i = 0; i < (only_half ? 2u : 4u); ++i) {
        const auto pos = n.find(renames[i].first);
        if (pos == std::string::npos) continue;
        n.replace(pos, renames[i].first.size(), renames[i].second);
        if (conv_shaped && v.dim() == 2) v = v.reshape({v.size(0), v.size(1), 1, 1});
      }
    }
    out.emplace_back(n, v.contiguous());
  }
  save_safetensors(path, out, {{"format", "pt"}});
}

TEST(ModelLayouts, LegacyVaeAttentionNamesAreConverted) {
  IDSYNTH_REQUIRE_GOLDEN(golden, "pipeline_tiny");
  at::set_num_threads(2);
  for (const bool conv_shaped : {false, true}) {
    SCOPED_TRACE(conv_shaped ? "1x1-conv shaped" : "linear shaped");
    const std::string dir = copy_pipeline(golden, conv_shaped ? "legacy-conv" : "legacy");
    write_legacy_vae(dir + "/vae", conv_shaped, false);
    const TensorDict raw = read_weights(dir + "/vae/diffusion_pytorch_model.safetensors");
    ASSERT_TRUE(raw.contains("encoder.mid_block.attentions.0.query.weight"));
    const auto paths = Arc2FaceModelPaths::resolve(dir);
    LoadReport report;
    load_vae(paths.vae, c10::kCPU, c10::kFloat, &report);
    EXPECT_EQ(report.layout, "legacy");
    expect_golden_images(golden, paths);
  }
}

TEST(ModelLayouts, HalfConvertedLegacyVaeNamesTheFirstOffendingTensor) {
  IDSYNTH_REQUIRE_GOLDEN(golden, "pipeline_tiny");
  const std::string dir = copy_pipeline(golden, "legacy-half");
  write_legacy_vae(dir + "/vae", false, true);
  const std::string msg = error_of([&] { load_vae(dir + "/vae", c10::kCPU, c10::kFloat); });
  EXPECT_NE(msg.find(dir + "/vae/diffusion_pytorch_model.safetensors: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("mid_block.attentions.0.to_v.weight: expected the legacy name"), std::string::npos) << msg;
}

TEST(ModelLayouts, VariantFilesPlainWinsUnlessAsked) {
  IDSYNTH_REQUIRE_GOLDEN(golden, "pipeline_tiny");
  at::set_num_threads(2);
  // 1. only fp16 files, as `variant="fp16"` downloads them
  const std::string dir = copy_pipeline(golden, "variant");
  for (const char* part : {"unet", "vae"}) {
    const std::string plain = dir + "/" + part + "/diffusion_pytorch_model.safetensors";
    const TensorDict w = read_weights(plain);
    std::vector<std::pair<std::string, at::Tensor>> half;
    for (const auto& [n, t] : w) half.emplace_back(n, t.to(at::kHalf).contiguous());
    save_safetensors(dir + "/" + part + "/diffusion_pytorch_model.fp16.safetensors", half, {{"format", "pt"}});
    fs::rename(plain, plain + ".unused");
  }
  fs::rename(dir + "/text_encoder/model.safetensors", dir + "/text_encoder/model.fp16.safetensors");
  auto paths = Arc2FaceModelPaths::resolve(dir);
  EXPECT_EQ(paths.unet.weights, dir + "/unet/diffusion_pytorch_model.fp16.safetensors");
  EXPECT_EQ(paths.text_encoder.weights, dir + "/text_encoder/model.fp16.safetensors");
  LoadReport report;
  load_unet(paths.unet, c10::kCPU, c10::kFloat, &report);
  EXPECT_EQ(report.file_dtype, c10::kHalf);
  // The golden models were saved in float16 already, so the fp16 copies hold the same numbers.
  expect_golden_images(golden, paths);
  // 2. both present: the plain file, unless the variant is asked for
  fs::rename(dir + "/unet/diffusion_pytorch_model.safetensors.unused", dir + "/unet/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(Arc2FaceModelPaths::resolve(dir).unet.weights, dir + "/unet/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(Arc2FaceModelPaths::resolve(dir, "", "fp16").unet.weights,
            dir + "/unet/diffusion_pytorch_model.fp16.safetensors");
}

TEST(ModelLayouts, ArcFaceDownloadBesideADiffusersFolderWins) {
  IDSYNTH_REQUIRE_GOLDEN(golden, "pipeline_tiny");
  at::set_num_threads(2);
  // The Arc2Face layout (arc2face/, encoder/pytorch_model.bin with transformers' old position_ids
  // buffer) next to a diffusers unet/ and text_encoder/ whose weights are zeros: picking those
  // would give grey images, not the golden ones.
  const std::string dir = copy_pipeline(golden, "both-layouts");
  fs::copy(dir + "/unet", dir + "/arc2face", fs::copy_options::recursive);
  fs::create_directories(dir + "/encoder");
  fs::copy_file(dir + "/text_encoder/config.json", dir + "/encoder/config.json");
  TensorDict te = read_weights(dir + "/text_encoder/model.safetensors");
  te.insert("text_model.embeddings.position_ids", at::arange(77, at::kLong).unsqueeze(0));
  save_torch_checkpoint(dir + "/encoder/pytorch_model.bin", te);
  for (const auto& [file, part] : {std::pair<std::string, std::string>{"unet/diffusion_pytorch_model.safetensors", "unet"},
                                   {"text_encoder/model.safetensors", "text_encoder"}}) {
    std::vector<std::pair<std::string, at::Tensor>> zeros;
    for (const auto& [n, t] : read_weights(dir + "/" + file)) zeros.emplace_back(n, at::zeros_like(t));
    save_safetensors(dir + "/" + file, zeros, {{"format", "pt"}});
  }
  const auto paths = Arc2FaceModelPaths::resolve(dir);
  EXPECT_EQ(paths.unet.dir, dir + "/arc2face");
  EXPECT_EQ(paths.text_encoder.weights, dir + "/encoder/pytorch_model.bin");
  expect_golden_images(golden, paths);
}

}  // namespace
}  // namespace idsynth::generator
