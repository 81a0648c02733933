// Host launchers of the norm family (RMSNorm, with the residual add fused; Gemma's (1 + w) form; per-head q/k norms), declared in launch.h,
// beside their kernels in norm.cuh: each picks a grid, dispatches on the element type and returns
// its launch error.
#include "norm.cuh"

namespace sb::kern {

int rmsnorm(Elem t, const void* x, void* residual, const void* w, int rows, int hidden, float eps, void* out, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    rmsnormKernel<T><<<rows, threadsFor(hidden), 0, s>>>(static_cast<const T*>(x), static_cast<T*>(residual),
                                                        static_cast<const T*>(w), hidden, eps, static_cast<T*>(out));
    return launched();
  });
}

int gemmaRmsnorm(Elem t, const void* x, void* residual, const void* w, int rows, int hidden, float eps, void* out, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    rmsnormKernel<T, true><<<rows, threadsFor(hidden), 0, s>>>(static_cast<const T*>(x), static_cast<T*>(residual),
                                                              static_cast<const T*>(w), hidden, eps, static_cast<T*>(out));
    return launched();
  });
}

int headRmsnorm(Elem t, void* x, int ld, int rows, int heads, int dim, const void* w, float eps, bool gemma, Stream s) {
  if (rows == 0 || heads == 0) return 0;
  const int64_t items = static_cast<int64_t>(rows) * heads;
  constexpr int kWarps = 8;
  const unsigned blocks = static_cast<unsigned>((items + kWarps - 1) / kWarps);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    if (gemma) headRmsnormKernel<T, true><<<blocks, kWarps * 32, 0, s>>>(static_cast<T*>(x), ld, rows, heads, dim, static_cast<const T*>(w), eps);
    else headRmsnormKernel<T, false><<<blocks, kWarps * 32, 0, s>>>(static_cast<T*>(x), ld, rows, heads, dim, static_cast<const T*>(w), eps);
    return launched();
  });
}

}  // namespace sb::kern
