// The embeddings of a whole `.bin` verification pack, streamed in batches: every image and (by
// default) its mirror image, as insightface's verification.py test() does before the 10-fold protocol.
// Ref: insightface recognition/arcface_torch/eval/verification.py (test: flip along W, batches).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>

#include "formats/bin_pack.h"
#include "recognition/recognizer.h"

namespace idsynth::eval {

struct EmbedOptions {
  int64_t batch_size = 64;
  bool flip = true;  // also embed the mirror image of every crop
};

struct PackEmbeddings {
  at::Tensor raw;       // (2P, D) float32
  at::Tensor raw_flip;  // (2P, D) float32, undefined without flip
  double seconds = 0.0;
};

// Decodes and embeds every image of the pack (and its mirror image) batch by batch.
PackEmbeddings embed_pack(const recognition::Recognizer& recognizer, const formats::BinPack& pack,
                          const EmbedOptions& options = {});

}  // namespace idsynth::eval
