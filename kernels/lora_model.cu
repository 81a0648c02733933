// LoRA on the model-level modules (launch.h: loraEmbedding, loraLogits): PEFT's Embedding LoRA on the
// token embeddings and a Linear LoRA on the output head. Each row looks up its sequence's adapter slot
// on the device (seqSlot[rowSeq[row]]), so one launch serves a mixed batch and a captured decode graph
// stays valid whichever adapters its rows use. Rare and small next to the decoder's projections: plain
// per-row kernels, rounded as PEFT rounds in the model's dtype.
#include "common.cuh"

namespace sb::kern {
namespace {

// x[row] += round(round(round(A[:, tok] . B[i]) * scale) * embedScale), rounded to T as PEFT's
// (after_A @ embedding_B) * scaling * embed_scale, then added to the (scaled) base embedding.
template <typename T>
__global__ void loraEmbeddingKernel(const int32_t* __restrict__ tokens, const int32_t* __restrict__ rowSeq, const int32_t* __restrict__ seqSlot,
                                    const LoraSlotEntry* __restrict__ entries, int vocab, int hidden, float embedScale, T* __restrict__ x) {
  const int row = blockIdx.x;
  const int slot = seqSlot[rowSeq[row]];
  if (slot < 0) return;
  const LoraSlotEntry e = entries[slot];
  if (e.rank == 0) return;
  const T* a = static_cast<const T*>(e.a);
  const T* b = static_cast<const T*>(e.b);
  const int64_t tok = tokens[row];
  const float es = roundT<T>(embedScale);
  for (int i = blockIdx.y * blockDim.x + threadIdx.x; i < hidden; i += gridDim.y * blockDim.x) {
    float acc = 0.0f;
    for (int k = 0; k < e.rank; k++) acc = fmaf(toF(a[static_cast<int64_t>(k) * vocab + tok]), toF(b[static_cast<int64_t>(i) * e.rank + k]), acc);
    float d = roundT<T>(roundT<T>(acc) * e.scale);
    if (embedScale != 1.0f) d = roundT<T>(d * es);
    T* xr = x + static_cast<int64_t>(row) * hidden + i;
    *xr = fromF<T>(toF(*xr) + d);
  }
}

// tmp[i, k] = round(h_i . A[k]) for logit row i whose sequence's adapter has a head LoRA: a warp per k.
template <typename T>
__global__ void loraLogitsShrinkKernel(const T* __restrict__ x, const int32_t* __restrict__ logitRows, const int32_t* __restrict__ rowSeq,
                                       const int32_t* __restrict__ seqSlot, const LoraSlotEntry* __restrict__ entries, int maxRank, int hidden,
                                       float* __restrict__ tmp) {
  const int i = blockIdx.x;
  const int slot = seqSlot[rowSeq[logitRows[i]]];
  if (slot < 0) return;
  const LoraSlotEntry e = entries[slot];
  if (e.rank == 0) return;
  const T* a = static_cast<const T*>(e.a);
  const T* xr = x + static_cast<int64_t>(i) * hidden;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int k = warp; k < e.rank; k += warps) {
    const T* ak = a + static_cast<int64_t>(k) * hidden;
    float acc = 0.0f;
    for (int j = lane; j < hidden; j += 32) acc = fmaf(toF(xr[j]), toF(ak[j]), acc);
    acc = warpSum(acc);
    if (lane == 0) tmp[static_cast<int64_t>(i) * maxRank + k] = roundT<T>(acc);
  }
}

// logits[i, o] += round(round(tmp_i . B[o]) * scale): PEFT's lora_B(lora_A(h)) * scaling in T, added to
// the fp32 base logits before any soft-capping.
template <typename T>
__global__ void loraLogitsExpandKernel(const float* __restrict__ tmp, const int32_t* __restrict__ logitRows, const int32_t* __restrict__ rowSeq,
                                       const int32_t* __restrict__ seqSlot, const LoraSlotEntry* __restrict__ entries, int maxRank, int vocab,
                                       float* __restrict__ logits) {
  const int i = blockIdx.x;
  const int o = blockIdx.y * blockDim.x + threadIdx.x;
  const int slot = seqSlot[rowSeq[logitRows[i]]];
  if (slot < 0 || o >= vocab) return;
  const LoraSlotEntry e = entries[slot];
  if (e.rank == 0) return;
  const T* b = static_cast<const T*>(e.b) + static_cast<int64_t>(o) * e.rank;
  const float* t = tmp + static_cast<int64_t>(i) * maxRank;
  float acc = 0.0f;
  for (int k = 0; k < e.rank; k++) acc = fmaf(t[k], toF(b[k]), acc);
  logits[static_cast<int64_t>(i) * vocab + o] += roundT<T>(roundT<T>(acc) * e.scale);
}

}  // namespace

int loraEmbedding(Elem t, const int32_t* tokens, const int32_t* rowSeq, const int32_t* seqSlot, int rows, const LoraSlotEntry* entries,
                  int vocab, int hidden, float embedScale, void* x, Stream s) {
  if (rows <= 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    const int threads = threadsFor(hidden);
    const dim3 grid(rows, (hidden + threads - 1) / threads);
    loraEmbeddingKernel<T><<<grid, threads, 0, reinterpret_cast<cudaStream_t>(s)>>>(tokens, rowSeq, seqSlot, entries, vocab, hidden, embedScale,
                                                                                  static_cast<T*>(x));
    return launched();
  });
}

int loraLogits(Elem t, const void* x, const int32_t* logitRows, const int32_t* rowSeq, const int32_t* seqSlot, int rows,
               const LoraSlotEntry* entries, int maxRank, int hidden, int vocab, float* tmp, float* logits, Stream s) {
  if (rows <= 0 || maxRank <= 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    auto st = reinterpret_cast<cudaStream_t>(s);
    loraLogitsShrinkKernel<T><<<rows, 256, 0, st>>>(static_cast<const T*>(x), logitRows, rowSeq, seqSlot, entries, maxRank, hidden, tmp);
    const int err = launched();
    if (err != 0) return err;
    const dim3 grid(rows, (vocab + 255) / 256);
    loraLogitsExpandKernel<T><<<grid, 256, 0, st>>>(tmp, logitRows, rowSeq, seqSlot, entries, maxRank, vocab, logits);
    return launched();
  });
}

}  // namespace sb::kern
