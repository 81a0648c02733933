// LoRA for a heterogeneous batch (SGMV, after Punica): rows are grouped in segments that share
// an adapter; shrink computes tmp = x A^T, expand adds scale * tmp B^T. A block works on up to R
// rows of one segment (R = 1 when every segment has one row, else SGMV_ROWS / SGMV_FUSED_ROWS) so
// each adapter weight it reads serves all of them (decode: one row per sequence; prefill: many).
// Ranks of different segments may differ (8..128+).
//
// Three kernels share two pieces:
//  - shrinkPart: a block's partial x·A^T over one slice of `in` for its rows and 16 rank rows
//    (8 warps x 2 rank rows, lanes along `in`, 16-byte loads, several pieces in flight per lane;
//    each x value converted once and used for both rank rows);
//  - the expand: y += scale * t B^T for the block's rows and a range of outputs, a thread per U
//    outputs with their B rows (16-byte loads) and y values in registers (ExpandStep), the first
//    step's loads issued before the block waits for t; a generic loop for ranks that don't fit.
// sgmvShrinkKernel + sgmvExpandKernel go through the fp32 tmp. sgmvFusedKernel does both in one
// launch: a thread-block cluster (sm_90) owns a (segment, row tile, projection), its blocks split
// `in` and the rank rows for the shrink, gather the sums from each other's shared memory (fixed
// order: deterministic, no memset, no atomics) and then each expands its share of the outputs.
// Every block's prologue loads (segment bounds, slot) go out together: at decode the kernels are
// chains of a few memory round trips, so grids are sized from the occupancy (waves), not rows.
#pragma once

#include "common.cuh"

#include <cooperative_groups.h>
#include <type_traits>

