// The launchers declared in launch.h: pick a grid, dispatch on the element type, report the
// launch error. One translation unit, so every kernel family is compiled (and checked) together.
#include "attention.cuh"
#include "elementwise.cuh"
#include "norm.cuh"
#include "prefill_attention.cuh"
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

// Rows per block R: 1 for decode-only batches (one row per segment), else `many`.
template <int Many, typename F>
static int withRows(int maxSegRows, F&& f) {
  return maxSegRows <= 1 ? f(std::integral_constant<int, 1>{}) : f(std::integral_constant<int, Many>{});
}

// KC, the 16-byte chunks of a B row the fast expand holds in registers: 2 or 4 (larger ranks take
// the generic loop).
template <typename T, typename F>
static int withChunks(int maxRank, F&& f) {
  return maxRank * static_cast<int>(sizeof(T)) <= 32 ? f(std::integral_constant<int, 2>{}) : f(std::integral_constant<int, 4>{});
}

// Blocks of 256 threads of `kernel` that fit on the GPU at once (one wave), asked once per kernel.
template <typename K>
static int residentBlocks(K kernel, size_t smem) {
  static const void* keys[64];
  static int vals[64];
  static int used = 0;
  const void* key = reinterpret_cast<const void*>(kernel);
  for (int i = 0; i < used; i++)
    if (keys[i] == key) return vals[i];
  int per = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kernel, SGMV_THREADS, smem) != cudaSuccess || per < 1) per = 1;
  cudaGetLastError();
  const int v = per * smCount();
  if (used < 64) keys[used] = key, vals[used++] = v;
  return v;
}

int sgmvShrink(Elem t, const void* x, int in, float* tmp, int maxRank, const LoraSlotEntry* table, int tableStride,
               const LoraProjSet& set, const int32_t* segStart, const int32_t* segSlot, int numSegs, int maxSegRows,
               int rows, Stream s) {
  if (numSegs == 0 || maxRank <= 0) return 0;
  if (set.count < 1 || set.count > 3) return static_cast<int>(cudaErrorInvalidValue);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    return withRows<SGMV_ROWS>(maxSegRows, [&](auto rt) {
      constexpr int RR = decltype(rt)::value;
      const int rowTiles = (maxSegRows + RR - 1) / RR, rankBlocks = (maxRank + SGMV_RANKS - 1) / SGMV_RANKS;
      const int blocks = numSegs * rowTiles * rankBlocks * set.count;
      // Split `in` (slices of >= 512) until there are blocks for about two waves; split sums meet in
      // tmp atomically (measured on H100: one to four waves within noise).
      const int target = 2 * residentBlocks(sgmvShrinkKernel<T, RR>, 0);
      const int splits = std::min(std::max(1, in / 512), std::max(1, (target + blocks - 1) / blocks));
      if (splits > 1 && cudaMemsetAsync(tmp, 0, sizeof(float) * static_cast<size_t>(set.count) * maxRank * rows, s) != cudaSuccess)
        return launched();
      dim3 grid(numSegs * splits, rowTiles, set.count * rankBlocks);
      sgmvShrinkKernel<T, RR><<<grid, SGMV_THREADS, 0, s>>>(static_cast<const T*>(x), in, tmp, maxRank, table, tableStride, set, segStart,
                                                           segSlot, splits, rankBlocks);
      return launched();
    });
  });
}

int sgmvExpand(Elem t, const float* tmp, int maxRank, void* y, int ldy, const LoraSlotEntry* table, int tableStride,
               const LoraProjSet& set, const int32_t* segStart, const int32_t* segSlot, int numSegs, int maxSegRows,
               Stream s) {
  if (numSegs == 0 || maxRank <= 0) return 0;
  if (set.count < 1 || set.count > 3) return static_cast<int>(cudaErrorInvalidValue);
  int maxOut = 0;
  for (int p = 0; p < set.count; p++) maxOut = std::max(maxOut, set.out[p]);
  const int ldt = (maxRank + 3) / 4 * 4;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    return withRows<SGMV_ROWS>(maxSegRows, [&](auto rt) {
      constexpr int RR = decltype(rt)::value;
      return withChunks<T>(maxRank, [&](auto kt) {
        constexpr int KC = decltype(kt)::value;
        constexpr int perStep = SGMV_THREADS * ExpandStep<T, RR, KC>::U;
        const size_t smem = sizeof(float) * RR * ldt;
        if (smem > 48 * 1024)
          cudaFuncSetAttribute(sgmvExpandKernel<T, RR, KC>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        const int rowTiles = (maxSegRows + RR - 1) / RR;
        // Output blocks for about two waves; each block loops over its steps.
        const int steps = (maxOut + perStep - 1) / perStep;
        const int target = 2 * residentBlocks(sgmvExpandKernel<T, RR, KC>, smem);
        const int outBlocks = std::max(1, std::min(steps, (target + numSegs * rowTiles * set.count - 1) / (numSegs * rowTiles * set.count)));
        const int perBlock = (steps + outBlocks - 1) / outBlocks * perStep;
        dim3 grid(numSegs, rowTiles, set.count * outBlocks);
        sgmvExpandKernel<T, RR, KC><<<grid, SGMV_THREADS, smem, s>>>(tmp, maxRank, ldt, static_cast<T*>(y), ldy, table, tableStride, set,
                                                                    segStart, segSlot, outBlocks, perBlock);
        return launched();
      });
    });
  });
}

