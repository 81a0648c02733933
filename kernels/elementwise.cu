// Host launchers of the elementwise family (embedding gather, SiLU·mul, bias add, dtype conversion,
// random weights), declared in launch.h, beside their kernels in elementwise.cuh: each picks a
// grid, dispatches on the element type and returns its launch error.
#include "elementwise.cuh"

#include <algorithm>

namespace sb::kern {

int embedding(Elem t, const void* table, const int32_t* tokens, int rows, int hidden, void* out, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    embeddingKernel<T><<<rows, threadsFor(hidden), 0, s>>>(static_cast<const T*>(table), tokens, hidden, static_cast<T*>(out));
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

int embeddingScaled(Elem t, const void* table, const int32_t* tokens, int rows, int hidden, float scale, void* out, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    embeddingScaledKernel<T><<<rows, threadsFor(hidden), 0, s>>>(static_cast<const T*>(table), tokens, hidden, scale, static_cast<T*>(out));
    return launched();
  });
}

int geluTanhMul(Elem t, const void* gate, const void* up, int ld, int rows, int inter, void* out, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    dim3 grid((inter + 255) / 256, rows);
    geluTanhMulKernel<T><<<grid, 256, 0, s>>>(static_cast<const T*>(gate), static_cast<const T*>(up), ld, inter, static_cast<T*>(out));
    return launched();
  });
}

int softcap(float* x, int64_t n, float cap, Stream s) {
  if (n == 0) return 0;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 4096);
  softcapKernel<<<static_cast<unsigned>(blocks), 256, 0, s>>>(x, n, cap);
  return launched();
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

int addTo(Elem t, void* y, const void* z, int64_t n, Stream s) {
  if (n == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = ((reinterpret_cast<uintptr_t>(y) | reinterpret_cast<uintptr_t>(z)) & 15) == 0;
    const int64_t blocks = std::min<int64_t>((n + 8 * 256 - 1) / (8 * 256), 2048);
    addToKernel<T><<<static_cast<unsigned>(blocks), 256, 0, s>>>(static_cast<T*>(y), static_cast<const T*>(z), n, vec);
    return launched();
  });
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
