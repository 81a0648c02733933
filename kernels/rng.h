// Counter-based randomness shared by host and device code: the CPU sampler (native/src/sampler.cc),
// the device sampler (sampling.cuh), and synthetic weights on both sides (native/src/tensor-io.cc,
// elementwise.cuh). One definition, so a draw or a random weight is the same number whichever
// engine computes it; no per-sequence state, so a draw depends only on (seed, position).
// Plain C++ for the host compiler; under nvcc every function is also a device function.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SB_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SB_HOST_DEVICE inline
#endif

namespace sb {

// Steele, Lea and Flood's SplitMix64 finaliser.
SB_HOST_DEVICE uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform double in [0, 1) for the sampling draw of the token at `position` of a sequence seeded `seed`.
SB_HOST_DEVICE double uniformFromSeed(uint64_t seed, uint64_t position) {
  const uint64_t h = splitmix64(splitmix64(seed) ^ (position * 0xd1b54a32d192ed03ULL));
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

// The synthetic weight at `index` of a random tensor: std * N(0, 1) by Box-Muller from one hash.
// Host and device agree up to the float rounding of their log and cos.
SB_HOST_DEVICE float randomWeight(uint64_t seed, uint64_t index, float std) {
  const uint64_t h = splitmix64(seed * 0x632be59bd9b4e019ULL ^ index);
  const float u1 = (static_cast<float>(h >> 40) + 0.5f) * (1.0f / 16777216.0f);
  const float u2 = static_cast<float>((h >> 16) & 0xffffff) * (1.0f / 16777216.0f);
  return std * sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

}  // namespace sb
