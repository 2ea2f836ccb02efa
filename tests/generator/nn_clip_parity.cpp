// CLIP text encoder + Arc2Face ID projection vs transformers 4.36 / Arc2Face (goldens/clip_text_arc2face).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>

#include "core/check.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"
#include "generator/arc2face_id_encoder.h"
#include "generator/clip_text_model.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

using namespace idsynth;
using namespace idsynth::generator;

namespace {
constexpr double kTol = 1e-5;  // README's suggestion; the issue demands <= 1e-4

// Prints the measured difference (for reports) and checks it.
void expect_close(const char* what, const torch::Tensor& actual, const torch::Tensor& expected, double atol) {
  std::cout << "  max|diff| " << what << " = " << test::max_abs_diff(actual, expected) << "\n";
  EXPECT_TRUE(test::all_close(actual, expected, atol, what));
}
}

TEST(ClipParity, Arc2FaceProjectionMatchesTransformers) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "clip_text_arc2face");
  at::set_num_threads(2);
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto expected = SafeTensorsFile(dir + "/expected.safetensors").all();
  const c10::Device dev = test::test_device();
  Arc2FaceIdEncoder encoder(load_clip_text_model(dir + "/text_encoder", dev, torch::kFloat));

  // The fixed ids are the golden's tokenizer output.
  auto prompt = torch::tensor(Arc2FaceIdEncoder::prompt_ids(), torch::kLong).view({1, -1});
  auto uncond_ids = torch::tensor(Arc2FaceIdEncoder::unconditional_ids(), torch::kLong).view({1, -1});
  EXPECT_TRUE(torch::equal(prompt, inputs.at("input_ids")));
  EXPECT_TRUE(torch::equal(uncond_ids, inputs.at("uncond_input_ids")));
  EXPECT_EQ(prompt[0][Arc2FaceIdEncoder::kIdTokenPosition].item<int64_t>(), inputs.at("arcface_token_id").item<int64_t>());

  const auto ids = inputs.at("id_embeds").to(dev);
  expect_close("token_embs", encoder.token_embeds(ids), expected.at("token_embs"), kTol);
  auto out = encoder.encode_full(ids);
  expect_close("last_hidden_state", out.last_hidden_state, expected.at("last_hidden_state"), kTol);
  expect_close("pooler_output", out.pooler_output, expected.at("pooler_output"), kTol);
  auto uncond = encoder.unconditional_full();
  expect_close("uncond_last_hidden_state", uncond.last_hidden_state, expected.at("uncond_last_hidden_state"), kTol);
  expect_close("uncond_pooler_output", uncond.pooler_output, expected.at("uncond_pooler_output"), kTol);
  // Plain CLIPTextModel path on the prompt ids agrees with the embeds path when nothing is replaced.
  auto plain = encoder.model()->forward(prompt.to(dev));
  auto same = encoder.model()->forward_embeds(prompt.to(dev), encoder.model()->token_embeds(prompt.to(dev)));
  EXPECT_ALL_CLOSE(plain.last_hidden_state, same.last_hidden_state, 0.0);
}

TEST(ClipParity, RejectsTooWideIds) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "clip_text_arc2face");
  Arc2FaceIdEncoder encoder(load_clip_text_model(dir + "/text_encoder", torch::kCPU, torch::kFloat));
  EXPECT_THROW(encoder.encode(torch::zeros({1, encoder.hidden_size() + 1})), Error);
  // D < hidden: zero-padded.
  auto e = encoder.token_embeds(torch::ones({2, 3}));
  EXPECT_EQ(e.sizes(), (std::vector<int64_t>{2, 77, encoder.hidden_size()}));
  EXPECT_EQ(e[1][4].slice(0, 0, 3).sum().item<float>(), 3.0f);
  EXPECT_EQ(e[1][4].slice(0, 3).abs().sum().item<float>(), 0.0f);
}

TEST(ClipConfig, RejectsUnsupportedActivationByName) {
  auto root = json::parse(R"({"hidden_size": 32, "num_attention_heads": 4, "hidden_act": "relu"})");
  try {
    CLIPTextConfig::from_json(root, "enc/config.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("enc/config.json: hidden_act"), std::string::npos) << what;
    EXPECT_NE(what.find("relu"), std::string::npos) << what;
  }
  auto ok = CLIPTextConfig::from_json(json::parse(R"({"hidden_size": 32, "num_attention_heads": 4, "hidden_act": "gelu"})"), "x");
  EXPECT_EQ(ok.hidden_act, "gelu");
  EXPECT_EQ(ok.intermediate_size, 2048);  // transformers' default
  EXPECT_EQ(ok.eos_token_id, 49407);
}

TEST(ClipLoad, IgnoresPositionIdsBufferAndReadsTorchCheckpoints) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "clip_text_arc2face");
  // An Arc2Face-style folder: config.json + a weights file carrying the old position_ids buffer.
  const std::string tmp = test::temp_dir("clip_load");
  auto weights = SafeTensorsFile(dir + "/text_encoder/model.safetensors").all();
  weights.insert("text_model.embeddings.position_ids", torch::arange(77, torch::kLong).view({1, 77}));
  TensorDict fp32;  // Arc2Face's encoder/pytorch_model.bin is a float32 torch zip checkpoint
  for (const auto& [name, t] : weights) fp32.insert(name, t.is_floating_point() ? t.to(torch::kFloat) : t);
  save_torch_checkpoint(tmp + "/pytorch_model.bin", fp32);
  json::write_file(tmp + "/config.json", json::parse_file(dir + "/text_encoder/config.json"));
  auto model = load_clip_text_model(tmp, torch::kCPU, torch::kFloat);
  auto reference = load_clip_text_model(dir + "/text_encoder", torch::kCPU, torch::kFloat);
  auto ids = torch::tensor(Arc2FaceIdEncoder::unconditional_ids(), torch::kLong).view({1, -1});
  torch::NoGradGuard no_grad;
  EXPECT_ALL_CLOSE(model->forward(ids).last_hidden_state, reference->forward(ids).last_hidden_state, 0.0);
  // Missing weights: one error naming the folder.
  const std::string empty = test::temp_dir("clip_missing");
  json::write_file(empty + "/config.json", json::parse_file(dir + "/text_encoder/config.json"));
  try {
    load_clip_text_model(empty, torch::kCPU, torch::kFloat);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pytorch_model.bin"), std::string::npos) << e.what();
  }
}
