// `idsynth init-model`: small random-weight Arc2Face models written in the real file layouts, so
// every command runs offline (quickstart, tests) through exactly the loading code that reads the
// real checkpoints.
#pragma once

#include <cstdint>
#include <string>

namespace idsynth::generator {

struct ModelInitOptions {
  // "diffusers": unet/ text_encoder/ vae/ scheduler/ model_index.json (StableDiffusionPipeline.save_pretrained);
  // "arc2face": arc2face/ (UNet) + encoder/ (pytorch_model.bin, a torch zip checkpoint) + vae/ scheduler/,
  // i.e. an Arc2Face download merged with the Stable Diffusion 1.5 parts it needs.
  std::string layout = "diffusers";
  // "tiny": the goldens' sizes (UNet channels 32/64/64, 16x16 latents); "small": a few times wider.
  std::string size = "tiny";
  // Width of the text encoder, hence the largest identity-vector width the model accepts.
  int64_t text_hidden_size = 64;
  int64_t seed = 0;
  // Also write recognizer.safetensors: a narrow random IResNet (arcface_torch names) whose embedding
  // width equals text_hidden_size, so the ID-consistency filter runs offline too. Its BatchNorm
  // statistics are set from one batch of noise, so its embeddings depend on the image.
  bool with_recognizer = false;
};

// Writes the model folder; throws idsynth::Error for bad options or an unwritable folder.
// Returns a one-line summary (parameter counts).
std::string write_random_model(const std::string& out_dir, const ModelInitOptions& options);

}  // namespace idsynth::generator
