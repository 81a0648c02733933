// The launchers declared in launch.h: pick a grid, dispatch on the element type, report the
// launch error. One translation unit, so every kernel family is compiled (and checked) together.
#include "attention.cuh"
#include "elementwise.cuh"
#include "norm.cuh"
#include "rope.cuh"
#include "sampling.cuh"
#include "sgmv.cuh"

#include <algorithm>

namespace sb::kern {

static int threadsFor(int n) { return n >= 1024 ? 1024 : n >= 256 ? 256 : n >= 128 ? 128 : 64; }

static int smCount() {
  static int n = 0;
  if (n == 0) {
    int dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
    if (n <= 0) n = 100;
  }
  return n;
}


int embedding(Elem t, const void* table, const int32_t* tokens, int rows, int hidden, void* out, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    embeddingKernel<T><<<rows, threadsFor(hidden), 0, s>>>(static_cast<const T*>(table), tokens, hidden, static_cast<T*>(out));
    return launched();
  });
}

int rmsnorm(Elem t, const void* x, void* residual, const void* w, int rows, int hidden, float eps, void* out, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    rmsnormKernel<T><<<rows, threadsFor(hidden), 0, s>>>(static_cast<const T*>(x), static_cast<T*>(residual),
                                                        static_cast<const T*>(w), hidden, eps, static_cast<T*>(out));
    return launched();
  });
}

int rope(Elem t, void* q, int ldq, void* k, int ldk, const int32_t* positions, const float* invFreq, int rows, int heads,
         int kvHeads, int dim, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    ropeKernel<T><<<rows, threadsFor((heads + kvHeads) * dim / 2), 0, s>>>(static_cast<T*>(q), ldq, static_cast<T*>(k), ldk, positions, invFreq, heads, kvHeads, dim);
    return launched();
  });
}

int siluMul(Elem t, const void* gate, const void* up, int ld, int rows, int inter, void* out, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    dim3 grid((inter + 255) / 256, rows);
    siluMulKernel<T><<<grid, 256, 0, s>>>(static_cast<const T*>(gate), static_cast<const T*>(up), ld, inter, static_cast<T*>(out));
    return launched();
  });
}

int addBias(Elem t, void* y, const void* bias, int rows, int cols, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    dim3 grid((cols + 255) / 256, rows);
    addBiasKernel<T><<<grid, 256, 0, s>>>(static_cast<T*>(y), static_cast<const T*>(bias), cols);
    return launched();
  });
}

int sgmvShrink(Elem t, const void* x, int in, float* tmp, int maxRank, const LoraSlotEntry* table, int tableStride,
               const LoraProjSet& set, const int32_t* segStart, const int32_t* segSlot, int numSegs, int maxSegRows,
               int rows, Stream s) {
  if (numSegs == 0 || set.count < 1 || set.count > 3) return numSegs == 0 ? 0 : static_cast<int>(cudaErrorInvalidValue);
  // tmp collects partial sums: clear it first.
  if (cudaMemsetAsync(tmp, 0, sizeof(float) * static_cast<size_t>(set.count) * maxRank * rows, s) != cudaSuccess) return launched();
  const int rowTiles = (maxSegRows + SGMV_ROWS - 1) / SGMV_ROWS, rankGroups = (maxRank + 7) / 8;
  const int blocks = numSegs * rowTiles * rankGroups * set.count;
  const int maxSplits = std::max(1, in / 512);
  const int inSplits = std::min(maxSplits, std::max(1, (2 * smCount() + blocks - 1) / blocks));
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    dim3 grid(numSegs, rowTiles, set.count * rankGroups * inSplits);
    sgmvShrinkKernel<T><<<grid, 256, 0, s>>>(static_cast<const T*>(x), in, tmp, maxRank, table, tableStride, set, segStart, segSlot, inSplits, rankGroups);
    return launched();
  });
}

int sgmvExpand(Elem t, const float* tmp, int maxRank, void* y, int ldy, const LoraSlotEntry* table, int tableStride,
               const LoraProjSet& set, const int32_t* segStart, const int32_t* segSlot, int numSegs, int maxSegRows,
               Stream s) {
  if (numSegs == 0 || set.count < 1 || set.count > 3) return numSegs == 0 ? 0 : static_cast<int>(cudaErrorInvalidValue);
  int maxOut = 0;
  for (int p = 0; p < set.count; p++) maxOut = std::max(maxOut, set.out[p]);
  const int outBlocks = (maxOut + 255) / 256;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    dim3 grid(numSegs, (maxSegRows + SGMV_ROWS - 1) / SGMV_ROWS, set.count * outBlocks);
    const size_t smem = sizeof(float) * SGMV_ROWS * maxRank;
    sgmvExpandKernel<T><<<grid, 256, smem, s>>>(tmp, maxRank, static_cast<T*>(y), ldy, table, tableStride, set, segStart, segSlot, outBlocks);
    return launched();
  });
}

