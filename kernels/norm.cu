// Host launchers of the norm family (RMSNorm, with the residual add fused), declared in launch.h,
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

}  // namespace sb::kern
