// Host launchers of the moe family (routing, grouping by expert, gather, weighted combine), declared
// in launch.h, beside their kernels in moe.cuh: each picks a grid, dispatches on the element type
// and returns its launch error.
#include "moe.cuh"

#include <algorithm>

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

int moeSharedAdd(Elem t, const void* y, const void* gate, int rows, int hidden, void* out, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    moeSharedAddKernel<T><<<rows, threadsFor(hidden), 0, s>>>(static_cast<const T*>(y), static_cast<const T*>(gate), hidden,
                                                             static_cast<T*>(out));
    return launched();
  });
}

int moeLora(Elem t, const void* x, int in, void* y, int ldy, int out, int n, int topK, const int32_t* order, const int32_t* choice,
            const int32_t* rowSeq, const int32_t* seqSlot, const LoraSlotEntry* table, int stride, int offset, int maxRank, Stream s) {
  if (n == 0 || maxRank <= 0) return 0;
  if (topK <= 0 || maxRank * sizeof(float) > 48 * 1024) return static_cast<int>(cudaErrorInvalidValue);
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    moeLoraKernel<T><<<n, 256, size_t(maxRank) * sizeof(float), s>>>(static_cast<const T*>(x), in, static_cast<T*>(y), ldy, out, topK, order,
                                                                     choice, rowSeq, seqSlot, table, stride, offset);
    return launched();
  });
}

int moeGemv(Elem t, const void* x, int in, const int32_t* offsets, const void* const* weights, int experts, int out, void* y, Stream s) {
  if (experts == 0 || out == 0) return 0;
  const int es = t == Elem::F32 ? 4 : 2;
  if (in <= 0 || in * es > MOE_GEMV_SMEM) return static_cast<int>(cudaErrorInvalidValue);
  const int rowsPerPass = std::min(MOE_GEMV_MAXR, MOE_GEMV_SMEM / (in * es));
  const size_t smem = size_t(rowsPerPass) * in * es;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    moeGemvKernel<T><<<dim3(experts, (out + MOE_GEMV_OUT - 1) / MOE_GEMV_OUT), MOE_GEMV_THREADS, smem, s>>>(
        static_cast<const T*>(x), in, offsets, weights, out, rowsPerPass, static_cast<T*>(y));
    return launched();
  });
}

}  // namespace sb::kern