namespace sb::kern {

constexpr int SGMV_ROWS = 8;            // rows of one segment per block (R when segments are longer than one row)
constexpr int SGMV_FUSED_ROWS = 4;      // the same in the fused kernel (fewer registers: it holds shrink and expand loads)
constexpr int SGMV_RANKS = 16;          // rank rows of A per block: 8 warps x 2
constexpr int SGMV_THREADS = 256;
constexpr int SGMV_CLUSTER = 8;         // most blocks in one fused cluster (the portable limit)
constexpr int SGMV_FUSED_MAX_RANK = SGMV_CLUSTER * SGMV_RANKS;
// sgmv() fuses up to this many rows per segment; longer ones (prefill) go through shrink + expand.
constexpr int SGMV_FUSED_MAX_SEG_ROWS = 64;

template <typename T>
__device__ __forceinline__ float dot16(const uint4& a, const uint4& b, float acc) {
  const T* ea = reinterpret_cast<const T*>(&a);
  const T* eb = reinterpret_cast<const T*>(&b);
#pragma unroll
  for (int k = 0; k < int(16 / sizeof(T)); k++) acc = fmaf(toF(ea[k]), toF(eb[k]), acc);
  return acc;
}

template <typename T>
__device__ __forceinline__ uint4 ld16(const T* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// [iBegin, iEnd) of split `part` of `parts`, in whole pieces of 32 lanes x 16 bytes.
template <typename T>
__device__ __forceinline__ void sliceOf(int in, int part, int parts, int& iBegin, int& iEnd) {
  constexpr int U = 32 * (16 / int(sizeof(T)));
  const int units = (in + U - 1) / U;
  iBegin = part * units / parts * U;
  iEnd = min(in, (part + 1) * units / parts * U);
}

// Pieces of `in` (32 lanes x 16 bytes) per step of shrinkWarp (P), all loads of a step issued
// before the arithmetic: deep for one row (decode: pure streaming of A), shallow for 8 (registers).
template <int R>
constexpr int shrinkPieces() { return R == 1 ? 4 : R <= 4 ? 2 : 1; }

// The 16 bytes of v as floats.
template <typename T>
__device__ __forceinline__ void unpack16(const uint4& v, float* f) {
  const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int k = 0; k < int(16 / sizeof(T)); k++) f[k] = toF(e[k]);
}

// J rank rows (a0, a1) of one warp times rows r0..r0+n-1 of x over [iBegin, iEnd).
template <typename T, int R, int J, int P>
__device__ __forceinline__ void shrinkWarp(const T* __restrict__ x, int in, const T* __restrict__ a0, const T* __restrict__ a1,
                                           int r0, int n, int iBegin, int iEnd, float (&acc)[2][R]) {
  constexpr int V = 16 / sizeof(T), W = 32 * V;
  const int lane = threadIdx.x & 31;
  const T* xr = x + static_cast<int64_t>(r0) * in;
  if (in % V == 0) {
    int i = iBegin + lane * V;
    for (; i + (P - 1) * W < iEnd; i += P * W) {
      uint4 av[J][P], xv[R][P];
#pragma unroll
      for (int q = 0; q < P; q++) {
        av[0][q] = ld16(a0 + i + q * W);
        if (J == 2) av[J - 1][q] = ld16(a1 + i + q * W);
      }
#pragma unroll
      for (int r = 0; r < R; r++)
        if (r < n) {
#pragma unroll
          for (int q = 0; q < P; q++) xv[r][q] = ld16(xr + static_cast<int64_t>(r) * in + i + q * W);
        }
      // Each A and x value converted once, used J resp. R times.
#pragma unroll
      for (int q = 0; q < P; q++) {
        float af[J][V];
#pragma unroll
        for (int jj = 0; jj < J; jj++) unpack16<T>(av[jj][q], af[jj]);
#pragma unroll
        for (int r = 0; r < R; r++)
          if (r < n) {
            float xf[V];
            unpack16<T>(xv[r][q], xf);
#pragma unroll
            for (int jj = 0; jj < J; jj++)
#pragma unroll
              for (int k = 0; k < V; k++) acc[jj][r] = fmaf(af[jj][k], xf[k], acc[jj][r]);
          }
      }
    }
    for (; i < iEnd; i += W) {
      uint4 av[J];
      av[0] = ld16(a0 + i);
      if (J == 2) av[J - 1] = ld16(a1 + i);
#pragma unroll
      for (int r = 0; r < R; r++)
        if (r < n) {
          const uint4 xv = ld16(xr + static_cast<int64_t>(r) * in + i);
#pragma unroll
          for (int jj = 0; jj < J; jj++) acc[jj][r] = dot16<T>(av[jj], xv, acc[jj][r]);
        }
    }
  } else {
    for (int i = iBegin + lane; i < iEnd; i += 32) {
      const float v0 = toF(a0[i]), v1 = J == 2 ? toF(a1[i]) : 0.0f;
#pragma unroll
      for (int r = 0; r < R; r++)
        if (r < n) {
          const float xv = toF(xr[static_cast<int64_t>(r) * in + i]);
          acc[0][r] = fmaf(v0, xv, acc[0][r]);
          if (J == 2) acc[J - 1][r] = fmaf(v1, xv, acc[J - 1][r]);
        }
    }
  }
}

// Partial sums of x·A^T over [iBegin, iEnd) for rows r0..r0+n-1 (n <= R) and rank rows
// jBase + warp and jBase + warp + 8 of A [rank, in]: red[row * 16 + (j - jBase)]. Entries of
// rank rows >= rank are left alone.
template <typename T, int R, int P = shrinkPieces<R>()>
__device__ __forceinline__ void shrinkPart(const T* __restrict__ x, int in, const T* __restrict__ a, int rank, int jBase,
                                           int r0, int n, int iBegin, int iEnd, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j0 = jBase + warp, j1 = j0 + 8;
  if (j0 >= rank) return;
  float acc[2][R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[0][r] = acc[1][r] = 0.0f;
  const T* a0 = a + static_cast<int64_t>(j0) * in;
  const bool two = j1 < rank;
  if (two) shrinkWarp<T, R, 2, P>(x, in, a0, a + static_cast<int64_t>(j1) * in, r0, n, iBegin, iEnd, acc);
  else shrinkWarp<T, R, 1, P>(x, in, a0, a0, r0, n, iBegin, iEnd, acc);
#pragma unroll
  for (int r = 0; r < R; r++) {
    if (r >= n) break;
    const float s0 = warpSum(acc[0][r]);
    const float s1 = two ? warpSum(acc[1][r]) : 0.0f;
    if (lane == 0) {
      red[r * SGMV_RANKS + warp] = s0;
      if (two) red[r * SGMV_RANKS + warp + 8] = s1;
    }
  }
}

// y[r, o] += round(round(t[r] · B[o]) * scale) for rows r < n and o in [oBegin, oEnd): t in
// shared memory (rows of ldt floats, already rounded to T), y pointing at the block's first row
// and the projection's first column. Each thread takes outputs o and o + blockDim.x.
template <typename T, int R>
__device__ __forceinline__ void expandPart(const float* t, int ldt, int n, int rank, const T* __restrict__ b, float scale,
                                           T* __restrict__ y, int ldy, int oBegin, int oEnd) {
  constexpr int V = 16 / sizeof(T);
  const int bd = blockDim.x;
  const bool vec = rank % V == 0;
  for (int o = oBegin + threadIdx.x; o < oEnd; o += 2 * bd) {
    const int o1 = o + bd;
    const bool has1 = o1 < oEnd;
    float yv[2][R], acc[2][R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      acc[0][r] = acc[1][r] = 0.0f;
      if (r < n) {
        yv[0][r] = toF(y[static_cast<int64_t>(r) * ldy + o]);
        if (has1) yv[1][r] = toF(y[static_cast<int64_t>(r) * ldy + o1]);
      }
    }
    const T* b0 = b + static_cast<int64_t>(o) * rank;
    const T* b1 = b + static_cast<int64_t>(has1 ? o1 : o) * rank;
    if (vec) {
#pragma unroll 2
      for (int k = 0; k < rank; k += V) {
        const uint4 v0 = ld16(b0 + k), v1 = ld16(b1 + k);
        const T* e0 = reinterpret_cast<const T*>(&v0);
        const T* e1 = reinterpret_cast<const T*>(&v1);
#pragma unroll
        for (int r = 0; r < R; r++) {
          if (r < n) {
            float tv[V];
#pragma unroll
            for (int q = 0; q < V; q += 4) {
              const float4 f = *reinterpret_cast<const float4*>(t + r * ldt + k + q);
              tv[q] = f.x, tv[q + 1] = f.y, tv[q + 2] = f.z, tv[q + 3] = f.w;
            }
#pragma unroll
            for (int q = 0; q < V; q++) {
              acc[0][r] = fmaf(toF(e0[q]), tv[q], acc[0][r]);
              acc[1][r] = fmaf(toF(e1[q]), tv[q], acc[1][r]);
            }
          }
        }
      }
    } else {
      for (int k = 0; k < rank; k++) {
        const float v0 = toF(b0[k]), v1 = toF(b1[k]);
#pragma unroll
        for (int r = 0; r < R; r++)
          if (r < n) {
            acc[0][r] = fmaf(v0, t[r * ldt + k], acc[0][r]);
            acc[1][r] = fmaf(v1, t[r * ldt + k], acc[1][r]);
          }
      }
    }
    // PEFT: result + lora_B(lora_A(x)) * scaling, each op rounded to T.
#pragma unroll
    for (int r = 0; r < R; r++)
      if (r < n) {
        y[static_cast<int64_t>(r) * ldy + o] = fromF<T>(yv[0][r] + roundT<T>(roundT<T>(acc[0][r]) * scale));
        if (has1) y[static_cast<int64_t>(r) * ldy + o1] = fromF<T>(yv[1][r] + roundT<T>(roundT<T>(acc[1][r]) * scale));
      }
  }
}

// The fast expand path, for ranks of at most KC 16-byte chunks: a thread takes U outputs
// (o, o + blockDim.x, ...) per step and holds their B rows and y values in registers, so a step's
// loads are all in flight together and the first step's can be issued before the block waits for
// t (the shrink, or tmp).
template <int R, int KC>
constexpr int expandOutsPerThread() { return (R == 1 ? 8 : 4) / KC > 1 ? (R == 1 ? 8 : 4) / KC : 1; }

template <typename T, int R, int KC>
struct ExpandStep {
  static constexpr int U = expandOutsPerThread<R, KC>();
  uint4 b[U][KC];
  float y[U][R];
};

template <typename T, int R, int KC>
__device__ __forceinline__ void expandLoad(ExpandStep<T, R, KC>& st, int o0, int oEnd, int n, int rank, const T* __restrict__ b,
                                           const T* __restrict__ y, int ldy) {
  constexpr int V = 16 / sizeof(T);
#pragma unroll
  for (int u = 0; u < ExpandStep<T, R, KC>::U; u++) {
    const int o = o0 + u * blockDim.x;
    if (o < oEnd) {
#pragma unroll
      for (int q = 0; q < KC; q++)
        if (q * V < rank) st.b[u][q] = ld16(b + static_cast<int64_t>(o) * rank + q * V);
#pragma unroll
      for (int r = 0; r < R; r++)
        if (r < n) st.y[u][r] = toF(y[static_cast<int64_t>(r) * ldy + o]);
    }
  }
}

template <typename T, int R, int KC>
__device__ __forceinline__ void expandStore(const ExpandStep<T, R, KC>& st, int o0, int oEnd, int n, int rank, const float* t, int ldt,
                                            float scale, T* __restrict__ y, int ldy) {
  constexpr int V = 16 / sizeof(T);
#pragma unroll
  for (int u = 0; u < ExpandStep<T, R, KC>::U; u++) {
    const int o = o0 + u * blockDim.x;
    if (o >= oEnd) continue;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
#pragma unroll
    for (int q = 0; q < KC; q++) {
      if (q * V >= rank) break;
      const T* e = reinterpret_cast<const T*>(&st.b[u][q]);
      float bf[V];
#pragma unroll
      for (int k = 0; k < V; k++) bf[k] = toF(e[k]);
#pragma unroll
      for (int r = 0; r < R; r++)
        if (r < n) {
#pragma unroll
          for (int k = 0; k < V; k += 4) {
            const float4 f = *reinterpret_cast<const float4*>(t + r * ldt + q * V + k);
            acc[r] = fmaf(bf[k], f.x, acc[r]);
            acc[r] = fmaf(bf[k + 1], f.y, acc[r]);
            acc[r] = fmaf(bf[k + 2], f.z, acc[r]);
            acc[r] = fmaf(bf[k + 3], f.w, acc[r]);
          }
        }
    }
    // PEFT: result + lora_B(lora_A(x)) * scaling, each op rounded to T.
#pragma unroll
    for (int r = 0; r < R; r++)
      if (r < n) y[static_cast<int64_t>(r) * ldy + o] = fromF<T>(st.y[u][r] + roundT<T>(roundT<T>(acc[r]) * scale));
  }
}

// Whole fast expand of [oBegin, oEnd); st already holds the loads of the first step.
template <typename T, int R, int KC>
__device__ __forceinline__ void expandRun(ExpandStep<T, R, KC>& st, int oBegin, int oEnd, int n, int rank, const float* t, int ldt,
                                          float scale, const T* __restrict__ b, T* __restrict__ y, int ldy) {
  constexpr int U = ExpandStep<T, R, KC>::U;
  const int first = oBegin + threadIdx.x;
  for (int o0 = first; o0 < oEnd; o0 += U * blockDim.x) {
    if (o0 != first) expandLoad<T, R, KC>(st, o0, oEnd, n, rank, b, y, ldy);
    expandStore<T, R, KC>(st, o0, oEnd, n, rank, t, ldt, scale, y, ldy);
  }
}

template <typename T, int KC>
__device__ __forceinline__ bool expandFast(int rank) {
  constexpr int V = 16 / sizeof(T);
  return rank % V == 0 && rank <= KC * V;
}

// grid (numSegs * splits, ceil(maxSegRows / R), count * rankBlocks), block 256: 16 rank rows of
// one projection over one slice of `in`. With splits > 1 the partial sums are added atomically
// into tmp (which must be zero); with one split they are stored (no memset needed). Expand rounds
// the finished sums.
template <typename T, int R>
__global__ void __launch_bounds__(SGMV_THREADS) sgmvShrinkKernel(const T* __restrict__ x, int in, float* __restrict__ tmp, int maxRank,
                                                                 const LoraSlotEntry* __restrict__ table, int tableStride, const LoraProjSet set,
                                                                 const int32_t* __restrict__ segStart, const int32_t* __restrict__ segSlot,
                                                                 int splits, int rankBlocks) {
  __shared__ float red[R * SGMV_RANKS];
  const int seg = blockIdx.x / splits, part = blockIdx.x % splits;
  // All three loads in flight at once: the prologue is a good part of a decode block's life.
  const int slot = segSlot[seg], s0 = segStart[seg], s1 = segStart[seg + 1];
  const int r0 = s0 + blockIdx.y * R;
  const int r1 = min(r0 + R, s1);
  if (slot < 0 || r0 >= r1) return;
  const int proj = blockIdx.z / rankBlocks, jBase = (blockIdx.z % rankBlocks) * SGMV_RANKS;
  const LoraSlotEntry e = table[slot * tableStride + set.entryOffset[proj]];
  if (jBase >= e.rank) return;
  const int n = r1 - r0;
  int iBegin, iEnd;
  sliceOf<T>(in, part, splits, iBegin, iEnd);
  shrinkPart<T, R>(x, in, static_cast<const T*>(e.a), e.rank, jBase, r0, n, iBegin, iEnd, red);
  __syncthreads();
  const int ldt = set.count * maxRank;
  const int nj = min(SGMV_RANKS, e.rank - jBase);
  for (int i = threadIdx.x; i < n * SGMV_RANKS; i += blockDim.x) {
    const int r = i / SGMV_RANKS, jl = i % SGMV_RANKS;
    if (jl >= nj) continue;
    float* dst = tmp + static_cast<int64_t>(r0 + r) * ldt + proj * maxRank + jBase + jl;
    if (splits > 1) atomicAdd(dst, red[i]);
    else *dst = red[i];
  }
}

// grid (numSegs, ceil(maxSegRows / R), count * outBlocks), block 256, `perBlock` outputs per block
// (a multiple of 256 * expandOutsPerThread<R, KC>: several steps, so the prologue - table, tmp -
// is paid once per several steps), dynamic shared memory R * ldt floats (ldt = maxRank rounded up to 4).
template <typename T, int R, int KC>
__global__ void __launch_bounds__(SGMV_THREADS) sgmvExpandKernel(const float* __restrict__ tmp, int maxRank, int ldt, T* __restrict__ y, int ldy,
                                                                 const LoraSlotEntry* __restrict__ table, int tableStride, const LoraProjSet set,
                                                                 const int32_t* __restrict__ segStart, const int32_t* __restrict__ segSlot,
                                                                 int outBlocks, int perBlock) {
  extern __shared__ __align__(16) float tsh[];  // [R][ldt]
  const int seg = blockIdx.x;
  const int slot = segSlot[seg], s0 = segStart[seg], s1 = segStart[seg + 1];
  const int r0 = s0 + blockIdx.y * R;
  const int r1 = min(r0 + R, s1);
  if (slot < 0 || r0 >= r1) return;
  const int proj = blockIdx.z / outBlocks;
  const int out = set.out[proj];
  const int oBegin = (blockIdx.z % outBlocks) * perBlock, oEnd = min(out, oBegin + perBlock);
  if (oBegin >= out) return;
  const LoraSlotEntry e = table[slot * tableStride + set.entryOffset[proj]];
  if (e.rank == 0) return;
  const int n = r1 - r0, rank = e.rank;
  const T* b = static_cast<const T*>(e.b);
  T* yb = y + static_cast<int64_t>(r0) * ldy + set.yCol[proj];
  const bool fast = expandFast<T, KC>(rank);
  ExpandStep<T, R, KC> st;
  if (fast) expandLoad<T, R, KC>(st, oBegin + threadIdx.x, oEnd, n, rank, b, yb, ldy);
  const int ldtmp = set.count * maxRank;
  // lora_A's output is a tensor of T in PEFT: round the finished sums once.
  for (int i = threadIdx.x; i < n * rank; i += blockDim.x)
    tsh[(i / rank) * ldt + i % rank] = roundT<T>(tmp[static_cast<int64_t>(r0 + i / rank) * ldtmp + proj * maxRank + i % rank]);
  __syncthreads();
  if (fast) expandRun<T, R, KC>(st, oBegin, oEnd, n, rank, tsh, ldt, e.scale, b, yb, ldy);
  else expandPart<T, R>(tsh, ldt, n, rank, b, e.scale, yb, ldy, oBegin, oEnd);
}

// grid (numSegs * C, ceil(maxSegRows / R), count * E), block 256, launched with clusters of
// C = splits * rankBlocks blocks along x (C = 1: no cluster, any architecture). Block c of a
// cluster shrinks rank rows [16 * (c / splits), +16) over slice c % splits of `in`; then every
// block sums what it needs from all of them (DSMEM), rounds to T, and expands its 1/C of the
// cluster's outputs. E > 1 clusters redo the same (cheap) shrink, each for 1/E of the outputs:
// more blocks when there are few rows, so the expand is not a few long loops per thread.
// At most 80 registers, so three blocks share an SM (measured on H100, batch 64 decode: one layer's
// LoRA 55 -> 50 us with one adapter, 62 -> 55 us with eight; four blocks spill and lose again).
template <typename T, int R, int KC>
__global__ void __launch_bounds__(SGMV_THREADS, 3) sgmvFusedKernel(const T* __restrict__ x, int in, T* __restrict__ y, int ldy,
                                                                const LoraSlotEntry* __restrict__ table, int tableStride, const LoraProjSet set,
                                                                const int32_t* __restrict__ segStart, const int32_t* __restrict__ segSlot,
                                                                int splits, int rankBlocks, int E) {
  __shared__ float red[R * SGMV_RANKS];
  __shared__ __align__(16) float tsh[R * SGMV_FUSED_MAX_RANK];
  const int C = splits * rankBlocks;
  const int seg = blockIdx.x / C, c = blockIdx.x % C;
  // Everything up to the cluster barrier depends only on (segment, row tile, projection), which
  // the whole cluster shares: either all its blocks leave here or none does.
  const int slot = segSlot[seg], s0 = segStart[seg], s1 = segStart[seg + 1];
  const int r0 = s0 + blockIdx.y * R;
  const int r1 = min(r0 + R, s1);
  if (slot < 0 || r0 >= r1) return;
  const int proj = blockIdx.z / E, part = (blockIdx.z % E) * C + c, parts = E * C;
  const LoraSlotEntry e = table[slot * tableStride + set.entryOffset[proj]];
  if (e.rank == 0) return;
  const int n = r1 - r0, rank = min(e.rank, rankBlocks * SGMV_RANKS);
  // The expand's first loads (B rows, y) go out with the shrink's.
  const int out = set.out[proj];
  const int oBegin = static_cast<int>(static_cast<int64_t>(part) * out / parts);
  const int oEnd = static_cast<int>(static_cast<int64_t>(part + 1) * out / parts);
  const T* b = static_cast<const T*>(e.b);
  T* yb = y + static_cast<int64_t>(r0) * ldy + set.yCol[proj];
  const bool fast = expandFast<T, KC>(rank);
  ExpandStep<T, R, KC> st;
  if (fast) expandLoad<T, R, KC>(st, oBegin + threadIdx.x, oEnd, n, rank, b, yb, ldy);
  int iBegin, iEnd;
  sliceOf<T>(in, c % splits, splits, iBegin, iEnd);
  // Shallower steps than the separate shrink: the first expand step's loads are held meanwhile.
  shrinkPart<T, R, (R == 1 ? 2 : 1)>(x, in, static_cast<const T*>(e.a), rank, (c / splits) * SGMV_RANKS, r0, n, iBegin, iEnd, red);
  constexpr int LDT = SGMV_FUSED_MAX_RANK;
  if (C > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();
    for (int i = threadIdx.x; i < n * rank; i += blockDim.x) {
      const int r = i / rank, k = i % rank;
      const int base = (k / SGMV_RANKS) * splits, off = r * SGMV_RANKS + k % SGMV_RANKS;
      float s = 0.0f;
      for (int p = 0; p < splits; p++) s += cluster.map_shared_rank(red, base + p)[off];
      tsh[r * LDT + k] = roundT<T>(s);
    }
    cluster.sync();  // peers are done reading this block's red, and tsh is complete
#endif
  } else {
    __syncthreads();
    for (int i = threadIdx.x; i < n * rank; i += blockDim.x) tsh[(i / rank) * LDT + i % rank] = roundT<T>(red[(i / rank) * SGMV_RANKS + i % rank]);
    __syncthreads();
  }
  if (fast) expandRun<T, R, KC>(st, oBegin, oEnd, n, rank, tsh, LDT, e.scale, b, yb, ldy);
  else expandPart<T, R>(tsh, LDT, n, rank, b, e.scale, yb, ldy, oBegin, oEnd);
}


// ---------------------------------------------------------------------------------------------
// The tensor-core path (sgmvTcKernel; sgmv() takes it when LoraKernel::TensorCore is chosen and
// the call fits, see launch.h). Why: at decode the CUDA-core kernels above are bound by latency
// and parallelism, not bytes (batch 64, Mistral-7B shapes: ~15 us per set while its bytes take
// ~1 us): fp32 FMAs on CUDA cores, and A re-read for every 4-row tile. Here both products run as
// mma.sync m16n8k16 (16-bit inputs, fp32 accumulators), one launch per projection set.
//
// A cluster of C blocks (C <= 16, C = 1: no cluster) owns one (segment, tile of up to 8 rows,
// output share e of E) and every projection of the set:
//  - shrink, as T^T [rank x 8] = A [rank x in] . X^T [in x 8] (A row-major is the mma's A
//    operand, x rows are its column-major B operand, so both come straight from global memory):
//    block c takes slice c of `in`; inside the block, warps take (16-rank tile, part of the slice)
//    units. A is read once per 8-row tile (once per segment at decode), x once per cluster.
//  - the partial sums meet in fixed order (deterministic, no atomics, no workspace): warp parts
//    in shared memory, then across the cluster: block c sums its 1/C of the elements over all C
//    blocks' shared memory (DSMEM), rounds to T (PEFT's lora_A output is a T tensor) and pushes
//    the values into every block's T tile; two cluster barriers in all.
//  - expand, as Y [16 x 32] = T [16 x rank] . B^T [rank x 32] per warp step (rows 8..15 of the
//    mma are padding; B [out x rank] row-major is the column-major B operand), the set's outputs
//    split over the E x C blocks of the row tile, y += round(round(acc) * scale) as PEFT rounds.
//  - each block first asks L2 for its A slices, and after its shrink for its B rows and y
//    (prefetch instructions, within a byte budget), so its DRAM requests go out together.
// The k order is permuted so that each lane loads contiguous bytes: the mma sums over k, so any
// order works as long as both operands use the same one. Shrink: lane (g, t4) loads elements
// 8 t4 .. 8 t4 + 7 of its rows' 32-wide chunk (16 bytes); its registers for logical k 2 t4, 2 t4 + 1
// (and + 8) hold words 0 (1) in the chunk's first k-step, words 2 (3) in its second. Expand: the
// same over 16-wide steps with 8-byte loads (elements 4 t4 .. 4 t4 + 3), so at rank 16 every lane
// loads. Output column n of the expand's n-tile j is o0 + 8 (n / 2) + 2 j + n % 2, so the four
// n-tiles' accumulators of a lane are 8 consecutive outputs of one row: one 16-byte y access.
// kernels/test/sgmv_tc_mirror.py mirrors this mapping lane by lane (numpy, no GPU needed).
constexpr int TC_ROWS = 8;              // rows of a segment per cluster (the shrink's mma n)
constexpr int TC_THREADS = 256;
constexpr int TC_WARPS = TC_THREADS / 32;
constexpr int TC_MAX_RANK = 128;
constexpr int TC_MAX_TILES = 3 * TC_MAX_RANK / 16;  // 16-rank tiles of a whole set
constexpr int TC_RED_SLOTS = 32;        // (tile, part of the slice) units of the in-block sum
constexpr int TC_MAX_CLUSTER = 16;
constexpr int TC_TLD = 3 * TC_MAX_RANK + 16;  // row stride of the T tile (elements): rows 8 banks apart
constexpr int TC_UNROLL = 2;            // 32-wide chunks of `in` loaded together per warp
constexpr int TC_GROUPS = 2;            // 32-output groups a warp expands together

// The 8 elements at p as 16 bytes: the first `valid` of them (<= 0: none, the rest read as zero,
// nothing past them is touched); vec: p is 16-byte aligned (else element loads).
template <typename T>
__device__ __forceinline__ uint4 tcLoad8(const T* p, int valid, bool vec) {
  if (valid >= 8 && vec) return ld16(p);
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (valid > 0) {
    T* e = reinterpret_cast<T*>(&v);
#pragma unroll
    for (int i = 0; i < 8; i++)
      if (i < valid) e[i] = p[i];
  }
  return v;
}

// The same for 4 elements (8 bytes; vec: p 8-byte aligned).
template <typename T>
__device__ __forceinline__ uint2 tcLoad4(const T* p, int valid, bool vec) {
  if (valid >= 4 && vec) return __ldg(reinterpret_cast<const uint2*>(p));
  uint2 v = make_uint2(0u, 0u);
  if (valid > 0) {
    T* e = reinterpret_cast<T*>(&v);
#pragma unroll
    for (int i = 0; i < 4; i++)
      if (i < valid) e[i] = p[i];
  }
  return v;
}

// v0, v1 or v2 by a run-time index (registers, not a local-memory array).
template <typename V>
__device__ __forceinline__ V tcPick(int p, V v0, V v1, V v2) { return p == 0 ? v0 : p == 1 ? v1 : v2; }

__device__ __forceinline__ bool tcAligned(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Asks L2 for the 128-byte lines of `rows` byte ranges [base + i * stride, + bytes), spread over
// the block's threads, within `budget` bytes (whole rows while they fit, then the head of one; the
// budget shrinks by what was asked). Holds no registers and never faults, so a block can request
// what it will read at its start (decode blocks are chains of memory round trips; this makes them
// one); the budget keeps a full wave's requests within L2 when adapters are many (64 distinct
// adapters' gate|up weights are 75 MB).
__device__ __forceinline__ void tcPrefetchRows(const void* base, int rows, int64_t stride, int64_t bytes, int64_t& budget) {
  if (rows <= 0 || bytes <= 0 || budget <= 0) return;
  if (bytes > budget) rows = 1, bytes = budget;
  else rows = static_cast<int>(min(static_cast<int64_t>(rows), budget / bytes));
  budget -= rows * bytes;
  const int lines = static_cast<int>((bytes + 127) >> 7) + 1;  // a range not 128-aligned spans one more line
  for (int i = threadIdx.x; i < rows * lines; i += blockDim.x) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(base) + static_cast<uintptr_t>((i / lines) * stride);
    const uintptr_t line = (start & ~static_cast<uintptr_t>(127)) + static_cast<uintptr_t>(i % lines) * 128;
    if (line < start + bytes) asm volatile("prefetch.global.L2 [%0];" ::"l"(line));
  }
}

constexpr int64_t TC_PREFETCH_SHRINK = 96 << 10;  // bytes of A a block asks L2 for up front
constexpr int64_t TC_PREFETCH_EXPAND = 64 << 10;  // bytes of B and y, asked once its shrink loads are done

// grid (numSegs * E * C, ceil(maxSegRows / 8)), block 256, clusters of (C, 1, 1) when C > 1: block
// x = (segment * E + e) * C + rank in cluster. Every value up to the first cluster barrier depends
// only on the cluster's (segment, row tile), so either all its blocks leave early or none does.
template <typename T>
__global__ void __launch_bounds__(TC_THREADS, 2) sgmvTcKernel(const T* __restrict__ x, int in, T* __restrict__ y, int ldy,
                                                            const LoraSlotEntry* __restrict__ table, int tableStride, const LoraProjSet set,
                                                            const int32_t* __restrict__ segStart, const int32_t* __restrict__ segSlot,
                                                            int C, int E, bool prefetch) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  __shared__ __align__(16) float red[TC_RED_SLOTS * 128];  // warp units' fragments
  __shared__ __align__(16) float part[TC_MAX_TILES * 128];  // this block's sums over its slice (peers read it)
  __shared__ __align__(16) T tsh[TC_ROWS * TC_TLD];          // T rounded: [row][p * 128 + rank] (peers write it)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int item = blockIdx.x / C, seg = item / E, e = item % E;
  // Prologue loads all in flight together (a decode block's life is a few memory round trips).
  const int slot = segSlot[seg], s0 = segStart[seg], s1 = segStart[seg + 1];
  const int r0 = s0 + blockIdx.y * TC_ROWS;
  const int n = min(TC_ROWS, s1 - r0);
  if (slot < 0 || n <= 0) return;
  const int c = C > 1 ? static_cast<int>(cg::this_cluster().block_rank()) : 0;

  // The set's projections: rank (0 = absent), 16-rank tiles from tileBase, 32-output groups from groupBase.
  const T* pa[3];
  const T* pb[3];
  int rk[3], tb[3], gb[3];
  float sc[3];
  int MT = 0, NG = 0;
#pragma unroll
  for (int p = 0; p < 3; p++) {
    LoraSlotEntry en{};
    if (p < set.count) en = table[slot * tableStride + set.entryOffset[p]];
    pa[p] = static_cast<const T*>(en.a);
    pb[p] = static_cast<const T*>(en.b);
    rk[p] = p < set.count ? max(0, min(en.rank, TC_MAX_RANK)) : 0;
    sc[p] = en.scale;
    tb[p] = MT;
    gb[p] = NG;
    MT += (rk[p] + 15) / 16;
    NG += rk[p] > 0 ? (set.out[p] + 31) / 32 : 0;
  }
  if (MT == 0) return;

  // ---- shrink: units (tile t, part kp of this block's slice), G parts per tile ----
  int G = 8 / min(MT & -MT, 8);
  while (G > 1 && G * MT > TC_RED_SLOTS) G >>= 1;
  const int nch = (in + 31) / 32;
  const int cb0 = static_cast<int>(static_cast<int64_t>(c) * nch / C), cb1 = static_cast<int>(static_cast<int64_t>(c + 1) * nch / C);
  const T* xr = x + static_cast<int64_t>(r0 + min(g, n - 1)) * in;
  const bool xv_ok = g < n;
  const int parts = E * C, P = e * C + c;
  const int g0 = static_cast<int>(static_cast<int64_t>(P) * NG / parts), g1 = static_cast<int>(static_cast<int64_t>(P + 1) * NG / parts);
  if (prefetch) {
    // The slice of each A this block's shrink reads, in the order its warps take them.
    int64_t budget = TC_PREFETCH_SHRINK;
    const int64_t sliceBytes = static_cast<int64_t>(min(cb1 * 32, in) - min(cb0 * 32, in)) * sizeof(T);
#pragma unroll
    for (int p = 0; p < 3; p++) tcPrefetchRows(pa[p] + cb0 * 32, rk[p], static_cast<int64_t>(in) * sizeof(T), sliceBytes, budget);
  }
  // Launched as a programmatic dependent (setLoraKernel's pdl), everything above overlapped the
  // previous kernel's end; x and y may be its outputs, so wait for it here. Without that launch
  // attribute this returns at once.
  asm volatile("griddepcontrol.wait;" ::: "memory");
  for (int u = warp; u < MT * G; u += TC_WARPS) {
    const int t = u / G, kp = u % G;
    const int p = t >= tb[2] ? 2 : t >= tb[1] ? 1 : 0;
    const int rank = tcPick(p, rk[0], rk[1], rk[2]);
    const T* a = tcPick(p, pa[0], pa[1], pa[2]);
    const int j0 = 16 * (t - tcPick(p, tb[0], tb[1], tb[2])) + g, j1 = j0 + 8;
    const bool vecA = tcAligned(a);
    const T* a0 = a + static_cast<int64_t>(min(j0, rank - 1)) * in;
    const T* a1 = a + static_cast<int64_t>(min(j1, rank - 1)) * in;
    const int q0 = cb0 + kp * (cb1 - cb0) / G, q1 = cb0 + (kp + 1) * (cb1 - cb0) / G;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int q = q0; q < q1; q += TC_UNROLL) {
      uint4 av0[TC_UNROLL], av1[TC_UNROLL], xv[TC_UNROLL];
#pragma unroll
      for (int i = 0; i < TC_UNROLL; i++) {
        const int col = (q + i) * 32 + 8 * t4;
        const int valid = q + i < q1 ? min(8, in - col) : 0;
        av0[i] = tcLoad8(a0 + col, j0 < rank ? valid : 0, vecA);
        av1[i] = tcLoad8(a1 + col, j1 < rank ? valid : 0, vecA);
        xv[i] = tcLoad8(xr + col, xv_ok ? valid : 0, true);
      }
#pragma unroll
      for (int i = 0; i < TC_UNROLL; i++) {
        mma16816<T>(acc, av0[i].x, av1[i].x, av0[i].y, av1[i].y, xv[i].x, xv[i].y);
        mma16816<T>(acc, av0[i].z, av1[i].z, av0[i].w, av1[i].w, xv[i].z, xv[i].w);
      }
    }
    *reinterpret_cast<float4*>(red + (kp * MT + t) * 128 + lane * 4) = make_float4(acc[0], acc[1], acc[2], acc[3]);
  }
  if (prefetch) {
    // This block's outputs' B rows and y, landing while the partial sums are exchanged.
    int64_t budget = TC_PREFETCH_EXPAND;
#pragma unroll
    for (int p = 0; p < 3; p++) {
      if (rk[p] == 0) continue;
      const int out = set.out[p];
      const int o0 = min(out, 32 * (max(g0, gb[p]) - gb[p])), o1 = min(out, 32 * (min(g1, gb[p] + (out + 31) / 32) - gb[p]));
      if (o1 <= o0) continue;
      tcPrefetchRows(y + static_cast<int64_t>(r0) * ldy + set.yCol[p] + o0, n, static_cast<int64_t>(ldy) * sizeof(T),
                     static_cast<int64_t>(o1 - o0) * sizeof(T), budget);
      tcPrefetchRows(pb[p] + static_cast<int64_t>(o0) * rk[p], 1, 0, static_cast<int64_t>(o1 - o0) * rk[p] * sizeof(T), budget);
    }
  }
  __syncthreads();
  // part[t * 128 + 4 lane + i] is T^T[16 m + g + 8 (i / 2)][row 2 t4 + i % 2] of tile t (m its
  // index within its projection), lane = 4 g + t4: the accumulator layout, summed over parts.
  const int NE = MT * 128;
  for (int i = tid; i < NE; i += TC_THREADS) {
    const int t = i >> 7, f = i & 127;
    float s = 0.0f;
    for (int kp = 0; kp < G; kp++) s += red[(kp * MT + t) * 128 + f];
    part[i] = s;
  }
  // Where element i of part goes in the T tile.
  auto tOffset = [&](int i) {
    const int t = i >> 7, f = i & 127, ln = f >> 2, k = f & 3;
    const int p = t >= tb[2] ? 2 : t >= tb[1] ? 1 : 0;
    const int j = 16 * (t - tcPick(p, tb[0], tb[1], tb[2])) + (ln >> 2) + 8 * (k >> 1);
    const int row = 2 * (ln & 3) + (k & 1);
    return row * TC_TLD + p * TC_MAX_RANK + j;
  };
  if (C > 1) {
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every block's part is complete
    const int per = (NE + C - 1) / C, i1 = min(NE, (c + 1) * per);
    for (int i = c * per + tid; i < i1; i += TC_THREADS) {
      float s = 0.0f;
      for (int b = 0; b < C; b++) s += cluster.map_shared_rank(part, b)[i];
      const T v = fromF<T>(s);
      const int off = tOffset(i);
      for (int b = 0; b < C; b++) cluster.map_shared_rank(tsh, b)[off] = v;
    }
    cluster.sync();  // every T tile is complete, and no block reads another's part any more
  } else {
    __syncthreads();
    for (int i = tid; i < NE; i += TC_THREADS) tsh[tOffset(i)] = fromF<T>(part[i]);
    __syncthreads();
  }

