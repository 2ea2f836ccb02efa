#include "generator/model_init.h"

#include <torch/nn/init.h>
#include <torch/utils.h>

#include <filesystem>

#include "core/check.h"
#include "core/json.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"
#include "core/weights.h"
#include "generator/autoencoder_kl.h"
#include "generator/clip_text_model.h"
#include "generator/unet_2d_condition.h"
#include "recognition/iresnet.h"

namespace idsynth::generator {
namespace {

namespace fs = std::filesystem;

// Default init leaves norm layers at weight 1 / bias 0 and biases small; randomising them as the
// goldens do makes every parameter matter, so a loader that drops one shows up in the outputs.
void randomise(torch::nn::Module& m, int64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
  for (auto& p : m.named_parameters()) {
    const std::string& name = p.key();
    at::Tensor t = p.value();
    const bool norm = name.find("norm") != std::string::npos || name.find("layer_norm") != std::string::npos;
    if (norm && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) {
      t.copy_(1.0 + 0.1 * at::randn(t.sizes(), gen));
    } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      t.copy_(0.02 * at::randn(t.sizes(), gen));
    }
  }
}

// Rounded to float16 values, stored as float16: the form real SD / Arc2Face downloads have.
TensorDict half_state(const torch::nn::Module& m) {
  TensorDict out;
  for (const auto& [name, t] : module_state(m))
    out.insert(name, t.is_floating_point() ? t.to(at::kHalf) : t);
  return out;
}

json::Value clip_config_json(const CLIPTextConfig& c) {
  json::Value j = json::Value::object();
  j.set("architectures", json::Value(json::Value::Array{json::Value("CLIPTextModel")}));
  j.set("attention_dropout", 0.0);
  j.set("bos_token_id", c.bos_token_id);
  j.set("dropout", 0.0);
  j.set("eos_token_id", c.eos_token_id);
  j.set("hidden_act", c.hidden_act);
  j.set("hidden_size", c.hidden_size);
  j.set("initializer_factor", 1.0);
  j.set("initializer_range", 0.02);
  j.set("intermediate_size", c.intermediate_size);
  j.set("layer_norm_eps", c.layer_norm_eps);
  j.set("max_position_embeddings", c.max_position_embeddings);
  j.set("model_type", "clip_text_model");
  j.set("num_attention_heads", c.num_attention_heads);
  j.set("num_hidden_layers", c.num_hidden_layers);
  j.set("pad_token_id", c.pad_token_id);
  j.set("projection_dim", c.projection_dim);
  j.set("torch_dtype", "float16");
  j.set("transformers_version", "4.36.0");
  j.set("vocab_size", c.vocab_size);
  return j;
}

// The scheduler Arc2Face ends up with (DPMSolverMultistepScheduler.from_config of SD-1.5's file).
json::Value scheduler_json() {
  return json::parse(R"({"_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.29.2",
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "trained_betas": null, "solver_order": 2, "prediction_type": "epsilon", "thresholding": false,
    "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++",
    "solver_type": "midpoint", "lower_order_final": true, "euler_at_final": false, "use_karras_sigmas": false,
    "use_lu_lambdas": false, "final_sigmas_type": "zero", "lambda_min_clipped": -Infinity, "variance_type": null,
    "timestep_spacing": "linspace", "steps_offset": 1, "rescale_betas_zero_snr": false, "skip_prk_steps": true,
    "set_alpha_to_one": false, "clip_sample": false})");
}

void write_json(const fs::path& path, const json::Value& v) {
  fs::create_directories(path.parent_path());
  json::write_file(path.string(), v);
}

}  // namespace

