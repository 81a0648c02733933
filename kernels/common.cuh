// Element types, conversions and warp reductions shared by every kernel family.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "launch.h"
#include "rng.h"  // splitmix64, uniformFromSeed, randomWeight: the host sampler and tensor reader have the same

namespace sb::kern {

template <typename T> __device__ __forceinline__ float toF(T v);
template <> __device__ __forceinline__ float toF<float>(float v) { return v; }
template <> __device__ __forceinline__ float toF<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float toF<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T fromF(float v);
template <> __device__ __forceinline__ float fromF<float>(float v) { return v; }
template <> __device__ __forceinline__ __half fromF<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Rounds through T: what a PyTorch op in dtype T stores.
template <typename T> __device__ __forceinline__ float roundT(float v) { return toF<T>(fromF<T>(v)); }

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum for blockDim.x a multiple of 32 (<= 1024); every thread gets the result.
__device__ __forceinline__ float blockSum(float v) {
  __shared__ float part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warpSum(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float r = lane < warps ? part[lane] : 0.0f;
  return warpSum(r);
}

// Calls f(T{}) for the run-time element type.
template <typename F>
int dispatch(Elem t, F&& f) {
  switch (t) {
    case Elem::F32: return f(float{});
    case Elem::F16: return f(__half{});
    case Elem::BF16: return f(__nv_bfloat16{});
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

inline int launched() { return static_cast<int>(cudaGetLastError()); }

// Threads per block for a row-per-block kernel over n elements.
inline int threadsFor(int n) { return n >= 1024 ? 1024 : n >= 256 ? 256 : n >= 128 ? 128 : 64; }

// Streaming multiprocessors of the current device, asked once (launchers size grids in waves).
inline int smCount() {
  static int n = 0;
  if (n == 0) {
    int dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
    if (n <= 0) n = 100;
  }
  return n;
}

// c += A (16 x 16, 16-bit: registers a0 (row g, k lo), a1 (row g + 8, k lo), a2 (row g, k hi), a3
// (row g + 8, k hi)) . B (16 x 8: b0 k lo, b1 k hi of column g) with fp32 accumulators: mma.sync m16n8k16,
// the tensor-core step of sgmvTcKernel, the prefill attention and quantMmaKernel (g = lane / 4).
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
#else
  __trap();
#endif
}

// Two floats as one register of T pairs (the first in the low half), rounded to nearest: mma operands.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

}  // namespace sb::kern
