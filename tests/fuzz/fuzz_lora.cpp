// libFuzzer entry point for LoRA files (generator/lora.h: read_lora, kohya / diffusers / peft forms),
// built only when generator/lora.cpp exists. The file is safetensors or a torch checkpoint; the
// fuzz input is the whole file.
#include <ATen/ATen.h>

#include <fstream>
#include <string>

#include <filesystem>

#include "core/check.h"
#include "core/safetensors.h"
#include "generator/lora.h"
#include "tests/fuzz/fuzz_parsers.h"

namespace idsynth::fuzz {

int lora(const uint8_t* data, size_t size) {
  static const std::string path = scratch("lora", ".safetensors");
  write_bytes(path, data, size);
  return guarded([&] {
    const generator::LoraFile f = generator::read_lora(path);
    (void)generator::describe_lora(f);
    for (const auto& l : f.layers) {
      if (l.down.defined()) (void)l.down.sum().item<double>();
      if (l.up.defined()) (void)l.up.sum().item<double>();
    }
  });
}

void write_lora_seeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  auto t = [](std::vector<int64_t> shape) { return at::rand(shape, at::TensorOptions().dtype(at::kFloat)); };
  const std::string kohya = "lora_unet_down_blocks_0_attentions_0_proj_in";
  save_safetensors(dir + "/kohya.safetensors", {{kohya + ".lora_down.weight", t({4, 8})},
                                                {kohya + ".lora_up.weight", t({8, 4})},
                                                {kohya + ".alpha", at::full({}, 4.0)},
                                                {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", t({2, 8})},
                                                {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", t({8, 2})}},
                   {{"ss_network_dim", "4"}});
  save_safetensors(dir + "/diffusers.safetensors",
                   {{"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight", t({4, 8})},
                    {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight", t({8, 4})},
                    {"unet.conv_in.lora.down.weight", t({2, 4, 3, 3})},
                    {"unet.conv_in.lora.up.weight", t({8, 2, 1, 1})}});
  save_safetensors(dir + "/peft.safetensors",
                   {{"unet.mid_block.attentions.0.proj_out.lora_A.weight", t({4, 8})},
                    {"unet.mid_block.attentions.0.proj_out.lora_B.weight", t({8, 4})},
                    {"text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_A.weight", t({2, 8})},
                    {"text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_B.weight", t({16, 2})}},
                   {{"lora_alpha", "8"}});
}

}  // namespace idsynth::fuzz