int writeKv(Elem t, const void* k, const void* v, int ld, const int32_t* slots, int rows, int kvDim, void* kCache, void* vCache,
            Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    writeKvKernel<T><<<rows, threadsFor(kvDim), 0, s>>>(static_cast<const T*>(k), static_cast<const T*>(v), ld, slots, kvDim,
                                                       static_cast<T*>(kCache), static_cast<T*>(vCache));
    return launched();
  });
}

// Enough blocks to fill the GPU twice over, each with at least 64 keys.
static int attentionSplits(int rows, int kvHeads, int maxKeys) {
  const int blocks = rows * kvHeads;
  if (blocks >= 2 * smCount() || maxKeys <= 128) return 1;
  return std::max(1, std::min((2 * smCount() + blocks - 1) / blocks, (maxKeys + 63) / 64));
}

int64_t attentionWorkspaceFloats(int rows, int heads, int kvHeads, int dim, int maxKeys) {
  const int splits = attentionSplits(rows, kvHeads, maxKeys);
  return splits == 1 ? 0 : static_cast<int64_t>(rows) * heads * splits * (dim + 2);
}

template <typename T, int D>
static int attentionFor(const void* q, int ldq, const void* kCache, const void* vCache, const int32_t* blockTables, int maxBlocks,
                        const int32_t* rowSeq, const int32_t* rowPos, int rows, int heads, int kvHeads, int blockSize,
                        int window, float scale, void* out, int maxKeys, float* ws, int64_t wsFloats, Stream s) {
  int splits = attentionSplits(rows, kvHeads, maxKeys);
  if (splits > 1 && (!ws || wsFloats < static_cast<int64_t>(rows) * heads * splits * (D + 2))) splits = 1;
  const int keysPerSplit = (maxKeys + splits - 1) / splits;
  dim3 grid(rows, kvHeads, splits);
  pagedAttentionKernel<T, D><<<grid, ATT_WARPS * 32, 0, s>>>(
      static_cast<const T*>(q), ldq, static_cast<const T*>(kCache), static_cast<const T*>(vCache), blockTables, maxBlocks,
      rowSeq, rowPos, heads, kvHeads, blockSize, window, scale, static_cast<T*>(out), keysPerSplit, splits > 1 ? ws : nullptr);
  if (splits > 1) attentionCombineKernel<T><<<rows * heads, D, 0, s>>>(ws, splits, D, static_cast<T*>(out));
  return launched();
}

int pagedAttention(Elem t, const void* q, int ldq, const void* kCache, const void* vCache, const int32_t* blockTables, int maxBlocks,
                   const int32_t* rowSeq, const int32_t* rowPos, int rows, int heads, int kvHeads, int dim, int blockSize,
                   int window, float scale, void* out, int maxKeys, float* workspace, int64_t workspaceFloats, Stream s) {
  if (rows == 0) return 0;
  if (heads % kvHeads != 0 || heads / kvHeads > ATT_MAX_GROUP) return static_cast<int>(cudaErrorInvalidValue);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    switch (dim) {
#define SB_ATT(D) \
  case D: return attentionFor<T, D>(q, ldq, kCache, vCache, blockTables, maxBlocks, rowSeq, rowPos, rows, heads, kvHeads, blockSize, window, scale, out, maxKeys, workspace, workspaceFloats, s);
      SB_ATT(16) SB_ATT(32) SB_ATT(64) SB_ATT(96) SB_ATT(128) SB_ATT(256)
#undef SB_ATT
      default: return static_cast<int>(cudaErrorInvalidValue);
    }
  });
}

int argmaxLogprob(const float* logits, int rows, int vocab, int32_t* ids, float* logprob, float* lse, Stream s) {
  if (rows == 0) return 0;
  argmaxLogprobKernel<<<rows, 1024, 0, s>>>(logits, vocab, ids, logprob, lse);
  return launched();
}

int convertF32(Elem t, const float* src, void* dst, int64_t n, Stream s) {
  if (n == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    convertF32Kernel<T><<<1024, 256, 0, s>>>(src, static_cast<T*>(dst), n);
    return launched();
  });
}

int convert16(Elem t, const uint16_t* src, bool srcIsBf16, void* dst, int64_t n, Stream s) {
  if (n == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    convert16Kernel<T><<<1024, 256, 0, s>>>(src, srcIsBf16, static_cast<T*>(dst), n);
    return launched();
  });
}

int randomFill(Elem t, void* dst, int64_t n, uint64_t seed, float std, Stream s) {
  if (n == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    randomFillKernel<T><<<2048, 256, 0, s>>>(static_cast<T*>(dst), n, seed, std);
    return launched();
  });
}

}  // namespace sb::kern
