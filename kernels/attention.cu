// Host launchers of the attention family (paged attention with split-K, and the KV cache writes),
// declared in launch.h, beside their kernels in attention.cuh: each picks a grid, dispatches on the
// element type and returns its launch error.
#include "attention.cuh"

#include <algorithm>

namespace sb::kern {

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

// Split-K for few rows: as many splits as fit one wave of resident blocks (ATT_BLOCKS_PER_SM per
// SM), each with at least 64 keys. Only the grid depends on maxKeys: every block finds its own
// row's share of keys, so a bucketed maxKeys is enough.
static int attentionSplits(int rows, int kvHeads, int maxKeys) {
  const int blocks = rows * kvHeads;
  if (blocks >= smCount() || maxKeys <= 128) return 1;
  return std::max(1, std::min(ATT_BLOCKS_PER_SM * smCount() / blocks, (maxKeys + 63) / 64));
}

int64_t attentionWorkspaceFloats(int rows, int heads, int kvHeads, int dim, int maxKeys) {
  const int splits = attentionSplits(rows, kvHeads, maxKeys);
  return splits == 1 ? 0 : static_cast<int64_t>(rows) * heads * splits * (dim + 2);
}

template <typename T, int D>
static int attentionFor(const void* q, int ldq, const void* kCache, const void* vCache, const int32_t* blockTables, int maxBlocks,
                        const int32_t* rowSeq, const int32_t* rowPos, const int32_t* rowIndex, int rows, int heads, int kvHeads,
                        int blockSize, int window, float scale, float softcap, void* out, int maxKeys, float* ws, int64_t wsFloats, Stream s) {
  using C = AttCfg<T, D>;
  // Once per device: allow the rings' dynamic shared memory (over 48 KiB for fp32 / D 256) and ask
  // for the largest shared-memory carveout, so ATT_BLOCKS_PER_SM blocks fit on an SM.
  static unsigned long long configured = 0;
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev < 64 && !(configured >> dev & 1)) {
    cudaFuncSetAttribute(pagedAttentionKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
    cudaFuncSetAttribute(pagedAttentionKernel<T, D>, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
    configured |= 1ull << dev;
  }
  int splits = rowIndex ? 1 : attentionSplits(rows, kvHeads, maxKeys);
  if (splits > 1 && (!ws || wsFloats < static_cast<int64_t>(rows) * heads * splits * (D + 2))) splits = 1;
  dim3 grid(rows * kvHeads, 1, splits);
  // Workspace: acc [rows * heads, splits, D], then (m, l) [rows * heads, splits, 2].
  const int64_t mlOffset = static_cast<int64_t>(rows) * heads * splits * D;
  pagedAttentionKernel<T, D><<<grid, C::NW * 32, C::SMEM, s>>>(
      static_cast<const T*>(q), ldq, static_cast<const T*>(kCache), static_cast<const T*>(vCache), blockTables, maxBlocks,
      rowSeq, rowPos, rowIndex, heads, kvHeads, blockSize, window, scale, softcap, static_cast<T*>(out), splits > 1 ? ws : nullptr, mlOffset);
  if (splits > 1)
    attentionCombineKernel<T><<<rows * heads, ATT_COMBINE_THREADS, splits * sizeof(float), s>>>(ws, splits, D, mlOffset, static_cast<T*>(out));
  return launched();
}

int pagedAttention(Elem t, const void* q, int ldq, const void* kCache, const void* vCache, const int32_t* blockTables, int maxBlocks,
                   const int32_t* rowSeq, const int32_t* rowPos, const int32_t* rowIndex, int rows, int heads, int kvHeads, int dim,
                   int blockSize, int window, float scale, float softcap, void* out, int maxKeys, float* workspace, int64_t workspaceFloats, Stream s) {
  if (rows == 0) return 0;
  if (heads % kvHeads != 0 || heads / kvHeads > ATT_MAX_GROUP) return static_cast<int>(cudaErrorInvalidValue);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    switch (dim) {
#define SB_ATT(D) \
  case D: return attentionFor<T, D>(q, ldq, kCache, vCache, blockTables, maxBlocks, rowSeq, rowPos, rowIndex, rows, heads, kvHeads, blockSize, window, scale, softcap, out, maxKeys, workspace, workspaceFloats, s);
      SB_ATT(16) SB_ATT(32) SB_ATT(64) SB_ATT(80) SB_ATT(96) SB_ATT(128) SB_ATT(256)
#undef SB_ATT
      default: return static_cast<int>(cudaErrorInvalidValue);
    }
  });
}

}  // namespace sb::kern
