// Ref: insightface arcface_torch/eval/verification.py (see pack_embeddings.h).
#include "eval/pack_embeddings.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "core/check.h"
#include "core/log.h"

namespace idsynth::eval {

PackEmbeddings embed_pack(const recognition::Recognizer& recognizer, const formats::BinPack& pack,
                          const EmbedOptions& options) {
  IDSYNTH_CHECK(options.batch_size >= 1, "verify: batch size: expected at least 1, found ", options.batch_size);
  log::Stopwatch sw;
  std::vector<at::Tensor> raw, flipped;
  for (int64_t begin = 0; begin < pack.num_images(); begin += options.batch_size) {
    const int64_t end = std::min(pack.num_images(), begin + options.batch_size);
    const at::Tensor rgb = formats::decode_bin_images(pack, begin, end);  // [B, H, W, 3]
    raw.push_back(recognizer.embed_rgb(rgb));
    if (options.flip) flipped.push_back(recognizer.embed_rgb(rgb.flip({2}).contiguous()));  // mirror along W
  }
  PackEmbeddings out;
  out.raw = at::cat(raw, 0);
  if (options.flip) out.raw_flip = at::cat(flipped, 0);
  out.seconds = sw.seconds();
  const int64_t images = pack.num_images() * (options.flip ? 2 : 1);
  LOG_INF(pack.path, ": embedding ", images, " images completed, taking ", out.seconds, " s (",
          static_cast<double>(images) / std::max(out.seconds, 1e-9), " images/s, batch ", options.batch_size, ")");
  return out;
}

}  // namespace idsynth::eval
