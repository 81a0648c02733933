// Paged attention over the KV cache, one kernel for prefill chunks and decode: every query row
// attends to its own sequence's cached positions within its causal (and sliding) window. A block
// serves one (row, kv head) and all the query heads that share that kv head (GQA), so each key
// and value is read once per row (per pass of four heads). Its warps take interleaved tiles of 16
// keys; each warp streams its next tile's key and value rows into its own shared-memory ring with
// cp.async while it computes the current one (values no longer wait for the softmax), keeps an
// online softmax, and the block merges the warps at the end.
#pragma once

#include "common.cuh"

namespace sb::kern {

constexpr int ATT_MAX_GROUP = 8;
// Shared memory for a block's rings: 48 KiB lets four blocks share an SM, so batch 64 x 8 kv heads
// (512 blocks) runs as one wave on an H100. (Measured there: two-tile rings with more warps beat
// three-tile rings with fewer, and 96 KiB rings, on decode and prefill alike.)
constexpr int ATT_RING_BYTES = 49152;
constexpr int ATT_BLOCKS_PER_SM = 196608 / ATT_RING_BYTES;

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

// 16-byte global -> shared copy that bypasses L1 (a key's 256-byte row slice is fetched whole into
// L2); with !full the destination is zero-filled (nothing is read), so keys past the range hold
// zeros, never stale NaNs.
__device__ __forceinline__ void attCopy16(void* dst, const void* src, bool full) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(full ? 16 : 0) : "memory");
#else
  *reinterpret_cast<uint4*>(dst) = full ? *reinterpret_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
#endif
}
__device__ __forceinline__ void attCommit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void attWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// N elements of T at p (aligned to their size) as floats, in one load where the width allows.
template <typename T, int N>
__device__ __forceinline__ void attLoad(const T* p, float* f) {
  constexpr int B = N * static_cast<int>(sizeof(T));
  if constexpr (B == 16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < N; e++) f[e] = toF(v[e]);
  } else if constexpr (B == 8) {
    const uint2 raw = *reinterpret_cast<const uint2*>(p);
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < N; e++) f[e] = toF(v[e]);
  } else if constexpr (B == 4 && N == 2) {
    const uint32_t raw = *reinterpret_cast<const uint32_t*>(p);
    const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < N; e++) f[e] = toF(v[e]);
  } else {
#pragma unroll
    for (int e = 0; e < N; e++) f[e] = toF(p[e]);
  }
}

// Shapes of the kernel for element type T and head dim D.
template <typename T, int D>
struct AttCfg {
  static constexpr int TK = 16;                              // keys per tile
  static constexpr int HC = 4;                               // query heads per pass
  static constexpr int TG = D >= 64 ? 8 : D / 8;             // lanes per key in the score phase
  static constexpr int DS = D / TG;                          // head-dim elements per lane there
  static constexpr int ES = static_cast<int>(sizeof(T));
  static constexpr int RV = (DS * ES) % 16 == 0 ? 16 / ES : (DS * ES) % 8 == 0 ? 8 / ES : (DS * ES) % 4 == 0 && ES <= 4 ? 4 / ES : 1;
  static constexpr int STAGE = 2 * TK * D * ES;              // bytes of one tile's keys and values
  static constexpr int STAGES = 2;                           // tiles in a warp's ring
  static constexpr int NW0 = ATT_RING_BYTES / (STAGES * STAGE);  // warps whose rings fit the budget
  static constexpr int NW = NW0 < 1 ? 1 : NW0 > 4 ? 4 : NW0;
  static constexpr int PIPE = NW * STAGES * STAGE;
  static constexpr int ACC = NW * HC * (D >= 32 ? D : 32) * 4;  // the merge's accumulators (reuse the rings)
  static constexpr int SMEM = PIPE > ACC ? PIPE : ACC;
};

