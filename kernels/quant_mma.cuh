// Weight-only quantized GEMM on tensor cores for decode-sized steps (quantGemv's mma path, chosen by
// SWITCHBOARD_QUANT_KERNEL=mma or setQuantKernel; launch.h). Why: quantGemvKernel decodes every weight
// on CUDA cores and multiplies it into at most 16 activation rows per pass, so at batch 64 each packed
// weight is read and decoded four times and the FMAs dominate (Mistral-7B int4, batch 64: 93 ms a step
// against a ~1.5 ms floor). Here each packed weight is read and dequantised once per 64 rows and the
// products run as mma.sync m16n8k16 (16-bit inputs, fp32 accumulators).
//
// A block is 4 warps over 128 consecutive outputs and one slice of the inputs (split-K over
// blockIdx.y; the slices' fp32 sums are added in order by quantReduceKernel, as the GEMV's are). A warp
// owns 32 outputs (two 16-row m tiles) and all rows of the pass (up to eight 8-row n tiles). The inputs
// go in k blocks of 128 = 4 chunks of 32 = 8 mma k steps. The k order inside a block is permuted so
// that each lane reads contiguous bytes of both operands (the mma sums over k: any order works when
// both operands use the same one): lane (g = lane / 4, t = lane % 4) owns physical inputs
// kb + 32 t .. kb + 32 t + 31 of its weight rows (g, g + 8 of each m tile: one 16-byte read of q4 codes,
// 32 bytes of q8) and of its activation row (g of each n tile: one 16-byte read per chunk). In k step
// s = (chunk c = s / 2, half h = s % 2) the mma's logical inputs 2t, 2t + 1 hold physical
// kb + 32 t + 8 c + 4 h + {0, 1} and logical 2t + 8, 2t + 9 hold physical ... + 4 h + {2, 3}; over the
// 8 steps and 4 lanes t that is every input of the block once.
// Weights are dequantised to T as the reference dequantises them, w = T((value(code) - zero) * scale)
// per element, so the products are those of x and the 16-bit weights. kernels/test/quant_mma_mirror.py
// mirrors this index math lane by lane (numpy, no GPU); test_quant_gemm.py checks the kernel itself.
#pragma once

#include "quant_gemm.cuh"

namespace sb::kern {

constexpr int kQmmaWarps = 4;
constexpr int kQmmaThreads = kQmmaWarps * 32;
constexpr int kQmmaMTiles = 2;                                     // 16-output m tiles per warp
constexpr int kQmmaOutsPerBlock = kQmmaWarps * kQmmaMTiles * 16;  // 128
constexpr int kQmmaK = 128;                                        // inputs per k block
constexpr int kQmmaMaxRows = 64;                                   // activation rows per pass (8 n tiles)

// One weight row's packed codes for a lane's 32 inputs of a k block: q4 16 bytes (4 words of 8 codes),
// q8 32 bytes (8 words of 4). Zero where the run lies past the row's end (in % 32 == 0: all or nothing).
template <int CB>
struct QmmaRun {
  static constexpr bool Q4 = CB == static_cast<int>(QuantCodebook::Lut4);
  uint4 u[Q4 ? 1 : 2];
};

template <int CB>
__device__ __forceinline__ void qmmaLoad(QmmaRun<CB>& r, const uint8_t* codes, int in, int o, int k, bool valid) {
  if (!valid) {
#pragma unroll
    for (int i = 0; i < (QmmaRun<CB>::Q4 ? 1 : 2); i++) r.u[i] = make_uint4(0u, 0u, 0u, 0u);
    return;
  }
  if constexpr (QmmaRun<CB>::Q4) {
    r.u[0] = __ldg(reinterpret_cast<const uint4*>(codes + int64_t(o) * (in / 2) + k / 2));
  } else {
    const uint4* p = reinterpret_cast<const uint4*>(codes + int64_t(o) * in + k);
    r.u[0] = __ldg(p);
    r.u[1] = __ldg(p + 1);
  }
}

// The 8 codes of chunk c (physical inputs 8c .. 8c + 7 of the run) as values before zero and scale.
template <int CB>
__device__ __forceinline__ void qmmaDecode(const QmmaRun<CB>& r, int c, const float* lut, float (&v)[8]) {
  const uint32_t* w = reinterpret_cast<const uint32_t*>(r.u);
  if constexpr (QmmaRun<CB>::Q4) decodeStep<CB>(w[c], 0u, lut, v);
  else decodeStep<CB>(w[2 * c], w[2 * c + 1], lut, v);
}

// y (or, with splits, partial[blockIdx.y]) [rows, out] = x [rows, in] W^T over this block's k slice
// [blockIdx.y * sliceK, +sliceK) (sliceK a multiple of 128); rows <= 8 * NT. Needs in % 32 == 0.
template <typename T, int CB, int NT>
__global__ void __launch_bounds__(kQmmaThreads) quantMmaKernel(const T* __restrict__ x, int rows, QuantWeight w, int sliceK,
                                                              T* __restrict__ y, int ldy, float* __restrict__ partial) {
  __shared__ float lut[16];
  if (CB == static_cast<int>(QuantCodebook::Lut4) && threadIdx.x < 16) lut[threadIdx.x] = w.lut[threadIdx.x];
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int m0 = blockIdx.x * kQmmaOutsPerBlock + warp * kQmmaMTiles * 16;
  const int in = w.in, groups = (in + w.groupSize - 1) / w.groupSize;
  const int wordsPerGroup = w.groupSize / 8;  // the group index is clamped to the last group below
  // The scale of a lane's run is one per row when groups hold whole runs of 32 (or there is one group).
  const bool runGroups = wordsPerGroup == 0 || wordsPerGroup % 4 == 0;
  const int kBegin = blockIdx.y * sliceK, kEnd = min(in, kBegin + sliceK);
  const uint8_t* codes = static_cast<const uint8_t*>(w.codes);
  // This lane's weight rows: m tile i, row g (j = 0) and g + 8 (j = 1); rows past the end read the last.
  int orow[kQmmaMTiles][2];
#pragma unroll
  for (int i = 0; i < kQmmaMTiles; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) orow[i][j] = min(m0 + 16 * i + 8 * j + g, w.out - 1);
  float acc[kQmmaMTiles][NT][4];
#pragma unroll
  for (int i = 0; i < kQmmaMTiles; i++)
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][n][e] = 0.0f;

