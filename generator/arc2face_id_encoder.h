// Arc2Face's ID conditioning: the fixed prompt "photo of a id person" whose "id" token embedding is
// replaced by the (zero-padded) ArcFace vector, run through the fine-tuned CLIP text encoder.
// Ref: foivospar/Arc2Face arc2face/utils.py (project_face_embs), arc2face/models.py
//      (CLIPTextModelWrapper); reference/arc2face.md sections 3 and 4.
#pragma once

#include <torch/types.h>

#include <vector>

#include "generator/clip_text_model.h"

namespace idsynth::generator {

class Arc2FaceIdEncoder {
 public:
  static constexpr int64_t kSequenceLength = 77;
  static constexpr int64_t kIdTokenPosition = 4;  // "id</w>" = 1014 in the prompt below

  explicit Arc2FaceIdEncoder(CLIPTextModel model);

  // [49406, 1125, 539, 320, 1014, 2533, 49407 x71]: the SD-1.5 tokenisation of the fixed prompt.
  static const std::vector<int64_t>& prompt_ids();
  // [49406, 49407 x76]: the empty prompt diffusers encodes for the negative side of CFG.
  static const std::vector<int64_t>& unconditional_ids();

  // The encoder input for ids [N, D] (D <= hidden_size): token embeddings of the prompt with row 4
  // replaced by [id, 0...]; [N, 77, H] in the model's dtype and device.
  torch::Tensor token_embeds(const torch::Tensor& ids);
  // last_hidden_state (and pooled output) for ids [N, D]: the UNet conditioning [N, 77, H].
  CLIPTextOutput encode_full(const torch::Tensor& ids);
  torch::Tensor encode(const torch::Tensor& ids) { return encode_full(ids).last_hidden_state; }
  // The encoder on the empty prompt: [1, 77, H].
  CLIPTextOutput unconditional_full();
  torch::Tensor unconditional() { return unconditional_full().last_hidden_state; }

  int64_t hidden_size() const { return model_->config().hidden_size; }
  CLIPTextModel& model() { return model_; }

 private:
  torch::Tensor ids_tensor(const std::vector<int64_t>& ids) const;

  CLIPTextModel model_;
  torch::Device device_{torch::kCPU};
  torch::ScalarType dtype_ = torch::kFloat;
};

}  // namespace idsynth::generator