// Whether the fused kernel runs sm_90 code here (thread-block clusters); asked once.
static bool sgmvClusters() {
  static int ok = -1;
  if (ok < 0) {
    cudaFuncAttributes a{};
    ok = cudaFuncGetAttributes(&a, sgmvFusedKernel<float, 1, 2>) == cudaSuccess && a.binaryVersion >= 90 && a.ptxVersion >= 90;
    cudaGetLastError();
  }
  return ok == 1;
}

int sgmv(Elem t, const void* x, int in, float* tmp, int maxRank, void* y, int ldy, const LoraSlotEntry* table, int tableStride,
         const LoraProjSet& set, const int32_t* segStart, const int32_t* segSlot, int numSegs, int maxSegRows, int rows, Stream s) {
  if (numSegs == 0 || maxRank <= 0) return 0;
  if (set.count < 1 || set.count > 3) return static_cast<int>(cudaErrorInvalidValue);
  const int rankBlocks = (maxRank + SGMV_RANKS - 1) / SGMV_RANKS;
  const bool fused = maxRank <= SGMV_FUSED_MAX_RANK && maxSegRows <= SGMV_FUSED_MAX_SEG_ROWS &&
                     (rankBlocks == 1 || sgmvClusters());
  if (!fused) {
    const int rc = sgmvShrink(t, x, in, tmp, maxRank, table, tableStride, set, segStart, segSlot, numSegs, maxSegRows, rows, s);
    if (rc != 0) return rc;
    return sgmvExpand(t, tmp, maxRank, y, ldy, table, tableStride, set, segStart, segSlot, numSegs, maxSegRows, s);
  }
  int maxOut = 0;
  for (int p = 0; p < set.count; p++) maxOut = std::max(maxOut, set.out[p]);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    return withRows<SGMV_FUSED_ROWS>(maxSegRows, [&](auto rt) {
      constexpr int RR = decltype(rt)::value;
      return withChunks<T>(maxRank, [&](auto kt) {
        constexpr int KC = decltype(kt)::value;
        const int rowTiles = (maxSegRows + RR - 1) / RR;
        const int tiles = numSegs * rowTiles * set.count;
        // Half a wave (measured on H100: better than one or two - fewer, longer blocks): C (cluster)
        // = in-splits x rank blocks, then E clusters per tile while blocks are left.
        const int target = std::max(1, residentBlocks(sgmvFusedKernel<T, RR, KC>, 0) / 2);
        int splits = 1;
        if (sgmvClusters())
          splits = std::max(1, std::min({target / (tiles * rankBlocks), SGMV_CLUSTER / rankBlocks, std::max(1, in / 512)}));
        const int C = splits * rankBlocks;
        const int E = std::max(1, std::min(target / (tiles * C), maxOut / (C * SGMV_THREADS)));
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(numSegs * C, rowTiles, set.count * E);
        cfg.blockDim = dim3(SGMV_THREADS);
        cfg.dynamicSmemBytes = 0;
        cfg.stream = reinterpret_cast<cudaStream_t>(s);
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeClusterDimension;
        attr[0].val.clusterDim.x = C;
        attr[0].val.clusterDim.y = 1;
        attr[0].val.clusterDim.z = 1;
        cfg.attrs = attr;
        cfg.numAttrs = C > 1 ? 1 : 0;
        const cudaError_t e = cudaLaunchKernelEx(&cfg, sgmvFusedKernel<T, RR, KC>, static_cast<const T*>(x), in, static_cast<T*>(y), ldy,
                                                 table, tableStride, set, segStart, segSlot, splits, rankBlocks, E);
        return e != cudaSuccess ? static_cast<int>(e) : launched();
      });
    });
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
                        int blockSize, int window, float scale, void* out, int maxKeys, float* ws, int64_t wsFloats, Stream s) {
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
      rowSeq, rowPos, rowIndex, heads, kvHeads, blockSize, window, scale, static_cast<T*>(out), splits > 1 ? ws : nullptr, mlOffset);
  if (splits > 1)
    attentionCombineKernel<T><<<rows * heads, ATT_COMBINE_THREADS, splits * sizeof(float), s>>>(ws, splits, D, mlOffset, static_cast<T*>(out));
  return launched();
}

