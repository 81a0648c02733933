// Paged attention over the KV cache, one kernel for prefill chunks and decode: every query row
// attends to its own sequence's cached positions within its causal (and sliding) window. A block
// serves one (row, kv head) and all the query heads that share that kv head (GQA), so each key
// and value is read once per row. Four warps split the keys; each keeps an online softmax; the
// block merges them at the end.
#pragma once

#include "common.cuh"

namespace sb::kern {

constexpr int ATT_WARPS = 4;
constexpr int ATT_MAX_GROUP = 8;

template <typename T>
__global__ void writeKvKernel(const T* __restrict__ k, const T* __restrict__ v, int ld, const int32_t* __restrict__ slots,
                              int kvDim, T* __restrict__ kCache, T* __restrict__ vCache) {
  const int64_t row = blockIdx.x;
  const int64_t dst = static_cast<int64_t>(slots[row]) * kvDim;
  for (int i = threadIdx.x; i < kvDim; i += blockDim.x) {
    kCache[dst + i] = k[row * ld + i];
    vCache[dst + i] = v[row * ld + i];
  }
}

// D: head dim. Each warp takes tiles of 32 keys, one key per lane: a lane computes the full dot
// products of its key with the group's queries (read from shared memory), so a tile costs two
// warp reductions per head for the online softmax instead of one reduction per key. Then lanes
// switch to owning head-dim slices (EPL = D / 32 each, or 1 with D < 32) for P.V, reading the
// tile's probabilities from shared memory and each value row coalesced.
template <typename T, int D>
__global__ void __launch_bounds__(ATT_WARPS * 32) pagedAttentionKernel(
    const T* __restrict__ q, int ldq, const T* __restrict__ kCache, const T* __restrict__ vCache,
    const int32_t* __restrict__ blockTables, int maxBlocks, const int32_t* __restrict__ rowSeq,
    const int32_t* __restrict__ rowPos, int heads, int kvHeads, int blockSize, int window, float scale,
    T* __restrict__ out, int keysPerSplit, float* __restrict__ partial) {
  constexpr int EPL = D >= 32 ? D / 32 : 1;
  constexpr int ACTIVE = D >= 32 ? 32 : D;
  constexpr int VEC = 16 / sizeof(T);  // elements per 16-byte load
  const int row = blockIdx.x, kvh = blockIdx.y;
  const int group = heads / kvHeads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool active = lane < ACTIVE;
  const int pos = rowPos[row];
  const int lo0 = window > 0 ? max(0, pos - window + 1) : 0;
  // Split-K (flash-decoding): with few rows, several blocks share one row's keys.
  const int lo = partial ? lo0 + blockIdx.z * keysPerSplit : lo0;
  const int hi = partial ? min(pos, lo + keysPerSplit - 1) : pos;
  const int32_t* table = blockTables + static_cast<int64_t>(rowSeq[row]) * maxBlocks;
  const int kvDim = kvHeads * D;

  __shared__ float sq[ATT_MAX_GROUP][D];
  __shared__ float sp[ATT_WARPS][ATT_MAX_GROUP][32];
  for (int i = threadIdx.x; i < group * D; i += blockDim.x)
    sq[i / D][i % D] = toF(q[static_cast<int64_t>(row) * ldq + (kvh * group + i / D) * D + i % D]) * scale;
  __syncthreads();

  float acc[ATT_MAX_GROUP][EPL], m[ATT_MAX_GROUP], l[ATT_MAX_GROUP];
#pragma unroll
  for (int g = 0; g < ATT_MAX_GROUP; g++) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < EPL; e++) acc[g][e] = 0.0f;
  }
  for (int base = lo + warp * 32; base <= hi; base += ATT_WARPS * 32) {
    const int j = base + lane;
    const bool valid = j <= hi;
    // Scores of this lane's key against every query head of the group.
    float sc[ATT_MAX_GROUP];
#pragma unroll
    for (int g = 0; g < ATT_MAX_GROUP; g++) sc[g] = 0.0f;
    if (valid) {
      const int64_t slot = static_cast<int64_t>(table[j / blockSize]) * blockSize + j % blockSize;
      const T* kp = kCache + slot * kvDim + kvh * D;
#pragma unroll
      for (int d0 = 0; d0 < D; d0 += VEC) {
        const uint4 raw = *reinterpret_cast<const uint4*>(kp + d0);
        const T* kv = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int e = 0; e < VEC; e++) {
          const float kf = toF(kv[e]);
#pragma unroll
          for (int g = 0; g < ATT_MAX_GROUP; g++)
            if (g < group) sc[g] += sq[g][d0 + e] * kf;
        }
      }
    }
    // Online softmax over the tile, per head.
