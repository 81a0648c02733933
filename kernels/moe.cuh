// Mixture-of-experts routing as transformers' Qwen3-MoE / Mixtral blocks compute it: softmax of the
// router logits in fp32, top-k (largest first, ties to the lower expert), optional renormalisation
// over the chosen k; then the plumbing around per-expert GEMMs: the (row, choice) slots grouped by
// expert in ascending slot order, the rows gathered in that order, and each row's expert outputs
// weighted and summed in ascending expert order with T rounding at each op (index_add_ per expert).
#pragma once

#include "common.cuh"

namespace sb::kern {

constexpr int MOE_ROUTE_WARPS = 4;
constexpr int MOE_MAX_TOPK = 32;

// A warp per row; the row's probabilities live in shared memory (experts floats per warp).
template <typename T>
__global__ void moeRouteKernel(const T* __restrict__ logits, int rows, int experts, int topK, bool renormalize,
                               int32_t* __restrict__ choice, float* __restrict__ weight) {
  extern __shared__ float moeProb[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * MOE_ROUTE_WARPS + warp;
  if (row >= rows) return;
  float* pr = moeProb + warp * experts;
  const T* lg = logits + static_cast<int64_t>(row) * experts;
  float mx = -INFINITY;
  for (int e = lane; e < experts; e += 32) mx = fmaxf(mx, toF(lg[e]));
  mx = warpMax(mx);
  float sum = 0.0f;
  for (int e = lane; e < experts; e += 32) {
    const float v = expf(toF(lg[e]) - mx);
    pr[e] = v;
    sum += v;
  }
  sum = warpSum(sum);
  for (int e = lane; e < experts; e += 32) pr[e] = pr[e] / sum;
  __syncwarp();
  float chosenP[MOE_MAX_TOPK];
  int chosenE[MOE_MAX_TOPK];
  float total = 0.0f;
  for (int k = 0; k < topK; k++) {
    float best = -1.0f;
    int bestE = experts;
    for (int e = lane; e < experts; e += 32) {
      const float v = pr[e];
      if (v > best) best = v, bestE = e;  // ascending e per lane: ties keep the lower index
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oe = __shfl_xor_sync(0xffffffffu, bestE, o);
      if (ob > best || (ob == best && oe < bestE)) best = ob, bestE = oe;
    }
    chosenP[k] = best;
    chosenE[k] = bestE;
    total += best;
    __syncwarp();
    if (lane == 0) pr[bestE] = -2.0f;  // taken
    __syncwarp();
  }
  if (lane == 0) {
    for (int k = 0; k < topK; k++) {
      choice[static_cast<int64_t>(row) * topK + k] = chosenE[k];
      weight[static_cast<int64_t>(row) * topK + k] = renormalize ? chosenP[k] / total : chosenP[k];
    }
  }
}

// One block: offsets[e] = first position of expert e's slots in `order`, offsets[experts] = n;
// order lists every slot (row * topK + k) grouped by expert, ascending within an expert;
// slotPos[slot] = the slot's position in order.
__global__ void moePlanKernel(const int32_t* __restrict__ choice, int n, int experts, int32_t* __restrict__ offsets,
                              int32_t* __restrict__ order, int32_t* __restrict__ slotPos) {
  extern __shared__ int32_t moeCount[];  // experts + 1
  for (int e = threadIdx.x; e <= experts; e += blockDim.x) moeCount[e] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) atomicAdd(&moeCount[choice[i]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int run = 0;
    for (int e = 0; e < experts; e++) {
      const int c = moeCount[e];
      moeCount[e] = run;
      run += c;
    }
    moeCount[experts] = run;
  }
  __syncthreads();
  for (int e = threadIdx.x; e <= experts; e += blockDim.x) offsets[e] = moeCount[e];
  // Each thread walks every slot for its experts, so each expert's slots keep their order.
  for (int e = threadIdx.x; e < experts; e += blockDim.x) {
    int at = moeCount[e];
    for (int i = 0; i < n; i++) {
      if (choice[i] != e) continue;
      order[at] = i;
      slotPos[i] = at;
      at++;
    }
  }
}

template <typename T>
__global__ void moeGatherKernel(const T* __restrict__ x, const int32_t* __restrict__ order, int topK, int hidden, T* __restrict__ xg) {
  const int64_t i = blockIdx.x;
  const T* src = x + static_cast<int64_t>(order[i] / topK) * hidden;
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) xg[i * hidden + c] = src[c];
}

// A block per row: its choices sorted by expert, then out = sum_k round(y * round(w)), rounded after each add.
template <typename T>
__global__ void moeCombineKernel(const T* __restrict__ y, const int32_t* __restrict__ choice, const float* __restrict__ weight,
                                 const int32_t* __restrict__ slotPos, int topK, int hidden, T* __restrict__ out) {
  __shared__ int32_t sPos[MOE_MAX_TOPK];
  __shared__ float sW[MOE_MAX_TOPK];
  const int64_t row = blockIdx.x;
  if (threadIdx.x == 0) {
    int32_t ex[MOE_MAX_TOPK];
    for (int k = 0; k < topK; k++) {
      const int64_t slot = row * topK + k;
      int e = choice[slot], j = k;
      const int32_t pos = slotPos[slot];
      const float w = weight[slot];
      while (j > 0 && ex[j - 1] > e) {
        ex[j] = ex[j - 1];
        sPos[j] = sPos[j - 1];
        sW[j] = sW[j - 1];
        j--;
      }
      ex[j] = e;
      sPos[j] = pos;
      sW[j] = roundT<T>(w);
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
    float acc = 0.0f;
    for (int k = 0; k < topK; k++) acc = roundT<T>(acc + roundT<T>(toF(y[static_cast<int64_t>(sPos[k]) * hidden + c]) * sW[k]));
    out[row * hidden + c] = fromF<T>(acc);
  }
}

// A block per row: out += round(round(sigmoid(gate)) * y), rounded to T (Qwen2-MoE's shared expert).
template <typename T>
__global__ void moeSharedAddKernel(const T* __restrict__ y, const T* __restrict__ gate, int hidden, T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const float g = roundT<T>(1.0f / (1.0f + expf(-toF(gate[row]))));
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
    const int64_t i = row * hidden + c;
    out[i] = fromF<T>(toF(out[i]) + roundT<T>(g * toF(y[i])));
  }
}

// A block per grouped row: its adapter's expert-e factors, shrink (a warp per rank, into shared memory),
// then expand over the output features, added to y in fp32 and rounded once.
template <typename T>
__global__ void moeLoraKernel(const T* __restrict__ x, int in, T* __restrict__ y, int ldy, int out, int topK,
                              const int32_t* __restrict__ order, const int32_t* __restrict__ choice, const int32_t* __restrict__ rowSeq,
                              const int32_t* __restrict__ seqSlot, const LoraSlotEntry* __restrict__ table, int stride, int offset) {
  extern __shared__ float moeLoraT[];
  const int64_t i = blockIdx.x;
  const int slot = order[i];
  const int adapter = seqSlot[rowSeq[slot / topK]];
  if (adapter < 0) return;
  const LoraSlotEntry ent = table[static_cast<int64_t>(adapter) * stride + offset];
  if (ent.rank == 0) return;
  const int r = ent.rank, e = choice[slot];
  const T* A = static_cast<const T*>(ent.a) + static_cast<int64_t>(e) * r * in;
  const T* B = static_cast<const T*>(ent.b) + static_cast<int64_t>(e) * out * r;
  const T* xr = x + i * in;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (int k = warp; k < r; k += warps) {
    float acc = 0.0f;
    for (int j = lane; j < in; j += 32) acc += toF(A[static_cast<int64_t>(k) * in + j]) * toF(xr[j]);
    acc = warpSum(acc);
    if (lane == 0) moeLoraT[k] = acc;
  }
  __syncthreads();
  for (int o = threadIdx.x; o < out; o += blockDim.x) {
    const T* br = B + static_cast<int64_t>(o) * r;
    float acc = 0.0f;
    for (int k = 0; k < r; k++) acc += moeLoraT[k] * toF(br[k]);
    T* yo = y + i * ldy + o;
    *yo = fromF<T>(toF(*yo) + ent.scale * acc);
  }
}

// Expert GEMMs for steps of few rows, all experts in one launch (capturable: the grid does not
// depend on the routing). grid (experts, out / MOE_GEMV_OUT): a block takes MOE_GEMV_OUT output
// features of expert e for e's rows (offsets[e] .. offsets[e + 1] of the grouped x), rowsPerPass
// rows at a time staged in shared memory; a warp per output feature streams its weight row with
// 16-byte loads. fp32 accumulation, one rounding to T (what cuBLAS stores).
constexpr int MOE_GEMV_THREADS = 256;
constexpr int MOE_GEMV_OUT = 32;
constexpr int MOE_GEMV_MAXR = 8;
constexpr int MOE_GEMV_SMEM = 48 * 1024;  // staged rows: no opt-in beyond the default

template <typename T>
__global__ void __launch_bounds__(MOE_GEMV_THREADS) moeGemvKernel(const T* __restrict__ x, int in, const int32_t* __restrict__ offsets,
                                                                  const void* const* __restrict__ weights, int out, int rowsPerPass,
                                                                  T* __restrict__ y) {
  extern __shared__ __align__(16) unsigned char moeSmem[];
  T* xs = reinterpret_cast<T*>(moeSmem);
  const int e = blockIdx.x;
  const int r0 = offsets[e], n = offsets[e + 1] - r0;
  if (n <= 0) return;
  const T* W = static_cast<const T*>(weights[e]);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int o0 = blockIdx.y * MOE_GEMV_OUT;
  constexpr int VE = 16 / static_cast<int>(sizeof(T));
  const bool vec = in % VE == 0;
  for (int p0 = 0; p0 < n; p0 += rowsPerPass) {
    const int rn = min(rowsPerPass, n - p0);
    __syncthreads();  // the previous pass is done with xs
    const T* src = x + static_cast<int64_t>(r0 + p0) * in;
    for (int i = threadIdx.x; i < rn * in; i += blockDim.x) xs[i] = src[i];
    __syncthreads();
    for (int oi = warp; oi < MOE_GEMV_OUT; oi += MOE_GEMV_THREADS / 32) {
      const int o = o0 + oi;
      if (o >= out) break;
      const T* wr = W + static_cast<int64_t>(o) * in;
      float acc[MOE_GEMV_MAXR];
#pragma unroll
      for (int r = 0; r < MOE_GEMV_MAXR; r++) acc[r] = 0.0f;
      if (vec) {
        for (int k = lane * VE; k < in; k += 32 * VE) {
          const uint4 wraw = *reinterpret_cast<const uint4*>(wr + k);
          const T* wv = reinterpret_cast<const T*>(&wraw);
          float wf[VE];
#pragma unroll
          for (int i = 0; i < VE; i++) wf[i] = toF(wv[i]);
#pragma unroll
          for (int r = 0; r < MOE_GEMV_MAXR; r++) {
            if (r >= rn) break;
            const uint4 xraw = *reinterpret_cast<const uint4*>(xs + r * in + k);
            const T* xv = reinterpret_cast<const T*>(&xraw);
            float sum = 0.0f;
#pragma unroll
            for (int i = 0; i < VE; i++) sum += wf[i] * toF(xv[i]);
            acc[r] += sum;
          }
        }
      } else {
        for (int k = lane; k < in; k += 32) {
          const float w = toF(wr[k]);
#pragma unroll
          for (int r = 0; r < MOE_GEMV_MAXR; r++) {
            if (r >= rn) break;
            acc[r] += w * toF(xs[r * in + k]);
          }
        }
      }
#pragma unroll
      for (int r = 0; r < MOE_GEMV_MAXR; r++) {
        if (r >= rn) break;
        const float v = warpSum(acc[r]);
        if (lane == 0) y[static_cast<int64_t>(r0 + p0 + r) * out + o] = fromF<T>(v);
      }
    }
  }
}

}  // namespace sb::kern
