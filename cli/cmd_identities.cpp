// idsynth identities: sample well-separated synthetic identity vectors.
#include <iostream>

#include <ATen/ATen.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/check.h"
#include "core/device.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/weights.h"
#include "dataset/identity_sampler.h"
#include "formats/identity_file.h"

namespace idsynth::cli {

int cmd_identities(const std::vector<std::string>& args) {
  dataset::IdentitySamplerOptions o;
  std::string gallery, like, out;
  int64_t seed = 0;
  po::options_description opts("options");
  SharedOptions shared;
  shared.device("the similarity products");
  opts.add_options()("count", po::value<int64_t>(&o.count)->default_value(o.count), "identities to sample")(
      "dim", po::value<int64_t>(&o.dim)->default_value(o.dim), "vector width (ArcFace: 512)")(
      "max-similarity", po::value<double>(&o.max_similarity)->default_value(o.max_similarity),
      "accept a vector only if its cosine to every accepted one is below this")(
      "gallery", po::value<std::string>(&gallery), "real people's embeddings [G, dim] to stay away from (.npy, safetensors or torch file)")(
      "max-gallery-similarity", po::value<double>(&o.max_gallery_similarity)->default_value(0.3),
      "maximum cosine to any gallery vector")(
      "like", po::value<std::string>(&like),
      "draw from the Gaussian fitted to these embeddings [L, dim] (mean, covariance) instead of the isotropic one: "
      "faces the recogniser knows, when it uses few directions of its space")("seed", po::value<int64_t>(&seed)->default_value(0), "random seed")(
      "out", po::value<std::string>(&out)->required(), "output .safetensors (tensor 'ids', [count, dim] float32)");
  auto parsed = parse_args("identities", "--count N [--dim 512] [--max-similarity 0.3] --out ids.safetensors",
                           "Samples Gaussian unit vectors (isotropic, or fitted to --like), keeping each only if its cosine to every kept vector (and\n"
                           "to every gallery vector) is below the threshold, and reports the acceptance rate and the\n"
                           "nearest-neighbour similarity histogram.",
                           opts, args, nullptr, &shared);
  if (parsed.help) return kExitOk;
  o.seed = static_cast<uint64_t>(seed);
  o.device = shared.device_value();
  if (!gallery.empty()) o.gallery = formats::read_vector_rows(gallery, "--gallery");
  if (!like.empty()) o.like = formats::read_vector_rows(like, "--like");
  log::Stopwatch timer;
  const auto sample = dataset::sample_identities(o);
  save_safetensors(out, {{"ids", sample.ids}},
                   {{"max_similarity", std::to_string(o.max_similarity)}, {"seed", std::to_string(seed)}});
  std::cout << dataset::describe(sample);
  LOG_INF("wrote ", out, " in ", timer.seconds(), " s");
  return kExitOk;
}

}  // namespace idsynth::cli
