#include "generator/arc2face_id_encoder.h"

#include <torch/nn/functional/padding.h>

#include "core/check.h"

namespace idsynth::generator {

namespace {
std::vector<int64_t> make_ids(std::vector<int64_t> head) {
  constexpr int64_t kEndOfText = 49407;  // SD-1.5's tokenizer pads with <|endoftext|>
  head.resize(Arc2FaceIdEncoder::kSequenceLength, kEndOfText);
  return head;
}
}  // namespace

const std::vector<int64_t>& Arc2FaceIdEncoder::prompt_ids() {
  static const std::vector<int64_t> ids = make_ids({49406, 1125, 539, 320, 1014, 2533});
  return ids;
}

const std::vector<int64_t>& Arc2FaceIdEncoder::unconditional_ids() {
  static const std::vector<int64_t> ids = make_ids({49406});
  return ids;
}

Arc2FaceIdEncoder::Arc2FaceIdEncoder(CLIPTextModel model) : model_(std::move(model)) {
  IDSYNTH_CHECK(model_->config().max_position_embeddings >= kSequenceLength,
                "Arc2Face encoder: max_position_embeddings: expected >= ", kSequenceLength, ", found ",
                model_->config().max_position_embeddings);
  IDSYNTH_CHECK(model_->config().vocab_size > 49407, "Arc2Face encoder: vocab_size: expected the CLIP vocabulary (49408), found ",
                model_->config().vocab_size);
  const auto params = model_->parameters();
  IDSYNTH_CHECK(!params.empty(), "Arc2Face encoder: the text model has no parameters");
  device_ = params.front().device();
  dtype_ = params.front().scalar_type();
}

torch::Tensor Arc2FaceIdEncoder::ids_tensor(const std::vector<int64_t>& ids) const {
  return torch::tensor(ids, torch::TensorOptions().dtype(torch::kLong)).view({1, -1}).to(device_);
}

torch::Tensor Arc2FaceIdEncoder::token_embeds(const torch::Tensor& ids) {
  const int64_t hidden = hidden_size();
  IDSYNTH_CHECK(ids.dim() == 2, "Arc2Face encoder: ID embeddings: expected [N, D], found ", ids.sizes());
  IDSYNTH_CHECK(ids.size(1) <= hidden, "Arc2Face encoder: ID embeddings: expected width D <= hidden_size ", hidden,
                ", found ", ids.size(1));
  const int64_t n = ids.size(0);
  torch::NoGradGuard no_grad;
  // 1. token embeddings of the prompt, one row per identity
  auto embeds = model_->token_embeds(ids_tensor(prompt_ids())).expand({n, kSequenceLength, hidden}).clone();
  // 2. row 4 := [id, 0 ...]: zero-padded at the end, no learned projection
  auto padded = torch::nn::functional::pad(ids.to(device_, dtype_),
                                           torch::nn::functional::PadFuncOptions({0, hidden - ids.size(1)}));
  embeds.select(1, kIdTokenPosition).copy_(padded);
  return embeds;  // [N, 77, H]
}

CLIPTextOutput Arc2FaceIdEncoder::encode_full(const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  auto embeds = token_embeds(ids);
  return model_->forward_embeds(ids_tensor(prompt_ids()), embeds);
}

CLIPTextOutput Arc2FaceIdEncoder::unconditional_full() {
  torch::NoGradGuard no_grad;
  return model_->forward(ids_tensor(unconditional_ids()));
}

}  // namespace idsynth::generator
