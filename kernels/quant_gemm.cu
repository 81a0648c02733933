// Host launchers of the quant_gemm family (weight-only quantized GEMV for decode batches, dequantisation
// for tensor-core GEMMs on prompt chunks), declared in launch.h, beside their kernels in quant_gemm.cuh:
// each picks a grid, dispatches on the element type, codebook and rows, and returns its launch error.
#include "quant_gemm.cuh"
#include "quant_mma.cuh"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace sb::kern {

namespace {

constexpr int kMaxPassRows = 16;  // activation rows one GEMV pass multiplies (registers: 4 x 16 sums a lane)

template <typename F>
int withCodebook(QuantCodebook cb, F&& f) {
  switch (cb) {
    case QuantCodebook::Lut4: return f(std::integral_constant<int, 0>{});
    case QuantCodebook::U8: return f(std::integral_constant<int, 1>{});
    case QuantCodebook::S8: return f(std::integral_constant<int, 2>{});
    case QuantCodebook::E4M3: return f(std::integral_constant<int, 3>{});
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

template <typename F>
int withPassRows(int rows, F&& f) {
  if (rows <= 1) return f(std::integral_constant<int, 1>{});
  if (rows <= 2) return f(std::integral_constant<int, 2>{});
  if (rows <= 4) return f(std::integral_constant<int, 4>{});
  if (rows <= 8) return f(std::integral_constant<int, 8>{});
  return f(std::integral_constant<int, 16>{});
}

int elemBytes(Elem t) { return t == Elem::F32 ? 4 : 2; }

// Input slices (split-K) and packed steps per slice: enough blocks for about two per SM slot, slices a
// multiple of 32 steps (one per lane), at most 8.
void splitsFor(const QuantWeight& w, int& splits, int& sliceWords) {
  const int words = w.in / 8;
  const int blocksOut = (w.out + kQuantRowsPerBlock - 1) / kQuantRowsPerBlock;
  const int want = std::max(1, std::min(8, (smCount() * 8 + blocksOut - 1) / blocksOut));
  sliceWords = std::max(32, ((words + want - 1) / want + 31) / 32 * 32);
  splits = (words + sliceWords - 1) / sliceWords;
}

// The tensor-core path (quant_mma.cuh): chosen by SWITCHBOARD_QUANT_KERNEL=mma (read once) or setQuantKernel,
// for 16-bit activations and inputs in runs of 32 (16-byte code reads), where this device runs sm_80+ code.
QuantKernel& quantChoice() {
  static QuantKernel k = [] {
    const char* e = std::getenv("SWITCHBOARD_QUANT_KERNEL");
    if (e && std::strcmp(e, "mma") == 0) return QuantKernel::Mma;
    if (e && *e && std::strcmp(e, "gemv") != 0)
      std::fprintf(stderr, "switchboard: SWITCHBOARD_QUANT_KERNEL=%s is neither mma nor gemv; using gemv\n", e);
    return QuantKernel::Gemv;
  }();
  return k;
}

bool mmaAvailable() {
  static int ok = -1;
  if (ok < 0) {
    cudaFuncAttributes a{};
    ok = cudaFuncGetAttributes(&a, quantMmaKernel<__nv_bfloat16, 0, 8>) == cudaSuccess && a.binaryVersion >= 80;
    cudaGetLastError();
  }
  return ok == 1;
}

// What the tensor-core kernel takes: 16-bit activations, inputs in runs of 32 (its 16-byte code reads).
bool mmaFits(Elem t, const QuantWeight& w) { return t != Elem::F32 && w.in % 32 == 0; }

bool useMma(Elem t, const QuantWeight& w) { return quantChoice() == QuantKernel::Mma && mmaFits(t, w) && mmaAvailable(); }

// k slices of whole 128-input blocks: about two blocks per SM slot in all.
void mmaSplits(const QuantWeight& w, int& splits, int& sliceK) {
  const int kBlocks = (w.in + kQmmaK - 1) / kQmmaK;
  const int blocksOut = (w.out + kQmmaOutsPerBlock - 1) / kQmmaOutsPerBlock;
  const int want = std::max(1, std::min(16, (2 * smCount() + blocksOut - 1) / blocksOut));
  const int per = std::max(1, (kBlocks + want - 1) / want);
  sliceK = per * kQmmaK;
  splits = (kBlocks + per - 1) / per;
}

template <typename F>
int withNTiles(int rows, F&& f) {
  if (rows <= 8) return f(std::integral_constant<int, 1>{});
  if (rows <= 16) return f(std::integral_constant<int, 2>{});
  if (rows <= 32) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, 8>{});
}

}  // namespace

void setQuantKernel(QuantKernel k) { quantChoice() = k; }
QuantKernel quantKernel() { return quantChoice(); }

bool quantGemvSupports(const QuantWeight& w) {
  return w.out > 0 && w.in > 0 && w.in % 8 == 0 && w.groupSize > 0 && (w.groupSize % 8 == 0 || w.groupSize >= w.in) &&
         (w.codebook != QuantCodebook::Lut4 || w.lut != nullptr);
}

int64_t quantGemvWorkspaceBytes(Elem t, int rows, const QuantWeight& w) {
  int splits, sliceWords;
  splitsFor(w, splits, sliceWords);
  const int64_t pass = std::min(rows, kMaxPassRows);
  int64_t partial = splits > 1 ? int64_t(splits) * pass * w.out * 4 : 0;
  // Whichever kernel runs (the choice can change between sizing and launching: setQuantKernel).
  if (mmaFits(t, w)) {
    int mSplits, sliceK;
    mmaSplits(w, mSplits, sliceK);
    if (mSplits > 1) partial = std::max(partial, int64_t(mSplits) * std::min(rows, kQmmaMaxRows) * w.out * 4);
  }
  const int64_t permuted = w.perm ? (int64_t(rows) * w.in * elemBytes(t) + 255) / 256 * 256 : 0;
  return permuted + partial;
}

int quantGemv(Elem t, const void* x, int rows, const QuantWeight& w, void* y, int ldy, void* workspace, int64_t workspaceBytes, Stream s) {
  if (rows == 0) return 0;
  if (ldy < w.out || !quantGemvSupports(w) || workspaceBytes < quantGemvWorkspaceBytes(t, rows, w)) return static_cast<int>(cudaErrorInvalidValue);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    const T* xs = static_cast<const T*>(x);
    char* ws = static_cast<char*>(workspace);
    if (w.perm) {
      // Act-order: the activations in the packed input order, once for every pass.
      const int64_t n = int64_t(rows) * w.in;
      quantPermuteKernel<T><<<int(std::min<int64_t>((n + 255) / 256, 4096)), 256, 0, s>>>(xs, w.perm, rows, w.in, reinterpret_cast<T*>(ws));
      if (int e = launched()) return e;
      xs = reinterpret_cast<const T*>(ws);
      ws += (n * int64_t(sizeof(T)) + 255) / 256 * 256;
    }
    // Passes of up to passRows activation rows; launch(r0, n, yp, partial) starts one pass's kernel, whose
    // split-K slices (if any) are then summed into y in slice order.
    auto passes = [&](int passRows, int nSplits, auto&& launch) -> int {
      float* partial = nSplits > 1 ? reinterpret_cast<float*>(ws) : nullptr;
      for (int r0 = 0; r0 < rows; r0 += passRows) {
        const int n = std::min(passRows, rows - r0);
        T* yp = static_cast<T*>(y) + int64_t(r0) * ldy;
        if (int e = launch(r0, n, yp, partial)) return e;
        if (partial) {
          const int64_t count = int64_t(n) * w.out;
          quantReduceKernel<T><<<int(std::min<int64_t>((count + 255) / 256, 2048)), 256, 0, s>>>(partial, nSplits, n, w.out, yp, ldy);
          if (int e = launched()) return e;
        }
      }
      return 0;
    };
    if constexpr (!std::is_same_v<T, float>) {
      if (useMma(t, w)) {
        int mSplits, sliceK;
        mmaSplits(w, mSplits, sliceK);
        return passes(kQmmaMaxRows, mSplits, [&](int r0, int n, T* yp, float* partial) {
          return withCodebook(w.codebook, [&](auto cb) {
            return withNTiles(n, [&](auto nt) {
              dim3 grid((w.out + kQmmaOutsPerBlock - 1) / kQmmaOutsPerBlock, mSplits);
              quantMmaKernel<T, decltype(cb)::value, decltype(nt)::value><<<grid, kQmmaThreads, 0, s>>>(xs + int64_t(r0) * w.in, n, w, sliceK, yp, ldy, partial);
              return launched();
            });
          });
        });
      }
    }
    int splits, sliceWords;
    splitsFor(w, splits, sliceWords);
    return passes(kMaxPassRows, splits, [&](int r0, int n, T* yp, float* partial) {
      return withCodebook(w.codebook, [&](auto cb) {
        return withPassRows(n, [&](auto mt) {
          dim3 grid((w.out + kQuantRowsPerBlock - 1) / kQuantRowsPerBlock, splits);
          quantGemvKernel<T, decltype(cb)::value, decltype(mt)::value><<<grid, kQuantThreads, 0, s>>>(xs + int64_t(r0) * w.in, n, w, sliceWords, yp, ldy, partial);
          return launched();
        });
      });
    });
  });
}

int quantDequant(Elem t, const QuantWeight& w, void* dst, Stream s) {
  if (!quantGemvSupports(w)) return static_cast<int>(cudaErrorInvalidValue);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    return withCodebook(w.codebook, [&](auto cb) {
      const int64_t n = int64_t(w.out) * (w.in / 8);
      quantDequantKernel<T, decltype(cb)::value><<<int(std::min<int64_t>((n + 255) / 256, 8192)), 256, 0, s>>>(w, static_cast<T*>(dst));
      return launched();
    });
  });
}

}  // namespace sb::kern
