// Weight-only quantized linear layers: W [out, in] in the engines' packed layout (launch.h QuantWeight,
// native/quantized/packed.ts), activations in T, fp32 accumulation.
//  - quantGemvKernel: decode-sized batches. Each warp owns kRowsPerWarp output rows and a slice of the
//    inputs; lane l reads packed word l, l + 32, ... of each of its rows (coalesced: 128 bytes a warp a row
//    for q4), dequantises its 8 weights in registers and multiplies them into up to MT activation rows,
//    so every packed weight is read once per pass. Scale (and zero point) per output row and group; the
//    scale multiplies the group's partial dot product. Inputs are split over blockIdx.y (split-K) when the
//    output alone gives too few blocks; the slices' fp32 partial sums are added in order by
//    quantReduceKernel (deterministic: no atomics).
//  - quantDequantKernel: W as T (permutation undone), for long prompt chunks that then run a tensor-core
//    GEMM (cuBLAS, in the engine).
//  - quantPermuteKernel: x in the kernel's input order (act-order GPTQ: perm sorts inputs by group).
#pragma once

#include "common.cuh"

namespace sb::kern {

constexpr int kQuantThreads = 256;
constexpr int kQuantRowsPerWarp = 4;
constexpr int kQuantRowsPerBlock = (kQuantThreads / 32) * kQuantRowsPerWarp;

// Eight inputs x[k .. k + 8) of one activation row as fp32 (16-byte loads; k a multiple of 8).
template <typename T> __device__ __forceinline__ void load8(const T* p, float (&v)[8]);
template <> __device__ __forceinline__ void load8<float>(const float* p, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
template <> __device__ __forceinline__ void load8<__half>(const __half* p, float (&v)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 f = __half22float2(h[i]);
    v[2 * i] = f.x, v[2 * i + 1] = f.y;
  }
}
template <> __device__ __forceinline__ void load8<__nv_bfloat16>(const __nv_bfloat16* p, float (&v)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    // bf16 -> fp32 is a shift: exact.
    v[2 * i] = __uint_as_float(w[i] << 16);
    v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// float8 e4m3fn -> fp32, exactly: the 7 magnitude bits placed at fp32's exponent/mantissa boundary give
// 2^-120 times the value (subnormals included: fp32 keeps denormals without -ftz), then the sign.
__device__ __forceinline__ float e4m3ToFloat(uint32_t b) {
  return __uint_as_float(((b & 0x80u) << 24) | ((b & 0x7fu) << 20)) * 1.329227995784916e36f;  // 2^120
}

// The 8 values (before zero and scale) of one packed step of 8 inputs held in registers: q4, 8 nibbles of lo
// (nibble j is input j); q8, the bytes of lo then hi (byte j is input j).
template <int CB>
__device__ __forceinline__ void decodeStep(uint32_t lo, uint32_t hi, const float* lut, float (&v)[8]) {
  if constexpr (CB == static_cast<int>(QuantCodebook::Lut4)) {
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = lut[(lo >> (4 * j)) & 0xfu];
  } else {
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const uint32_t c = ((j < 4 ? lo : hi) >> (8 * (j & 3))) & 0xffu;
      if constexpr (CB == static_cast<int>(QuantCodebook::U8)) v[j] = float(c);
      else if constexpr (CB == static_cast<int>(QuantCodebook::S8)) v[j] = float(int(int8_t(c)));
      else v[j] = e4m3ToFloat(c);
    }
  }
}

// The 8 weights of packed step `word` (inputs 8 word .. 8 word + 7) of a row, before zero and scale.
template <int CB>
__device__ __forceinline__ void decode8(const void* codes, int64_t rowWords, int o, int word, const float* lut, float (&v)[8]) {
  if constexpr (CB == static_cast<int>(QuantCodebook::Lut4)) {
    decodeStep<CB>(__ldg(static_cast<const uint32_t*>(codes) + int64_t(o) * rowWords + word), 0u, lut, v);
  } else {
    const uint2 u = __ldg(static_cast<const uint2*>(codes) + int64_t(o) * rowWords + word);
    decodeStep<CB>(u.x, u.y, lut, v);
  }
}

// y (row stride ldy; or, with splits, partial[blockIdx.y]) [rows, out] = x [rows, in] W^T over this block's input slice
// [blockIdx.y * sliceWords, ...) in packed steps of 8 inputs. rows <= MT.
template <typename T, int CB, int MT>
__global__ void __launch_bounds__(kQuantThreads) quantGemvKernel(const T* __restrict__ x, int rows, QuantWeight w, int sliceWords,
                                                                 T* __restrict__ y, int ldy, float* __restrict__ partial) {
  __shared__ float lut[16];
  if (CB == static_cast<int>(QuantCodebook::Lut4) && threadIdx.x < 16) lut[threadIdx.x] = w.lut[threadIdx.x];
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int o0 = blockIdx.x * kQuantRowsPerBlock + warp * kQuantRowsPerWarp;
  const int words = w.in / 8, groups = (w.in + w.groupSize - 1) / w.groupSize, wordsPerGroup = w.groupSize / 8;
  const int64_t rowWords = words;
  const int begin = blockIdx.y * sliceWords, end = min(words, begin + sliceWords);
  float acc[kQuantRowsPerWarp][MT];
#pragma unroll
  for (int r = 0; r < kQuantRowsPerWarp; r++)
#pragma unroll
    for (int m = 0; m < MT; m++) acc[r][m] = 0.0f;
  for (int word = begin + lane; word < end; word += 32) {
    // Groups hold whole packed steps (groupSize a multiple of 8, or one group): one division a step.
    const int g = wordsPerGroup > 0 ? word / wordsPerGroup : 0;
    float wv[kQuantRowsPerWarp][8];
    float scale[kQuantRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kQuantRowsPerWarp; r++) {
      const int o = min(o0 + r, w.out - 1);  // rows past the end compute a copy of the last, never stored
      decode8<CB>(w.codes, rowWords, o, word, lut, wv[r]);
      scale[r] = __ldg(w.scales + int64_t(o) * groups + g);
      if (w.zeros) {
        const float z = __ldg(w.zeros + int64_t(o) * groups + g);
#pragma unroll
        for (int j = 0; j < 8; j++) wv[r][j] -= z;
      }
    }
#pragma unroll
    for (int m = 0; m < MT; m++) {
      if (m >= rows) break;
      float xv[8];
      load8<T>(x + int64_t(m) * w.in + int64_t(word) * 8, xv);
#pragma unroll
      for (int r = 0; r < kQuantRowsPerWarp; r++) {
        float d = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) d = fmaf(xv[j], wv[r][j], d);
        acc[r][m] = fmaf(d, scale[r], acc[r][m]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kQuantRowsPerWarp; r++) {
#pragma unroll
    for (int m = 0; m < MT; m++) {
      if (m >= rows) break;
      const float v = warpSum(acc[r][m]);
      const int o = o0 + r;
      if (lane == 0 && o < w.out) {
        if (partial) partial[(int64_t(blockIdx.y) * rows + m) * w.out + o] = v;
        else y[int64_t(m) * ldy + o] = fromF<T>(v);
      }
    }
  }
}

// y [rows, out] (row stride ldy) = the sum of `splits` partial results [rows, out], in order.
template <typename T>
__global__ void quantReduceKernel(const float* __restrict__ partial, int splits, int rows, int out, T* __restrict__ y, int ldy) {
  const int64_t n = int64_t(rows) * out;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int k = 0; k < splits; k++) s += partial[k * n + i];
    y[(i / out) * ldy + i % out] = fromF<T>(s);
  }
}

// dst [out, in] in T: W with the permutation undone (one packed step of 8 weights a thread).
template <typename T, int CB>
__global__ void quantDequantKernel(QuantWeight w, T* __restrict__ dst) {
  __shared__ float lut[16];
  if (CB == static_cast<int>(QuantCodebook::Lut4) && threadIdx.x < 16) lut[threadIdx.x] = w.lut[threadIdx.x];
  __syncthreads();
  const int words = w.in / 8, groups = (w.in + w.groupSize - 1) / w.groupSize, wordsPerGroup = w.groupSize / 8;
  const int64_t n = int64_t(w.out) * words;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int o = int(i / words), word = int(i % words);
    const int g = wordsPerGroup > 0 ? word / wordsPerGroup : 0;
    float v[8];
    decode8<CB>(w.codes, words, o, word, lut, v);
    const float s = w.scales[int64_t(o) * groups + g], z = w.zeros ? w.zeros[int64_t(o) * groups + g] : 0.0f;
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const int k = word * 8 + j;
      dst[int64_t(o) * w.in + (w.perm ? w.perm[k] : k)] = fromF<T>((v[j] - z) * s);
    }
  }
}

// xp [rows, in] = x [rows, in] with columns in the kernel's order: xp[r, k] = x[r, perm[k]].
template <typename T>
__global__ void quantPermuteKernel(const T* __restrict__ x, const int32_t* __restrict__ perm, int rows, int in, T* __restrict__ xp) {
  const int64_t n = int64_t(rows) * in;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / in;
    xp[i] = x[r * in + perm[i % in]];
  }
}

}  // namespace sb::kern
