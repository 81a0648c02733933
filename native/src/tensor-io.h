// Reads weight bytes out of safetensors files (offsets come from the TypeScript loader, which
// has already validated headers) and converts bf16 / fp16 / fp32 to fp32.
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>
#include <vector>

#include "../../kernels/rng.h"  // randomWeight: synthetic weights, the same as the device draws
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

// float8 e4m3fn -> fp32 (S.1111.111 is NaN).
float e4m3ToF32(uint8_t b);

// W [out, in] of a packed quantized weight, as fp32 (the layout's definition, engine.h).
std::vector<float> dequantPacked(const PackedWeight& w);

// Returns the tensor as fp32 (a packed weight dequantised), from its inline data or its file. Throws EngineError naming the
// tensor and file when the bytes cannot be read (file changed since it was validated, I/O error).
std::vector<float> readTensorF32(const TensorRef& t);

}  // namespace sb