std::string write_random_model(const std::string& out_dir, const ModelInitOptions& o) {
  IDSYNTH_CHECK(o.layout == "diffusers" || o.layout == "arc2face", "init-model: --layout: expected diffusers or arc2face, found '",
                o.layout, "'");
  IDSYNTH_CHECK(o.size == "tiny" || o.size == "small" || o.size == "miniature",
                "init-model: --size: expected tiny, small or miniature, found '", o.size, "'");
  IDSYNTH_CHECK(o.text_hidden_size >= 8 && o.text_hidden_size % 4 == 0 && o.text_hidden_size <= 1024,
                "init-model: --text-hidden-size: expected a multiple of 4 in [8, 1024], found ", o.text_hidden_size);
  const int64_t width = o.size == "small" ? 64 : 32;
  // miniature: the size docs/miniature.md trains on two cores: 32x32 images through a 4x VAE, so the
  // UNet works on 8x8 latents.
  const bool miniature = o.size == "miniature";
  const fs::path root(out_dir);
  fs::create_directories(root);

  // Text encoder: CLIP with SD-1.5's vocabulary and sequence length, narrow.
  CLIPTextConfig text;
  text.hidden_size = o.text_hidden_size;
  text.intermediate_size = o.text_hidden_size + o.text_hidden_size / 4 + 1;
  text.num_hidden_layers = 2;
  text.num_attention_heads = 4;
  text.projection_dim = o.text_hidden_size;
  text.pad_token_id = 1;
  text.bos_token_id = 0;
  text.eos_token_id = 2;  // as SD-1.5's text_encoder config
  text.check();

  UNet2DConditionConfig unet;
  unet.sample_size = miniature ? 8 : 16;
  unet.block_out_channels = {width, 2 * width, 2 * width};
  unet.down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"};
  unet.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
  unet.layers_per_block = {2};
  unet.cross_attention_dim = {o.text_hidden_size};
  unet.attention_head_dim = {8};
  unet.norm_num_groups = 32;
  unet.check();

  AutoencoderKLConfig vae;
  if (miniature) {
    vae.block_out_channels = {width, 2 * width, 2 * width};
    vae.down_block_types = {"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"};
    vae.up_block_types = {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"};
  } else {
    vae.block_out_channels = {width, 2 * width};
    vae.down_block_types = {"DownEncoderBlock2D", "DownEncoderBlock2D"};
    vae.up_block_types = {"UpDecoderBlock2D", "UpDecoderBlock2D"};
  }
  vae.layers_per_block = 1;
  vae.sample_size = 32;
  vae.check();

  torch::manual_seed(static_cast<uint64_t>(o.seed) * 3 + 1);
  CLIPTextModel text_model(text);
  randomise(*text_model, o.seed * 3 + 1);
  torch::manual_seed(static_cast<uint64_t>(o.seed) * 3 + 2);
  UNet2DCondition unet_model(unet);
  randomise(*unet_model, o.seed * 3 + 2);
  torch::manual_seed(static_cast<uint64_t>(o.seed) * 3 + 3);
  AutoencoderKL vae_model(vae);
  randomise(*vae_model, o.seed * 3 + 3);

  const bool arc2face = o.layout == "arc2face";
  const fs::path unet_dir = root / (arc2face ? "arc2face" : "unet");
  const fs::path text_dir = root / (arc2face ? "encoder" : "text_encoder");
  write_json(unet_dir / "config.json", unet.to_json());
  save_safetensors((unet_dir / "diffusion_pytorch_model.safetensors").string(), half_state(*unet_model), {{"format", "pt"}});
  json::Value text_json = clip_config_json(text);
  if (arc2face) text_json.set("architectures", json::Value(json::Value::Array{json::Value("CLIPTextModelWrapper")}));
  write_json(text_dir / "config.json", text_json);
  if (arc2face) save_torch_checkpoint((text_dir / "pytorch_model.bin").string(), half_state(*text_model));
  else save_safetensors((text_dir / "model.safetensors").string(), half_state(*text_model), {{"format", "pt"}});
  write_json(root / "vae" / "config.json", vae.to_json());
  save_safetensors((root / "vae" / "diffusion_pytorch_model.safetensors").string(), half_state(*vae_model), {{"format", "pt"}});
  write_json(root / "scheduler" / "scheduler_config.json", scheduler_json());
  if (!arc2face) {
    write_json(root / "model_index.json", json::parse(R"({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.29.2",
      "feature_extractor": [null, null], "image_encoder": [null, null], "requires_safety_checker": false,
      "safety_checker": [null, null], "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
      "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
      "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})"));
  }
  if (o.with_recognizer) recognition::write_random_iresnet((root / "recognizer.safetensors").string(), o.text_hidden_size, o.seed);
  return cat(o.layout, " layout, ", o.size, ": UNet ", count_parameters(*unet_model), " parameters, text encoder ",
             count_parameters(*text_model), " (hidden ", text.hidden_size, "), VAE ", count_parameters(*vae_model),
             "; images ", *unet.sample_size * vae.spatial_factor(), "x", *unet.sample_size * vae.spatial_factor(), " by default");
}

}  // namespace idsynth::generator
