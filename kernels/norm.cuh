// RMSNorm with an optional fused residual add, rounding where transformers rounds: the residual
// sum is stored in T, the normalised value is cast to T before the weight multiplies it (Llama's
// form; Gemma's (1 + w) form rounds once at the end). Also the per-head q/k norms.
#pragma once

#include "common.cuh"

namespace sb::kern {

// Gemma (OnePlus): the weight is (1 + w) in fp32 and the normalised value is not rounded before it
// multiplies (Gemma's RMSNorm computes x * rsqrt(...) * (1 + w) in fp32, then casts).
template <typename T, bool OnePlus = false>
__global__ void rmsnormKernel(const T* __restrict__ x, T* __restrict__ residual, const T* __restrict__ w, int hidden,
                              float eps, T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * hidden;
  T* rr = residual ? residual + row * hidden : nullptr;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    float v = toF(xr[i]);
    if (rr) {
      v = roundT<T>(v + toF(rr[i]));
      rr[i] = fromF<T>(v);
    }
    ss += v * v;
  }
  const float inv = rsqrtf(blockSum(ss) / hidden + eps);
  T* o = out + row * hidden;
  const T* src = rr ? rr : xr;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    if constexpr (OnePlus) o[i] = fromF<T>(toF(src[i]) * inv * (1.0f + toF(w[i])));
    else o[i] = fromF<T>(toF(w[i]) * roundT<T>(toF(src[i]) * inv));
  }
}

// Per-head RMSNorm in place (Qwen3's and Gemma 3's q_norm / k_norm over head_dim): row r holds
// `heads` vectors of `dim` at x + r * ld. A warp per (row, head); w [dim] is shared by every head.
template <typename T, bool OnePlus>
__global__ void headRmsnormKernel(T* __restrict__ x, int ld, int rows, int heads, int dim, const T* __restrict__ w, float eps) {
  const int warpsPerBlock = blockDim.x >> 5;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * warpsPerBlock + (threadIdx.x >> 5);
  if (item >= static_cast<int64_t>(rows) * heads) return;
  const int lane = threadIdx.x & 31;
  T* v = x + (item / heads) * ld + (item % heads) * dim;
  float ss = 0.0f;
  for (int i = lane; i < dim; i += 32) {
    const float f = toF(v[i]);
    ss += f * f;
  }
  const float inv = rsqrtf(warpSum(ss) / dim + eps);
  for (int i = lane; i < dim; i += 32) {
    if constexpr (OnePlus) v[i] = fromF<T>(toF(v[i]) * inv * (1.0f + toF(w[i])));
    else v[i] = fromF<T>(toF(w[i]) * roundT<T>(toF(v[i]) * inv));
  }
}

}  // namespace sb::kern