int pagedAttention(Elem t, const void* q, int ldq, const void* kCache, const void* vCache, const int32_t* blockTables, int maxBlocks,
                   const int32_t* rowSeq, const int32_t* rowPos, const int32_t* rowIndex, int rows, int heads, int kvHeads, int dim,
                   int blockSize, int window, float scale, void* out, int maxKeys, float* workspace, int64_t workspaceFloats, Stream s) {
  if (rows == 0) return 0;
  if (heads % kvHeads != 0 || heads / kvHeads > ATT_MAX_GROUP) return static_cast<int>(cudaErrorInvalidValue);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    switch (dim) {
#define SB_ATT(D) \
  case D: return attentionFor<T, D>(q, ldq, kCache, vCache, blockTables, maxBlocks, rowSeq, rowPos, rowIndex, rows, heads, kvHeads, blockSize, window, scale, out, maxKeys, workspace, workspaceFloats, s);
      SB_ATT(16) SB_ATT(32) SB_ATT(64) SB_ATT(96) SB_ATT(128) SB_ATT(256)
#undef SB_ATT
      default: return static_cast<int>(cudaErrorInvalidValue);
    }
  });
}

bool prefillAttentionSupported(Elem t, int dim) {
  static int major = -1;
  if (major < 0) {
    int dev = 0;
    cudaGetDevice(&dev);
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) major = 0;
  }
  return t != Elem::F32 && major >= 8 && (dim == 16 || dim == 32 || dim == 64 || dim == 128);
}

int prefillAttention(Elem t, const void* q, int ldq, const void* kCache, const void* vCache, const int32_t* blockTables,
                     int maxBlocks, const int32_t* rowSeq, const int32_t* rowPos, const int32_t* tiles, int numTiles, int heads,
                     int kvHeads, int dim, int blockSize, int window, float scale, void* out, Stream s) {
  if (numTiles == 0) return 0;
  if (!prefillAttentionSupported(t, dim) || heads % kvHeads != 0) return static_cast<int>(cudaErrorInvalidValue);
  auto launch = [&](auto tag, auto dt) {
    using T = decltype(tag);
    constexpr int D = decltype(dt)::value;
    constexpr int smem = PfaCfg<D>::SMEM;
    static unsigned long long configured = 0;  // per device: the dynamic shared memory is over 48 KiB
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev < 64 && !(configured >> dev & 1)) {
      cudaFuncSetAttribute(prefillAttentionKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      cudaFuncSetAttribute(prefillAttentionKernel<T, D>, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
      configured |= 1ull << dev;
    }
    prefillAttentionKernel<T, D><<<dim3(numTiles, heads), PFA_THREADS, smem, s>>>(
        static_cast<const T*>(q), ldq, static_cast<const T*>(kCache), static_cast<const T*>(vCache), blockTables, maxBlocks, rowSeq,
        rowPos, tiles, heads, kvHeads, blockSize, window, scale * 1.4426950408889634f, static_cast<T*>(out));
    return launched();
  };
  auto withDim = [&](auto tag) {
    switch (dim) {
      case 16: return launch(tag, std::integral_constant<int, 16>{});
      case 32: return launch(tag, std::integral_constant<int, 32>{});
      case 64: return launch(tag, std::integral_constant<int, 64>{});
      default: return launch(tag, std::integral_constant<int, 128>{});
    }
  };
  return t == Elem::BF16 ? withDim(__nv_bfloat16{}) : withDim(__half{});
}

int finishRows(const float* logits, int rows, int vocab, const RowFinish* params, const uint32_t* masks,
               const int32_t* penaltyTokens, float* work, int32_t* results, int resultStride, Stream s) {
  if (rows == 0) return 0;
  finishRowsKernel<<<rows, FINISH_THREADS, 0, s>>>(logits, vocab, params, masks, penaltyTokens, work, results, resultStride);
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
