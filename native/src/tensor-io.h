// Reads weight bytes out of safetensors files (offsets come from the TypeScript loader, which
// has already validated headers) and converts bf16 / fp16 / fp32 to fp32.
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine.h"

namespace sb {

inline float bf16ToF32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float f16ToF32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise into an fp32 normal number
      int e = -1;
      do {
        e++;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | (exp + 127 - 15) << 23 | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

size_t dtypeSize(DType d);

// The synthetic weight at `index` of a random tensor: std * N(0, 1) from splitmix64(seed, index).
// kernels/elementwise.cuh draws the same numbers on the device (up to float rounding of log/cos).
inline float randomWeight(uint64_t seed, uint64_t index, float std) {
  auto mix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  const uint64_t h = mix(seed * 0x632be59bd9b4e019ULL ^ index);
  const float u1 = (static_cast<float>(h >> 40) + 0.5f) * (1.0f / 16777216.0f);
  const float u2 = static_cast<float>((h >> 16) & 0xffffff) * (1.0f / 16777216.0f);
  return std * std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
}

// Returns the tensor as fp32, from its inline data or its file. Throws EngineError naming the
// tensor and file when the bytes cannot be read (file changed since it was validated, I/O error).
std::vector<float> readTensorF32(const TensorRef& t);

}  // namespace sb
