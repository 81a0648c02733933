// RMSNorm with an optional fused residual add, rounding where transformers rounds: the residual
// sum is stored in T, the normalised value is cast to T before the weight multiplies it.
#pragma once

#include "common.cuh"

namespace sb::kern {

template <typename T>
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
    o[i] = fromF<T>(toF(w[i]) * roundT<T>(toF(src[i]) * inv));
  }
}

}  // namespace sb::kern