#pragma unroll
    for (int g = 0; g < ATT_MAX_GROUP; g++) {
      if (g >= group) break;
      const float s = valid ? sc[g] : -INFINITY;
      const float mNew = fmaxf(m[g], warpMax(s));
      const float p = valid ? __expf(s - mNew) : 0.0f;
      const float corr = __expf(m[g] - mNew);
      l[g] = l[g] * corr + warpSum(p);
      m[g] = mNew;
#pragma unroll
      for (int e = 0; e < EPL; e++) acc[g][e] *= corr;
      sp[warp][g][lane] = p;
    }
    __syncwarp();
    const int n = min(32, hi - base + 1);
    for (int t = 0; t < n; t++) {
      const int jj = base + t;
      const int64_t slot = static_cast<int64_t>(table[jj / blockSize]) * blockSize + jj % blockSize;
      const T* vp = vCache + slot * kvDim + kvh * D + lane * EPL;
      float vv[EPL];
#pragma unroll
      for (int e = 0; e < EPL; e++) vv[e] = active ? toF(vp[e]) : 0.0f;
#pragma unroll
      for (int g = 0; g < ATT_MAX_GROUP; g++) {
        if (g >= group) break;
        const float p = sp[warp][g][t];
#pragma unroll
        for (int e = 0; e < EPL; e++) acc[g][e] += p * vv[e];
      }
    }
    __syncwarp();
  }
  // Merge the warps' partial softmaxes.
  __shared__ float sm[ATT_WARPS][ATT_MAX_GROUP], sl[ATT_WARPS][ATT_MAX_GROUP];
  __shared__ float sacc[ATT_WARPS][ATT_MAX_GROUP][D >= 32 ? D : 32];
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < ATT_MAX_GROUP; g++) {
      sm[warp][g] = m[g];
      sl[warp][g] = l[g];
    }
  }
#pragma unroll
  for (int g = 0; g < ATT_MAX_GROUP; g++)
#pragma unroll
    for (int e = 0; e < EPL; e++)
      if (active) sacc[warp][g][lane * EPL + e] = acc[g][e];
  __syncthreads();
  const int splits = gridDim.z;
  for (int idx = threadIdx.x; idx < group * D; idx += blockDim.x) {
    const int g = idx / D, d = idx % D;
    float mm = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++) mm = fmaxf(mm, sm[w][g]);
    float ll = 0.0f, a = 0.0f;
    for (int w = 0; w < ATT_WARPS; w++) {
      if (sm[w][g] == -INFINITY) continue;
      const float c = __expf(sm[w][g] - mm);
      ll += sl[w][g] * c;
      a += sacc[w][g][d] * c;
    }
    const int64_t head = static_cast<int64_t>(row) * heads + kvh * group + g;
    if (partial) {
      // Unnormalised partial: [m, l, acc[D]] per (row, head, split), merged by attentionCombineKernel.
      float* slot = partial + (head * splits + blockIdx.z) * (D + 2);
      if (d == 0) {
        slot[0] = mm;
        slot[1] = ll;
      }
      slot[2 + d] = a;
    } else {
      out[head * D + d] = fromF<T>(a / ll);
    }
  }
}

// grid (rows * heads), block D: merges the splits of each (row, head).
template <typename T>
__global__ void attentionCombineKernel(const float* __restrict__ partial, int splits, int D, T* __restrict__ out) {
  const int64_t head = blockIdx.x;
  const float* p = partial + head * splits * (D + 2);
  float mm = -INFINITY;
  for (int s = 0; s < splits; s++) mm = fmaxf(mm, p[s * (D + 2)]);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float ll = 0.0f, a = 0.0f;
    for (int s = 0; s < splits; s++) {
      const float m = p[s * (D + 2)];
      if (m == -INFINITY) continue;
      const float c = __expf(m - mm);
      ll += p[s * (D + 2) + 1] * c;
      a += p[s * (D + 2) + 2 + d] * c;
    }
    out[head * D + d] = fromF<T>(a / ll);
  }
}

}  // namespace sb::kern
