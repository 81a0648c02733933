// Host launchers of the rope family (rotary position embedding of q and k, in place), declared in
// launch.h, beside their kernels in rope.cuh: each picks a grid, dispatches on the element type and
// returns its launch error.
#include "rope.cuh"

namespace sb::kern {

int rope(Elem t, void* q, int ldq, void* k, int ldk, const int32_t* positions, const float* invFreq, const int32_t* freqRow,
         float attnFactor, int rows, int heads, int kvHeads, int dim, Stream s) {
  if (rows == 0) return 0;
  return dispatch(t, [&](auto tag) {
    using T = decltype(tag);
    ropeKernel<T><<<rows, threadsFor((heads + kvHeads) * dim / 2), 0, s>>>(static_cast<T*>(q), ldq, static_cast<T*>(k), ldk, positions, invFreq, freqRow, attnFactor, heads, kvHeads, dim);
    return launched();
  });
}

}  // namespace sb::kern
