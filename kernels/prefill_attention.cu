// Host launchers of the prefill_attention family (prompt chunks on tensor cores), declared in
// launch.h, beside their kernels in prefill_attention.cuh: each picks a grid, dispatches on the
// element type and returns its launch error.
#include "prefill_attention.cuh"

#include <type_traits>

namespace sb::kern {

bool prefillAttentionSupported(Elem t, int dim) {
  static int major = -1;
  if (major < 0) {
    int dev = 0;
    cudaGetDevice(&dev);
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) major = 0;
  }
  return t != Elem::F32 && major >= 8 && (dim == 16 || dim == 32 || dim == 64 || dim == 80 || dim == 96 || dim == 128);
}

int prefillAttention(Elem t, const void* q, int ldq, const void* kCache, const void* vCache, const int32_t* blockTables,
                     int maxBlocks, const int32_t* rowSeq, const int32_t* rowPos, const int32_t* tiles, int numTiles, int heads,
                     int kvHeads, int dim, int blockSize, int window, float scale, float softcap, void* out, Stream s) {
  if (numTiles == 0) return 0;
  if (!prefillAttentionSupported(t, dim) || heads % kvHeads != 0) return static_cast<int>(cudaErrorInvalidValue);
  constexpr float kLog2e = 1.4426950408889634f;
  auto launch = [&](auto tag, auto dt) {
    using T = decltype(tag);
    constexpr int D = decltype(dt)::value;
    constexpr int smem = PfaCfg<D>::SMEM;
    auto run = [&](auto kernel, unsigned long long& configured) {
      int dev = 0;  // per device and kernel: the dynamic shared memory is over 48 KiB
      cudaGetDevice(&dev);
      if (dev < 64 && !(configured >> dev & 1)) {
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
        configured |= 1ull << dev;
      }
      kernel<<<dim3(numTiles, heads), PFA_THREADS, smem, s>>>(
          static_cast<const T*>(q), ldq, static_cast<const T*>(kCache), static_cast<const T*>(vCache), blockTables, maxBlocks, rowSeq,
          rowPos, tiles, heads, kvHeads, blockSize, window, softcap > 0 ? 1.0f : scale * kLog2e, softcap > 0 ? scale / softcap : 0.0f,
          softcap * kLog2e, static_cast<T*>(out));
      return launched();
    };
    static unsigned long long configuredPlain = 0, configuredCap = 0;
    return softcap > 0 ? run(prefillAttentionKernel<T, D, true>, configuredCap) : run(prefillAttentionKernel<T, D, false>, configuredPlain);
  };
  auto withDim = [&](auto tag) {
    switch (dim) {
      case 16: return launch(tag, std::integral_constant<int, 16>{});
      case 32: return launch(tag, std::integral_constant<int, 32>{});
      case 64: return launch(tag, std::integral_constant<int, 64>{});
      case 80: return launch(tag, std::integral_constant<int, 80>{});
      case 96: return launch(tag, std::integral_constant<int, 96>{});
      default: return launch(tag, std::integral_constant<int, 128>{});
    }
  };
  return t == Elem::BF16 ? withDim(__nv_bfloat16{}) : withDim(__half{});
}

}  // namespace sb::kern
