// Host launchers of the sgmv family (LoRA over adapter segments: shrink, expand, and the fused
// one-call sgmv), declared in launch.h, beside their kernels in sgmv.cuh: each picks a grid,
// dispatches on the element type and returns its launch error.
#include "sgmv.cuh"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace sb::kern {

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

// The LoRA kernel switch (launch.h): SWITCHBOARD_LORA_KERNEL read once, setLoraKernel overrides.
struct LoraKernelChoice {
  LoraKernel kind = LoraKernel::Simt;
  int clusterBlocks = 0, outSplits = 0;
  bool prefetch = true, pdl = false;
};
static LoraKernelChoice& loraChoice() {
  static LoraKernelChoice c = [] {
    LoraKernelChoice v;
    const char* e = std::getenv("SWITCHBOARD_LORA_KERNEL");
    if (e && std::strcmp(e, "tc") == 0) v.kind = LoraKernel::TensorCore;
    else if (e && std::strcmp(e, "tc+pdl") == 0) v.kind = LoraKernel::TensorCore, v.pdl = true;
    else if (e && *e && std::strcmp(e, "simt") != 0)
      std::fprintf(stderr, "switchboard: SWITCHBOARD_LORA_KERNEL=%s is none of tc, tc+pdl, simt; using simt\n", e);
    return v;
  }();
  return c;
}

void setLoraKernel(LoraKernel k, int clusterBlocks, int outSplits, bool prefetch, bool pdl) {
  LoraKernelChoice& c = loraChoice();
  c.kind = k;
  c.prefetch = prefetch;
  c.pdl = pdl;
  c.clusterBlocks = std::max(0, std::min(clusterBlocks, TC_MAX_CLUSTER));
  c.outSplits = std::max(0, outSplits);
}

LoraKernel loraKernel() { return loraChoice().kind; }

// Whether the tensor-core kernel runs sm_90 code here (mma.sync and clusters); asked once.
static bool sgmvTcAvailable() {
  static int ok = -1;
  if (ok < 0) {
    cudaFuncAttributes a{};
    ok = cudaFuncGetAttributes(&a, sgmvTcKernel<__nv_bfloat16>) == cudaSuccess && a.binaryVersion >= 90 && a.ptxVersion >= 90;
    cudaGetLastError();
  }
  return ok == 1;
}

static bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

int sgmvPath(Elem t, const void* x, int in, int maxRank, const void* y, int ldy, const LoraProjSet& set, int maxSegRows) {
  if (loraChoice().kind == LoraKernel::TensorCore && t != Elem::F32 && maxRank > 0 && maxRank <= TC_MAX_RANK && maxSegRows <= 64 &&
      in % 8 == 0 && ldy % 8 == 0 && aligned16(x) && aligned16(y) && set.count >= 1 && set.count <= 3) {
    bool cols = true;
    for (int p = 0; p < set.count; p++) cols = cols && set.yCol[p] % 8 == 0 && set.out[p] % 8 == 0;
    if (cols && sgmvTcAvailable()) return 2;
  }
  const int rankBlocks = (maxRank + SGMV_RANKS - 1) / SGMV_RANKS;
  return maxRank <= SGMV_FUSED_MAX_RANK && maxSegRows <= SGMV_FUSED_MAX_SEG_ROWS && (rankBlocks == 1 || sgmvClusters()) ? 1 : 0;
}

