// SplitMix64: the portable seed mixer and small generator behind every "function of (seed, epoch,
// position)" draw in idsynth's loaders (the same numbers on every platform and thread count, unlike
// std::shuffle or std::uniform_*_distribution).
#pragma once

#include <cstdint>

namespace idsynth {

// Advances `state` and returns the next output.
inline uint64_t splitmix64_next(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The output for state `x` (x itself unchanged).
inline uint64_t splitmix64(uint64_t x) { return splitmix64_next(x); }

// Two numbers into one well-mixed seed.
inline uint64_t mix_seeds(uint64_t a, uint64_t b) {
  uint64_t s = a ^ (b * 0x9e3779b97f4a7c15ULL);
  splitmix64_next(s);
  return splitmix64_next(s);
}

class SplitMixRng {
 public:
  explicit SplitMixRng(uint64_t seed) : state_(seed) {}
  double uniform() { return static_cast<double>(splitmix64_next(state_) >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
  bool chance(double p) { return p > 0 && uniform() < p; }
  int64_t randint(int64_t lo, int64_t hi) {  // inclusive
    return lo + static_cast<int64_t>(splitmix64_next(state_) % static_cast<uint64_t>(hi - lo + 1));
  }

 private:
  uint64_t state_;
};

}  // namespace idsynth
