#include "dataset/plan.h"

#include <algorithm>
#include <cstdio>

#include "core/check.h"

namespace idsynth::dataset {

uint64_t image_seed(uint64_t run_seed, int64_t identity, int64_t image, int64_t attempt) {
  uint64_t h = splitmix64(run_seed);
  h = splitmix64(h ^ static_cast<uint64_t>(identity));
  h = splitmix64(h ^ static_cast<uint64_t>(image));
  return splitmix64(h ^ static_cast<uint64_t>(attempt));
}

std::vector<ShardPlan> plan_shards(int64_t n_identities, int64_t identities_per_shard) {
  IDSYNTH_CHECK(n_identities >= 0, "generation plan: identities: expected >= 0, found ", n_identities);
  IDSYNTH_CHECK(identities_per_shard >= 1, "generation plan: output.identities_per_shard: expected >= 1, found ",
                identities_per_shard);
  std::vector<ShardPlan> shards;
  for (int64_t first = 0, k = 0; first < n_identities; first += identities_per_shard, ++k)
    shards.push_back({k, first, std::min(identities_per_shard, n_identities - first)});
  return shards;
}

std::vector<ShardPlan> shards_for_task(const std::vector<ShardPlan>& shards, int64_t task_index, int64_t task_count) {
  IDSYNTH_CHECK(task_count >= 1, "generation plan: task count: expected >= 1, found ", task_count);
  IDSYNTH_CHECK(task_index >= 0 && task_index < task_count, "generation plan: task index: expected 0 <= index < ",
                task_count, ", found ", task_index);
  std::vector<ShardPlan> mine;
  for (const auto& s : shards)
    if (s.index % task_count == task_index) mine.push_back(s);
  return mine;
}

std::vector<ImageSlot> shard_slots(const ShardPlan& shard, int64_t images_per_identity) {
  std::vector<ImageSlot> slots;
  slots.reserve(static_cast<size_t>(shard.identity_count * images_per_identity));
  for (int64_t i = 0; i < shard.identity_count; ++i)
    for (int64_t j = 0; j < images_per_identity; ++j) slots.push_back({shard.first_identity + i, i, j});
  return slots;
}

std::vector<std::pair<size_t, size_t>> batch_ranges(size_t pending, int64_t batch_size) {
  IDSYNTH_CHECK(batch_size >= 1, "generation plan: generation.batch_size: expected >= 1, found ", batch_size);
  std::vector<std::pair<size_t, size_t>> ranges;
  const auto b = static_cast<size_t>(batch_size);
  for (size_t begin = 0; begin < pending; begin += b) ranges.emplace_back(begin, std::min(pending, begin + b));
  return ranges;
}

}  // namespace idsynth::dataset