// The tensor-core kernel's grid: C blocks per cluster split `in`, E clusters per row tile split
// the outputs (each redoing the tile's shrink). Sized for about one wave of resident blocks:
// first C (no repeated bytes), then E where the expand's bytes outweigh the shrink's that every
// extra cluster re-reads (gate/up at one 64-row segment; never at decode with one row per segment).
template <typename T>
static int sgmvTc(const T* x, int in, T* y, int ldy, const LoraSlotEntry* table, int tableStride, const LoraProjSet& set,
                  const int32_t* segStart, const int32_t* segSlot, int numSegs, int maxSegRows, int maxRank, int rows, Stream s) {
  const LoraKernelChoice& choice = loraChoice();
  const int rowTiles = (maxSegRows + TC_ROWS - 1) / TC_ROWS;
  // Row tiles with rows in them: at most one partial tile per segment beyond rows / 8.
  const int64_t items = std::max<int64_t>(1, std::min<int64_t>(int64_t(numSegs) * rowTiles, numSegs + (int64_t(rows) + TC_ROWS - 1) / TC_ROWS));
  const int wave = residentBlocks(sgmvTcKernel<T>, 0);
  int C = choice.clusterBlocks;
  if (C <= 0) {
    C = 1;
    while (C < 8 && items * C * 2 <= wave && in / (C * 2) >= 512) C *= 2;
  }
  int E = choice.outSplits;
  if (E <= 0) {
    const int64_t tileRows = std::min(maxSegRows, TC_ROWS);
    int64_t outs = 0, groups = 0;
    for (int p = 0; p < set.count; p++) outs += set.out[p], groups += (set.out[p] + 31) / 32;
    const int64_t shrinkBytes = (tileRows + int64_t(set.count) * maxRank) * in;
    const int64_t expandBytes = outs * (maxRank + 2 * tileRows);
    const int64_t byBytes = (expandBytes + shrinkBytes / 2) / shrinkBytes;
    const int64_t byWave = wave / (items * C);
    E = static_cast<int>(std::max<int64_t>(1, std::min({byBytes, byWave, groups / (2 * C)})));
  }
  static bool nonPortable = false;
  if (C > 8 && !nonPortable) {
    nonPortable = cudaFuncSetAttribute(sgmvTcKernel<T>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
    if (!nonPortable) {
      cudaGetLastError();
      return static_cast<int>(cudaErrorInvalidValue);
    }
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(int64_t(numSegs) * E * C), rowTiles, 1);
  cfg.blockDim = dim3(TC_THREADS);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = reinterpret_cast<cudaStream_t>(s);
  cudaLaunchAttribute attr[2];
  unsigned na = 0;
  if (C > 1) {
    attr[na].id = cudaLaunchAttributeClusterDimension;
    attr[na].val.clusterDim.x = C;
    attr[na].val.clusterDim.y = 1;
    attr[na].val.clusterDim.z = 1;
    na++;
  }
  if (choice.pdl) {
    attr[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[na].val.programmaticStreamSerializationAllowed = 1;
    na++;
  }
  cfg.attrs = attr;
  cfg.numAttrs = na;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, sgmvTcKernel<T>, x, in, y, ldy, table, tableStride, set, segStart, segSlot, C, E,
                                           choice.prefetch);
  if (e != cudaSuccess) cudaGetLastError();  // returned here; not left behind for the next launch to report
  return e != cudaSuccess ? static_cast<int>(e) : launched();
}

int sgmv(Elem t, const void* x, int in, float* tmp, int maxRank, void* y, int ldy, const LoraSlotEntry* table, int tableStride,
         const LoraProjSet& set, const int32_t* segStart, const int32_t* segSlot, int numSegs, int maxSegRows, int rows, Stream s) {
  if (numSegs == 0 || maxRank <= 0) return 0;
  if (set.count < 1 || set.count > 3) return static_cast<int>(cudaErrorInvalidValue);
  const int path = sgmvPath(t, x, in, maxRank, y, ldy, set, maxSegRows);
  if (path == 2) {
    return dispatch(t, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (std::is_same_v<T, float>) return static_cast<int>(cudaErrorInvalidValue);  // sgmvPath never picks it for fp32
      else return sgmvTc<T>(static_cast<const T*>(x), in, static_cast<T*>(y), ldy, table, tableStride, set, segStart, segSlot, numSegs,
                            maxSegRows, maxRank, rows, s);
    });
  }
  const int rankBlocks = (maxRank + SGMV_RANKS - 1) / SGMV_RANKS;
  const bool fused = path == 1;
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

}  // namespace sb::kern
