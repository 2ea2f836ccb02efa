// LoRA adapters for training (generator/lora_training.h) on tiny random UNet and CLIP text models:
// the adapted forward equals the model fused by the LoRA loader (generator/lora.h) from the file
// the adapters write, gradients reach only the adapters, and bad ranks or targets give one error.
#include <gtest/gtest.h>
#include <torch/nn/modules/conv.h>
#include <torch/optim/sgd.h>
#include <torch/torch.h>

#include <cmath>

#include "core/safetensors.h"
#include "core/weights.h"
#include "generator/arc2face_pipeline.h"
#include "generator/clip_text_model.h"
#include "generator/lora.h"
#include "generator/lora_training.h"
#include "generator/model_init.h"
#include "generator/single_file.h"
#include "generator/unet_2d_condition.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"
#include "tests/support/tensor_compare.h"

namespace idsynth::generator {
namespace {

using test::error_of;

UNet2DConditionConfig tiny_unet_config() {
  UNet2DConditionConfig c;
  c.sample_size = 8;
  c.block_out_channels = {32, 64};
  c.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  c.layers_per_block = {1};
  c.cross_attention_dim = {32};
  c.attention_head_dim = {4};
  c.norm_num_groups = 8;
  c.check();
  return c;
}

CLIPTextConfig tiny_clip_config() {
  CLIPTextConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 37;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.max_position_embeddings = 8;
  c.projection_dim = 32;
  c.bos_token_id = 0;
  c.eos_token_id = 2;
  c.check();
  return c;
}

UNet2DCondition tiny_unet(uint64_t seed) {
  torch::manual_seed(seed);
  return UNet2DCondition(tiny_unet_config());
}

CLIPTextModel tiny_clip(uint64_t seed) {
  torch::manual_seed(seed);
  return CLIPTextModel(tiny_clip_config());
}

// Fixed UNet inputs: 2 latents 8x8, two timesteps, 6 tokens of width 32.
struct UNetInputs {
  at::Tensor sample, timestep, hidden;
};
UNetInputs unet_inputs() {
  at::Generator g = at::detail::createCPUGenerator(11);
  return {at::randn({2, 4, 8, 8}, g), torch::tensor({3, 700}, torch::kLong), at::randn({2, 6, 32}, g)};
}
at::Tensor run(UNet2DCondition& unet, const UNetInputs& in) { return unet->forward(in.sample, in.timestep, in.hidden); }

at::Tensor clip_ids() {
  at::Generator g = at::detail::createCPUGenerator(12);
  return at::randint(3, 64, {2, 8}, g);
}

TensorDict cloned_state(const torch::nn::Module& m) {
  TensorDict out;
  for (const auto& [name, t] : module_state(m)) out.insert(name, t.detach().clone());
  return out;
}

// A and B drawn at random (B is zero after construction, which would make any LoRA file a no-op).
void randomise(LoraAdapters& lora, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator g = at::detail::createCPUGenerator(seed);
  for (at::Tensor& p : lora.parameters()) p.copy_(0.1 * at::randn(p.sizes(), g));
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

std::string temp_file(const std::string& tag) { return test::temp_dir(tag) + "/lora.safetensors"; }

// ---- (a, d) the adapted forward equals the loader's fused model --------------------------------

// Round trip of one UNet adapter set: output with apply() vs a second model loaded with the fused
// weights of the written file. Returns the number of adapted layers.
int64_t expect_unet_round_trip(const LoraTrainOptions& options, const std::string& tag) {
  UNet2DCondition unet = tiny_unet(1);
  const TensorDict base = cloned_state(*unet);
  const UNetInputs in = unet_inputs();
  const at::Tensor plain = run(unet, in);

  LoraAdapters lora(*unet, "unet", options, 5);
  lora.apply();
  // Fresh adapters (B = 0) leave the model exactly as it was.
  EXPECT_TRUE(torch::equal(run(unet, in), plain));
  randomise(lora, 6);
  lora.apply();
  const at::Tensor adapted = run(unet, in);
  lora.restore();
  EXPECT_TRUE(torch::equal(run(unet, in), plain)) << "restore() puts W0 back";

  const std::string path = temp_file(tag);
  write_lora_file(path, {&lora}, at::kFloat);
  const LoraFile file = read_lora(path);
  EXPECT_EQ(file.form, LoraForm::kohya);
  EXPECT_EQ(static_cast<int64_t>(file.layers.size()), lora.layers());
  const TensorDict fused = fuse_loras(base, Component::kUNet, {{file, 1.0}}, ldm_unet_names(tiny_unet_config()));
  UNet2DCondition reference = tiny_unet(2);
  load_state_dict(*reference, fused);
  const at::Tensor expected = run(reference, in);
  // Same float32 update in the same order: equal to rounding of the forward pass (1e-6 relative).
  EXPECT_LE(max_rel_diff(adapted, expected), 1e-6);
  EXPECT_GT(max_rel_diff(adapted, plain), 1e-3) << "the adapters change the output";
  std::printf("%s: %lld layers, adapted vs fused max rel diff %.3g (vs base %.3g)\n", tag.c_str(),
              static_cast<long long>(lora.layers()), max_rel_diff(adapted, expected), max_rel_diff(adapted, plain));

  // fuse() writes the same weights the loader makes.
  lora.fuse();
  for (const auto& [name, t] : module_state(*unet)) EXPECT_TRUE(torch::equal(t, fused.at(name))) << name;
  EXPECT_NE(error_of([&] { lora.apply(); }).find("apply() after fuse()"), std::string::npos);
  return lora.layers();
}

TEST(LoraTraining, UNetAdaptersEqualTheLoaderFusedModel) {
  const int64_t layers = expect_unet_round_trip({}, "lora-train-unet");
  // attn1 + attn2, 4 projections each, in 1 down, 1 mid and 2 up transformer blocks.
  EXPECT_EQ(layers, 32);
}

TEST(LoraTraining, ConvolutionAdaptersRoundTrip) {
  LoraTrainOptions options;
  options.convolutions = true;
  options.targets.push_back("proj_in");  // a 1x1 Conv2d by name (use_linear_projection false)
  UNet2DCondition unet = tiny_unet(1);
  int64_t block_convs = 0, proj_in = 0;
  for (const auto& item : unet->named_modules()) {
    if (dynamic_cast<torch::nn::Conv2dImpl*>(item.value().get()) == nullptr) continue;
    const std::string& n = item.key();
    block_convs += n.find(".resnets.") != std::string::npos || n.find("samplers.") != std::string::npos;
    proj_in += n.size() >= 8 && n.compare(n.size() - 8, 8, ".proj_in") == 0;
  }
  EXPECT_EQ(block_convs, 23);  // resnet conv1/conv2/conv_shortcut, one down- and one upsampler
  const int64_t layers = expect_unet_round_trip(options, "lora-train-conv");
  EXPECT_EQ(layers, 32 + block_convs + proj_in);

  // The file's conv halves are kohya's: down [r, in, kh, kw], up [out, r, 1, 1]; conv_in/out untouched.
  LoraAdapters lora(*unet, "unet", options, 5);
  const std::string path = temp_file("lora-train-conv-shapes");
  write_lora_file(path, {&lora}, at::kFloat);
  const TensorDict t = SafeTensorsFile(path).all();
  EXPECT_EQ(t.at("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight").sizes().vec(), std::vector<int64_t>({4, 32, 3, 3}));
  EXPECT_EQ(t.at("lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight").sizes().vec(), std::vector<int64_t>({32, 4, 1, 1}));
  EXPECT_EQ(t.at("lora_unet_down_blocks_1_resnets_0_conv_shortcut.lora_down.weight").sizes().vec(),
            std::vector<int64_t>({4, 32, 1, 1}));
  EXPECT_EQ(t.at("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight").sizes().vec(), std::vector<int64_t>({4, 32, 1, 1}));
  EXPECT_FALSE(t.contains("lora_unet_conv_in.lora_down.weight"));
  EXPECT_FALSE(t.contains("lora_unet_conv_out.lora_down.weight"));
}

TEST(LoraTraining, TextEncoderAdaptersRoundTrip) {
  CLIPTextModel clip = tiny_clip(3);
  const TensorDict base = cloned_state(*clip);
  const at::Tensor ids = clip_ids();
  const at::Tensor plain = clip->forward(ids).last_hidden_state.detach();

  LoraTrainOptions options;  // the UNet's default targets, read as CLIP's q/k/v/out_proj
  options.rank = 2;
  options.alpha = 3;
  LoraAdapters lora(*clip, "text_encoder", options, 8);
  EXPECT_EQ(lora.layers(), 8);
  EXPECT_EQ(lora.layer_names().front(), "text_model.encoder.layers.0.self_attn.k_proj");  // module order
  randomise(lora, 9);
  at::Tensor adapted;
  {
    torch::NoGradGuard no_grad;  // apply() under no-grad gives the same forward
    lora.apply();
    adapted = clip->forward(ids).last_hidden_state;
  }
  lora.apply();
  // The same weights; the no-grad forward runs the batch-invariant oneDNN kernels
  // (core/invariant_kernels.h) and the recorded one libtorch's, so equal to float rounding.
  EXPECT_LE(test::max_abs_diff(clip->forward(ids).last_hidden_state.detach(), adapted), 1e-5);
  lora.restore();

  // One file for both components, as train-generator writes it.
  UNet2DCondition unet = tiny_unet(1);
  LoraAdapters unet_lora(*unet, "unet", {}, 5);
  const std::string path = temp_file("lora-train-te");
  write_lora_file(path, {&unet_lora, &lora}, at::kFloat, {{"idsynth_steps", "10"}});
  SafeTensorsFile st(path);
  EXPECT_TRUE(st.all().contains("lora_te_text_model_encoder_layers_1_self_attn_q_proj.lora_down.weight"));
  EXPECT_TRUE(st.all().contains("lora_te_text_model_encoder_layers_1_self_attn_out_proj.alpha"));
  EXPECT_EQ(st.metadata().at("idsynth_steps"), "10");
  EXPECT_EQ(st.metadata().at("ss_network_dim"), "4");
  const LoraFile file = read_lora(path);
  const std::string d = describe_lora(file);
  EXPECT_NE(d.find("LoRA (kohya form): 40 layers (UNet 32, text encoder 8), rank 2-4, alpha 3-4; targets: "),
            std::string::npos) << d;
  EXPECT_NE(d.find("q_proj x2"), std::string::npos) << d;

  // Half-precision files: the same names, BF16 halves, float32 alphas.
  const std::string bf16 = temp_file("lora-train-te-bf16");
  write_lora_file(bf16, {&lora}, at::kBFloat16);
  const TensorDict half = SafeTensorsFile(bf16).all();
  EXPECT_EQ(half.at("lora_te_text_model_encoder_layers_0_self_attn_v_proj.lora_up.weight").scalar_type(), at::kBFloat16);
  EXPECT_EQ(half.at("lora_te_text_model_encoder_layers_0_self_attn_v_proj.alpha").scalar_type(), at::kFloat);
  EXPECT_EQ(read_lora(bf16).layers.size(), 8u);

  const TensorDict fused = fuse_loras(base, Component::kTextEncoder, {{file, 1.0}});
  CLIPTextModel reference = tiny_clip(4);
  load_state_dict(*reference, fused);
  const at::Tensor expected = reference->forward(ids).last_hidden_state.detach();
  EXPECT_LE(max_rel_diff(adapted, expected), 1e-6);
  EXPECT_GT(max_rel_diff(adapted, plain), 1e-3);
}

// The path `sample --lora` takes: a pipeline loaded with the written file draws the images of the
// pipeline whose UNet and ID encoder carry the applied adapters (Arc2Face folder layout).
TEST(LoraTraining, WrittenFileLoadsInTheSamplingPipeline) {
  const std::string model = test::temp_dir("lora-train-model") + "/model";
  ModelInitOptions init;
  init.layout = "arc2face";
  write_random_model(model, init);
  const Arc2FaceModelPaths paths = Arc2FaceModelPaths::resolve(model);
  Arc2FacePipeline trained = Arc2FacePipeline::load(paths, {});
  LoraTrainOptions options;
  options.convolutions = true;
  LoraAdapters unet_lora(*trained.unet(), "unet", options, 1);
  LoraAdapters te_lora(*trained.encoder().model(), "text_encoder", {}, 2);
  randomise(unet_lora, 3);
  randomise(te_lora, 4);
  const std::string path = temp_file("lora-train-pipeline");
  write_lora_file(path, {&unet_lora, &te_lora}, at::kFloat);

  PipelineOptions with_file;
  with_file.loras = {{path, 1.0}};
  Arc2FacePipeline loaded = Arc2FacePipeline::load(paths, with_file);
  Arc2FacePipeline plain = Arc2FacePipeline::load(paths, {});
  at::Generator g = at::detail::createCPUGenerator(5);
  const at::Tensor ids = at::randn({2, trained.id_width()}, g);
  const at::Tensor latents = plain.draw_latents(7, 2, 32, 32);
  SampleOptions so;
  so.num_inference_steps = 3;
  torch::NoGradGuard no_grad;
  unet_lora.apply();
  te_lora.apply();
  const at::Tensor a = trained.sample(ids, latents, so);
  const at::Tensor b = loaded.sample(ids, latents, so);
  const at::Tensor c = plain.sample(ids, latents, so);
  // Images in [0, 1]; the weights are the same float32 numbers, so only kernel rounding may differ.
  std::printf("pipeline: --lora file vs applied adapters max |diff| %.3g, vs no LoRA %.3g\n",
              (a - b).abs().max().item<double>(), (a - c).abs().max().item<double>());
  EXPECT_LE((a - b).abs().max().item<double>(), 1e-6);
  EXPECT_GT((a - c).abs().max().item<double>(), 1e-2) << "the LoRA changes the images";
}

// ---- (b) gradients reach the adapters only ----------------------------------------------------

// Two SGD steps: B is zero at the first, so only B gets a gradient (dL/dA = s·Bᵀ·dL/dW = 0); after
// the step both do. Every base parameter stays frozen with no gradient.
template <typename Forward>
void expect_adapter_only_gradients(torch::nn::Module& root, LoraAdapters& lora, Forward forward) {
  const TensorDict before = cloned_state(root);
  torch::optim::SGD sgd(lora.parameters(), torch::optim::SGDOptions(0.5));
  const auto named = lora.named_parameters();
  for (int step = 0; step < 2; ++step) {
    sgd.zero_grad();
    lora.apply();
    const at::Tensor out = forward();
    ASSERT_TRUE(out.requires_grad()) << "the forward pass must build the autograd graph";
    out.pow(2).mean().backward();
    lora.restore();
    for (const auto& p : root.named_parameters()) {
      EXPECT_FALSE(p.value().requires_grad()) << p.key();
      EXPECT_FALSE(p.value().grad().defined()) << p.key();
    }
    for (size_t i = 0; i < named.size(); ++i) {
      const bool is_a = i % 2 == 0;
      const at::Tensor& g = named[i].second.grad();
      ASSERT_TRUE(g.defined()) << named[i].first;
      const double norm = g.abs().max().item<double>();
      if (step == 0 && is_a) EXPECT_EQ(norm, 0.0) << named[i].first;
      else EXPECT_GT(norm, 0.0) << "step " << step << " " << named[i].first;
    }
    sgd.step();
  }
  for (const auto& [name, t] : module_state(root)) EXPECT_TRUE(torch::equal(t, before.at(name))) << name;
}

TEST(LoraTraining, UNetGradientsReachOnlyTheAdapters) {
  UNet2DCondition unet = tiny_unet(1);
  LoraTrainOptions options;
  options.convolutions = true;
  LoraAdapters lora(*unet, "unet", options, 5);
  const UNetInputs in = unet_inputs();
  expect_adapter_only_gradients(*unet, lora, [&] { return run(unet, in); });
}

TEST(LoraTraining, TextEncoderGradientsAreTheChainRuleOfTheWeightGradient) {
  CLIPTextModel clip = tiny_clip(3);
  const at::Tensor ids = clip_ids();
  LoraAdapters lora(*clip, "text_encoder", {}, 8);
  expect_adapter_only_gradients(*clip, lora, [&] { return clip->forward(ids).last_hidden_state; });

  // dL/dB = s·dL/dW·Aᵀ and dL/dA = s·Bᵀ·dL/dW, with dL/dW from a plain model holding W0 + s·B·A.
  for (at::Tensor& p : lora.parameters()) p.mutable_grad() = at::Tensor();
  lora.apply();
  clip->forward(ids).last_hidden_state.pow(2).mean().backward();
  lora.restore();
  CLIPTextModel plain = tiny_clip(4);
  {
    LoraAdapters copy(*plain, "text_encoder", {}, 8);
    torch::NoGradGuard no_grad;
    const auto src = lora.parameters();
    auto dst = copy.parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
    load_state_dict(*plain, module_state(*clip));
    copy.fuse();
  }
  for (auto& p : plain->parameters()) p.set_requires_grad(true);
  plain->forward(ids).last_hidden_state.pow(2).mean().backward();
  const auto named = lora.named_parameters();
  const auto weights = plain->named_parameters();
  for (size_t i = 0; i < named.size(); i += 2) {
    const std::string layer = named[i].first.substr(0, named[i].first.size() - 14);  // ".lora_A.weight"
    const at::Tensor gw = weights[layer + ".weight"].grad();
    const at::Tensor& a = named[i].second;
    const at::Tensor& b = named[i + 1].second;
    const double s = lora.scale();
    const at::Tensor want_b = s * gw.mm(a.detach().t());
    const at::Tensor want_a = s * b.detach().t().mm(gw);
    // float32 products of the same sums in another order: 1e-4 of the largest entry.
    EXPECT_LE((b.grad() - want_b).abs().max().item<double>(), 1e-4 * want_b.abs().max().item<double>()) << layer;
    EXPECT_LE((a.grad() - want_a).abs().max().item<double>(), 1e-4 * want_a.abs().max().item<double>()) << layer;
  }
}

// ---- initialisation -----------------------------------------------------------------------------

TEST(LoraTraining, InitialisationIsPeftsAndDeterministic) {
  UNet2DCondition a = tiny_unet(1), b = tiny_unet(1);
  LoraAdapters la(*a, "unet", {}, 21), lb(*b, "unet", {}, 21);
  const auto pa = la.named_parameters(), pb = lb.named_parameters();
  ASSERT_EQ(pa.size(), 64u);
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::equal(pa[i].second, pb[i].second)) << pa[i].first;
    if (i % 2 == 1) {
      EXPECT_EQ(pa[i].second.abs().max().item<double>(), 0.0) << pa[i].first;
      continue;
    }
    // kaiming_uniform_(a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in 32 here. The largest
    // of 128 draws comes within 10% of the bound (probability of failing < 1e-5).
    const double bound = 1.0 / std::sqrt(static_cast<double>(pa[i].second.size(1)));
    const double m = pa[i].second.abs().max().item<double>();
    EXPECT_LE(m, bound * (1 + 1e-6)) << pa[i].first;
    EXPECT_GE(m, bound * 0.9) << pa[i].first;
  }
  EXPECT_FALSE(torch::equal(pa[0].second, pa[2].second)) << "layers draw in sequence from one generator";
  UNet2DCondition c = tiny_unet(1);
  LoraAdapters lc(*c, "unet", {}, 22);
  EXPECT_FALSE(torch::equal(lc.parameters()[0], pa[0].second));
  for (const auto& p : la.parameters()) EXPECT_TRUE(p.requires_grad() && p.is_leaf());
}

// ---- (c) bad options ----------------------------------------------------------------------------

TEST(LoraTraining, BadRankOrTargetsGiveOneErrorAndLeaveTheModel) {
  UNet2DCondition unet = tiny_unet(1);
  LoraTrainOptions options;
  options.rank = 64;
  std::string msg = error_of([&] { LoraAdapters lora(*unet, "unet", options, 0); });
  EXPECT_NE(msg.find("LoRA rank 64 is larger than down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q (32 x 32) "
                     "and 25 more layers"),
            std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;

  options.rank = 4;
  options.targets = {"to_q", "to_qq"};
  msg = error_of([&] { LoraAdapters lora(*unet, "unet", options, 0); });
  EXPECT_NE(msg.find("LoRA target 'to_qq' (unet): expected Linear or Conv2d layers whose names end in it, found none"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("to_q"), std::string::npos) << msg;

  CLIPTextModel clip = tiny_clip(3);
  options.targets = {"proj_in"};
  msg = error_of([&] { LoraAdapters lora(*clip, "text_encoder", options, 0); });
  EXPECT_NE(msg.find("LoRA target 'proj_in' (text_encoder)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("q_proj"), std::string::npos) << msg;

  // A conv rank check counts in·kh·kw: conv_shortcut 32->64 is 64 x 32.
  options = {};
  options.convolutions = true;
  options.targets = {};
  options.rank = 48;
  msg = error_of([&] { LoraAdapters lora(*unet, "unet", options, 0); });
  EXPECT_NE(msg.find("LoRA rank 48 is larger than down_blocks.0.resnets.0.conv1 (32 x 288)"), std::string::npos) << msg;

  for (const auto& p : unet->parameters()) EXPECT_TRUE(p.requires_grad()) << "a failed construction changes nothing";
}

}  // namespace
}  // namespace idsynth::generator
