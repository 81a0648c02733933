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

// D: head dim. Each warp takes tiles of 32 keys. Scores: groups of TG lanes share a key, each
// lane holding a D/TG slice of up to four query heads in registers (GQA: the heads that share
// this kv head), so a key costs log2(TG) shuffles per head. Then lanes switch to owning head-dim
// slices (EPL = D / 32 each, or 1 with D < 32) for P.V, reading the tile's probabilities from
// shared memory and each value row coalesced. Groups of more than four heads take several passes.
template <typename T, int D>
__global__ void __launch_bounds__(ATT_WARPS * 32) pagedAttentionKernel(
    const T* __restrict__ q, int ldq, const T* __restrict__ kCache, const T* __restrict__ vCache,
    const int32_t* __restrict__ blockTables, int maxBlocks, const int32_t* __restrict__ rowSeq,
    const int32_t* __restrict__ rowPos, int heads, int kvHeads, int blockSize, int window, float scale,
    T* __restrict__ out, int keysPerSplit, float* __restrict__ partial) {
  constexpr int EPL = D >= 32 ? D / 32 : 1;
  constexpr int ACTIVE = D >= 32 ? 32 : D;
  constexpr int TG = D >= 64 ? 8 : D / 8;  // lanes per key in the score phase
  constexpr int DS = D / TG;               // head-dim elements per lane in the score phase
  constexpr int KPW = 32 / TG;             // keys a warp scores at once
  constexpr int HC = 4;                    // query heads per pass
  const int row = blockIdx.x, kvh = blockIdx.y;
  const int group = heads / kvHeads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool active = lane < ACTIVE;
  const int sub = lane / TG, part = lane % TG;
  const int pos = rowPos[row];
  const int lo0 = window > 0 ? max(0, pos - window + 1) : 0;
  // Split-K (flash-decoding): with few rows, several blocks share one row's keys.
  const int lo = partial ? lo0 + blockIdx.z * keysPerSplit : lo0;
  const int hi = partial ? min(pos, lo + keysPerSplit - 1) : pos;
  const int32_t* table = blockTables + static_cast<int64_t>(rowSeq[row]) * maxBlocks;
  const int kvDim = kvHeads * D;
  const int splits = gridDim.z;

  __shared__ float sp[ATT_WARPS][HC][32];
  __shared__ int64_t sslot[ATT_WARPS][32];  // cache slot of each key of the warp's tile
  __shared__ float sm[ATT_WARPS][HC], sl[ATT_WARPS][HC];
  __shared__ float sacc[ATT_WARPS][HC][D >= 32 ? D : 32];

  for (int g0 = 0; g0 < group; g0 += HC) {
    const int gn = min(HC, group - g0);
    float qv[HC][DS];
#pragma unroll
    for (int g = 0; g < HC; g++)
#pragma unroll
      for (int e = 0; e < DS; e++)
        qv[g][e] = g < gn ? toF(q[static_cast<int64_t>(row) * ldq + (kvh * group + g0 + g) * D + part * DS + e]) * scale : 0.0f;
    float acc[HC][EPL], m[HC], l[HC];
#pragma unroll
    for (int g = 0; g < HC; g++) {
      m[g] = -INFINITY;
      l[g] = 0.0f;
#pragma unroll
      for (int e = 0; e < EPL; e++) acc[g][e] = 0.0f;
    }
    for (int base = lo + warp * 32; base <= hi; base += ATT_WARPS * 32) {
      // Scores of the tile's 32 keys, KPW at a time.
#pragma unroll
      for (int it = 0; it < TG; it++) {
        const int t = it * KPW + sub;
        const int j = base + t;
        float sc[HC];
#pragma unroll
        for (int g = 0; g < HC; g++) sc[g] = 0.0f;
        if (j <= hi) {
          const int64_t slot = static_cast<int64_t>(table[j / blockSize]) * blockSize + j % blockSize;
          if (part == 0) sslot[warp][t] = slot;
          const T* kp = kCache + slot * kvDim + kvh * D + part * DS;
          float kf[DS];
          constexpr int VEC = 16 / sizeof(T);
          if constexpr (DS % VEC == 0) {
#pragma unroll
            for (int d0 = 0; d0 < DS; d0 += VEC) {
              const uint4 raw = *reinterpret_cast<const uint4*>(kp + d0);
              const T* kv = reinterpret_cast<const T*>(&raw);
#pragma unroll
              for (int e = 0; e < VEC; e++) kf[d0 + e] = toF(kv[e]);
            }
          } else {
#pragma unroll
            for (int e = 0; e < DS; e++) kf[e] = toF(kp[e]);
          }
#pragma unroll
          for (int g = 0; g < HC; g++)
#pragma unroll
            for (int e = 0; e < DS; e++) sc[g] += qv[g][e] * kf[e];
        }
#pragma unroll
        for (int g = 0; g < HC; g++) {
#pragma unroll
          for (int o = TG / 2; o > 0; o >>= 1) sc[g] += __shfl_xor_sync(0xffffffffu, sc[g], o);
          if (part == 0) sp[warp][g][t] = j <= hi ? sc[g] : -INFINITY;
        }
      }
      __syncwarp();
      // Online softmax over the tile, per head.
      const bool valid = base + lane <= hi;
#pragma unroll
      for (int g = 0; g < HC; g++) {
        if (g >= gn) break;
        const float s = valid ? sp[warp][g][lane] : -INFINITY;
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
#pragma unroll 4
      for (int t = 0; t < n; t++) {
        const T* vp = vCache + sslot[warp][t] * kvDim + kvh * D + lane * EPL;
        float vv[EPL];
        if constexpr (EPL * sizeof(T) == 8) {
          const uint2 raw = *reinterpret_cast<const uint2*>(vp);
          const T* v2 = reinterpret_cast<const T*>(&raw);
#pragma unroll
          for (int e = 0; e < EPL; e++) vv[e] = toF(v2[e]);
        } else if constexpr (EPL * sizeof(T) == 16) {
          const uint4 raw = *reinterpret_cast<const uint4*>(vp);
          const T* v4 = reinterpret_cast<const T*>(&raw);
#pragma unroll
          for (int e = 0; e < EPL; e++) vv[e] = toF(v4[e]);
        } else {
#pragma unroll
          for (int e = 0; e < EPL; e++) vv[e] = active ? toF(vp[e]) : 0.0f;
        }
#pragma unroll
        for (int g = 0; g < HC; g++) {
          if (g >= gn) break;
          const float p = sp[warp][g][t];
#pragma unroll
          for (int e = 0; e < EPL; e++) acc[g][e] += p * vv[e];
        }
      }
      __syncwarp();
    }
    // Merge the warps' partial softmaxes for this pass's heads.
    if (lane == 0) {
#pragma unroll
      for (int g = 0; g < HC; g++) {
        sm[warp][g] = m[g];
        sl[warp][g] = l[g];
      }
    }
#pragma unroll
    for (int g = 0; g < HC; g++)
#pragma unroll
      for (int e = 0; e < EPL; e++)
        if (active) sacc[warp][g][lane * EPL + e] = acc[g][e];
    __syncthreads();
    for (int idx = threadIdx.x; idx < gn * D; idx += blockDim.x) {
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
      const int64_t head = static_cast<int64_t>(row) * heads + kvh * group + g0 + g;
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
    __syncthreads();
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
