// Turning logit rows into what the engine returns, on the device: one block per row computes the
// raw log-softmax normaliser, the logprob of a given target (prompt logprobs), the top-n
// alternatives, and picks the next token (greedy, or sampled after mask, repetition penalty,
// temperature, top-k and top-p). Only small results travel to the host.
//
// Sampling semantics (the same distribution as Hugging Face's processors; the draw itself is
// this engine's own): top-k keeps every token whose logit ties the k-th; top-p keeps the tokens
// whose scaled logit is at least that of the token where the mass, taken best first, reaches
// top_p (ties at that edge are all kept). Weights are exp(z - max) in 32.32 fixed point, so sums
// are exact integers and the draw is deterministic: u = hash(seed, position) picks the token
// whose cumulative weight, in token-id order over the kept set, first exceeds u * total.
#pragma once

#include <cub/block/block_scan.cuh>

#include "common.cuh"

namespace sb::kern {

// 1024: a row's passes are bound by how many threads stream it (measured on H100, 64 rows with
// top-k 50 + top-p 0.9: 255 -> 198 us at a 32k vocabulary, 1087 -> 758 us at 152k; greedy at
// 152k 67 -> 45 us), despite ~200 bytes of spills at the 64-register cap this implies.
constexpr int FINISH_THREADS = 1024;

// Larger float -> larger key; every finite value and +-inf maps in order.
__device__ __forceinline__ uint32_t orderKey(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ bool before(float av, int ai, float bv, int bi) { return av > bv || (av == bv && ai < bi); }

// The best (value, id) over the warp in the order "higher value, then lower id"; every lane gets
// it. Entries with id < 0 are empty.
__device__ __forceinline__ void warpBest(float& v, int& id) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, id, o);
    if (oi >= 0 && (id < 0 || before(ov, oi, v, id))) {
      v = ov;
      id = oi;
    }
  }
}

// The same over the block.
__device__ __forceinline__ void blockBest(float& v, int& id) {
  __shared__ float sv[32];
  __shared__ int si[32];
  warpBest(v, id);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    sv[warp] = v;
    si[warp] = id;
  }
  __syncthreads();
  v = -INFINITY;
  id = -1;
  if (lane < static_cast<int>(blockDim.x >> 5)) {
    v = sv[lane];
    id = si[lane];
  }
  warpBest(v, id);
}

__device__ __forceinline__ uint64_t blockSumU64(uint64_t v) {
  __shared__ uint64_t part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? part[lane] : 0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// exp(z - m) in 32.32 fixed point (z <= m, so at most 2^32).
__device__ __forceinline__ uint64_t fixedWeight(float z, float m) { return __float2ull_rn(expf(z - m) * 4294967296.0f); }

// Calls f(i, v, valid) for every entry of a row, whole warps in step (so f may use warp
// collectives); UNROLL coalesced loads are issued before any is used, so a pass over a row that
// lives in L2 is not one load latency per element.
constexpr int ROW_UNROLL = 8;
template <typename F>
__device__ __forceinline__ void forRow(const float* row, int vocab, F f) {
  for (int base = 0; base < vocab; base += ROW_UNROLL * blockDim.x) {
    float v[ROW_UNROLL];
#pragma unroll
    for (int u = 0; u < ROW_UNROLL; u++) {
      const int i = base + u * blockDim.x + threadIdx.x;
      v[u] = i < vocab ? row[i] : -INFINITY;
    }
#pragma unroll
    for (int u = 0; u < ROW_UNROLL; u++) {
      const int i = base + u * blockDim.x + threadIdx.x;
      f(i, v[u], i < vocab);
    }
  }
}

// hist[bin] += w for every lane (w = 0: nothing), one atomic per distinct bin of the warp: a
// logit row crowds into few bins, and lanes hammering one shared address would serialise.
__device__ __forceinline__ void warpHistAdd(unsigned long long* hist, uint32_t bin, uint64_t w) {
  const int lane = threadIdx.x & 31;
  unsigned todo = __ballot_sync(0xffffffffu, w != 0);
  while (todo) {
    const int leader = __ffs(todo) - 1;
    const uint32_t b = __shfl_sync(0xffffffffu, bin, leader);
    const bool mine = w != 0 && bin == b;
    unsigned long long sum = mine ? w : 0;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == leader) atomicAdd(&hist[b], sum);
    todo &= ~__ballot_sync(0xffffffffu, mine);
  }
}