  // ---- expand: this block's share of the set's 32-output groups, two groups per warp step ----
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
  for (int gi = g0 + warp; gi < g1; gi += TC_GROUPS * TC_WARPS) {
    constexpr int H = TC_GROUPS;
    int kEnd[H], rank[H], out[H], o0[H], pj[H];
    const T* b[H];
    T* yp[H];
    bool yok[H], vecB[H];
    float scale[H];
    uint4 yv[H];
    float acc[H][4][4];
#pragma unroll
    for (int h = 0; h < H; h++) {
      const int gg = gi + h * TC_WARPS;
      const bool has = gg < g1;
      const int p = gg >= gb[2] ? 2 : gg >= gb[1] ? 1 : 0;  // projections without groups have gb[p] == gb[p + 1]
      pj[h] = p;
      rank[h] = has ? tcPick(p, rk[0], rk[1], rk[2]) : 0;
      kEnd[h] = (rank[h] + 15) / 16 * 16;
      out[h] = tcPick(p, set.out[0], set.out[1], set.out[2]);
      o0[h] = 32 * (gg - tcPick(p, gb[0], gb[1], gb[2]));
      b[h] = tcPick(p, pb[0], pb[1], pb[2]);
      vecB[h] = rank[h] % 4 == 0 && (reinterpret_cast<uintptr_t>(b[h]) & 7) == 0;
      scale[h] = tcPick(p, sc[0], sc[1], sc[2]);
      yok[h] = has && g < n && o0[h] + 8 * t4 < out[h];
      yp[h] = y + static_cast<int64_t>(r0 + g) * ldy + tcPick(p, set.yCol[0], set.yCol[1], set.yCol[2]) + o0[h] + 8 * t4;
      yv[h] = yok[h] ? *reinterpret_cast<const uint4*>(yp[h]) : zero;
#pragma unroll
      for (int j = 0; j < 4; j++) acc[h][j][0] = acc[h][j][1] = acc[h][j][2] = acc[h][j][3] = 0.0f;
    }
    int kMax = 0;
#pragma unroll
    for (int h = 0; h < H; h++) kMax = max(kMax, kEnd[h]);
    // k-steps of 16: lane t4 holds ranks kc + 4 t4 .. + 3 of its T row and of its B rows (8 bytes
    // each), words 0 and 1 standing for logical k (2 t4, 2 t4 + 1) and (2 t4 + 8, 2 t4 + 9).
    for (int kc = 0; kc < kMax; kc += 16) {
      const int k = kc + 4 * t4;
      uint2 tw[H], bv[H][4];
#pragma unroll
      for (int h = 0; h < H; h++) {
        tw[h] = kc < kEnd[h] ? *reinterpret_cast<const uint2*>(tsh + g * TC_TLD + pj[h] * TC_MAX_RANK + k) : make_uint2(0u, 0u);
#pragma unroll
        for (int j = 0; j < 4; j++) {
          const int o = o0[h] + 8 * (g >> 1) + 2 * j + (g & 1);
          const bool ok = k < rank[h] && o < out[h];
          bv[h][j] = tcLoad4(b[h] + (ok ? static_cast<int64_t>(o) * rank[h] + k : 0), ok ? rank[h] - k : 0, vecB[h]);
        }
      }
#pragma unroll
      for (int h = 0; h < H; h++)
#pragma unroll
        for (int j = 0; j < 4; j++) mma16816<T>(acc[h][j], tw[h].x, 0u, tw[h].y, 0u, bv[h][j].x, bv[h][j].y);
    }
    // PEFT: result + lora_B(lora_A(x)) * scaling, each op rounded to T. acc[h][j][0..1] are this
    // lane's row g at outputs o0 + 8 t4 + 2 j + (0, 1).
#pragma unroll
    for (int h = 0; h < H; h++) {
      if (!yok[h]) continue;
      T* ye = reinterpret_cast<T*>(&yv[h]);
#pragma unroll
      for (int j = 0; j < 4; j++)
#pragma unroll
        for (int i = 0; i < 2; i++) ye[2 * j + i] = fromF<T>(toF(ye[2 * j + i]) + roundT<T>(roundT<T>(acc[h][j][i]) * scale[h]));
      *reinterpret_cast<uint4*>(yp[h]) = yv[h];
    }
  }
#else
  __trap();
#endif
}

}  // namespace sb::kern