// D: head dim. softcap > 0: scores (already scaled) become softcap * tanh(score / softcap).
// grid (rows * kvHeads, splits). Each warp takes tiles of 16 keys (tile i of the
// block's range goes to warp i % NW) and keeps STAGES - 1 tiles in flight ahead of the one it
// computes. Scores: groups of TG lanes share a key, each lane holding a D/TG slice of up to four
// query heads in registers (GQA: the heads that share this kv head); the TG partial sums of four
// heads are reduced by halving exchanges (each shuffle step keeps half the heads), then the
// softmax runs two heads at once (a half-warp per head). P.V: lanes own head-dim slices (D / 32
// each, or 1 with D < 32), reading each value row of the tile from shared memory. Groups of more
// than four heads take several passes.
// Split-K (partial != null): split z of gridDim.z takes an even share (whole tiles) of this row's
// own key range, so nothing but the grid depends on the other rows (CUDA graphs can replay a
// launch while contexts grow); an empty split writes m = -inf, l = 0.
template <typename T, int D>
__global__ void __launch_bounds__(AttCfg<T, D>::NW * 32, ATT_BLOCKS_PER_SM) pagedAttentionKernel(
    const T* __restrict__ q, int ldq, const T* __restrict__ kCache, const T* __restrict__ vCache,
    const int32_t* __restrict__ blockTables, int maxBlocks, const int32_t* __restrict__ rowSeq,
    const int32_t* __restrict__ rowPos, const int32_t* __restrict__ rowIndex, int heads, int kvHeads, int blockSize,
    int window, float scale, float softcap, T* __restrict__ out, float* __restrict__ partial, int64_t mlOffset) {
  using C = AttCfg<T, D>;
  constexpr int TK = C::TK, HC = C::HC, TG = C::TG, DS = C::DS, RV = C::RV, NW = C::NW, S = C::STAGES;
  constexpr int KPW = 32 / TG;  // keys scored at once
  // P.V: EPL head-dim elements per lane over ACTIVE lanes (head dim 80: 16 lanes of 5).
  constexpr int EPL = D < 32 ? 1 : D % 32 == 0 ? D / 32 : D / 16;
  constexpr int ACTIVE = D / EPL;
  constexpr int VE = 16 / C::ES;          // elements per 16-byte copy
  constexpr int CPR = D / VE;             // copies per key row
  constexpr int COPIES = TK * CPR / 32;   // copies per lane per tile (each of K and V)
  constexpr int LOG_TG = TG == 8 ? 3 : TG == 4 ? 2 : 1;
  constexpr int LOG_HC = 2;
  constexpr int CF = LOG_TG >= LOG_HC ? 1 : HC >> LOG_TG;                   // head sums a lane ends with
  constexpr int DUP = LOG_TG > LOG_HC ? (1 << (LOG_TG - LOG_HC)) - 1 : 0;   // lanes holding copies
  constexpr unsigned FULL = 0xffffffffu;
  static_assert(TK == 16 && HC == 4, "the softmax maps a half-warp to a head's 16 keys; P.V reads float4 probabilities");
  static_assert(TG == 2 || TG == 4 || TG == 8, "head dim");
  static_assert((TK * CPR) % 32 == 0 && DS % RV == 0, "tile copies");
  static_assert(ACTIVE * EPL == D && ACTIVE <= 32, "P.V lanes");

  extern __shared__ __align__(16) unsigned char attSmem[];
  __shared__ __align__(16) float sp[NW][TK][HC];  // scores, then probabilities, of the warp's tile
  __shared__ float sm[NW][HC], sl[NW][HC];

  // A row's kv heads run side by side; rowIndex (no split-K then) picks the rows this launch serves.
  const int row = rowIndex ? rowIndex[blockIdx.x / kvHeads] : blockIdx.x / kvHeads, kvh = blockIdx.x % kvHeads;
  const int group = heads / kvHeads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane / TG, part = lane % TG;
  const int pos = rowPos[row];
  const int lo0 = window > 0 ? max(0, pos - window + 1) : 0;
  int lo = lo0, hi = pos;
  if (partial) {
    const int splits = gridDim.z;
    const int share = ((pos - lo0 + splits) / splits + TK - 1) / TK * TK;
    lo = lo0 + static_cast<int>(blockIdx.z) * share;
    hi = min(pos, lo + share - 1);
  }
  const int32_t* table = blockTables + static_cast<int64_t>(rowSeq[row]) * maxBlocks;
  const int64_t kvDim = static_cast<int64_t>(kvHeads) * D;
  const T* kBase = kCache + kvh * D;
  const T* vBase = vCache + kvh * D;
  T* ring = reinterpret_cast<T*>(attSmem) + warp * (S * 2 * TK * D);
  const int stride = NW * TK;
  const int first = lo + warp * TK;

  // Cache slot of this lane's key (lane % 16) of the tile at base.
  auto slotOf = [&](int base) {
    const int j = base + (lane & (TK - 1));
    return j <= hi ? table[j / blockSize] * blockSize + j % blockSize : 0;
  };
  // Starts the copies of the tile at base into ring stage st; always commits a group.
  auto issue = [&](int base, int slot, int st) {
    if (base <= hi) {
      T* ks = ring + st * (2 * TK * D);
      T* vs = ks + TK * D;
#pragma unroll
      for (int c = 0; c < COPIES; c++) {
        const int idx = c * 32 + lane;
        const int r = idx / CPR, col = (idx % CPR) * VE;
        const int64_t off = static_cast<int64_t>(__shfl_sync(FULL, slot, r)) * kvDim + col;
        const bool ok = base + r <= hi;
        attCopy16(ks + r * D + col, kBase + off, ok);
        attCopy16(vs + r * D + col, vBase + off, ok);
      }
    }
    attCommit();
  };

  for (int g0 = 0; g0 < group; g0 += HC) {
    const int gn = min(HC, group - g0);
    float qv[HC][DS];
    const T* qrow = q + static_cast<int64_t>(row) * ldq + (kvh * group + g0) * D;
#pragma unroll
    for (int g = 0; g < HC; g++)
#pragma unroll
      for (int i = 0; i < DS / RV; i++)
#pragma unroll
        for (int r = 0; r < RV; r++)
          qv[g][i * RV + r] = g < gn ? toF(qrow[g * D + (part + TG * i) * RV + r]) * scale : 0.0f;
    float acc[HC][EPL], m2[HC / 2], l2[HC / 2];  // m2/l2: head 2 * i + (lane >= 16)
#pragma unroll
    for (int g = 0; g < HC; g++)
#pragma unroll
      for (int e = 0; e < EPL; e++) acc[g][e] = 0.0f;
#pragma unroll
    for (int i = 0; i < HC / 2; i++) {
      m2[i] = -INFINITY;
      l2[i] = 0.0f;
    }

#pragma unroll
    for (int s = 0; s < S - 1; s++) issue(first + s * stride, slotOf(first + s * stride), s);
    int slotNext = slotOf(first + (S - 1) * stride);
    int st = 0, stIssue = S - 1;
    for (int base = first; base <= hi; base += stride) {
      issue(base + (S - 1) * stride, slotNext, stIssue);
      slotNext = slotOf(base + S * stride);
      attWait<S - 1>();
      __syncwarp();
      const T* ks = ring + st * (2 * TK * D);
      const T* vs = ks + TK * D;
      // Scores of the tile's keys, KPW at a time.
#pragma unroll
      for (int it = 0; it < TK / KPW; it++) {
        const int t = it * KPW + sub;
        float v[HC];
#pragma unroll
        for (int g = 0; g < HC; g++) v[g] = 0.0f;
#pragma unroll
        for (int i = 0; i < DS / RV; i++) {
          float kf[RV];
          attLoad<T, RV>(ks + t * D + (part + TG * i) * RV, kf);
#pragma unroll
          for (int g = 0; g < HC; g++)
#pragma unroll
            for (int r = 0; r < RV; r++) v[g] += qv[g][i * RV + r] * kf[r];
        }
        // Reduce over the TG lanes of the key: each exchange halves the heads a lane keeps.
        int h = 0;
#pragma unroll
        for (int step = 0; step < LOG_TG; step++) {
          const int o = TG >> (step + 1);
          if (step < LOG_HC) {
            const int c = HC >> step;
            const bool up = (part & o) != 0;
#pragma unroll
            for (int k = 0; k < c / 2; k++) {
              const float send = up ? v[k] : v[k + c / 2];
              const float keep = up ? v[k + c / 2] : v[k];
              v[k] = keep + __shfl_xor_sync(FULL, send, o);
            }
            if (up) h += c / 2;
          } else {
            v[0] += __shfl_xor_sync(FULL, v[0], o);
          }
        }
        const bool valid = base + t <= hi;
        if ((part & DUP) == 0) {
#pragma unroll
          for (int k = 0; k < CF; k++) {
            // Gemma 2's attention-logit soft-capping: cap * tanh(score / cap), before the mask.
            const float sc = softcap > 0.0f ? softcap * tanhf(v[k] / softcap) : v[k];
            sp[warp][t][h + k] = valid ? sc : -INFINITY;
          }
        }
      }
      __syncwarp();
      // Online softmax over the tile, two heads at a time (lanes 0-15: head 2i, 16-31: head 2i+1).
      {
        const int t = lane & (TK - 1), hp = lane >> 4;
#pragma unroll
        for (int i = 0; i < HC / 2; i++) {
          const float s = sp[warp][t][2 * i + hp];
          float mx = s;
#pragma unroll
          for (int o = TK / 2; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, o));
          const float mNew = fmaxf(m2[i], mx);  // finite: the tile has a key in range
          const float pr = __expf(s - mNew);
          float ps = pr;
#pragma unroll
          for (int o = TK / 2; o > 0; o >>= 1) ps += __shfl_xor_sync(FULL, ps, o);
          const float corr = __expf(m2[i] - mNew);
          l2[i] = l2[i] * corr + ps;
          m2[i] = mNew;
          sp[warp][t][2 * i + hp] = pr;
          const float c0 = __shfl_sync(FULL, corr, 0), c1 = __shfl_sync(FULL, corr, 16);
#pragma unroll
          for (int e = 0; e < EPL; e++) {
            acc[2 * i][e] *= c0;
            acc[2 * i + 1][e] *= c1;
          }
        }
      }
      __syncwarp();
      // P.V over the tile (keys past the range have p = 0 and zero-filled values).
      const int dl = (lane < ACTIVE ? lane : ACTIVE - 1) * EPL;
#pragma unroll
      for (int t = 0; t < TK; t++) {
        float vv[EPL];
        attLoad<T, EPL>(vs + t * D + dl, vv);
        const float4 p4 = *reinterpret_cast<const float4*>(&sp[warp][t][0]);
        const float pp[HC] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
        for (int g = 0; g < HC; g++)
#pragma unroll
          for (int e = 0; e < EPL; e++) acc[g][e] += pp[g] * vv[e];
      }
      __syncwarp();
      st = st + 1 == S ? 0 : st + 1;
      stIssue = stIssue + 1 == S ? 0 : stIssue + 1;
    }
    attWait<0>();
    // Merge the warps' partial softmaxes for this pass's heads (accumulators reuse the rings).
    if ((lane & (TK - 1)) == 0) {
#pragma unroll
      for (int i = 0; i < HC / 2; i++) {
        sm[warp][2 * i + (lane >> 4)] = m2[i];
        sl[warp][2 * i + (lane >> 4)] = l2[i];
      }
    }
    __syncthreads();
    constexpr int DA = D >= 32 ? D : 32;
    float* sacc = reinterpret_cast<float*>(attSmem);
    if (lane < ACTIVE) {
#pragma unroll
      for (int g = 0; g < HC; g++)
#pragma unroll
        for (int e = 0; e < EPL; e++) sacc[(warp * HC + g) * DA + lane * EPL + e] = acc[g][e];
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < gn * D; idx += NW * 32) {
      const int g = idx / D, d = idx % D;
      float mm = -INFINITY;
#pragma unroll
      for (int w = 0; w < NW; w++) mm = fmaxf(mm, sm[w][g]);
      float ll = 0.0f, a = 0.0f;
#pragma unroll
      for (int w = 0; w < NW; w++) {
        if (sm[w][g] == -INFINITY) continue;
        const float c = __expf(sm[w][g] - mm);
        ll += sl[w][g] * c;
        a += sacc[(w * HC + g) * DA + d] * c;
      }
      const int64_t head = static_cast<int64_t>(row) * heads + kvh * group + g0 + g;
      if (partial) {
        // Unnormalised partial of (row, head, split): acc[D] at partial, (m, l) at partial + mlOffset.
        const int64_t slot = head * gridDim.z + blockIdx.z;
        if (d == 0) {
          partial[mlOffset + 2 * slot] = mm;
          partial[mlOffset + 2 * slot + 1] = ll;
        }
        partial[slot * D + d] = a;
      } else {
        out[head * D + d] = fromF<T>(a / ll);
      }
    }
    __syncthreads();
  }
}

