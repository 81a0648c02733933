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

}  // namespace sb::kern
