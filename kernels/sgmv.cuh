// LoRA for a heterogeneous batch (SGMV, after Punica): rows are grouped in segments that share
// an adapter; shrink computes tmp = x A^T, expand adds scale * tmp B^T. A block works on up to
// SGMV_ROWS rows of one segment so each adapter weight it reads serves all of them (decode:
// one row per sequence; prefill: many). Ranks of different segments may differ (8..128+).
#pragma once

#include "common.cuh"

namespace sb::kern {

constexpr int SGMV_ROWS = 8;

// grid (numSegs, ceil(maxSegRows / SGMV_ROWS), count * ceil(maxRank / 8) * inSplits), block 256: one warp
// per rank row j of A and per slice of `in`, so few large segments (one adapter for the whole
// batch) still spread over many SMs. Partial sums are added atomically into tmp, which must be
// zero; expand rounds the finished sums. Loads are 16 bytes wide when `in` allows it.
template <typename T>
__global__ void sgmvShrinkKernel(const T* __restrict__ x, int in, float* __restrict__ tmp, int maxRank,
                                 const LoraSlotEntry* __restrict__ table, int tableStride, const LoraProjSet set,
                                 const int32_t* __restrict__ segStart, const int32_t* __restrict__ segSlot, int inSplits,
                                 int rankGroups) {
  const int seg = blockIdx.x;
  const int slot = segSlot[seg];
  if (slot < 0) return;
  const int proj = blockIdx.z / (rankGroups * inSplits);
  const int rest = blockIdx.z % (rankGroups * inSplits);
  const LoraSlotEntry e = table[slot * tableStride + set.entryOffset[proj]];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j = (rest / inSplits) * (blockDim.x >> 5) + warp;
  const int part = rest % inSplits;
  const int ldt = set.count * maxRank;
  if (e.rank == 0 || j >= e.rank) return;
  const int r0 = segStart[seg] + blockIdx.y * SGMV_ROWS;
  const int r1 = min(r0 + SGMV_ROWS, segStart[seg + 1]);
  if (r0 >= r1) return;
  const int n = r1 - r0;
  const T* a = static_cast<const T*>(e.a) + static_cast<int64_t>(j) * in;
  float acc[SGMV_ROWS];
#pragma unroll
  for (int r = 0; r < SGMV_ROWS; r++) acc[r] = 0.0f;
  constexpr int V = 16 / sizeof(T);
  // This block's slice of `in`, in whole 32 x V chunks.
  const int chunks = (in + 32 * V - 1) / (32 * V);
  const int c0 = part * chunks / inSplits, c1 = (part + 1) * chunks / inSplits;
  const int iBegin = c0 * 32 * V, iEnd = min(in, c1 * 32 * V);
  if (in % V == 0) {
    for (int i = iBegin + lane * V; i < iEnd; i += 32 * V) {
      const uint4 av4 = *reinterpret_cast<const uint4*>(a + i);
      const T* av = reinterpret_cast<const T*>(&av4);
#pragma unroll
      for (int r = 0; r < SGMV_ROWS; r++) {
        if (r >= n) break;
        const uint4 xv4 = *reinterpret_cast<const uint4*>(x + static_cast<int64_t>(r0 + r) * in + i);
        const T* xv = reinterpret_cast<const T*>(&xv4);
#pragma unroll
        for (int k = 0; k < V; k++) acc[r] += toF(av[k]) * toF(xv[k]);
      }
    }
  } else {
    for (int i = iBegin + lane; i < iEnd; i += 32) {
      const float av = toF(a[i]);
#pragma unroll
      for (int r = 0; r < SGMV_ROWS; r++)
        if (r < n) acc[r] += av * toF(x[static_cast<int64_t>(r0 + r) * in + i]);
    }
  }
#pragma unroll
  for (int r = 0; r < SGMV_ROWS; r++) {
    if (r >= n) break;
    const float s = warpSum(acc[r]);
    if (lane == 0) atomicAdd(tmp + static_cast<int64_t>(r0 + r) * ldt + proj * maxRank + j, s);
  }
}

// grid (numSegs, ceil(maxSegRows / SGMV_ROWS), count * ceil(max out / 256)), block 256.
template <typename T>
__global__ void sgmvExpandKernel(const float* __restrict__ tmp, int maxRank, T* __restrict__ y, int ldy,
                                 const LoraSlotEntry* __restrict__ table, int tableStride, const LoraProjSet set,
                                 const int32_t* __restrict__ segStart, const int32_t* __restrict__ segSlot, int outBlocks) {
  extern __shared__ float t[];  // [SGMV_ROWS][rank]
  const int seg = blockIdx.x;
  const int slot = segSlot[seg];
  if (slot < 0) return;
  const int proj = blockIdx.z / outBlocks;
  const int out = set.out[proj];
  const int ldt = set.count * maxRank;
  const LoraSlotEntry e = table[slot * tableStride + set.entryOffset[proj]];
  if (e.rank == 0) return;
  const int r0 = segStart[seg] + blockIdx.y * SGMV_ROWS;
  const int r1 = min(r0 + SGMV_ROWS, segStart[seg + 1]);
  if (r0 >= r1) return;
  const int n = r1 - r0, rank = e.rank;
  // lora_A's output is a tensor of T in PEFT: round the finished sums once.
  for (int i = threadIdx.x; i < n * rank; i += blockDim.x)
    t[i] = roundT<T>(tmp[static_cast<int64_t>(r0 + i / rank) * ldt + proj * maxRank + i % rank]);
  __syncthreads();
  const int o = (blockIdx.z % outBlocks) * blockDim.x + threadIdx.x;
  if (o >= out) return;
  const T* b = static_cast<const T*>(e.b) + static_cast<int64_t>(o) * rank;
  float acc[SGMV_ROWS];
#pragma unroll
  for (int r = 0; r < SGMV_ROWS; r++) acc[r] = 0.0f;
  for (int j = 0; j < rank; j++) {
    const float bv = toF(b[j]);
#pragma unroll
    for (int r = 0; r < SGMV_ROWS; r++) acc[r] += bv * t[min(r, n - 1) * rank + j];
  }
  for (int r = 0; r < n; r++) {
    T* yo = y + static_cast<int64_t>(r0 + r) * ldy + set.yCol[proj] + o;
    // PEFT: result + lora_B(lora_A(x)) * scaling, each op rounded to T.
    *yo = fromF<T>(toF(*yo) + roundT<T>(roundT<T>(acc[r]) * e.scale));
  }
}

}  // namespace sb::kern
