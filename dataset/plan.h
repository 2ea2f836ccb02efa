// The generation plan: which identities go in which shard, which shards an array task owns, and
// the seed of every image. Pure functions of the config, so a dataset never depends on batch size,
// device count, task count or restarts (DESIGN.md, "Seeds").
#pragma once

#include "core/splitmix.h"

#include <cstdint>
#include <string>
#include <vector>

namespace idsynth::dataset {

// SplitMix64's output function (Steele, Lea, Flood 2014; the finaliser of java.util.SplittableRandom).
using idsynth::splitmix64;  // core/splitmix.h

// seed(run, identity, image, attempt): SplitMix64 applied in turn to the run seed and each index,
//   h = splitmix64(run); h = splitmix64(h ^ identity); h = splitmix64(h ^ image); h = splitmix64(h ^ attempt).
// The latent of the image is torch.randn((1, C, h, w), generator=torch.Generator().manual_seed(seed)).
uint64_t image_seed(uint64_t run_seed, int64_t identity, int64_t image, int64_t attempt);

struct ShardPlan {
  int64_t index = 0;           // k
  int64_t first_identity = 0;  // k * identities_per_shard
  int64_t identity_count = 0;  // min(S, n - k*S)
};

// Shards of `identities_per_shard` identities covering [0, n_identities).
std::vector<ShardPlan> plan_shards(int64_t n_identities, int64_t identities_per_shard);
// The shards an array task owns: k ≡ task_index (mod task_count).
std::vector<ShardPlan> shards_for_task(const std::vector<ShardPlan>& shards, int64_t task_index, int64_t task_count);

// One image slot of a shard in draw order: identity-major, then image index.
struct ImageSlot {
  int64_t identity = 0;  // global identity index
  int64_t local = 0;     // identity position within the shard
  int64_t image = 0;     // image number within the identity
};
std::vector<ImageSlot> shard_slots(const ShardPlan& shard, int64_t images_per_identity);

// Round r of a shard draws attempt r for the slots still missing, in slot order, cut into
// consecutive batches of `batch_size` (the last may be shorter): a fixed plan, so the UNet sees the
// same batches whichever worker, process or task runs the shard. Returns [begin, end) index pairs
// into `pending`.
std::vector<std::pair<size_t, size_t>> batch_ranges(size_t pending, int64_t batch_size);

}  // namespace idsynth::dataset
