// Training LoRA adapters on the UNet (and optionally the text encoder): each targeted Linear or
// Conv2d layer keeps its weight W0 frozen and gains a rank-r pair down (A) / up (B), initialised as
// peft does (A Kaiming-uniform with a = sqrt(5), B zero, so training starts at the base model).
// Before every forward pass apply() points the layer's weight at W0 + (alpha/r)·B·A (a tensor in
// the autograd graph, as torch.nn.utils.parametrize does), so the existing forward code, the
// inference fast paths excepted, trains the adapters unchanged. The result is written as a kohya
// LoRA file (lora_unet_… / lora_te_… with .alpha), which `sample --lora` and `model.loras` load.
// Ref: peft tuners/lora/layer.py (LoraLayer.update_layer, reset_lora_parameters, get_delta_weight),
//      kohya-ss sd-scripts networks/lora.py (names, alpha), generator/lora.h (the loader).
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace idsynth::generator {

struct LoraTrainOptions {
  int64_t rank = 4;
  double alpha = 0;  // 0: alpha = rank (scale 1)
  // Module name suffixes trained (diffusers names, whole dotted components; a Linear or a Conv2d):
  // the attention projections by default, which the text encoder reads as CLIP's q_proj, k_proj,
  // v_proj, out_proj. Every target must match at least one layer of the component. With
  // `convolutions` also every Conv2d of the resnets and down/upsamplers (kohya's LoCon set:
  // conv_in and conv_out stay frozen, as kohya leaves them; conv_out's 4 channels would cap the rank).
  std::vector<std::string> targets = {"to_q", "to_k", "to_v", "to_out.0"};
  bool convolutions = false;
};

class LoraAdapters {
 public:
  // Adds adapters to the matching layers of `root`, a UNet2DCondition ("unet") or a CLIPTextModel
  // ("text_encoder"). Freezes every parameter of `root` (requires_grad false) and makes the adapter
  // weights the only trainable ones. Throws one line when nothing matches, or when the rank exceeds
  // a layer's smaller side ("LoRA rank 64 is larger than down_blocks.0....to_q (32 x 32)"; a
  // convolution's sides are out and in·kh·kw). Nothing is changed when it throws.
  // Initial A values come from a CPU generator seeded `seed` (layers in module order, named_modules(),
  // as peft initialises them); A and B are float32 on the layer's device.
  LoraAdapters(torch::nn::Module& root, std::string component, const LoraTrainOptions& options, uint64_t seed);
  ~LoraAdapters();  // restore()
  LoraAdapters(const LoraAdapters&) = delete;
  LoraAdapters& operator=(const LoraAdapters&) = delete;

  // A and B of every adapter (A0, B0, A1, ...), in module order (the optimiser's parameters).
  std::vector<at::Tensor> parameters() const;
  // "<layer>.lora_A.weight" / "<layer>.lora_B.weight" -> tensor (checkpoints).
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  // Sets every adapted layer's weight member to W0 + scale·B·A (in the graph). Call before each
  // forward pass in training; the layers' registered parameters stay W0.
  void apply();
  // Points the layers back at W0.
  void restore();
  // W0 + scale·B·A written into the registered weights (inference after training; not undoable:
  // apply() throws afterwards).
  void fuse();

  int64_t layers() const;
  double scale() const;  // alpha / rank
  // The adapted layers' module names, in module order.
  std::vector<std::string> layer_names() const;
  const std::string& component() const { return component_; }
  const LoraTrainOptions& options() const { return options_; }

 private:
  struct Adapter;
  std::string component_;
  LoraTrainOptions options_;
  std::vector<Adapter> adapters_;
  bool fused_ = false;
};

// Writes the adapters as one kohya LoRA safetensors file, atomically (tmp + rename): per layer
// "lora_unet_<name with _>.lora_down.weight" [r, in(, k, k)], ".lora_up.weight" [out, r(, 1, 1)],
// ".alpha" (0-d float32); text encoder layers as "lora_te_text_model_…". Weights in `dtype`.
// `metadata` goes into the file's __metadata__ (ss_network_module, ss_network_dim, ss_network_alpha
// set from the first adapter set).
void write_lora_file(const std::string& path, const std::vector<const LoraAdapters*>& adapters, c10::ScalarType dtype,
                     const std::map<std::string, std::string>& metadata = {});

}  // namespace idsynth::generator
