// Host launchers of the moe family (routing, grouping by expert, gather, weighted combine), declared
// in launch.h, beside their kernels in moe.cuh: each picks a grid, dispatches on the element type
// and returns its launch error.
#include "moe.cuh"

namespace sb::kern {

int moeRoute(Elem t, const void* logits, int rows, int experts, int topK, bool renormalize, int32_t* choice, float* weight, Stream s) {
  if (rows == 0) return 0;
  if (topK <= 0 || topK > MOE_MAX_TOPK || topK > experts) return static_cast<int>(cudaErrorInvalidValue);
  const size_t smem = sizeof(float) * MOE_ROUTE_WARPS * experts;
  if (smem > 48 * 1024) return static_cast<int>(cudaErrorInvalidValue);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    moeRouteKernel<T><<<(rows + MOE_ROUTE_WARPS - 1) / MOE_ROUTE_WARPS, MOE_ROUTE_WARPS * 32, smem, s>>>(
        static_cast<const T*>(logits), rows, experts, topK, renormalize, choice, weight);
    return launched();
  });
}

int moePlan(const int32_t* choice, int rows, int topK, int experts, int32_t* offsets, int32_t* order, int32_t* slotPos, Stream s) {
  if (rows == 0) return 0;
  moePlanKernel<<<1, 1024, sizeof(int32_t) * (experts + 1), s>>>(choice, rows * topK, experts, offsets, order, slotPos);
  return launched();
}

int moeGather(Elem t, const void* x, const int32_t* order, int n, int topK, int hidden, void* xg, Stream s) {
  if (n == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    moeGatherKernel<T><<<n, threadsFor(hidden), 0, s>>>(static_cast<const T*>(x), order, topK, hidden, static_cast<T*>(xg));
    return launched();
  });
}

int moeCombine(Elem t, const void* y, const int32_t* choice, const float* weight, const int32_t* slotPos, int rows, int topK, int hidden,
               void* out, Stream s) {
  if (rows == 0) return 0;
  if (topK <= 0 || topK > MOE_MAX_TOPK) return static_cast<int>(cudaErrorInvalidValue);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    moeCombineKernel<T><<<rows, threadsFor(hidden), 0, s>>>(static_cast<const T*>(y), choice, weight, slotPos, topK, hidden,
                                                           static_cast<T*>(out));
    return launched();
  });
}

}  // namespace sb::kern
