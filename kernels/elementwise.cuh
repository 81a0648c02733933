// Small element-wise kernels: embedding gather (optionally scaled), SiLU(gate)*up, gelu-tanh(gate)*up,
// bias add, logit soft-capping, dtype conversion.
#pragma once

#include "common.cuh"

namespace sb::kern {

template <typename T>
__global__ void embeddingKernel(const T* __restrict__ table, const int32_t* __restrict__ tokens, int hidden,
                                T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const T* src = table + static_cast<int64_t>(tokens[row]) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) out[row * hidden + i] = src[i];
}

// Gemma's scaled embeddings: the scale is cast to T first (transformers multiplies by a tensor of
// the embedding's dtype), then one rounded product.
template <typename T>
__global__ void embeddingScaledKernel(const T* __restrict__ table, const int32_t* __restrict__ tokens, int hidden, float scale,
                                      T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const T* src = table + static_cast<int64_t>(tokens[row]) * hidden;
  const float sc = roundT<T>(scale);
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) out[row * hidden + i] = fromF<T>(toF(src[i]) * sc);
}

// gelu(gate, approximate="tanh") * up (Gemma's MLP), the activation rounded to T as torch stores it.
template <typename T>
__global__ void geluTanhMulKernel(const T* __restrict__ gate, const T* __restrict__ up, int ld, int inter, T* __restrict__ out) {
  const int64_t row = blockIdx.y;
  constexpr float kBeta = 0.7978845608028654f, kKappa = 0.044715f;  // sqrt(2 / pi)
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < inter; i += gridDim.x * blockDim.x) {
    const float g = toF(gate[row * ld + i]);
    const float act = roundT<T>(0.5f * g * (1.0f + tanhf(kBeta * (g + kKappa * g * g * g))));
    out[row * inter + i] = fromF<T>(act * toF(up[row * ld + i]));
  }
}

// x = cap * tanh(x / cap) over fp32 logits (Gemma 2's final-logit soft-capping).
__global__ void softcapKernel(float* __restrict__ x, int64_t n, float cap) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = cap * tanhf(x[i] / cap);
}

template <typename T>
__global__ void siluMulKernel(const T* __restrict__ gate, const T* __restrict__ up, int ld, int inter,
                              T* __restrict__ out) {
  const int64_t row = blockIdx.y;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < inter; i += gridDim.x * blockDim.x) {
    const float g = toF(gate[row * ld + i]);
    const float act = roundT<T>(g / (1.0f + __expf(-g)));
    out[row * inter + i] = fromF<T>(act * toF(up[row * ld + i]));
  }
}

template <typename T>
__global__ void addBiasKernel(T* __restrict__ y, const T* __restrict__ bias, int cols) {
  const int64_t row = blockIdx.y;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < cols; i += gridDim.x * blockDim.x)
    y[row * cols + i] = fromF<T>(toF(y[row * cols + i]) + toF(bias[i]));
}

// y[i] += z[i] over n elements, 8 per thread (16-byte accesses where both are aligned): the LoRA output a
// side stream computed beside the base GEMM (cuda-engine.cc loraJoin), added as PEFT adds lora_B's output.
template <typename T>
__global__ void addToKernel(T* __restrict__ y, const T* __restrict__ z, int64_t n, bool vec) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * 8;
  for (int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * 8; i < n; i += stride) {
    if (vec && i + 8 <= n) {
      uint4 a = *reinterpret_cast<const uint4*>(y + i);
      const uint4 b = *reinterpret_cast<const uint4*>(z + i);
      T* ae = reinterpret_cast<T*>(&a);
      const T* be = reinterpret_cast<const T*>(&b);
#pragma unroll
      for (int k = 0; k < 16 / static_cast<int>(sizeof(T)); k++) ae[k] = fromF<T>(toF(ae[k]) + toF(be[k]));
      if constexpr (sizeof(T) == 4) {
        uint4 c = *reinterpret_cast<const uint4*>(y + i + 4);
        const uint4 d = *reinterpret_cast<const uint4*>(z + i + 4);
        T* ce = reinterpret_cast<T*>(&c);
        const T* de = reinterpret_cast<const T*>(&d);
#pragma unroll
        for (int k = 0; k < 4; k++) ce[k] = fromF<T>(toF(ce[k]) + toF(de[k]));
        *reinterpret_cast<uint4*>(y + i + 4) = c;
      }
      *reinterpret_cast<uint4*>(y + i) = a;
    } else {
      for (int64_t k = i; k < min(i + 8, n); k++) y[k] = fromF<T>(toF(y[k]) + toF(z[k]));
    }
  }
}

template <typename T>
__global__ void convertF32Kernel(const float* __restrict__ src, T* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = fromF<T>(src[i]);
}

template <typename T>
__global__ void convert16Kernel(const uint16_t* __restrict__ src, bool srcIsBf16, T* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint16_t b = src[i];
    const float f = srcIsBf16 ? __bfloat162float(__ushort_as_bfloat16(b)) : __half2float(__ushort_as_half(b));
    dst[i] = fromF<T>(f);
  }
}

template <typename T>
__global__ void randomFillKernel(T* __restrict__ dst, int64_t n, uint64_t seed, float std) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = fromF<T>(randomWeight(seed, static_cast<uint64_t>(i), std));
  }
}

}  // namespace sb::kern
