// LoRA files in their three forms, fused into goldens/pipeline_tiny, against the weights diffusers
// 0.29.2 names and peft fuses (tests/fixtures/lora_goldens.py wrote tests/generator/data/lora), and
// the bad inputs users meet: an SDXL LoRA, unknown keys, a NaN.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include "core/check.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "generator/arc2face_pipeline.h"
#include "generator/lora.h"
#include "generator/model_files.h"
#include "generator/single_file.h"
#include "generator/unet_2d_condition.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::generator {
namespace {

namespace fs = std::filesystem;
using test::error_of;

const std::string kData = std::string(IDSYNTH_SOURCE_DIR) + "/tests/generator/data/lora";

std::string form_file(const std::string& form) {
  return form == "peft" ? kData + "/peft/adapter_model.safetensors" : kData + "/" + form + ".safetensors";
}

struct Weights {
  TensorDict unet, text_encoder;
};

Weights golden_weights(const std::string& pipeline) {
  return {read_weights(locate_component(pipeline + "/unet", Component::kUNet).weights),
          read_weights(locate_component(pipeline + "/text_encoder", Component::kTextEncoder).weights)};
}

UNet2DConditionConfig tiny_unet_config(const std::string& pipeline) {
  return UNet2DConditionConfig::from_file(pipeline + "/unet/config.json");
}

Weights fuse(const Weights& w, const std::vector<LoraToApply>& loras, const std::string& pipeline) {
  return {fuse_loras(w.unet, Component::kUNet, loras, ldm_unet_names(tiny_unet_config(pipeline))),
          fuse_loras(w.text_encoder, Component::kTextEncoder, loras)};
}

TEST(LoraParity, EachFormFusesToTheWeightsDiffusersMakes) {
  IDSYNTH_REQUIRE_GOLDEN(golden, "pipeline_tiny");
  const std::string pipeline = golden + "/pipeline";
  const Weights base = golden_weights(pipeline);
  const TensorDict expected = SafeTensorsFile(kData + "/expected.safetensors").all();
  for (const std::string form : {"kohya", "diffusers", "peft"}) {
    for (const double scale : {1.0, 0.7}) {
      SCOPED_TRACE(form + " scale " + std::to_string(scale));
      const LoraFile file = read_lora(form_file(form));
      EXPECT_EQ(lora_form_name(file.form), form);
      ASSERT_EQ(file.layers.size(), 22u);
      const Weights fused = fuse(base, {{file, scale}}, pipeline);
      const std::string suffix = scale == 1.0 ? "@1" : "@0.7";
      int64_t compared = 0;
      double worst = 0;
      for (const auto& [key, want] : expected) {
        if (key.size() < suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
        const std::string name = key.substr(0, key.size() - suffix.size());
        const bool unet = name.rfind("unet.", 0) == 0;
        const TensorDict& side = unet ? fused.unet : fused.text_encoder;
        const at::Tensor& got = side.at(name.substr(unet ? 5 : 13));
        // float32: the update is a rank-4 product; peft sums a 3x3 kernel's through conv2d.
        worst = std::max(worst, test::max_abs_diff(got, want));
        EXPECT_LE(test::max_abs_diff(got, want), 2e-6) << name;
        ++compared;
      }
      EXPECT_EQ(compared, scale == 1.0 ? 22 : 15);  // at 0.7 the golden keeps the linear layers only
      std::printf("%s scale %.1f: %lld weights, max |diff| %.3g\n", form.c_str(), scale, static_cast<long long>(compared), worst);
      // Everything the LoRA does not name is left exactly as read.
      int64_t untouched = 0;
      for (const auto& [name, t] : base.unet) {
        if (expected.contains("unet." + name + "@1")) continue;
        ASSERT_TRUE(torch::equal(fused.unet.at(name), t)) << name;
        ++untouched;
      }
      EXPECT_EQ(untouched, static_cast<int64_t>(base.unet.size()) - 18);
    }
  }
}

TEST(LoraParity, TheThreeFormsOfOneLoraGiveIdenticalWeights) {
  IDSYNTH_REQUIRE_GOLDEN(golden, "pipeline_tiny");
  const std::string pipeline = golden + "/pipeline";
  const Weights base = golden_weights(pipeline);
  const Weights kohya = fuse(base, {{read_lora(form_file("kohya")), 1.0}}, pipeline);
  for (const std::string form : {"diffusers", "peft"}) {
    const Weights other = fuse(base, {{read_lora(form_file(form)), 1.0}}, pipeline);
    for (const auto& [name, t] : kohya.unet) EXPECT_TRUE(torch::equal(other.unet.at(name), t)) << form << " " << name;
    for (const auto& [name, t] : kohya.text_encoder)
      EXPECT_TRUE(torch::equal(other.text_encoder.at(name), t)) << form << " " << name;
  }
}

// kohya files made for the LDM layout name `input_blocks_1_1_proj_in`; the same LoRA renamed so fuses
// into the same weights.
TEST(Lora, KohyaWithLdmModuleNamesFusesTheSameModules) {
  IDSYNTH_REQUIRE_GOLDEN(golden, "pipeline_tiny");
  const std::string pipeline = golden + "/pipeline";
  const auto names = ldm_unet_names(tiny_unet_config(pipeline));
  std::map<std::string, std::string> to_ldm;
  for (const auto& [ldm, diffusers] : names) to_ldm[diffusers] = ldm;
  const TensorDict kohya = read_weights(form_file("kohya"));
  std::vector<std::pair<std::string, at::Tensor>> renamed;
  int64_t changed = 0;
  for (const auto& [name, t] : kohya) {
    std::string n = name;
    if (n.rfind("lora_unet_", 0) == 0) {
      const size_t dot = n.find('.');
      const std::string module = n.substr(10, dot - 10);
      for (const auto& [diffusers, ldm] : to_ldm) {
        std::string d = diffusers.substr(0, diffusers.size() - 7), l = ldm.substr(0, ldm.size() - 7);  // ".weight"
        std::replace(d.begin(), d.end(), '.', '_');
        std::replace(l.begin(), l.end(), '.', '_');
        if (diffusers.size() > 7 && diffusers.compare(diffusers.size() - 7, 7, ".weight") == 0 && d == module) {
          changed += l != d;
          n = "lora_unet_" + l + n.substr(dot);
          break;
        }
      }
    }
    renamed.emplace_back(n, t);
  }
  EXPECT_GT(changed, 40);  // 18 layers x (down, up, alpha), nearly all named differently in LDM
  const std::string path = test::temp_dir("lora-ldm") + "/ldm.safetensors";
  save_safetensors(path, renamed);
  const Weights base = golden_weights(pipeline);
  const Weights a = fuse(base, {{read_lora(form_file("kohya")), 1.0}}, pipeline);
  const Weights b = fuse(base, {{read_lora(path), 1.0}}, pipeline);
  for (const auto& [name, t] : a.unet) EXPECT_TRUE(torch::equal(b.unet.at(name), t)) << name;
}

// The pipeline with --lora draws the images of a model folder holding diffusers' fused weights
// (LCM, 4 steps, no CFG: Arc2Face's LCM-LoRA mode).
TEST(LoraParity, PipelineWithLoraMatchesTheModelWithDiffusersFusedWeights) {
  IDSYNTH_REQUIRE_GOLDEN(golden, "pipeline_tiny");
  const std::string pipeline = golden + "/pipeline";
  const std::string fused_dir = test::temp_dir("lora-fused") + "/model";
  fs::copy(pipeline, fused_dir, fs::copy_options::recursive);
  const TensorDict expected = SafeTensorsFile(kData + "/expected.safetensors").all();
  for (const auto& [component, file] : {std::pair<std::string, std::string>{"unet", "unet/diffusion_pytorch_model.safetensors"},
                                       {"text_encoder", "text_encoder/model.safetensors"}}) {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& [name, t] : read_weights(pipeline + "/" + file)) {
      const at::Tensor* f = expected.find(component + "." + name + "@1");
      out.emplace_back(name, f != nullptr ? *f : t.to(torch::kFloat));
    }
    fs::remove(fused_dir + "/" + file);
    save_safetensors(fused_dir + "/" + file, out);
  }
  const auto inputs = SafeTensorsFile(golden + "/inputs.safetensors").all();
  const at::Tensor ids = inputs.at("id_embeds");
  auto run = [&](const std::string& dir, const std::vector<LoraSpec>& loras) {
    PipelineOptions po;
    po.scheduler = "lcm";
    po.loras = loras;
    auto pipe = Arc2FacePipeline::load(Arc2FaceModelPaths::resolve(dir), po);
    torch::NoGradGuard no_grad;
    at::Generator g = at::detail::createCPUGenerator(1234);
    const auto latents = pipe.draw_latents(g, 4, 32, 32);
    SampleOptions so;
    so.num_inference_steps = 4;
    so.guidance_scale = 1.0;
    return pipe.sample(ids, latents, so, nullptr, {g});
  };
  const at::Tensor with_lora = run(pipeline, {{form_file("kohya"), 1.0}});
  const at::Tensor prefused = run(fused_dir, {});
  const at::Tensor plain = run(pipeline, {});
  EXPECT_ALL_CLOSE(with_lora, prefused, 1.0 / 255 + 2e-3);
  EXPECT_GT(test::max_abs_diff(with_lora, plain), 0.05);  // the LoRA does change the images
}

// ---- bad input ----------------------------------------------------------------------------------

std::string write_lora(const std::string& tag, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  const std::string path = test::temp_dir(tag) + "/lora.safetensors";
  save_safetensors(path, tensors);
  return path;
}

TEST(Lora, BadFilesGiveOneErrorNamingTheKey) {
  IDSYNTH_REQUIRE_GOLDEN(golden, "pipeline_tiny");
  const std::string pipeline = golden + "/pipeline";
  const Weights base = golden_weights(pipeline);
  auto fuse_file = [&](const std::string& path) { fuse(base, {{read_lora(path), 1.0}}, pipeline); };
  const auto r = [](std::vector<int64_t> shape) { return torch::randn(shape); };

  // SDXL: its second text encoder, and its UNet's 2048-wide cross-attention.
  std::string msg = error_of([&] {
    fuse_file(write_lora("lora-sdxl-te2", {{"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", r({4, 1280})},
                                          {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", r({5120, 4})}}));
  });
  EXPECT_NE(msg.find("SDXL"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"), std::string::npos) << msg;
  const std::string key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
  msg = error_of([&] {
    fuse_file(write_lora("lora-sdxl-unet", {{key + ".lora_down.weight", r({4, 2048})}, {key + ".lora_up.weight", r({32, 4})}}));
  });
  EXPECT_NE(msg.find(key + ".lora_down.weight': expected down [rank, 32] and up [32, rank]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("found down [4, 2048]"), std::string::npos) << msg;

  // A module the model does not have.
  msg = error_of([&] {
    fuse_file(write_lora("lora-unknown", {{"lora_unet_down_blocks_7_attentions_0_proj_in.lora_down.weight", r({4, 32})},
                                         {"lora_unet_down_blocks_7_attentions_0_proj_in.lora_up.weight", r({32, 4})}}));
  });
  EXPECT_NE(msg.find("expected a UNet module named 'down_blocks_7_attentions_0_proj_in', found none"), std::string::npos) << msg;
  // A tensor that is no LoRA's.
  msg = error_of([&] {
    read_lora(write_lora("lora-stray", {{"lora_unet_conv_in.lora_down.weight", r({4, 4, 3, 3})},
                                       {"lora_unet_conv_in.lora_up.weight", r({32, 4, 1, 1})},
                                       {"lora_unet_conv_in.hada_w1_a", r({4})}}));
  });
  EXPECT_NE(msg.find("key 'lora_unet_conv_in.hada_w1_a' [4]"), std::string::npos) << msg;
  // A NaN.
  at::Tensor up = r({32, 4});
  up[3][1] = NAN;
  msg = error_of([&] {
    read_lora(write_lora("lora-nan", {{"lora_unet_conv_in.lora_down.weight", r({4, 4, 3, 3})},
                                     {"lora_unet_conv_in.lora_up.weight", up.view({32, 4, 1, 1})}}));
  });
  EXPECT_NE(msg.find("key 'lora_unet_conv_in.lora_up.weight': expected finite values, found 1 NaN"), std::string::npos) << msg;
  // Ranks that disagree; a down without its up.
  msg = error_of([&] {
    read_lora(write_lora("lora-rank", {{"lora_unet_conv_in.lora_down.weight", r({4, 4, 3, 3})},
                                      {"lora_unet_conv_in.lora_up.weight", r({32, 8, 1, 1})}}));
  });
  EXPECT_NE(msg.find("of one rank, found down [4, 4, 3, 3] and up [32, 8, 1, 1]"), std::string::npos) << msg;
  msg = error_of([&] { read_lora(write_lora("lora-half", {{"unet.conv_in.lora_A.weight", r({4, 4, 3, 3})}})); });
  EXPECT_NE(msg.find("expected its up half 'unet.conv_in.lora_B.weight', found none"), std::string::npos) << msg;
  // Not a LoRA at all.
  msg = error_of([&] { read_lora(locate_component(pipeline + "/vae", Component::kVAE).weights); });
  EXPECT_NE(msg.find("expected LoRA tensors"), std::string::npos) << msg;
}

TEST(Lora, SpecsAndSummary) {
  EXPECT_EQ(parse_lora_spec("a/lcm.safetensors").scale, 1.0);
  const LoraSpec s = parse_lora_spec("a/lcm.safetensors:0.75");
  EXPECT_EQ(s.path, "a/lcm.safetensors");
  EXPECT_EQ(s.scale, 0.75);
  EXPECT_EQ(parse_lora_spec("c:/x.safetensors").path, "c:/x.safetensors");  // the tail is no number
  EXPECT_NE(error_of([] { parse_lora_spec(":0.5"); }).find("found no file"), std::string::npos);
  EXPECT_TRUE(looks_like_lora(read_weights(form_file("kohya"))));
  EXPECT_TRUE(looks_like_lora(read_weights(form_file("diffusers"))));
  EXPECT_TRUE(looks_like_lora(read_weights(form_file("peft"))));
  const std::string d = describe_lora(read_lora(form_file("peft")));
  EXPECT_NE(d.find("LoRA (peft form): 22 layers (UNet 18, text encoder 4), rank 4, alpha 2; targets: "), std::string::npos) << d;
  EXPECT_NE(d.find("to_q x2"), std::string::npos) << d;
  const std::string k = describe_lora(read_lora(form_file("kohya")));
  EXPECT_NE(k.find("to_out_0 x2"), std::string::npos) << k;
}

}  // namespace
}  // namespace idsynth::generator