constexpr int ATT_COMBINE_THREADS = 256;

// grid (rows * heads), dynamic shared memory splits floats: merges the splits of each (row, head).
// Weights first (one thread per split), then four columns per thread with the splits shared out
// among the block, so the loads of many splits are in flight at once.
template <typename T>
__global__ void __launch_bounds__(ATT_COMBINE_THREADS) attentionCombineKernel(const float* __restrict__ partial, int splits, int D,
                                                                             int64_t mlOffset, T* __restrict__ out) {
  extern __shared__ float cw[];
  __shared__ float red[ATT_COMBINE_THREADS / 32];
  __shared__ float4 part[ATT_COMBINE_THREADS];
  constexpr int NWARP = ATT_COMBINE_THREADS / 32;
  const int64_t head = blockIdx.x;
  const float* acc = partial + head * splits * D;
  const float* ml = partial + mlOffset + head * splits * 2;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  float mm = -INFINITY;
  for (int s = tid; s < splits; s += ATT_COMBINE_THREADS) mm = fmaxf(mm, ml[2 * s]);
  mm = warpMax(mm);
  if (lane == 0) red[warp] = mm;
  __syncthreads();
  mm = red[0];
#pragma unroll
  for (int w = 1; w < NWARP; w++) mm = fmaxf(mm, red[w]);
  __syncthreads();
  float ll = 0.0f;
  for (int s = tid; s < splits; s += ATT_COMBINE_THREADS) {
    const float m = ml[2 * s];
    const float c = m == -INFINITY ? 0.0f : __expf(m - mm);  // an empty split weighs nothing
    cw[s] = c;
    ll += c * ml[2 * s + 1];
  }
  ll = warpSum(ll);
  if (lane == 0) red[warp] = ll;
  __syncthreads();
  ll = 0.0f;
#pragma unroll
  for (int w = 0; w < NWARP; w++) ll += red[w];
  const int C = D / 4, G = ATT_COMBINE_THREADS / C;  // column quads, split groups
  const int c = tid % C, g = tid / C;
  float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (g < G) {
#pragma unroll 8
    for (int s = g; s < splits; s += G) {
      const float w = cw[s];
      const float4 v = *reinterpret_cast<const float4*>(acc + static_cast<int64_t>(s) * D + 4 * c);
      a.x += w * v.x;
      a.y += w * v.y;
      a.z += w * v.z;
      a.w += w * v.w;
    }
  }
  part[tid] = a;
  __syncthreads();
  if (tid < C) {
    float4 sum = part[tid];
    for (int k = 1; k < G; k++) {
      const float4 v = part[k * C + tid];
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    const float inv = 1.0f / ll;
    T* o = out + head * D + 4 * tid;
    o[0] = fromF<T>(sum.x * inv);
    o[1] = fromF<T>(sum.y * inv);
    o[2] = fromF<T>(sum.z * inv);
    o[3] = fromF<T>(sum.w * inv);
  }
}

}  // namespace sb::kern
