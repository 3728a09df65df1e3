// Per-sample random streams for generated data sets: sample `index` of a set with `seed` always draws
// the same numbers, whatever order or thread it is generated in.
#pragma once
#include <cstdint>
#include <random>

namespace tessera::data {

// SplitMix64: decorrelates (seed, index) pairs into independent generator seeds.
inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  Rng(uint64_t seed, int64_t index) : engine_(mix(mix(seed) ^ static_cast<uint64_t>(index))) {}
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(engine_); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int64_t integer(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(engine_); }  // [lo, hi]
  // Index drawn with probability proportional to weights[i].
  template <typename Weights>
  int64_t weighted(const Weights& weights) {
    return std::discrete_distribution<int64_t>(weights.begin(), weights.end())(engine_);
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace tessera::data