// The largest key T such that the measure (count, or fixed-point weight) of finite entries with
// key >= max(T, minKey) reaches `want` (1 <= want <= the total): a radix select, 8 bits a pass.
// blockDim.x must be a multiple of 32 (whole warps walk the row together).
__device__ uint32_t selectThreshold(const float* z, int vocab, uint32_t minKey, bool byWeight, float m, uint64_t want) {
  __shared__ unsigned long long hist[256];
  __shared__ uint32_t sPrefix;
  __shared__ uint64_t sAbove;
  uint32_t prefix = 0, mask = 0;
  uint64_t above = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    forRow(z, vocab, [&](int, float v, bool valid) {
      const uint32_t k = orderKey(v);
      const bool take = valid && v != -INFINITY && k >= minKey && (k & mask) == prefix;
      warpHistAdd(hist, take ? (k >> shift) & 255 : 0, take ? (byWeight ? fixedWeight(v, m) : 1) : 0);
    });
    __syncthreads();
    if (threadIdx.x == 0) {
      uint64_t acc = above;
      int d = 255;
      for (; d > 0; d--) {
        if (acc + hist[d] >= want) break;
        acc += hist[d];
      }
      sAbove = acc;
      sPrefix = prefix | (static_cast<uint32_t>(d) << shift);
    }
    __syncthreads();
    prefix = sPrefix;
    above = sAbove;
    mask |= 255u << shift;
    __syncthreads();
  }
  return prefix;
}