  QmmaRun<CB> cur[kQmmaMTiles][2], nxt[kQmmaMTiles][2];
  {
    const bool valid = kBegin + 32 * t < kEnd;
#pragma unroll
    for (int i = 0; i < kQmmaMTiles; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) qmmaLoad<CB>(cur[i][j], codes, in, orow[i][j], kBegin + 32 * t, valid);
  }
  for (int kb = kBegin; kb < kEnd; kb += kQmmaK) {
    const int k = kb + 32 * t;  // this lane's run
    // The next block's codes go out before this block's work (one block of loads in flight per lane).
    const int kn = kb + kQmmaK + 32 * t;
#pragma unroll
    for (int i = 0; i < kQmmaMTiles; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) qmmaLoad<CB>(nxt[i][j], codes, in, orow[i][j], kn, kb + kQmmaK < kEnd && kn < kEnd);
    const bool valid = k < kEnd;
    float sc[kQmmaMTiles][2], zp[kQmmaMTiles][2];
#pragma unroll
    for (int c = 0; c < 4; c++) {
      if (c == 0 || !runGroups) {
        const int grp = wordsPerGroup > 0 ? (k + 8 * c) / 8 / wordsPerGroup : 0;
#pragma unroll
        for (int i = 0; i < kQmmaMTiles; i++)
#pragma unroll
          for (int j = 0; j < 2; j++) {
            const int64_t at = int64_t(orow[i][j]) * groups + min(grp, groups - 1);
            sc[i][j] = __ldg(w.scales + at);
            zp[i][j] = w.zeros ? __ldg(w.zeros + at) : 0.0f;
          }
      }
      // A fragments of both k steps of this chunk: pk[i][j][q] = T pair q (elements 2q, 2q + 1) of row j.
      uint32_t pk[kQmmaMTiles][2][4];
#pragma unroll
      for (int i = 0; i < kQmmaMTiles; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
          float v[8];
          qmmaDecode<CB>(cur[i][j], c, lut, v);
#pragma unroll
          for (int q = 0; q < 4; q++)
            pk[i][j][q] = pack2<T>((v[2 * q] - zp[i][j]) * sc[i][j], (v[2 * q + 1] - zp[i][j]) * sc[i][j]);
        }
#pragma unroll
      for (int n = 0; n < NT; n++) {
        const int row = 8 * n + g;
        uint4 xv = make_uint4(0u, 0u, 0u, 0u);
        if (valid && row < rows) xv = __ldg(reinterpret_cast<const uint4*>(x + int64_t(row) * in + k + 8 * c));
        const uint32_t xw[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
          for (int i = 0; i < kQmmaMTiles; i++)
            mma16816<T>(acc[i][n], pk[i][0][2 * h], pk[i][1][2 * h], pk[i][0][2 * h + 1], pk[i][1][2 * h + 1], xw[2 * h], xw[2 * h + 1]);
      }
    }
#pragma unroll
    for (int i = 0; i < kQmmaMTiles; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) cur[i][j] = nxt[i][j];
  }
  // C fragment: c0 (output g, row 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1) of each tile.
#pragma unroll
  for (int i = 0; i < kQmmaMTiles; i++)
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int o = m0 + 16 * i + g + 8 * (e >> 1), row = 8 * n + 2 * t + (e & 1);
        if (o >= w.out || row >= rows) continue;
        if (partial) partial[(int64_t(blockIdx.y) * rows + row) * w.out + o] = acc[i][n][e];
        else y[int64_t(row) * ldy + o] = fromF<T>(acc[i][n][e]);
      }
}

}  // namespace sb::kern