// grid (rows), block FINISH_THREADS.
__global__ void __launch_bounds__(FINISH_THREADS) finishRowsKernel(const float* __restrict__ logits, int vocab,
                                                                    const RowFinish* __restrict__ params,
                                                                    const uint32_t* __restrict__ masks,
                                                                    const int32_t* __restrict__ penaltyTokens,
                                                                    float* __restrict__ work, int32_t* __restrict__ results,
                                                                    int resultStride) {
  const int row = blockIdx.x;
  const RowFinish p = params[row];
  const float* x = logits + static_cast<int64_t>(row) * vocab;
  int32_t* res = results + static_cast<int64_t>(row) * resultStride;
  // Raw statistics: argmax (lowest id on ties, as torch.argmax) and log-sum-exp.
  float best = -INFINITY;
  int bestId = -1;
  forRow(x, vocab, [&](int i, float v, bool valid) {
    if (valid && (bestId < 0 || before(v, i, best, bestId))) {
      best = v;
      bestId = i;
    }
  });
  blockBest(best, bestId);
  float sum = 0.0f;
  forRow(x, vocab, [&](int, float v, bool valid) { sum += valid ? expf(v - best) : 0.0f; });
  sum = blockSum(sum);
  const float lse = best + logf(sum);
  if (threadIdx.x == 0) {
    res[2] = __float_as_int(p.target >= 0 ? x[p.target] - lse : 0.0f);
    res[3] = 0;
  }
  // Alternatives: n rounds, each the best entry after the previous one in (value desc, id asc).
  float prevV = INFINITY;
  int prevId = -1;
  for (int n = 0; n < p.topN; n++) {
    float v = -INFINITY;
    int id = -1;
    forRow(x, vocab, [&](int i, float xv, bool valid) {
      if (valid && (prevId < 0 || before(prevV, prevId, xv, i)) && (id < 0 || before(xv, i, v, id))) {
        v = xv;
        id = i;
      }
    });
    blockBest(v, id);
    if (threadIdx.x == 0) {
      res[4 + 2 * n] = id;
      res[5 + 2 * n] = __float_as_int(v - lse);
    }
    prevV = v;
    prevId = id;
  }
  if (!p.sample) return;
  const bool plain = p.temperature <= 0.0f && p.maskOffset < 0 && p.penaltyCount == 0 && p.biasCount == 0;
  if (plain) {
    if (threadIdx.x == 0) {
      res[0] = bestId;
      res[1] = __float_as_int(best - lse);
    }
    return;
  }
  // z: the processed logits (mask, then penalty, then biases, then temperature), in this row's work space.
  float* z = work + static_cast<int64_t>(p.workRow) * vocab;
  const uint32_t* mk = p.maskOffset >= 0 ? masks + p.maskOffset : nullptr;
  forRow(x, vocab, [&](int i, float v, bool valid) {
    if (valid) z[i] = mk && !((mk[i >> 5] >> (i & 31)) & 1u) ? -INFINITY : v;
  });
  __syncthreads();
  // Distinct tokens (the host deduplicates), each penalised once as HF's RepetitionPenaltyLogitsProcessor.
  for (int j = threadIdx.x; j < p.penaltyCount; j += blockDim.x) {
    const int t = penaltyTokens[p.penaltyOffset + j];
    if (t < 0 || t >= vocab) continue;
    const float l = z[t];
    z[t] = l > 0 ? l / p.repetitionPenalty : l * p.repetitionPenalty;
  }
  __syncthreads();
  // Additive biases (OpenAI's logit_bias and frequency/presence penalties), distinct tokens.
  for (int j = threadIdx.x; j < p.biasCount; j += blockDim.x) {
    const int t = penaltyTokens[p.biasOffset + j];
    if (t < 0 || t >= vocab) continue;
    z[t] += __int_as_float(penaltyTokens[p.biasOffset + p.biasCount + j]);
  }
  __syncthreads();
  float zBest = -INFINITY;
  int zId = -1;
  int finite = 0;
  forRow(z, vocab, [&](int i, float v, bool valid) {
    if (!valid || v == -INFINITY) return;
    if (p.temperature > 0.0f) {
      v /= p.temperature;
      z[i] = v;
    }
    finite++;
    if (zId < 0 || before(v, i, zBest, zId)) {
      zBest = v;
      zId = i;
    }
  });
  blockBest(zBest, zId);
  finite = static_cast<int>(blockSum(static_cast<float>(finite)));
  __syncthreads();
  if (zId < 0) {
    if (threadIdx.x == 0) {
      res[0] = -1;
      res[3] = 1;  // the mask allows no token
    }
    return;
  }
  int chosen = zId;
  if (p.temperature > 0.0f) {
    const float m = zBest;
    // Tokens whose fixed-point weight is 0 are never drawn: top-k matters only if it cuts live ones.
    int live = 0;
    forRow(z, vocab, [&](int, float v, bool valid) { live += valid && v != -INFINITY && fixedWeight(v, m) != 0; });
    live = static_cast<int>(blockSum(static_cast<float>(live)));
    uint32_t minKey = 0;
    if (p.topK > 0 && p.topK < finite && p.topK < live) minKey = selectThreshold(z, vocab, 0, false, m, static_cast<uint64_t>(p.topK));
    auto keptWeight = [&](float v, bool valid) -> uint64_t {
      return valid && v != -INFINITY && orderKey(v) >= minKey ? fixedWeight(v, m) : 0;
    };
    if (p.topP < 1.0f) {
      // Mass of the top-k set, then the top-p edge within it.
      uint64_t w = 0;
      forRow(z, vocab, [&](int, float v, bool valid) { w += keptWeight(v, valid); });
      const uint64_t total = blockSumU64(w);
      uint64_t want = static_cast<uint64_t>(ceil(static_cast<double>(p.topP) * static_cast<double>(total)));
      want = want < 1 ? 1 : want > total ? total : want;
      minKey = selectThreshold(z, vocab, minKey, true, m, want);
    }
    // Inverse CDF in token-id order. Slices of blockDim consecutive ids: first every slice's kept
    // weight (warp sums into shared totals), then one block scan inside the slice holding the
    // r-th unit of weight.
    constexpr int MAX_SLICES = 512;
    __shared__ unsigned long long sliceW[MAX_SLICES];
    __shared__ int sSlice;
    __shared__ unsigned long long sBefore;
    const int slices = (vocab + blockDim.x - 1) / blockDim.x;
    for (int k = threadIdx.x; k < MAX_SLICES; k += blockDim.x) sliceW[k] = 0;
    __syncthreads();
    uint64_t w = 0;
    forRow(z, vocab, [&](int i, float v, bool valid) {
      const uint64_t wi = keptWeight(v, valid);
      w += wi;
      if (slices <= MAX_SLICES) {
        unsigned long long ws = wi;
        for (int o = 16; o > 0; o >>= 1) ws += __shfl_xor_sync(0xffffffffu, ws, o);
        if ((threadIdx.x & 31) == 0 && ws) atomicAdd(&sliceW[min(i, vocab - 1) / blockDim.x], ws);
      }
    });
    const uint64_t kept = blockSumU64(w);
    const double u = uniformFromSeed(p.seed, p.position);
    uint64_t r = static_cast<uint64_t>(u * static_cast<double>(kept));
    if (r >= kept) r = kept - 1;
    using Scan = cub::BlockScan<unsigned long long, FINISH_THREADS>;
    __shared__ typename Scan::TempStorage scanTmp;
    __shared__ int sChosen;
    if (threadIdx.x == 0) {
      sChosen = -1;
      sSlice = 0;
      sBefore = 0;
      if (slices <= MAX_SLICES) {
        unsigned long long acc = 0;
        int k = 0;
        while (k < slices - 1 && acc + sliceW[k] <= r) acc += sliceW[k++];
        sSlice = k;
        sBefore = acc;
      }
    }
    __syncthreads();
    // With more slices than the table holds, walk them all from the start.
    uint64_t running = sBefore;
    for (int base = sSlice * blockDim.x; base < vocab; base += blockDim.x) {
      const int i = base + threadIdx.x;
      const uint64_t wi = keptWeight(i < vocab ? z[i] : -INFINITY, i < vocab);
      unsigned long long incl = 0, sliceTotal = 0;
      Scan(scanTmp).InclusiveSum(static_cast<unsigned long long>(wi), incl, sliceTotal);
      if (wi && running + incl > r && running + incl - wi <= r) sChosen = i;
      running += sliceTotal;
      __syncthreads();
      if (sChosen >= 0) break;
    }
    chosen = sChosen >= 0 ? sChosen : zId;
  }
  if (threadIdx.x == 0) {
    res[0] = chosen;
    res[1] = __float_as_int(x[chosen] - lse);
  }
}

}  // namespace sb::kern
